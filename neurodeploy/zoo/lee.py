"""Architectures of Lee et al. 2020, "Enabling Spike-Based Backpropagation"
(chan8972/Enabling_Spikebased_Backpropagation; ``/work/shared/notes/seed-methods.md`` §4).

Neuron (:class:`LeeLIF`)::

    u += W s_in;  s = [u > Vth];  u = 0 where s (hard reset);  u *= leak   (leak = 0.99)

This is exactly our LIF with ``beta = leak``, threshold ``Vth`` and reset to zero: writing
``w_t`` for the membrane after the reset and before the leak, Lee's next step compares
``leak w_(t-1) + I_t`` with ``Vth`` and our LIF compares ``beta v_(t-1) + I_t``; both keep
``w_t = v_t`` (Lee's *stored* membrane is ``leak v_t``, which is never observed). So the
spikes are identical step by step and the exporter writes a plain NIR LIF (``reset="zero"``).

Gradient (Lee's approximate derivative, our reading of the notes):

* the spike non-linearity is a straight-through estimator masked to the steps that fired and
  scaled by ``1/Vth``;
* the leak is excluded from the gradient: the membrane passes gradient to earlier steps with
  factor 1 (through the hard reset's ``1 - s`` only), so an input current receives the
  gradient of the next spike it contributed to;
* every step's spike gradient is multiplied by ``NG = 1[a_leak > 1e-3] + ln(leak) a_leak/a_tot``
  with the leaky count ``a_leak = sum_t leak^(T-1-t) s_t`` and the count ``a_tot`` of the whole
  window (the leak correction).

"Pooling neurons": after each ``AvgPool2d(2)`` a non-leaky IF with threshold 0.75 (reset to
zero, same masked STE). The pool is a fixed ``2x2``/stride-2 convolution
(:class:`neurodeploy.zoo.dsr.AvgPoolConv`) so that it is itself a synapse layer on hardware.
Layers have no bias and no BatchNorm.

Readout: Lee's output layer is a non-spiking leaky accumulator ``u_out = leak u_out + fc1(s)``,
logits ``u_out(T) / Vth / T`` (trained with MSE against one-hot targets). Our runtime reads
spike counts, so the deployed model ends in an integrating IF (``readout``, reset by
subtraction) fed by the same ``fc1`` current; its threshold is calibrated after training so
the count (about ``sum_t I_t / theta``) does not saturate. The IF does not leak: its count
weighs all steps equally where Lee's accumulator weighs step ``t`` by ``leak^(T-1-t)``
(0.83..1 at T = 20), so the two rankings can differ slightly.

Architectures (width parameters; module names follow the official keys ``cnn11``, ``cnn12``,
..., ``shortcut1.0``, ``fc0``, ``fc1``; stateless layers are wrapped in ``TimeDistributed`` so
their keys gain ``.module``):

* ``lee-vgg9``: stages of ``convs[i]`` 3x3 convolutions of ``widths[i]`` channels, each stage
  followed by pool + pooling neuron; then ``fc0`` (hidden) and ``fc1`` (classes). The paper's
  VGG9 is ``widths=(64, 128, 256)``, ``convs=(2, 2, 3)``, ``fc=1024``.
* ``lee-resnet11``: a pre-processing convolution ``cnn11`` + pool, then residual blocks
  ``b = 2..``: ``cnn{b}1`` (stride 1 in the first block, 2 after) -> LIF -> ``cnn{b}2``, whose
  current is summed with the shortcut current ``shortcut{b-1}.0`` (a 1x1 convolution on the
  block's input spikes) in one LIF; then ``fc0``, ``fc1``. The paper's stage plan is not in
  our notes; the names follow the official convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import nn as snn
from ..nn.surrogate import Surrogate
from . import register
from .dsr import AvgPoolConv

TD = snn.TimeDistributed


@dataclass
class FiredSTE(Surrogate):
    """Straight-through gradient ``scale`` on the steps that fired (``x = v - Vth > 0``)."""

    scale: float = 1.0

    def grad(self, x):
        return (x > 0).to(x.dtype) * self.scale


def leak_correction(s: torch.Tensor, leak: float) -> torch.Tensor:
    """``NG = 1[a_leak > 1e-3] + ln(leak) a_leak / a_tot`` per neuron from spikes ``[T, ...]``."""
    T = s.shape[0]
    w = torch.tensor([leak ** (T - 1 - t) for t in range(T)], dtype=s.dtype)
    a_leak = (s * w.reshape(-1, *([1] * (s.dim() - 1)))).sum(0)
    a_tot = s.sum(0)
    ratio = torch.where(a_tot > 0, a_leak / a_tot.clamp_min(1), torch.zeros_like(a_tot))
    return (a_leak > 1e-3).to(s.dtype) + math.log(leak) * ratio


def lee_dynamics(neuron: snn.SpikingNeuron, x: torch.Tensor, leak: float) -> torch.Tensor:
    """Lee et al.'s forward (see the module docstring) with their gradient."""
    theta = neuron.effective_threshold()
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        # value: leak * v; gradient: identity (the leak is excluded from the gradient)
        v = v + (leak - 1.0) * v.detach() + x[t]
        s = neuron.surrogate(v - theta)
        v = v * (1 - s.detach())
        out.append(s)
    s = torch.stack(out)
    ng = leak_correction(s.detach(), leak)
    return s.detach() + (s - s.detach()) * ng


