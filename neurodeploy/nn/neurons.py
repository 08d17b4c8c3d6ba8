"""Multi-step spiking neurons for training (input ``[T, B, ...]``, output spikes of the same shape).

Discrete-time dynamics, one step per time bin (``dt = 1`` step):

* IF:  ``v[t] = v[t-1] + gain * x[t]``
* LIF: ``v[t] = beta * v[t-1] + gain * x[t]``
* fire ``s[t] = [v[t] > threshold]`` (strict, as NIR and Loihi define it)
* reset ``"zero"``: ``v = 0`` where a spike fired; ``"subtract"``: ``v -= threshold`` there.

``v`` starts at ``v_init`` (DSR's alpha and SPIDE's u_rest become an initial membrane).
Spikes leave the neuron with amplitude ``spike_amplitude`` (1, or the threshold for DSR, ...);
the exporter folds that amplitude into the next layer's weights so hardware sees binary spikes.
The threshold is one scalar per layer, optionally trainable and lower-bounded.
Subclasses only override :meth:`charge`, so training methods can add dynamics without
rewriting state handling, firing, reset or export.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .surrogate import ATan, Surrogate

RESET_MODES = ("zero", "subtract")


class SpikingNeuron(nn.Module):
    """Base class of our neurons; see the module docstring for the equations."""

    def __init__(
        self,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: Surrogate | None = None,
        learn_threshold: bool = False,
        threshold_min: float = 1e-3,
        v_init: float = 0.0,
        gain: float = 1.0,
        spike_amplitude: float | str = 1.0,
        detach_reset: bool = True,
    ):
        super().__init__()
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if isinstance(spike_amplitude, str) and spike_amplitude != "threshold":
            raise ValueError("spike_amplitude must be a number or 'threshold'")
        t = torch.tensor(float(threshold))
        if learn_threshold:
            self.threshold = nn.Parameter(t)
        else:
            self.register_buffer("threshold", t)
        self.reset = reset
        self.surrogate = surrogate if surrogate is not None else ATan()
        self.threshold_min = float(threshold_min)
        self.v_init = float(v_init)
        self.gain = float(gain)
        self.spike_amplitude = spike_amplitude
        self.detach_reset = detach_reset

    # -- hooks for subclasses -------------------------------------------------------------
    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Membrane update before firing; IF by default."""
        return v + self.gain * x

    # -- shared machinery -----------------------------------------------------------------
    def effective_threshold(self) -> torch.Tensor:
        return self.threshold.clamp(min=self.threshold_min)

    def amplitude(self) -> torch.Tensor | float:
        if self.spike_amplitude == "threshold":
            return self.effective_threshold()
        return float(self.spike_amplitude)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects multi-step input [T, B, ...], got shape "
                f"{tuple(x.shape)}"
            )
        theta = self.effective_threshold()
        v = torch.full_like(x[0], self.v_init)
        out = []
        for t in range(x.shape[0]):
            v = self.charge(v, x[t])
            s = self.surrogate(v - theta)
            r = s.detach() if self.detach_reset else s
            v = v * (1 - r) if self.reset == "zero" else v - theta * r
            out.append(s)
        return torch.stack(out) * self.amplitude()

    def extra_repr(self) -> str:
        return (
            f"threshold={float(self.threshold):.4g}, reset={self.reset!r}, "
            f"v_init={self.v_init}, gain={self.gain}, surrogate={self.surrogate}"
        )


class IF(SpikingNeuron):
    """Integrate-and-fire neuron (no leak)."""


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire: ``v = beta v + gain x``; ``beta = exp(-1/tau)`` if tau is given."""

    def __init__(self, beta: float | None = None, tau: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if (beta is None) == (tau is None):
            raise ValueError("give exactly one of beta or tau (in steps)")
        self.beta = float(beta) if beta is not None else math.exp(-1.0 / float(tau))
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {self.beta}")

    def charge(self, v, x):
        return self.beta * v + self.gain * x

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}, " + super().extra_repr()


class TimeDistributed(nn.Module):
    """Apply a stateless module to every time step of a ``[T, B, ...]`` tensor at once."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x.flatten(0, 1))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def multistep(model: nn.Module) -> nn.Module:
    """Wrap, in place, every stateless leaf layer of ``model`` in :class:`TimeDistributed`."""
    for name, child in list(model.named_children()):
        if isinstance(child, (SpikingNeuron, TimeDistributed)):
            continue
        if len(list(child.children())) == 0:
            setattr(model, name, TimeDistributed(child))
        else:
            multistep(child)
    return model
