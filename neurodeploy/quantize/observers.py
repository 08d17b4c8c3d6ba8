"""Scale observers: statistics of one neuron layer -> its fixed-point scale ``lambda``.

The pattern is PyTorch's quantization observers: an observer is built per layer,
:meth:`~ScaleObserver.observe` is fed what it needs (repeatedly, if you like), and
:meth:`~ScaleObserver.calculate_scale` turns the statistics into the scale. :meth:`record`
gives what the observer saw, which the quantizer stores in node metadata ``"loihi"``.

With ``top = 2**weight_bits - 2`` (254: the largest even 8-bit mantissa, so mixed-sign layers
never saturate), ``vth_max = 2**vth_bits - 1`` and ``theta = v_threshold - v_reset``:

* :class:`MinMaxObserver`: ``lambda = min(top / max|w_eff|, vth_max / max theta)``, the
  largest scale at which no weight saturates.
* :class:`PercentileObserver`: ``lambda = min(top / P_p(|w_eff|), vth_max / max theta)`` with
  ``P_p`` the ``p``-th percentile of the non-zero ``|w_eff|``. Weights above the percentile
  saturate (it counts them); the rest get finer steps.
* :class:`SearchObserver`: observes candidate ``(scale, vth_factor)`` pairs together with the
  firing-rate error each gave on calibration data (:mod:`neurodeploy.quantize.calibrate` runs
  them) and returns the best. ``vth_factor`` nudges the integer threshold:
  ``vth = round(theta lambda vth_factor)``.

``w_eff`` are the float weights times the neuron's input gain (IF ``dt r``, LIF ``dt r / tau``,
...), i.e. the weights in units of the membrane potential; see ``docs/fixed-point.md``.

Per-channel quantization (:func:`channel_multipliers`) keeps the observer's layer scale
``lambda`` and multiplies it per output channel ``k`` by ``m_k = max(1, s_k / lambda)``, where
``s_k`` is the min/max bound of channel ``k`` alone (its weights in every synapse layer, and its
thresholds): every channel gets the finer of its own bound and the layer scale. A channel clips
only where the observer's ``lambda`` exceeds its own bound (percentile, search), so per-channel
scales saturate exactly the weights that the same observer saturates per layer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import QuantizationError

if TYPE_CHECKING:
    from .loihi import LoihiFormat


def _limits(fmt: LoihiFormat) -> tuple[int, int]:
    return (1 << fmt.weight_bits) - 2, (1 << fmt.vth_bits) - 1


def _bounded_scale(w_ref: float, theta_max: float, fmt: LoihiFormat) -> float:
    """``min(top / w_ref, vth_max / theta_max)``; raises if neither bounds the scale."""
    top, vth_max = _limits(fmt)
    s_w = top / w_ref if w_ref > 0 else math.inf
    s_t = vth_max / theta_max if theta_max > 0 else math.inf
    s = min(s_w, s_t)
    if not math.isfinite(s):
        raise QuantizationError("layer has neither weights nor threshold to set a scale from")
    return s


def channel_fit_scales(w_eff: Sequence[np.ndarray], theta: np.ndarray,
                       fmt: LoihiFormat) -> np.ndarray:
    """Per output channel (axis 0), the largest scale at which its weights and thresholds fit.

    ``w_eff``: one array per synapse layer into the neuron, rows = output channels; ``theta``:
    thresholds of the neuron layer (channel axis 0). A channel with neither weights nor
    threshold is unbounded (``inf``). The minimum over channels is :class:`MinMaxObserver`'s
    scale.
    """
    top, vth_max = _limits(fmt)
    theta = np.abs(np.asarray(theta, float))
    n = theta.shape[0]
    w_ref = np.zeros(n)
    for w in w_eff:
        a = np.abs(np.asarray(w, float)).reshape(n, -1)
        w_ref = np.maximum(w_ref, a.max(axis=1, initial=0.0))
    t_ref = theta.reshape(n, -1).max(axis=1, initial=0.0)
    with np.errstate(divide="ignore", over="ignore"):
        return np.minimum(np.where(w_ref > 0, top / w_ref, np.inf),
                          np.where(t_ref > 0, vth_max / t_ref, np.inf))


def channel_multipliers(w_eff: Sequence[np.ndarray], theta: np.ndarray, fmt: LoihiFormat,
                        scale: float) -> np.ndarray:
    """``m_k = max(1, s_k / scale)``: how much finer than the layer ``scale`` channel ``k`` can be
    quantized, ``s_k`` from :func:`channel_fit_scales`.

    The layer scale comes from any observer: at min/max's scale ``min_j s_j`` every channel
    fills its 8 bits; where an observer chose a larger scale (clipping outliers), only the
    channels whose own bound is below it keep it and clip. Returns ones when the channels
    cannot be told apart (``theta`` without a channel axis, or a synapse layer whose rows are
    not the neuron's channels) and for a channel with neither weights nor threshold.
    """
    theta = np.asarray(theta, float)
    if theta.ndim == 0:
        return np.ones(1)
    if any(np.ndim(w) == 0 or np.shape(w)[0] != theta.shape[0] for w in w_eff):
        return np.ones(theta.shape[0])
    s = channel_fit_scales(w_eff, theta, fmt)
    return np.where(np.isfinite(s), np.maximum(s / scale, 1.0), 1.0)


class ScaleObserver(ABC):
    """Base class: ``observe(w_eff, theta)``, then ``calculate_scale()``."""

    name = "base"

    def __init__(self, fmt: LoihiFormat):
        self.fmt = fmt
        self.theta_max = 0.0

    def observe(self, w_eff: Sequence[np.ndarray], theta: np.ndarray) -> None:
        """Take the effective weights of every synapse layer into the neuron and its thresholds."""
        self.theta_max = max(self.theta_max, float(np.max(np.abs(theta), initial=0.0)))

    @abstractmethod
    def calculate_scale(self) -> float:
        """The layer's scale ``lambda`` from what was observed."""

    def record(self) -> dict:
        """What to store in ``metadata["loihi"]``: scalars and strings only."""
        return {"observer": self.name}


class MinMaxObserver(ScaleObserver):
    """Largest scale at which no weight saturates and the threshold fits its bits."""

    name = "minmax"

    def __init__(self, fmt: LoihiFormat):
        super().__init__(fmt)
        self.max_abs = 0.0

    def observe(self, w_eff, theta) -> None:
        super().observe(w_eff, theta)
        for w in w_eff:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(w), initial=0.0)))

    def calculate_scale(self) -> float:
        return _bounded_scale(self.max_abs, self.theta_max, self.fmt)

    def record(self) -> dict:
        return {**super().record(), "max_abs_weight": self.max_abs}


