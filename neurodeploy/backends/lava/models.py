"""Lava ProcessModels for :mod:`neurodeploy.backends.lava.processes` (CPU, ``LoihiProtocol``).

The ``fixed_pt`` neuron models do no arithmetic of their own: they call
:func:`neurodeploy.fixedpoint.lif_step`, the one definition of our Loihi neuron arithmetic, so a
Lava run and the native numpy engine agree bit for bit.

Timing: ``time_step`` is 1 at the first step. Neuron and source models receive, update and send
within one step; each connection process between them adds one step (lava-fixed-point.md §1).

Lava finds these classes by executing every module in this directory, so this file must use
absolute imports only.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurodeploy.backends.lava.processes import (
    EventSource,
    LIFSubtract,
    LIFZero,
    TernaryLIFSubtract,
)
from neurodeploy.fixedpoint import STAT_U_WRAP, STAT_V_CLIP, lif_step

__all__ = [
    "PyLIFSubtractModelFixed",
    "PyLIFSubtractModelFloat",
    "PyLIFZeroModelFixed",
    "PyLIFZeroModelFloat",
    "PyTernaryLIFSubtractModelFixed",
    "PyTernaryLIFSubtractModelFloat",
    "PyEventSourceModelFixed",
    "PyEventSourceModelFloat",
]


class _AbstractLIFModelFixed(PyLoihiProcessModel):
    """Shared fixed-point step: ``lif_step(..., reset=_reset)`` plus overflow counters."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    du: int = LavaPyType(int, np.uint16, precision=12)
    dv: int = LavaPyType(int, np.uint16, precision=12)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)
    n_wrap_u: np.ndarray = LavaPyType(np.ndarray, np.int32)
    n_clip_v: np.ndarray = LavaPyType(np.ndarray, np.int32)
    #: ``lif_step`` keyword -> name of the threshold Var that feeds it.
    _threshold_vars: dict[str, str] = {}
    #: ``lif_step``'s reset mode: ``"subtract"`` or ``"zero"``.
    _reset: str = "subtract"

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        thresholds = {kw: getattr(self, var) for kw, var in self._threshold_vars.items()}
        stats: dict = {}
        u, v, s = lif_step(
            self.u,
            self.v,
            a_in,
            du=self.du,
            dv=self.dv,
            bias_mant=self.bias_mant,
            bias_exp=self.bias_exp,
            reset=self._reset,
            stats=stats,
            **thresholds,
        )
        self.u[:] = u
        self.v[:] = v
        self.n_wrap_u += stats[STAT_U_WRAP].astype(np.int32)
        self.n_clip_v += stats[STAT_V_CLIP].astype(np.int32)
        self.s_out.send(s.astype(np.int32))


class _AbstractVthModelFixed(_AbstractLIFModelFixed):
    """One per-neuron threshold Var ``vth`` (binary spikes)."""

    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    _threshold_vars = {"vth": "vth"}


@implements(proc=LIFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLIFSubtractModelFixed(_AbstractVthModelFixed):
    """Bit-accurate LIF with subtractive reset (Lava's ``PyLifModelBitAcc`` otherwise)."""

    _reset = "subtract"


@implements(proc=LIFZero, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLIFZeroModelFixed(_AbstractVthModelFixed):
    """Bit-accurate LIF with reset to zero and a per-neuron ``vth`` (``PyLifModelBitAcc``)."""

    _reset = "zero"


@implements(proc=TernaryLIFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyTernaryLIFSubtractModelFixed(_AbstractLIFModelFixed):
    """Bit-accurate ternary LIF with subtractive reset; sends int32 -1/0/+1."""

    vth_hi: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    vth_lo: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    _threshold_vars = {"vth": "vth_hi", "vth_lo": "vth_lo"}


class _AbstractLIFModelFloat(PyLoihiProcessModel):
    """Float LIF: ``u = u*(1-du) + a_in``; ``v = v*(1-dv) + u + bias_mant``; then the reset:
    ``v -= vth`` (``_reset = "subtract"``) or ``v = 0`` (``"zero"``) where a spike was sent."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    du: float = LavaPyType(float, float)
    dv: float = LavaPyType(float, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    n_wrap_u: np.ndarray = LavaPyType(np.ndarray, np.int32)
    n_clip_v: np.ndarray = LavaPyType(np.ndarray, np.int32)
    #: Names of the upper and (ternary only) lower threshold Vars.
    _vth_hi_var: str = "vth"
    _vth_lo_var: str | None = None
    _reset: str = "subtract"

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        du = float(np.asarray(self.du).reshape(-1)[0])
        dv = float(np.asarray(self.dv).reshape(-1)[0])
        self.u[:] = self.u * (1.0 - du) + a_in
        self.v[:] = self.v * (1.0 - dv) + self.u + self.bias_mant
        hi = getattr(self, self._vth_hi_var)
        lo = getattr(self, self._vth_lo_var) if self._vth_lo_var else np.full_like(self.v, -np.inf)
        s = (self.v > hi).astype(float) - (self.v < lo)
        if self._reset == "zero":
            self.v[s != 0] = 0.0
        else:
            self.v[:] -= np.where(s > 0, hi, np.where(s < 0, lo, 0.0))
        self.s_out.send(s)


class _AbstractVthModelFloat(_AbstractLIFModelFloat):
    """One per-neuron threshold Var ``vth`` (binary spikes)."""

    vth: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=LIFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLIFSubtractModelFloat(_AbstractVthModelFloat):
    """Float LIF with subtractive reset: ``s = v > vth``; ``v -= vth`` where ``s``."""

    _reset = "subtract"


@implements(proc=LIFZero, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLIFZeroModelFloat(_AbstractVthModelFloat):
    """Float LIF with reset to zero and a per-neuron ``vth``: ``s = v > vth``; ``v = 0``."""

    _reset = "zero"


@implements(proc=TernaryLIFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyTernaryLIFSubtractModelFloat(_AbstractLIFModelFloat):
    """Float ternary LIF: ``+1`` above ``vth_hi`` (``v -= vth_hi``), ``-1`` below ``vth_lo``
    (``v -= vth_lo``)."""

    vth_hi: np.ndarray = LavaPyType(np.ndarray, float)
    vth_lo: np.ndarray = LavaPyType(np.ndarray, float)
    _vth_hi_var = "vth_hi"
    _vth_lo_var = "vth_lo"


class _AbstractEventSourceModel(PyLoihiProcessModel):
    """Sends the dense vector of this step's events; events are sorted by ``t_idx``."""

    t_idx: np.ndarray = LavaPyType(np.ndarray, np.int64)
    neuron_idx: np.ndarray = LavaPyType(np.ndarray, np.int64)
    value: np.ndarray = LavaPyType(np.ndarray, np.int64)
    _out_dtype: type = np.int32

    def run_spk(self) -> None:
        t = self.time_step
        lo = int(np.searchsorted(self.t_idx, t, side="left"))
        hi = int(np.searchsorted(self.t_idx, t, side="right"))
        shape = self.s_out.shape
        out = np.zeros(int(np.prod(shape)), dtype=np.int64)
        if hi > lo:
            np.add.at(out, self.neuron_idx[lo:hi], self.value[lo:hi])
        self.s_out.send(out.reshape(shape).astype(self._out_dtype))


@implements(proc=EventSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEventSourceModelFixed(_AbstractEventSourceModel):
    """int32 output, like Lava's fixed-point ``RingBuffer`` source."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    _out_dtype = np.int32


@implements(proc=EventSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEventSourceModelFloat(_AbstractEventSourceModel):
    """float output, like Lava's floating-point ``RingBuffer`` source."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    _out_dtype = float
