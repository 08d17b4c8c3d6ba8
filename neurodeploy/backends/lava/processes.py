"""neurodeploy's own Lava Processes (interfaces only; behaviour lives in ``models.py``).

* :class:`LIFSubtract` -- Lava's ``LIF`` with *subtractive* reset (``v -= vth`` at a spike) and a
  per-neuron threshold, plus overflow counters.
* :class:`LIFZero` -- Lava's ``LIF`` (reset to zero) with a per-neuron threshold, for layers
  quantized with one scale per output channel; the stock ``LIF`` has one ``vth`` per process.
* :class:`TernaryLIFSubtract` -- ternary (+1/0/-1) LIF with subtractive reset, as SPIDE needs.
  Lava's own ``TernaryLIF`` only resets to zero and has population-wide thresholds, so it cannot
  express this; we keep the stock one for zero reset.
* :class:`EventSource` -- a source that sends, at each step, a dense vector built only from the
  events of that step (no dense ``[*shape, T]`` buffer as with Lava's ``RingBuffer``).

Timing (Lava 0.10.0, ``LoihiProtocol``; lava-fixed-point.md §1): the first Lava step is
``t = 1``. Neurons and sources receive, update and send within the same step; every connection
process (Dense, Sparse, Conv) adds exactly one step. So an :class:`EventSource` event with
``t_idx = t`` is sent at step ``t``, reaches the first neuron layer behind one Dense at ``t + 1``,
and a spike of that layer at ``t + 1`` reaches the next layer at ``t + 2``.

Graded and signed messages: a bit-accurate ``Dense`` with ``num_message_bits=0`` casts its input
to bool, so counts above 1 count once and a ``-1`` (ternary) spike counts as ``+1``. Connections
fed by graded :class:`EventSource` values or by :class:`TernaryLIFSubtract` must be built with
``num_message_bits > 0`` (the value is not clipped to that width on the CPU backend).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var
from lava.proc.lif.process import AbstractLIF

__all__ = ["LIFSubtract", "LIFZero", "TernaryLIFSubtract", "EventSource"]


def _shape_tuple(shape) -> tuple[int, ...]:
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(n) for n in shape)
    if not shape or any(n <= 0 for n in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape}")
    return shape


class _PerNeuronLIF(AbstractLIF):
    """Lava's ``LIF`` ports and Vars with a per-neuron ``vth`` and overflow counters.

    Base of :class:`LIFSubtract` and :class:`LIFZero`, which differ only in the reset; a scalar
    ``vth`` is broadcast. Extra Vars ``n_wrap_u`` and ``n_clip_v`` (per neuron, int) count how
    often the fixed-point model wrapped ``u`` or saturated ``v``; they stay 0 in floating point.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        u: float | np.ndarray = 0,
        v: float | np.ndarray = 0,
        du: float = 0,
        dv: float = 0,
        bias_mant: float | np.ndarray = 0,
        bias_exp: float | np.ndarray = 0,
        vth: float | np.ndarray = 10,
        name: str | None = None,
        log_config: LogConfig | None = None,
    ) -> None:
        super().__init__(
            shape=shape,
            u=u,
            v=v,
            du=du,
            dv=dv,
            bias_mant=bias_mant,
            bias_exp=bias_exp,
            name=name,
            log_config=log_config,
        )
        shape = _shape_tuple(shape)
        self.vth = Var(shape=shape, init=np.broadcast_to(vth, shape).copy())
        self.n_wrap_u = Var(shape=shape, init=0)
        self.n_clip_v = Var(shape=shape, init=0)


