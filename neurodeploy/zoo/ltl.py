"""LTL (Local Tandem Learning, Yang et al., NeurIPS 2022) architectures: the spiking VGG and its
ANN teacher.

SNN (official ``SpikingCNN``): conv/linear layers with bias, no BN, no pooling (stride-2 convs
downsample), LIF ``u = u * decay * (1 - s) + W x`` with ``decay = exp(-1/10)``, fire
``u > 0.6``, boxcar surrogate of height 1 on ``|u - 0.6| < 0.2``. The output layer is
non-spiking in the paper (prediction = mean over T of ``fc11(spikes)``); here ``fc11`` feeds an
integrating IF ``readout`` whose spike count tracks that mean, so the hardware can read it.

Layer names match the official checkpoints: ``conv1 ... conv8, fc9, fc10, fc11`` (numbered
consecutively for other depths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as snn
from . import register

TD = snn.TimeDistributed
VGG11_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)
VGG11_STRIDES = (1, 2, 1, 2, 1, 2, 1, 2)


@dataclass
class LTLBoxcar(snn.Rectangle):
    """LTL's boxcar: ``1[|x| < width/2]`` (height 1, unlike the unit-area :class:`Rectangle`)."""

    width: float = 0.4

    def grad(self, x):
        return (x.abs() < self.width / 2).to(x.dtype)


def _sides(size: int, strides) -> list[int]:
    out, s = [], size
    for st in strides:
        s = (s + 2 - 3) // st + 1
        out.append(s)
    return out


class LTLNet(nn.Module):
    """The LTL spiking VGG. ``stages()`` lists ``(name, synapse, neuron)`` in order, so the LTL
    trainer can run each layer on a detached input; ``forward`` is the plain chained network."""

    def __init__(self, in_channels=3, size=32, classes=10, channels=VGG11_CHANNELS,
                 strides=VGG11_STRIDES, hidden=(512, 512), threshold=0.6, tau=10.0,
                 readout_threshold=1.0):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError("channels and strides need one entry per conv layer")
        decay = math.exp(-1.0 / tau)

        def lif():
            return snn.LIF(beta=decay, threshold=threshold, reset="zero",
                           surrogate=LTLBoxcar(0.4), detach_reset=False)

        self.names: list[tuple[str, str]] = []
        cin, k = in_channels, 0
        for c, st in zip(channels, strides, strict=True):
            k += 1
            setattr(self, f"conv{k}", TD(nn.Conv2d(cin, c, 3, stride=st, padding=1)))
            setattr(self, f"sn{k}", lif())
            self.names.append((f"conv{k}", f"sn{k}"))
            cin = c
        self.n_conv = k
        side = _sides(size, strides)[-1] if strides else size
        self.flat = TD(nn.Flatten())
        fin = cin * side * side
        for hdim in hidden:
            k += 1
            setattr(self, f"fc{k}", TD(nn.Linear(fin, hdim)))
            setattr(self, f"sn{k}", lif())
            self.names.append((f"fc{k}", f"sn{k}"))
            fin = hdim
        k += 1
        self.out_name = f"fc{k}"
        setattr(self, self.out_name, TD(nn.Linear(fin, classes)))
        self.readout = snn.IF(threshold=readout_threshold, reset="subtract")

    def stages(self):
        return [(syn, getattr(self, syn), getattr(self, sn)) for syn, sn in self.names]

    def forward(self, x):
        for i, (_, syn, neuron) in enumerate(self.stages()):
            if i == self.n_conv:
                x = self.flat(x)
            x = neuron(syn(x))
        if self.n_conv == len(self.names):
            x = self.flat(x)
        return self.readout(getattr(self, self.out_name)(x))


@register("ltl-vgg11")
def ltl_vgg11(in_channels: int = 3, size: int = 32, classes: int = 10,
              channels=VGG11_CHANNELS, strides=VGG11_STRIDES, hidden=(512, 512),
              threshold: float = 0.6, tau: float = 10.0, readout_threshold: float = 1.0
              ) -> nn.Module:
    """LTL spiking VGG-11 (CIFAR: 3x32x32); shorter ``channels``/``strides`` give tiny nets."""
    return LTLNet(in_channels, size, classes, tuple(channels), tuple(strides), tuple(hidden),
                  threshold, tau, readout_threshold)


class ReLUX(nn.Module):
    """ReLU clipped at ``max_value`` (LTL's teacher uses 2)."""

    def __init__(self, max_value: float = 2.0):
        super().__init__()
        self.max_value = float(max_value)

    def forward(self, x):
        return x.clamp(0.0, self.max_value)


class LTLTeacher(nn.Module):
    """ANN teacher (official ``CNN_ReluX``): conv/linear + BN + ReLUX(2) with the SNN's shapes.

    ``forward(x [B, ...]) -> (hidden activations, logits)``; dropout 0.2 before the Linears.
    """

    def __init__(self, in_channels=3, size=32, classes=10, channels=VGG11_CHANNELS,
                 strides=VGG11_STRIDES, hidden=(512, 512), clip=2.0, dropout=0.2):
        super().__init__()
        layers, cin = [], in_channels
        for c, st in zip(channels, strides, strict=True):
            layers.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=st, padding=1),
                                        nn.BatchNorm2d(c, eps=1e-4, momentum=0.1)))
            cin = c
        side = _sides(size, strides)[-1] if strides else size
        fin = cin * side * side
        for hdim in hidden:
            layers.append(nn.Sequential(nn.Linear(fin, hdim),
                                        nn.BatchNorm1d(hdim, eps=1e-4, momentum=0.1)))
            fin = hdim
        self.layers = nn.ModuleList(layers)
        self.n_conv = len(channels)
        self.out = nn.Linear(fin, classes)
        self.act = ReLUX(clip)
        self.dropout = float(dropout)

    def forward(self, x) -> tuple[list[torch.Tensor], torch.Tensor]:
        acts = []
        for i, layer in enumerate(self.layers):
            if i == self.n_conv:
                x = x.flatten(1)
            if i >= self.n_conv:
                x = F.dropout(x, self.dropout, self.training)
            x = self.act(layer(x))
            acts.append(x)
        if self.n_conv == len(self.layers):
            x = x.flatten(1)
        return acts, self.out(F.dropout(x, self.dropout, self.training))
