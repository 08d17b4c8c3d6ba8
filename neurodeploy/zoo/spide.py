"""Feedback SNN architectures of SPIDE and IDE (``/work/shared/notes/seed-methods.md`` §2).

All are :class:`neurodeploy.nn.feedback.FeedbackSNN`; the ``spide-*`` variants use SPIDE's
neuron (``u_rest = -vth``) and a Frobenius-bounded feedback, the ``ide-*`` variants IDE's
(``u_rest = 0``) and a spectral-norm-bounded feedback (``weight_g``/``weight_u``/``weight_v``).

* ``*-mlp``: dense layers ``in -> hidden[0] -> ... -> hidden[-1]`` with a dense feedback
  ``hidden[-1] -> hidden[0]``; small and fully exportable (digits).
* ``*-conv``: the MNIST "64C5s (F64C5)" shape: an input convolution (stride ``stride``), stride-1
  convolutions ``channels[0] -> channels[1] -> ...`` and a stride-1 "same" convolution feedback
  from the last layer to the first; exports with NIR Conv2d nodes.
* ``*-f``: the CIFAR "-F" layout of the official code: ``network_x`` (stride-2 conv),
  ``network_s1..s4`` (``s2`` with stride 2) and the ``network_s5`` transposed-convolution
  feedback (stride 2). Kernel sizes and paddings are ours ("same" convolutions, the transposed
  one padded to restore the size); the loader infers kernel sizes from the weights. NIR has no
  transposed-conv synapse, so this variant exports densely (small inputs only).

IDE puts a BatchNorm after every forward convolution (``bn=True``), folded at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..nn.feedback import FeedbackSNN, FeedbackSynapse
from . import register

_DEFAULTS = {"spide": {"u_rest": None, "norm": "frobenius", "radius": 2.0},
             "ide": {"u_rest": 0.0, "norm": "spectral", "radius": 1.0}}


def _conv(cin: int, cout: int, k: int, stride: int = 1, bn: bool = False) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not bn)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else conv


def _convT_padding(k: int) -> tuple[int, int]:
    """Padding and output padding making a stride-2 transposed conv exactly double the size."""
    p = -(-(k - 2) // 2)
    return p, 2 * p - (k - 2)


def _net(input_syn, chain, feedback, classifier, vth, u_rest, leak) -> FeedbackSNN:
    u = -vth if u_rest is None else u_rest
    return FeedbackSNN(input_syn, chain, feedback, classifier, vth=vth, u_rest=u, leak=leak)


def feedback_mlp(method: str, in_shape: Sequence[int] = (1, 8, 8),
                 hidden: Sequence[int] = (128, 64), classes: int = 10, vth: float = 1.0,
                 u_rest: float | None = None, leak: float = 1.0, norm: str | None = None,
                 radius: float | None = None, sigma_of: str = "operator") -> FeedbackSNN:
    d = _DEFAULTS[method]
    n_in = 1
    for s in in_shape:
        n_in *= int(s)
    hidden = [int(h) for h in hidden]
    chain = [nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True)]
    fb = FeedbackSynapse("linear", hidden[-1], hidden[0], norm=norm or d["norm"],
                         radius=d["radius"] if radius is None else radius, sigma_of=sigma_of)
    u = d["u_rest"] if u_rest is None else u_rest
    return _net(nn.Linear(n_in, hidden[0]), chain, fb, nn.Linear(hidden[-1], classes),
                vth, u, leak)


def feedback_conv(method: str, in_channels: int = 1, size: int = 8,
                  channels: Sequence[int] = (8, 8), kernel: int = 3, stride: int = 1,
                  classes: int = 10, vth: float = 1.0, u_rest: float | None = None,
                  leak: float = 1.0, norm: str | None = None, radius: float | None = None,
                  bn: bool | None = None, fb_kernel: int | None = None,
                  sigma_of: str = "operator") -> FeedbackSNN:
    d = _DEFAULTS[method]
    bn = (method == "ide") if bn is None else bn
    channels = [int(c) for c in channels]
    side = (size + 2 * (kernel // 2) - kernel) // stride + 1
    chain = [_conv(a, b, kernel, 1, bn) for a, b in zip(channels[:-1], channels[1:], strict=True)]
    fk = fb_kernel or kernel
    fb = FeedbackSynapse("conv2d", channels[-1], channels[0], fk, padding=fk // 2,
                         norm=norm or d["norm"], radius=d["radius"] if radius is None else radius,
                         in_shape=(channels[-1], side, side), sigma_of=sigma_of)
    u = d["u_rest"] if u_rest is None else u_rest
    return _net(_conv(in_channels, channels[0], kernel, stride, bn), chain, fb,
                nn.Linear(channels[-1] * side * side, classes), vth, u, leak)


def feedback_f(method: str, in_channels: int = 3, size: int = 32,
               channels: Sequence[int] = (64, 128, 256, 256, 256),
               kernels: Sequence[int] = (3, 3, 3, 3, 3, 3),
               classes: int = 10, vth: float = 1.0, u_rest: float | None = None,
               leak: float = 1.0, norm: str | None = None, radius: float | None = None,
               bn: bool | None = None, sigma_of: str = "operator") -> FeedbackSNN:
    """The official "-F" layout: ``kernels`` = (network_x, s1, s2, s3, s4, s5)."""
    d = _DEFAULTS[method]
    bn = (method == "ide") if bn is None else bn
    c = [int(x) for x in channels]
    k = [int(x) for x in kernels]
    if len(c) != 5 or len(k) != 6:
        raise ValueError("the -F layout has 5 layers (channels) and 6 synapses (kernels)")
    chain = [_conv(c[0], c[1], k[1], 1, bn), _conv(c[1], c[2], k[2], 2, bn),
             _conv(c[2], c[3], k[3], 1, bn), _conv(c[3], c[4], k[4], 1, bn)]
    side = (size + 2 * (k[0] // 2) - k[0]) // 2 + 1
    small = (side + 2 * (k[2] // 2) - k[2]) // 2 + 1
    p, op = _convT_padding(k[5])
    fb = FeedbackSynapse("conv_transpose2d", c[4], c[0], k[5], stride=2, padding=p,
                         output_padding=op, norm=norm or d["norm"],
                         radius=d["radius"] if radius is None else radius,
                         in_shape=(c[4], small, small), sigma_of=sigma_of)
    u = d["u_rest"] if u_rest is None else u_rest
    return _net(_conv(in_channels, c[0], k[0], 2, bn), chain, fb,
                nn.Linear(c[4] * small * small, classes), vth, u, leak)


@register("spide-mlp")
def spide_mlp(**kw) -> FeedbackSNN:
    return feedback_mlp("spide", **kw)


@register("spide-conv")
def spide_conv(**kw) -> FeedbackSNN:
    return feedback_conv("spide", **kw)


@register("spide-f")
def spide_f(**kw) -> FeedbackSNN:
    return feedback_f("spide", **kw)


@register("ide-mlp")
def ide_mlp(**kw) -> FeedbackSNN:
    return feedback_mlp("ide", **kw)


@register("ide-conv")
def ide_conv(**kw) -> FeedbackSNN:
    return feedback_conv("ide", **kw)


@register("ide-f")
def ide_f(**kw) -> FeedbackSNN:
    return feedback_f("ide", **kw)