class LIFSubtract(_PerNeuronLIF):
    """LIF neurons whose voltage drops by the threshold at a spike instead of resetting to 0.

    Same ports and Vars as Lava's ``LIF`` (``a_in``, ``s_out``, ``u``, ``v``, ``du``, ``dv``,
    ``vth``, ``bias_mant``, ``bias_exp``), except that ``vth`` is per neuron (a scalar init is
    broadcast). Dynamics, fixed point (``tag "fixed_pt"``, see
    :func:`neurodeploy.fixedpoint.lif_step` with ``reset="subtract"``)::

        u = decay(u, du + 1) + (a_in << 6), then one conditional 24-bit wrap
        v = clip(decay(v, dv) + u + (bias_mant << bias_exp), +-(2**23 - 1))
        s = v > (vth << 6);  v -= (vth << 6) where s

    Floating point (``tag "floating_pt"``): ``u = u*(1-du) + a_in``;
    ``v = v*(1-dv) + u + bias_mant``; ``s = v > vth``; ``v -= vth`` where ``s`` (``bias_exp`` is
    ignored, as in Lava's float LIF).

    Extra Vars ``n_wrap_u`` and ``n_clip_v`` (per neuron, int) count how often the fixed-point
    model wrapped ``u`` or saturated ``v``; they stay 0 in floating point.
    """


class LIFZero(_PerNeuronLIF):
    """Lava's ``LIF`` (reset to 0 at a spike) with a per-neuron threshold.

    Lava's stock ``LIF`` has one scalar ``vth`` per process; a layer quantized with one scale per
    output channel needs one threshold per channel. Fixed point (``tag "fixed_pt"``) is
    :func:`neurodeploy.fixedpoint.lif_step` with ``reset="zero"``, which equals Lava's
    ``PyLifModelBitAcc`` neuron by neuron; floating point is Lava's float LIF with ``vth`` per
    neuron. Same overflow counters as :class:`LIFSubtract`.
    """


