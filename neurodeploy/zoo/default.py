"""The bundled default architecture."""

from __future__ import annotations

from torch import nn

from .. import nn as snn
from . import register


@register("dvs-cnn")
def dvs_cnn(in_channels: int = 2, size: int = 34, classes: int = 10, c1: int = 8, c2: int = 16,
            beta: float = 0.9, threshold: float = 1.0) -> nn.Module:
    """The bundled default: a 3-layer spiking CNN for 34x34 two-polarity event frames.

    conv 5x5/2 -> LIF -> conv 3x3/2 -> LIF -> flatten -> linear -> IF (spike-count readout).
    Reset by subtraction everywhere, so firing rates track the input currents.
    """
    s1 = (size + 2 * 2 - 5) // 2 + 1
    s2 = (s1 + 2 * 1 - 3) // 2 + 1
    return snn.multistep(nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, stride=2, padding=2),
        snn.LIF(beta=beta, threshold=threshold, reset="subtract"),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1),
        snn.LIF(beta=beta, threshold=threshold, reset="subtract"),
        nn.Flatten(),
        nn.Linear(c2 * s2 * s2, classes),
        snn.IF(threshold=threshold, reset="subtract"),
    ))
