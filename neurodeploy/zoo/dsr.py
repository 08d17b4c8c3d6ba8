"""Architectures of the DSR paper (PreAct-ResNet, VGG) and the spiking ResNet used by Dspike and
Shortcut back-propagation.

Module names follow the official DSR code (``conv1``, ``layer1.0.bn1``, ``layer1.0.relu1``, ...,
``classifier.1``) so official checkpoints map onto them key by key
(:mod:`neurodeploy.zoo.loaders`); every stateless layer is wrapped in ``TimeDistributed`` (its
keys gain ``.module``) and DSR's ``Vth`` is our neuron's ``threshold``.

Width and depth are parameters, so the tiny versions that train on 8x8 digits in a minute share
the code of the full-size models.

An identity shortcut is an explicit frozen 1x1 convolution with identity weights
(:class:`IdentityConv`). In a pre-activation block the BatchNorm of the next block acts on the
sum ``conv2(...) + shortcut``; folding it needs a synapse on both terms, and on hardware a
per-channel 1x1 synapse is far cheaper than the dense identity matrix the lowering would otherwise
insert for a neuron-to-neuron edge.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as snn
from ..nn.dsr import DSRIF, DSRLIF
from . import register

TD = snn.TimeDistributed


class IdentityConv(nn.Conv2d):
    """1x1 convolution fixed to the identity (weight is a buffer, not trained)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 1, bias=False)
        del self.weight
        self.register_buffer("weight", torch.eye(channels).reshape(channels, channels, 1, 1))


class AvgPoolConv(nn.Conv2d):
    """``AvgPool2d(k)`` as a fixed ``k x k``, stride-``k`` convolution (weight is a buffer).

    Used where average pooling feeds a neuron directly (DSR's ``relu1 -> pool -> relu2``), so
    the pooling is itself a synapse layer on hardware.
    """

    def __init__(self, channels: int, k: int):
        super().__init__(channels, channels, k, stride=k, bias=False)
        del self.weight
        w = torch.eye(channels).reshape(channels, channels, 1, 1).repeat(1, 1, k, k) / (k * k)
        self.register_buffer("weight", w)


def _dsr_neuron(neuron: str, vth: float, alpha: float, vth_bound: float, tau: float, dt: float,
                learn_vth: bool, readout: bool = False):
    if neuron == "if":
        return DSRIF(vth, alpha, vth_bound, learn_vth, readout)
    if neuron == "lif":
        return DSRLIF(vth, alpha, tau, dt, vth_bound, learn_vth, readout)
    raise ValueError(f"neuron must be 'if' or 'lif', got {neuron!r}")


