"""Run a Lava network for a fixed number of steps and return per-step recordings.

Recordings are indexed by step: row ``k`` holds the value at the end of Lava step ``t = k + 1``
(sink ``RingBuffer``\\ s store the message sent at step ``t`` at index ``t - 1``; ``Monitor``\\ s
read Vars after the step's update).

Lava executes every module in this directory when it searches for ProcessModels, so this file
only defines functions and uses absolute imports.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.sink import RingBuffer as SinkRingBuffer
from lava.proc.monitor.process import Monitor

__all__ = ["run_and_record"]


def run_and_record(
    root: AbstractProcess,
    num_steps: int,
    *,
    ports: Mapping[str, OutPort] | None = None,
    variables: Mapping[str, Var] | None = None,
    select_tag: str = "fixed_pt",
    exception_proc_model_map: Mapping | None = None,
    final_vars: Mapping[str, Var] | None = None,
) -> dict[str, np.ndarray]:
    """Run the network containing ``root`` for ``num_steps`` steps and return recordings.

    ``ports``: name -> OutPort; every message the port sends is recorded by a sink RingBuffer,
    returned as ``[num_steps, *shape]``. ``variables``: name -> Var; recorded after each step by
    one ``Monitor`` per Var (in Lava 0.10 a Monitor with a second probe fails to compile: its
    model declares only ``ref_port_0``/``in_port_0``), returned as ``[num_steps, *shape]``.
    ``final_vars``: name -> Var read once after the run. With ``select_tag="fixed_pt"``
    recordings come back as int64 (Monitors store float64, exact for int32).

    The network is always stopped, also when the run or a read fails.
    """
    ports = dict(ports or {})
    variables = dict(variables or {})
    final_vars = dict(final_vars or {})
    num_steps = int(num_steps)
    sinks = {}
    for key, port in ports.items():
        sinks[key] = SinkRingBuffer(shape=port.shape, buffer=num_steps)
        port.connect(sinks[key].a_in)
    monitors = {}
    for key, var in variables.items():
        monitors[key] = Monitor()
        monitors[key].probe(var, num_steps)

    cfg = Loihi2SimCfg(
        select_tag=select_tag,
        exception_proc_model_map=dict(exception_proc_model_map or {}),
    )
    out: dict[str, np.ndarray] = {}
    try:
        root.run(condition=RunSteps(num_steps=num_steps), run_cfg=cfg)
        for key, sink in sinks.items():
            out[key] = np.moveaxis(np.asarray(sink.data.get()), -1, 0)
        for key, mon in monitors.items():
            var = variables[key]
            out[key] = np.asarray(mon.get_data()[var.process.name][var.name])
        for key, var in final_vars.items():
            out[key] = np.asarray(var.get())
    finally:
        root.stop()
    if select_tag == "fixed_pt":
        out = {k: _as_int(v) for k, v in out.items()}
    return out


def _as_int(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        r = np.rint(x)
        return r.astype(np.int64) if np.array_equal(r, x) else x
    return x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x
