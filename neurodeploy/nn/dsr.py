"""DSR neurons (Meng et al., CVPR 2022): spiking forward, rate-mapping backward.

Forward, over a whole window ``x: [T, B, ...]`` of input currents (membrane ``u`` from 0):

* IF:  ``u += x[t]``; ``s[t] = Vth [u >= alpha Vth]``; ``u -= s[t]``. Spikes have value ``Vth``.
* LIF: ``u = beta u + (1 - beta) x[t]`` with ``beta = exp(-dt/tau)``; fire and subtract the
  same way; spikes leave with value ``Vth/dt``.

Backward (DSR's "differentiation on spike representation"): no surrogate. The output is
treated as the firing-rate mapping of the input and that mapping is differentiated:

* IF: ``r = mean_t x``; ``dL/dx[t] = (1/T) sum_t' g[t']`` where ``0 <= r <= Vth``, else 0;
  ``dL/dVth = sum over r > Vth of sum_t' g[t']``.
* LIF: time-weighted means with ``w_i = exp(-(dt T - i dt)/tau)``, ``i = 1..T``:
  ``r = sum w x / sum w`` and ``G = T sum w g / sum w``; ``dL/dx[t] = G / (tau T)`` where
  ``0 < r < Vth tau/dt``; ``dL/dVth = dt * sum over r > Vth/dt of G`` (the reference code's
  form, not the analytic ``1/dt``; equal masks for the default ``tau = 1``).

Deployment: firing at ``alpha Vth`` and subtracting ``Vth`` is a neuron with threshold ``Vth``,
reset by subtraction and initial membrane ``(1 - alpha) Vth`` (``v_init`` here). For the LIF
the offset must not leak away: ``v = u + (1 - alpha) Vth`` obeys
``v = beta v + (1 - beta) ((1 - alpha) Vth + x)``, i.e. a NIR LIF with ``v_leak = v_init``.
DSR fires on ``>=``, our neurons and Loihi on ``>``: they differ only when the membrane equals the
threshold exactly, which has probability zero for real-valued currents.

A neuron built with ``readout=True`` (the network's output layer) emits unit spikes and exports
with amplitude 1: the spike count is what hardware reads out. Training multiplies its rate by
:meth:`spike_value` (detached), which gives DSR's logits and gradients exactly.
"""

from __future__ import annotations

import math

import torch

from .neurons import IF, LIF


def _if_forward(x: torch.Tensor, vth: torch.Tensor, alpha: float) -> torch.Tensor:
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u = u + x[t]
        s = (u >= alpha * vth).to(x.dtype) * vth
        u = u - s
        out.append(s)
    return torch.stack(out)


def _lif_forward(x, vth, alpha, beta, dt):
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u = beta * u + (1 - beta) * x[t]
        s = (u >= alpha * vth).to(x.dtype) * vth
        u = u - s
        out.append(s / dt)
    return torch.stack(out)


def lif_time_weights(T: int, tau: float, dt: float, dtype=torch.float32) -> torch.Tensor:
    """DSR's weights ``w_i = exp(-(dt T - i dt)/tau)``, ``i = 1..T`` (later steps count more)."""
    i = torch.arange(1, T + 1, dtype=torch.float64)
    return torch.exp(-(dt * T - i * dt) / tau).to(dtype)


def rate(spikes: torch.Tensor) -> torch.Tensor:
    """Firing rate (mean over the time axis 0) of a spike train: the IF readout."""
    return spikes.mean(0)


def weighted_rate(spikes: torch.Tensor, tau: float, dt: float) -> torch.Tensor:
    """Exponentially time-weighted mean over axis 0: the LIF readout and backward rate."""
    w = lif_time_weights(spikes.shape[0], tau, dt, spikes.dtype).to(spikes.device)
    w = w.reshape(-1, *([1] * (spikes.dim() - 1)))
    return (w * spikes).sum(0) / w.sum()


class DSRIFFunction(torch.autograd.Function):
    """``DSRIFFunction.apply(x [T, B, ...], vth (0-d tensor), alpha) -> spikes`` (value Vth)."""

    @staticmethod
    def forward(ctx, x, vth, alpha):
        with torch.no_grad():
            out = _if_forward(x, vth, float(alpha))
        ctx.save_for_backward(x.mean(0), vth)
        ctx.T = x.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad):
        r, vth = ctx.saved_tensors
        T = ctx.T
        g = grad.sum(0)  # T * mean_t g
        gx = gv = None
        if ctx.needs_input_grad[0]:
            inside = ((r >= 0) & (r <= vth)).to(g.dtype)
            gx = (g * inside / T).unsqueeze(0).expand(T, *g.shape).contiguous()
        if ctx.needs_input_grad[1]:
            gv = (g * (r > vth).to(g.dtype)).sum().reshape(vth.shape)
        return gx, gv, None