class TernaryLIFSubtract(AbstractLIF):
    """Ternary LIF (+1/0/-1 spikes) with subtractive reset and per-neuron thresholds.

    Like :class:`LIFSubtract` but with an upper threshold ``vth_hi`` and a lower threshold
    ``vth_lo`` (``vth_lo <= vth_hi``; normally ``vth_lo < 0 < vth_hi``): ``s = +1`` where
    ``v > vth_hi << 6`` and then ``v -= vth_hi << 6``; ``s = -1`` where ``v < vth_lo << 6`` and
    then ``v -= vth_lo << 6`` (``v`` moves up toward 0 by ``|vth_lo|``). Fixed point uses
    :func:`neurodeploy.fixedpoint.lif_step` with ``vth_lo`` and ``reset="subtract"``. Spikes are
    sent as int32 -1/0/+1, so downstream connections need ``num_message_bits > 0``.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        u: float | np.ndarray = 0,
        v: float | np.ndarray = 0,
        du: float = 0,
        dv: float = 0,
        bias_mant: float | np.ndarray = 0,
        bias_exp: float | np.ndarray = 0,
        vth_hi: float | np.ndarray = 10,
        vth_lo: float | np.ndarray = -10,
        name: str | None = None,
        log_config: LogConfig | None = None,
    ) -> None:
        super().__init__(
            shape=shape,
            u=u,
            v=v,
            du=du,
            dv=dv,
            bias_mant=bias_mant,
            bias_exp=bias_exp,
            name=name,
            log_config=log_config,
        )
        shape = _shape_tuple(shape)
        hi = np.broadcast_to(vth_hi, shape).copy()
        lo = np.broadcast_to(vth_lo, shape).copy()
        if np.any(lo > hi):
            raise ValueError(
                f"vth_lo must not exceed vth_hi; got vth_lo={vth_lo!r}, vth_hi={vth_hi!r}"
            )
        self.vth_hi = Var(shape=shape, init=hi)
        self.vth_lo = Var(shape=shape, init=lo)
        self.n_wrap_u = Var(shape=shape, init=0)
        self.n_clip_v = Var(shape=shape, init=0)


class EventSource(AbstractProcess):
    """Source that injects only the events that occurred, one dense vector per step.

    Parameters
    ----------
    shape:
        Shape of ``s_out``.
    t_idx:
        1-based Lava step of each event (``t_idx = 1`` is sent at the first step).
    neuron_idx:
        Flat (C-order) index into ``shape`` of each event.
    value:
        Optional integer payload per event (graded input; default 1). Events for the same step
        and neuron add up.

    At step ``t`` the model sends ``out`` with ``out.flat[neuron_idx[k]] += value[k]`` for every
    event ``k`` with ``t_idx[k] == t``, and zeros at steps without events (unlike ``RingBuffer``
    it does not repeat after the last event). The events are stored sorted by ``t_idx`` (stable),
    so each step finds its slice with two ``np.searchsorted`` calls. The ``fixed_pt`` model sends
    int32 (the type Lava's fixed ``RingBuffer`` sends), the ``floating_pt`` model sends float, so
    downstream ``Dense``/``Conv`` compute exactly what they compute for a ``RingBuffer`` holding
    :meth:`to_dense` of the same events.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        t_idx,
        neuron_idx,
        value=None,
        name: str | None = None,
        log_config: LogConfig | None = None,
    ) -> None:
        # AbstractProcess.__init__ first: a Process that raises before it breaks Lava's __del__
        super().__init__(shape=shape, name=name, log_config=log_config)
        shape = _shape_tuple(shape)
        t, idx, val = self._validated_events(shape, t_idx, neuron_idx, value)
        self.s_out = OutPort(shape=shape)
        self.t_idx = Var(shape=t.shape, init=t)
        self.neuron_idx = Var(shape=idx.shape, init=idx)
        self.value = Var(shape=val.shape, init=val)

    @staticmethod
    def _validated_events(shape, t_idx, neuron_idx, value):
        t = np.asarray(t_idx).reshape(-1)
        idx = np.asarray(neuron_idx).reshape(-1)
        val = np.ones(t.shape, dtype=np.int64) if value is None else np.asarray(value).reshape(-1)
        if not (t.shape == idx.shape == val.shape):
            raise ValueError(
                "t_idx, neuron_idx and value must have the same length; got "
                f"{t.shape[0]}, {idx.shape[0]} and {val.shape[0]}"
            )
        for label, arr in (("t_idx", t), ("neuron_idx", idx), ("value", val)):
            if arr.size and arr.dtype.kind not in "iub":
                raise TypeError(f"{label} must be integer, got dtype {arr.dtype}")
        n = int(np.prod(shape))
        if t.size and t.min() < 1:
            raise ValueError(f"t_idx is 1-based (first Lava step is t=1); got min {t.min()}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"neuron_idx must be in [0, {n}) for shape {shape}")
        if val.size and (val.min() < np.iinfo(np.int32).min or val.max() > np.iinfo(np.int32).max):
            raise ValueError("value must fit in int32")
        order = np.argsort(t, kind="stable")
        return (
            t[order].astype(np.int64),
            idx[order].astype(np.int64),
            val[order].astype(np.int64),
        )

    @classmethod
    def from_dense(cls, data, *, name: str | None = None) -> EventSource:
        """Events of a dense ``[*shape, T]`` array (RingBuffer layout: last axis is time)."""
        data = np.asarray(data)
        if data.ndim < 2:
            raise ValueError(f"data must be [*shape, T], got shape {data.shape}")
        shape = data.shape[:-1]
        flat = data.reshape(-1, data.shape[-1])
        neuron, step = np.nonzero(flat)
        order = np.lexsort((neuron, step))
        neuron, step = neuron[order], step[order]
        return cls(
            shape=shape,
            t_idx=step + 1,
            neuron_idx=neuron,
            value=flat[neuron, step].astype(np.int64),
            name=name,
        )

    def to_dense(self, num_steps: int) -> np.ndarray:
        """The equivalent ``[*shape, num_steps]`` int64 array (events after ``num_steps`` drop)."""
        shape = self.s_out.shape
        t = np.asarray(self.t_idx.get(), dtype=np.int64)
        idx = np.asarray(self.neuron_idx.get(), dtype=np.int64)
        val = np.asarray(self.value.get(), dtype=np.int64)
        keep = t <= num_steps
        out = np.zeros((int(np.prod(shape)), int(num_steps)), dtype=np.int64)
        np.add.at(out, (idx[keep], t[keep] - 1), val[keep])
        return out.reshape(*shape, int(num_steps))