class PercentileObserver(ScaleObserver):
    """Scale from the ``percentile``-th percentile of the non-zero ``|w_eff|``.

    Weights beyond it saturate at the largest mantissa (the quantizer counts them per layer as
    ``n_saturated``); in exchange the bulk of the weights is quantized more finely.
    ``percentile=100`` is min/max.
    """

    name = "percentile"

    def __init__(self, fmt: LoihiFormat, percentile: float = 99.99):
        super().__init__(fmt)
        if not 0 < percentile <= 100:
            raise QuantizationError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = float(percentile)
        self._abs: list[np.ndarray] = []

    def observe(self, w_eff, theta) -> None:
        super().observe(w_eff, theta)
        for w in w_eff:
            a = np.abs(np.asarray(w, float)).ravel()
            self._abs.append(a[a > 0])

    def _values(self) -> np.ndarray:
        return np.concatenate(self._abs) if self._abs else np.zeros(0)

    def clip_value(self) -> float:
        """``|w_eff|`` above which weights saturate (0 when the layer has no weights)."""
        a = self._values()
        return float(np.percentile(a, self.percentile)) if a.size else 0.0

    def calculate_scale(self) -> float:
        return _bounded_scale(self.clip_value(), self.theta_max, self.fmt)

    def record(self) -> dict:
        return {**super().record(), "percentile": self.percentile,
                "clip_value": self.clip_value()}