class PreActBlock(nn.Module):
    """``s = relu1(bn1(x)); out = conv2(dropout(relu2(bn2(conv1(s))))) + shortcut(s)``."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float, make_neuron):
        super().__init__()
        self.bn1 = TD(nn.BatchNorm2d(cin))
        self.relu1 = make_neuron()
        self.conv1 = TD(nn.Conv2d(cin, cout, 3, stride, 1))
        self.bn2 = TD(nn.BatchNorm2d(cout))
        self.relu2 = make_neuron()
        self.dropout = TD(nn.Dropout(dropout))
        self.conv2 = TD(nn.Conv2d(cout, cout, 3, 1, 1))
        if stride != 1 or cin != cout:
            self.shortcut = TD(nn.Conv2d(cin, cout, 1, stride, 0))
        else:
            self.shortcut = TD(IdentityConv(cin))

    def forward(self, x):
        s = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(s)))))
        return out + self.shortcut(s)


class DSRPreActResNet(nn.Module):
    """DSR's PreAct-ResNet; input ``[T, B, C, H, W]`` (direct input: the image every step).

    Output: unit spikes ``[T, B, classes]`` of the spiking readout ``linear -> bn2 -> relu3``;
    DSR's logits are their (time-weighted, for LIF) rate times ``relu3.spike_value()``. The head's
    ``pool`` is an :class:`AvgPoolConv` (official: ``AvgPool2d``, no parameters).
    """

    def __init__(self, in_channels=3, classes=10, width=64, blocks=(2, 2, 2, 2), pool=4,
                 neuron="if", vth=0.3, alpha=0.3, vth_bound=5e-4, tau=1.0, dt=0.05,
                 dropout=0.0, learn_vth=True):
        super().__init__()
        self.neuron_type, self.tau, self.dt = neuron, float(tau), float(dt)

        def make(readout=False):
            return _dsr_neuron(neuron, vth, alpha, vth_bound, tau, dt, learn_vth, readout)

        self.conv1 = TD(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False))
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            stage = [PreActBlock(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0
                                 else 1, dropout, make) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            cin = cout
        self.n_stages = len(blocks)
        self.bn1 = TD(nn.BatchNorm2d(cin))
        self.relu1 = make()
        self.pool = TD(AvgPoolConv(cin, pool))
        self.relu2 = make()
        self.flat = TD(nn.Flatten())
        self.drop = TD(nn.Dropout(dropout))
        self.linear = TD(nn.Linear(cin, classes))
        self.bn2 = TD(nn.BatchNorm1d(classes))
        self.relu3 = make(readout=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, (IdentityConv, AvgPoolConv)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.conv1(x)
        for i in range(self.n_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = self.relu2(self.pool(self.relu1(self.bn1(out))))
        return self.relu3(self.bn2(self.linear(self.drop(self.flat(out)))))


@register("dsr-preact-resnet18")
def dsr_preact_resnet18(in_channels: int = 3, classes: int = 10, width: int = 64,
                        blocks=(2, 2, 2, 2), pool: int = 4, neuron: str = "if",
                        vth: float = 0.3, alpha: float = 0.3, vth_bound: float = 5e-4,
                        tau: float = 1.0, dt: float = 0.05, dropout: float = 0.0,
                        learn_vth: bool = True) -> nn.Module:
    """DSR PreAct-ResNet-18 (CIFAR: 3x32x32, pool 4); ``width``/``blocks`` shrink it.

    Stage ``i`` has ``width * 2**i`` channels and ``blocks[i]`` blocks; stages after the first
    halve the resolution; ``pool`` is the side of the final feature map (AvgPool to 1x1).
    """
    return DSRPreActResNet(in_channels, classes, width, tuple(blocks), pool, neuron, vth, alpha,
                           vth_bound, tau, dt, dropout, learn_vth)


VGG11_STAGES = ((64,), (128,), (256, 256), (512, 512), (512, 512))


class DSRVGG(nn.Module):
    """DSR's VGG: stages of ``conv -> BN -> neuron -> dropout`` ending in AvgPool2d(2), then
    ``classifier = (Flatten, Linear, BatchNorm1d, neuron)``.

    The official model applies ``AdaptiveAvgPool2d((7, 7))`` to the final 1x1 map of 48x48 DVS
    input, which only replicates it; that is folded into the Linear (:mod:`.loaders`), so here
    the Linear reads the final map directly.
    """

    def __init__(self, in_channels=2, size=48, classes=10, stages=VGG11_STAGES, neuron="if",
                 vth=0.3, alpha=0.3, vth_bound=5e-4, tau=1.0, dt=0.05, dropout=0.1,
                 learn_vth=True):
        super().__init__()
        self.neuron_type, self.tau, self.dt = neuron, float(tau), float(dt)
        cin, side = in_channels, size
        for i, stage in enumerate(stages):
            layers: list[nn.Module] = []
            for c in stage:
                layers += [TD(nn.Conv2d(cin, c, 3, padding=1)), TD(nn.BatchNorm2d(c)),
                           _dsr_neuron(neuron, vth, alpha, vth_bound, tau, dt, learn_vth),
                           TD(nn.Dropout(dropout))]
                cin = c
            layers.append(TD(nn.AvgPool2d(2, 2)))
            side //= 2
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.n_stages = len(stages)
        self.final_side = side
        self.classifier = nn.Sequential(
            TD(nn.Flatten()), TD(nn.Linear(cin * side * side, classes)),
            TD(nn.BatchNorm1d(classes)),
            _dsr_neuron(neuron, vth, alpha, vth_bound, tau, dt, learn_vth, readout=True))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.classifier(x)


@register("dsr-vgg11")
def dsr_vgg11(in_channels: int = 2, size: int = 48, classes: int = 10, width: int = 64,
              n_stages: int = 5, neuron: str = "if", vth: float = 0.3, alpha: float = 0.3,
              vth_bound: float = 5e-4, tau: float = 1.0, dt: float = 0.05, dropout: float = 0.1,
              learn_vth: bool = True) -> nn.Module:
    """DSR VGG-11 (CIFAR10-DVS: 2x48x48); channels scale by ``width/64``, ``n_stages`` of 5."""
    stages = tuple(tuple(max(1, c * width // 64) for c in s) for s in VGG11_STAGES[:n_stages])
    return DSRVGG(in_channels, size, classes, stages, neuron, vth, alpha, vth_bound, tau, dt,
                  dropout, learn_vth)


class BasicBlock(nn.Module):
    """Post-activation spiking block: ``sn2(bn2(conv2(sn1(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, cin, cout, stride, make_neuron):
        super().__init__()
        self.conv1 = TD(nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
        self.bn1 = TD(nn.BatchNorm2d(cout))
        self.sn1 = make_neuron()
        self.conv2 = TD(nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.bn2 = TD(nn.BatchNorm2d(cout))
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(TD(nn.Conv2d(cin, cout, 1, stride, bias=False)),
                                          TD(nn.BatchNorm2d(cout)))
        else:
            self.shortcut = TD(IdentityConv(cin))
        self.sn2 = make_neuron()

    def forward(self, x):
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        return self.sn2(out + self.shortcut(x))


class SpikingResNet(nn.Module):
    """Spiking ResNet (conv-BN-LIF, post-activation) with an integrating readout.

    ``stem -> stages -> AvgPool -> Flatten -> fc -> readout``. ``readout`` is a subtractive IF
    whose spike count tracks the summed ``fc`` current; training uses that current's mean over
    time as logits (:func:`neurodeploy.train.common.readout_logits`). ``stages()`` yields the
    stage outputs for auxiliary branches (Shortcut back-propagation).
    """

    def __init__(self, in_channels=3, classes=10, width=64, blocks=(2, 2, 2, 2), pool=4,
                 beta=0.5, threshold=1.0, reset="zero", surrogate=None, readout_threshold=1.0):
        super().__init__()
        surrogate = surrogate if surrogate is not None else snn.ATan()

        def make():
            return snn.LIF(beta=beta, threshold=threshold, reset=reset, surrogate=surrogate)

        self.conv1 = TD(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False))
        self.bn1 = TD(nn.BatchNorm2d(width))
        self.sn1 = make()
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            setattr(self, f"layer{i + 1}", nn.Sequential(*[
                BasicBlock(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1,
                           make) for j in range(n)]))
            cin = cout
        self.n_stages = len(blocks)
        self.channels = [width * 2 ** i for i in range(len(blocks))]
        self.pool = TD(nn.AvgPool2d(pool))
        self.flat = TD(nn.Flatten())
        self.fc = TD(nn.Linear(cin, classes))
        self.readout = snn.IF(threshold=readout_threshold, reset="subtract")

    def forward(self, x):
        out = self.sn1(self.bn1(self.conv1(x)))
        for i in range(self.n_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        return self.readout(self.fc(self.flat(self.pool(out))))


@register("spiking-resnet")
def spiking_resnet(in_channels: int = 3, classes: int = 10, width: int = 64,
                   blocks=(2, 2, 2, 2), pool: int = 4, beta: float = 0.5, threshold: float = 1.0,
                   reset: str = "zero", surrogate: str = "atan", surrogate_kwargs=None,
                   readout_threshold: float = 1.0) -> nn.Module:
    """Spiking ResNet-18 layout (Dspike, Shortcut back-prop); ``width``/``blocks`` shrink it.

    All LIF layers share one surrogate object, so a schedule (Dspike's temperature) changes
    every layer at once.
    """
    sur = snn.SURROGATES[surrogate](**dict(surrogate_kwargs or {}))
    return SpikingResNet(in_channels, classes, width, tuple(blocks), pool, beta, threshold,
                         reset, sur, readout_threshold)