class DSRLIFFunction(torch.autograd.Function):
    """``DSRLIFFunction.apply(x, vth, alpha, tau, dt) -> spikes`` (value Vth/dt)."""

    @staticmethod
    def forward(ctx, x, vth, alpha, tau, dt):
        beta = math.exp(-float(dt) / float(tau))
        with torch.no_grad():
            out = _lif_forward(x, vth, float(alpha), beta, float(dt))
        ctx.save_for_backward(weighted_rate(x, tau, dt), vth)
        ctx.T, ctx.tau, ctx.dt = x.shape[0], float(tau), float(dt)
        return out

    @staticmethod
    def backward(ctx, grad):
        r, vth = ctx.saved_tensors
        T, tau, dt = ctx.T, ctx.tau, ctx.dt
        G = weighted_rate(grad, tau, dt) * T
        gx = gv = None
        if ctx.needs_input_grad[0]:
            inside = ((r > 0) & (r < vth * tau / dt)).to(G.dtype)
            gx = (G * inside / tau / T).unsqueeze(0).expand(T, *G.shape).contiguous()
        if ctx.needs_input_grad[1]:
            gv = (dt * (G * (r > vth / dt).to(G.dtype)).sum()).reshape(vth.shape)
        return gx, gv, None, None, None


class _DSRMixin:
    """Shared by :class:`DSRIF` and :class:`DSRLIF`: ``v_init`` follows ``alpha`` and Vth."""

    alpha: float
    readout: bool

    @property
    def v_init(self) -> float:  # (1 - alpha) Vth: what the exporter writes as initial membrane
        return (1.0 - self.alpha) * float(self.effective_threshold().detach())

    @v_init.setter
    def v_init(self, value: float) -> None:  # setting v_init sets alpha = 1 - v_init / Vth
        self.alpha = 1.0 - float(value) / float(self.effective_threshold().detach())

    def spike_value(self) -> torch.Tensor:
        """Value of one spike in DSR's equations: Vth (IF) or Vth/dt (LIF)."""
        return self.effective_threshold()

    def amplitude(self) -> torch.Tensor | float:
        return 1.0 if self.readout else self.spike_value()

    def _emit(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes / self.spike_value().detach() if self.readout else spikes

    def _bound_threshold(self) -> torch.Tensor:
        """DSR clamps the trainable Vth in place before every forward pass."""
        with torch.no_grad():
            self.threshold.clamp_(min=self.threshold_min)
        return self.threshold


class DSRIF(_DSRMixin, IF):
    """IF neuron trained by DSR; exports as IF(threshold Vth, subtract, v_init (1-alpha) Vth)."""

    def __init__(self, threshold: float = 0.3, alpha: float = 0.3, threshold_min: float = 5e-4,
                 learn_threshold: bool = True, readout: bool = False):
        super().__init__(threshold=threshold, reset="subtract", learn_threshold=learn_threshold,
                         threshold_min=threshold_min, spike_amplitude="threshold")
        self.alpha, self.readout = float(alpha), bool(readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._emit(DSRIFFunction.apply(x, self._bound_threshold(), self.alpha))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, " + super().extra_repr()


class DSRLIF(_DSRMixin, LIF):
    """LIF neuron trained by DSR: ``u = beta u + (1-beta) x``, spikes of value Vth/dt.

    Exports as LIF(beta, gain 1-beta, threshold Vth, subtract, v_init = v_leak = (1-alpha) Vth).
    """

    def __init__(self, threshold: float = 0.3, alpha: float = 0.3, tau: float = 1.0,
                 dt: float = 0.05, threshold_min: float = 5e-4, learn_threshold: bool = True,
                 readout: bool = False):
        beta = math.exp(-dt / tau)
        super().__init__(beta=beta, threshold=threshold, reset="subtract", gain=1.0 - beta,
                         learn_threshold=learn_threshold, threshold_min=threshold_min)
        self.alpha, self.tau, self.dt = float(alpha), float(tau), float(dt)
        self.readout = bool(readout)

    @property
    def v_leak(self) -> float:
        """Resting potential that keeps the ``(1-alpha) Vth`` offset from leaking away."""
        return self.v_init

    def spike_value(self) -> torch.Tensor:
        return self.effective_threshold() / self.dt

    def charge(self, v, x):  # the exact dynamics in our neurons' terms (v = u + v_leak)
        return self.beta * v + (1 - self.beta) * self.v_leak + self.gain * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._emit(DSRLIFFunction.apply(x, self._bound_threshold(), self.alpha, self.tau,
                                               self.dt))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, tau={self.tau}, dt={self.dt}, " + super().extra_repr()


__all__ = ["DSRIF", "DSRIFFunction", "DSRLIF", "DSRLIFFunction", "lif_time_weights", "rate",
           "weighted_rate"]
