"""Run a compiled model on a batch of inputs with a chosen backend, aligned to the input window.

Both fixed-point backends (native engine, Lava) follow Lava's timing: they run ``T + depth``
steps and the readout counts output spikes over steps ``depth .. T + depth - 1`` (docs/timing.md).
The float reference runs the same graph with float parameters and no pipeline delay; for a
pipeline-aligned model it starts from the trained membranes (``passes.training_timing``: relays
and clocks are transparent without delays), so it computes what the trained model computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from .artifact import CompiledModel
from .engine import simulate_fixed, simulate_float
from .errors import NeurodeployError
from .passes.align_pipeline import training_timing

BACKENDS = ("native", "lava", "float")


@dataclass
class RunResult:
    backend: str
    counts: np.ndarray  # [B, classes] output spike counts over the aligned window
    activity: dict[str, np.ndarray]  # node -> [steps, B, ...]

    @property
    def predictions(self) -> np.ndarray:
        return self.counts.argmax(axis=1)


def _output_source(graph: nir.NIRGraph) -> str:
    outs = [a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output)]
    if len(outs) != 1:
        raise NeurodeployError("readout needs exactly one node feeding the Output")
    return outs[0]


def run(model: CompiledModel, x: np.ndarray, backend: str = "native") -> RunResult:
    """``x``: ``[T, B, *input_shape]`` integer event counts."""
    if backend not in BACKENDS:
        raise NeurodeployError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    x = np.asarray(x)
    T = x.shape[0]
    want = tuple(model.input_shape)
    if tuple(x.shape[2:]) != want:
        raise NeurodeployError(f"input has per-step shape {tuple(x.shape[2:])}, model expects "
                               f"{want}")
    src = _output_source(model.graph)
    if backend == "float":
        res = simulate_float(training_timing(model.graph), x)
        return RunResult(backend, res.activity[src].sum(0).reshape(x.shape[1], -1), res.activity)
    depth = int(model.meta.get("pipeline_depth", 0))
    xp = np.concatenate([x, np.zeros((depth, *x.shape[1:]), dtype=x.dtype)]).astype(np.int64)
    if backend == "native":
        act = simulate_fixed(model.graph, xp).activity
    else:
        from .backends.lava.network import simulate_lava

        act = simulate_lava(model.graph, xp)
    counts = act[src][depth:depth + T].sum(0).reshape(x.shape[1], -1)
    return RunResult(backend, counts, act)