class SearchObserver(ScaleObserver):
    """Best of candidate ``(scale, vth_factor)`` pairs by their calibration error.

    ``candidates(base)`` proposes ``base * 2**(k / 4)`` for ``k`` in ``scale_steps`` (all with
    ``vth_factor = 1``); after the best scale is known, ``nudges(scale)`` proposes the same scale
    with ``vth_factor = 2**(j / 64)`` for ``j`` in ``vth_steps``. Each evaluated candidate is
    passed to :meth:`observe_candidate`. Ties go to the candidate observed first, and
    ``(base, 1)`` is proposed first, so the search never leaves min/max without a gain.
    """

    name = "search"

    def __init__(self, fmt: LoihiFormat, scale_steps: Sequence[int] = (-1, 1, 2, 3),
                 vth_steps: Sequence[int] = (-2, -1, 1, 2)):
        super().__init__(fmt)
        self.scale_steps = tuple(int(k) for k in scale_steps)
        self.vth_steps = tuple(int(j) for j in vth_steps)
        self.base_scale: float | None = None
        self.tried: list[tuple[float, float, float]] = []  # (scale, vth_factor, error)

    def observe(self, w_eff, theta) -> None:
        """Set the starting point from the layer's min/max scale."""
        mm = MinMaxObserver(self.fmt)
        mm.observe(w_eff, theta)
        super().observe(w_eff, theta)
        self.base_scale = mm.calculate_scale()

    def candidates(self) -> list[tuple[float, float]]:
        if self.base_scale is None:
            raise QuantizationError("SearchObserver.observe() must run before candidates()")
        b = self.base_scale
        return [(b, 1.0)] + [(b * 2.0 ** (k / 4), 1.0) for k in self.scale_steps if k != 0]

    def nudges(self, scale: float) -> list[tuple[float, float]]:
        return [(scale, 2.0 ** (j / 64)) for j in self.vth_steps if j != 0]

    def observe_candidate(self, scale: float, vth_factor: float, error: float) -> None:
        self.tried.append((float(scale), float(vth_factor), float(error)))

    def best(self) -> tuple[float, float, float]:
        """``(scale, vth_factor, error)`` of the best candidate so far."""
        if not self.tried:
            raise QuantizationError("SearchObserver has no evaluated candidate")
        i = int(np.argmin([e for _, _, e in self.tried]))  # first minimum: stable
        return self.tried[i]

    def calculate_scale(self) -> float:
        return self.best()[0]

    def calculate_vth_factor(self) -> float:
        return self.best()[1]

    def record(self) -> dict:
        scale, factor, err = self.best()
        base = next(e for s, f, e in self.tried if s == self.base_scale and f == 1.0)
        return {**super().record(), "base_scale": float(self.base_scale), "rate_error": err,
                "rate_error_minmax": base,
                "candidates": np.array(self.tried, dtype=float).reshape(-1, 3)}


OBSERVERS: dict[str, Callable[..., ScaleObserver]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "search": SearchObserver,
}


def make_observer(observer: str | Callable[..., ScaleObserver], fmt: LoihiFormat,
                  **kwargs) -> ScaleObserver:
    """An observer instance from a name in :data:`OBSERVERS` or a constructor taking ``fmt``.

    Like PyTorch's ``QConfig``, pass a constructor (e.g. ``functools.partial(
    PercentileObserver, percentile=99.9)``), not an instance: every layer needs its own.
    """
    if isinstance(observer, ScaleObserver):
        raise QuantizationError(
            f"observer must be a name or a constructor, got an instance of "
            f"{type(observer).__name__}; pass {type(observer).__name__} (or functools.partial "
            "of it) instead, since every layer needs its own observer")
    if isinstance(observer, str):
        if observer not in OBSERVERS:
            raise QuantizationError(f"unknown observer {observer!r}; choose from "
                                    f"{', '.join(OBSERVERS)}")
        observer = OBSERVERS[observer]
    return observer(fmt, **kwargs)
