"""Single-time-step SNN after Yao, Wu, Chen & Zhang (ACML 2023): a deployable interpretation.

The official code (iverss1/ACML_SNN) is not retrievable; its README shows a Sequencer2D-like
network (stem conv k2 s2, token mixing by bidirectional recurrent ``SNN2D`` along the image
axes, ``PatchMerging`` with a Linear reduction) run for a single time step. The recurrence is
spatial: it scans along rows and columns, not time. Our interpretation, every choice documented
in ``docs/methods.md``:

* **Token mixer** (:class:`AxisRecurrentMixer`). A recurrent spiking layer along an image axis
  computes ``h[p] = IF(P z[p] + R h[p - 1])`` position by position. We unroll it into ``K``
  feed-forward iterations over the whole map: ``h_1 = IF(P z)``,
  ``h_k = IF(P z + R * h_{k-1})`` where ``R = R_w + R_h`` is the sum of a ``1x3`` convolution
  (left and right neighbours: both directions along the width) and a ``3x1`` one (along the
  height), stored as one plus-shaped 3x3 kernel (:class:`AxisConv`). After ``k`` iterations
  information has travelled ``k`` tokens along each axis, as ``k`` steps of a bidirectional
  scan would. ``P`` (1x1) is the projection that merges the stimulus with the recurrent input;
  ``P`` and ``R`` are shared by all iterations.
* **Alignment.** On hardware every synapse layer delays by one step; the stimulus is relayed
  through identity synapses and unit-threshold copies (:class:`Relay`) so that ``P z`` and
  ``R h_{k-1}`` arrive together. No layer has a bias or BatchNorm: with a single input step a
  bias would be integrated on every step of the run, not once.
* **Channel MLP** 1x1 conv -> IF -> 1x1 conv -> IF; **PatchMerging** = Linear on each 2x2 patch
  = a 2x2 stride-2 convolution; no residual additions (they would need delay alignment too).
* **Readout.** ``avg pool -> Linear -> readout``: an IF with reset by subtraction. Training
  uses its input current (T = 1) as logits; deployed, the image is shown for one step and the
  readout neuron, holding that current, fires ``floor(current / threshold)`` spikes over the
  following steps (the read-out window). Hidden neurons fire at most once.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as snn
from ..quantize.qat import GridGroup
from . import register
from .dsr import IdentityConv

TD = snn.TimeDistributed


class Relay(nn.Module):
    """Identity synapse + IF(threshold 0.5, reset to 0): copies binary spikes one layer deeper.

    Straight-through gradient, so relaying does not attenuate the backward pass.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.syn = TD(IdentityConv(channels))
        self.sn = snn.IF(threshold=0.5, reset="zero", surrogate=snn.StraightThrough(1.0))

    def forward(self, z):
        return self.sn(self.syn(z))


class AxisConv(nn.Conv2d):
    """3x3 convolution restricted to the horizontal and vertical neighbours (a plus shape).

    It equals the sum of a 1x3 convolution along the width and a 3x1 one along the height (the
    centre tap is their two centre taps added). Kept as a square kernel because NIR infers conv
    output shapes from square kernels only. The four corner taps start at zero and their
    gradients are masked, so they stay exactly zero and the layer exports as a plain Conv2d.
    """

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1, bias=False)
        mask = torch.zeros(1, 1, 3, 3)
        mask[..., 1, :] = 1
        mask[..., :, 1] = 1
        self.register_buffer("axis_mask", mask)
        with torch.no_grad():
            self.weight.mul_(mask)
        self.weight.register_hook(lambda g: g * self.axis_mask)


class AxisRecurrentMixer(nn.Module):
    """Two-direction recurrence along both image axes, unrolled into ``iters`` layers."""

    def __init__(self, channels: int, iters: int, threshold: float, surrogate):
        super().__init__()
        if iters < 1:
            raise ValueError("iters must be >= 1")
        c = channels
        self.proj = TD(nn.Conv2d(c, c, 1, bias=False))
        self.rec = TD(AxisConv(c))
        self.h = nn.ModuleList(snn.IF(threshold=threshold, reset="zero", surrogate=surrogate)
                               for _ in range(iters))
        self.relay = nn.ModuleList(Relay(c) for _ in range(iters - 1))

    def forward(self, z):
        h = self.h[0](self.proj(z))
        for k in range(1, len(self.h)):
            z = self.relay[k - 1](z)
            h = self.h[k](self.proj(z) + self.rec(h))
        return h


