"""Surrogate gradients for the spike non-linearity.

The forward pass of every spiking neuron is the Heaviside step ``s = [x > 0]`` with
``x = v - threshold``. A *surrogate* replaces its zero-almost-everywhere derivative in the
backward pass. Surrogates are small objects with a ``grad(x)`` method so that training methods
can swap or schedule them (e.g. Dspike's temperature) without touching the neuron modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class Surrogate:
    """Base class: ``grad(x)`` returns d spike / d x evaluated at ``x = v - threshold``."""

    def grad(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must implement grad(x)")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFn.apply(x, self)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


@dataclass
class ATan(Surrogate):
    """Arctangent surrogate (Fang et al. 2021): d/dx [atan(pi/2 alpha x)/pi + 1/2]."""

    alpha: float = 2.0

    def grad(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x) ** 2)


@dataclass
class FastSigmoid(Surrogate):
    """Fast sigmoid (Zenke & Ganguli 2018, SuperSpike): 1 / (slope |x| + 1)^2."""

    slope: float = 25.0

    def grad(self, x):
        return 1.0 / (self.slope * x.abs() + 1.0) ** 2


@dataclass
class Rectangle(Surrogate):
    """Boxcar of the given width and unit area (used by LTL with width 0.4)."""

    width: float = 1.0

    def grad(self, x):
        return (x.abs() < self.width / 2).to(x.dtype) / self.width


@dataclass
class StraightThrough(Surrogate):
    """Straight-through estimator scaled by ``scale`` (Lee et al. 2020 use 1/Vth)."""

    scale: float = 1.0

    def grad(self, x):
        return torch.full_like(x, self.scale)


@dataclass
class Dspike(Surrogate):
    """Dspike (Li et al., NeurIPS 2021): b / (2 tanh(b/2)) sech^2(b x) on |x| <= 0.5, else 0.

    ``b`` is the temperature; it is a plain attribute so a training schedule can change it.
    """

    b: float = 3.0

    def grad(self, x):
        b = float(self.b)
        inside = (x.abs() <= 0.5).to(x.dtype)
        return inside * b / (2 * math.tanh(b / 2)) / torch.cosh(b * x) ** 2


SURROGATES = {
    "atan": ATan,
    "fast_sigmoid": FastSigmoid,
    "rectangle": Rectangle,
    "straight_through": StraightThrough,
    "dspike": Dspike,
}
