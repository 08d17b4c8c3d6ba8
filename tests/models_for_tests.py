"""Small torch SNNs covering the exporter's layer catalogue (shared by several tests)."""

from __future__ import annotations

import torch
from torch import nn

import neurodeploy.nn as snn


def conv3(seed: int = 0, reset: str = "subtract") -> nn.Module:
    """A 3-layer conv net: conv -> LIF -> conv -> LIF -> flatten -> linear -> IF."""
    torch.manual_seed(seed)
    m = snn.multistep(nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), snn.LIF(beta=0.8, threshold=0.6, reset=reset),
        nn.Conv2d(4, 6, 3, padding=1), snn.LIF(beta=0.9, threshold=0.8, reset=reset),
        nn.Flatten(), nn.Linear(6 * 5 * 5, 5), snn.IF(threshold=1.0, reset=reset),
    ))
    for p in m.parameters():
        p.data.normal_(0, 0.5)
    return m.double().eval()


class Residual(nn.Module):
    """BN folding, residual add, avg-pool -> sum-pool + scale, spike amplitude != 1."""

    def __init__(self):
        super().__init__()
        td = snn.TimeDistributed
        self.c1, self.b1 = td(nn.Conv2d(2, 4, 3, padding=1)), td(nn.BatchNorm2d(4))
        self.n1 = snn.LIF(beta=0.9, threshold=0.5, spike_amplitude="threshold")
        self.c2, self.sc = td(nn.Conv2d(4, 4, 3, padding=1)), td(nn.Conv2d(4, 4, 1))
        self.b2 = td(nn.BatchNorm2d(4))
        self.n2 = snn.IF(threshold=0.7, reset="zero")
        self.pool, self.fl = td(nn.AvgPool2d(2)), td(nn.Flatten())
        self.drop = td(nn.Dropout(0.2))
        self.fc, self.n3 = td(nn.Linear(4 * 4 * 4, 3)), snn.IF(threshold=1.0)

    def forward(self, x):
        a = self.n1(self.b1(self.c1(x)))
        y = self.n2(self.b2(self.c2(a) + self.sc(a)))
        return self.n3(self.fc(self.drop(self.fl(self.pool(y)))))


def residual(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = Residual()
    for p in m.parameters():
        p.data.normal_(0, 0.6)
    for bn in (m.b1.module, m.b2.module):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return m.double().eval()


def spikes(T: int, B: int, shape, p: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B, *shape), generator=g) < p).double()