class SequencerBlock(nn.Module):
    def __init__(self, channels: int, iters: int, mlp_ratio: int, threshold: float, surrogate):
        super().__init__()
        c, hid = channels, channels * mlp_ratio
        self.mixer = AxisRecurrentMixer(c, iters, threshold, surrogate)
        self.fc1 = TD(nn.Conv2d(c, hid, 1, bias=False))
        self.sn1 = snn.IF(threshold=threshold, reset="zero", surrogate=surrogate)
        self.fc2 = TD(nn.Conv2d(hid, c, 1, bias=False))
        self.sn2 = snn.IF(threshold=threshold, reset="zero", surrogate=surrogate)

    def forward(self, x):
        return self.sn2(self.fc2(self.sn1(self.fc1(self.mixer(x)))))


class SingleStepSequencer(nn.Module):
    """``stem -> [block, merge] * (n-1) -> block -> pool -> flatten -> fc -> readout``."""

    def __init__(self, in_channels=3, size=32, classes=10, width=48, depths=(4, 2),
                 mlp_ratio=2, threshold=1.0, readout_threshold=1.0):
        super().__init__()
        sur = snn.ATan()
        self.stem = TD(nn.Conv2d(in_channels, width, 2, stride=2, bias=False))
        self.stem_sn = snn.IF(threshold=threshold, reset="zero", surrogate=sur)
        side, c = size // 2, width
        blocks, merges = [], []
        for i, k in enumerate(depths):
            blocks.append(SequencerBlock(c, k, mlp_ratio, threshold, sur))
            if i < len(depths) - 1:
                merges.append(nn.Sequential(TD(nn.Conv2d(c, 2 * c, 2, stride=2, bias=False)),
                                            snn.IF(threshold=threshold, reset="zero",
                                                   surrogate=sur)))
                c, side = 2 * c, side // 2
        self.blocks = nn.ModuleList(blocks)
        self.merges = nn.ModuleList(merges)
        self.pool = TD(nn.AvgPool2d(side))
        self.flat = TD(nn.Flatten())
        self.fc = TD(nn.Linear(c, classes, bias=False))
        self.readout = snn.IF(threshold=readout_threshold, reset="subtract")

    def forward(self, x):
        x = self.stem_sn(self.stem(x))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.merges):
                x = self.merges[i](x)
        return self.readout(self.fc(self.flat(self.pool(x))))

    def grid_groups(self) -> list[GridGroup]:
        """The weights into each neuron layer, for quantization-aware fine-tuning
        (:mod:`neurodeploy.quantize.qat`).

        A mixer's ``proj`` feeds every iteration ``h_k`` but its ``rec`` only ``h_1`` on, so
        ``proj`` sets the channel scales and ``rec`` is clamped to them. The average pool is
        folded into ``fc`` (``w_eff = w / side^2``).
        """

        def th(sn) -> float:
            return float(sn.effective_threshold())

        groups = [GridGroup("stem", [self.stem.module.weight], th(self.stem_sn),
                            [self.stem_sn.gain])]
        for i, block in enumerate(self.blocks):
            mx = block.mixer
            groups.append(GridGroup(f"blocks.{i}.mixer", [mx.proj.module.weight,
                                                          mx.rec.module.weight],
                                    th(mx.h[0]), [mx.h[0].gain] * 2, ref=1))
            groups.append(GridGroup(f"blocks.{i}.fc1", [block.fc1.module.weight], th(block.sn1),
                                    [block.sn1.gain]))
            groups.append(GridGroup(f"blocks.{i}.fc2", [block.fc2.module.weight], th(block.sn2),
                                    [block.sn2.gain]))
            if i < len(self.merges):
                conv, sn = self.merges[i]
                groups.append(GridGroup(f"merges.{i}", [conv.module.weight], th(sn), [sn.gain]))
        k = self.pool.module.kernel_size
        area = k * k if isinstance(k, int) else k[0] * k[1]
        groups.append(GridGroup("fc", [self.fc.module.weight], th(self.readout),
                                [self.readout.gain / area]))
        return groups


@register("single-step-sequencer")
def single_step_sequencer(in_channels: int = 3, size: int = 32, classes: int = 10,
                          width: int = 48, depths=(4, 2), mlp_ratio: int = 2,
                          threshold: float = 1.0, readout_threshold: float = 1.0) -> nn.Module:
    """Single-step Sequencer-like SNN; ``depths[i]`` = unrolled recurrence iterations of stage i
    (stage ``i`` works on ``size / 2**(i+1)`` tokens per side)."""
    return SingleStepSequencer(in_channels, size, classes, width, tuple(depths), mlp_ratio,
                               threshold, readout_threshold)