class LeeLIF(snn.LIF):
    """Lee et al.'s LIF: forward equals ``LIF(beta=leak, reset="zero")``; Lee's gradient."""

    def __init__(self, threshold: float = 1.0, leak: float = 0.99):
        super().__init__(beta=leak, threshold=threshold, reset="zero",
                         surrogate=FiredSTE(1.0 / threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lee_dynamics(self, x, self.beta)


class LeePoolIF(snn.IF):
    """Lee et al.'s pooling neuron: non-leaky IF, threshold 0.75, reset to zero."""

    def __init__(self, threshold: float = 0.75):
        super().__init__(threshold=threshold, reset="zero", surrogate=FiredSTE(1.0 / threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lee_dynamics(self, x, 1.0)


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Module:
    return TD(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False))


class _LeeNet(nn.Module):
    """Shared head: ``fc0 -> LIF -> fc1 -> readout IF``; ``leak``/``vth`` kept for the loss."""

    def init_weights(self, gain: float) -> None:
        """Trained weights ~ N(0, (gain Vth)^2 / fan_in): with ``gain = 2`` every layer fires at
        initialisation (the masked straight-through gradient is zero for a silent layer). The
        official initialisation is not in our notes; loaded weights replace this anyway."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(m.weight, nn.Parameter):
                nn.init.normal_(m.weight, 0.0, gain * self.vth / math.sqrt(m.weight[0].numel()))

    def _head(self, n_in: int, fc: int, classes: int, vth: float, leak: float,
              readout_threshold: float) -> None:
        self.flatten = TD(nn.Flatten())
        self.fc0 = TD(nn.Linear(n_in, fc, bias=False))
        self.lif_fc0 = LeeLIF(vth, leak)
        # fc1's bias stays 0 in training (Lee's layers have none); it only exists so that a
        # deployment may add one constant to every class current (the arg-max is unchanged)
        self.fc1 = TD(nn.Linear(fc, classes, bias=True))
        nn.init.zeros_(self.fc1.module.bias)
        self.fc1.module.bias.requires_grad_(False)
        self.readout = snn.IF(threshold=readout_threshold, reset="subtract")
        self.vth, self.leak = float(vth), float(leak)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.fc1(self.lif_fc0(self.fc0(self.flatten(x)))))


class LeeVGG(_LeeNet):
    def __init__(self, in_channels: int = 3, size: int = 32, classes: int = 10,
                 widths: Sequence[int] = (64, 128, 256), convs: Sequence[int] = (2, 2, 3),
                 fc: int = 1024, vth: float = 1.0, leak: float = 0.99, pool_vth: float = 0.75,
                 readout_threshold: float = 1.0, init_gain: float = 2.0):
        super().__init__()
        if len(widths) != len(convs):
            raise ValueError("widths and convs need one entry per stage")
        self.stages = len(widths)
        cin = in_channels
        for i, (w, n) in enumerate(zip(widths, convs, strict=True), start=1):
            for j in range(1, n + 1):
                setattr(self, f"cnn{i}{j}", _conv(cin, w))
                setattr(self, f"lif{i}{j}", LeeLIF(vth, leak))
                cin = w
            setattr(self, f"pool{i}", TD(AvgPoolConv(w, 2)))
            setattr(self, f"pool_lif{i}", LeePoolIF(pool_vth))
        self.convs = [int(n) for n in convs]
        side = size // 2 ** len(widths)
        self._head(cin * side * side, fc, classes, vth, leak, readout_threshold)
        self.init_weights(init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.stages + 1):
            for j in range(1, self.convs[i - 1] + 1):
                x = getattr(self, f"lif{i}{j}")(getattr(self, f"cnn{i}{j}")(x))
            x = getattr(self, f"pool_lif{i}")(getattr(self, f"pool{i}")(x))
        return self.head(x)


class LeeResNet(_LeeNet):
    def __init__(self, in_channels: int = 3, size: int = 32, classes: int = 10,
                 pre: int = 64, widths: Sequence[int] = (128, 256, 512, 512), fc: int = 1024,
                 vth: float = 1.0, leak: float = 0.99, pool_vth: float = 0.75,
                 readout_threshold: float = 1.0, init_gain: float = 2.0):
        super().__init__()
        self.cnn11 = _conv(in_channels, pre)
        self.lif11 = LeeLIF(vth, leak)
        self.pool1 = TD(AvgPoolConv(pre, 2))
        self.pool_lif1 = LeePoolIF(pool_vth)
        cin, side = pre, size // 2
        self.blocks = len(widths)
        for b, w in enumerate(widths, start=2):
            stride = 1 if b == 2 else 2
            setattr(self, f"cnn{b}1", _conv(cin, w, stride))
            setattr(self, f"lif{b}1", LeeLIF(vth, leak))
            setattr(self, f"cnn{b}2", _conv(w, w))
            setattr(self, f"shortcut{b - 1}", nn.Sequential(_conv(cin, w, stride, k=1)))
            setattr(self, f"lif{b}2", LeeLIF(vth, leak))
            cin, side = w, (side + stride - 1) // stride
        self._head(cin * side * side, fc, classes, vth, leak, readout_threshold)
        self.init_weights(init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool_lif1(self.pool1(self.lif11(self.cnn11(x))))
        for b in range(2, self.blocks + 2):
            h = getattr(self, f"lif{b}1")(getattr(self, f"cnn{b}1")(x))
            cur = getattr(self, f"cnn{b}2")(h) + getattr(self, f"shortcut{b - 1}")(x)
            x = getattr(self, f"lif{b}2")(cur)
        return self.head(x)


@register("lee-vgg9")
def lee_vgg9(**kw) -> LeeVGG:
    return LeeVGG(**kw)


@register("lee-resnet11")
def lee_resnet11(**kw) -> LeeResNet:
    return LeeResNet(**kw)
