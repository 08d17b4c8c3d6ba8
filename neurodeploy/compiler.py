"""``compile``: model file -> NIR -> lowered graph -> Loihi fixed point -> ``CompiledModel``."""

from __future__ import annotations

import time
from pathlib import Path

import nir
import numpy as np

from . import __version__
from .artifact import CompiledModel, sha256
from .engine.fixed_engine import pipeline_depth
from .errors import InputFileError
from .graph import input_names, validate
from .passes import lower_for_hardware
from .quantize import LoihiFormat, quantize_graph
from .targets import load_target


def load_source(path: str | Path, trust_pickle: bool = False, input_shape=None,
                time_steps: int | None = None, dt: float | None = None):
    """Read any supported model file; returns ``(graph, info)``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    info = {"path": str(path), "sha256": sha256(path), "kind": suffix.lstrip(".")}
    if suffix == ".nir":
        from .frontends.nir_file import read_nir

        graph = read_nir(path)
        shape = input_shape or tuple(int(s) for s in
                                     graph.nodes[input_names(graph)[0]].output_type["output"])
        graph.metadata = dict(graph.metadata or {})
        if dt is not None:
            graph.metadata["dt"] = float(dt)
        if "dt" not in graph.metadata:
            raise InputFileError(f"{path}: NIR graphs carry no time step; pass --dt "
                                 "(e.g. --dt 1e-4 for graphs exported by Norse)")
        info.update(input_shape=list(shape), time_steps=time_steps)
        return graph, info
    if suffix in (".pt", ".pth", ".ckpt", ".tar"):
        from .checkpoint import load_checkpoint
        from .frontends.torch import torch_to_nir

        model, ck = load_checkpoint(path, trust_pickle=trust_pickle)
        shape = input_shape or ck.get("input_shape")
        if not shape:
            raise InputFileError(f"{path}: checkpoint has no input shape; pass --input-shape")
        graph = torch_to_nir(model.double(), tuple(shape))
        info.update(arch=ck.get("arch"), input_shape=list(shape),
                    time_steps=time_steps or ck.get("time_steps"),
                    input_encoding=dict(ck.get("extra", {}).get("input_encoding", {})))
        return graph, info
    raise InputFileError(f"{path}: unknown model file type {suffix!r}; expected .pt/.pth "
                         "(neurodeploy.save checkpoint) or .nir")


def compile_graph(graph: nir.NIRGraph, target: str = "loihi-sim", source: dict | None = None,
                  time_steps: int | None = None, scales: dict | None = None) -> CompiledModel:
    """Lower and quantize ``graph`` for ``target``; returns the artifact in memory."""
    tgt = load_target(target)
    validate(graph)
    lowered = lower_for_hardware(graph)
    fmt = LoihiFormat.from_target(tgt)
    qgraph, report = quantize_graph(lowered, fmt, scales=scales)
    source = dict(source or {})
    shape = source.get("input_shape") or [
        int(s) for s in graph.nodes[input_names(graph)[0]].output_type["output"]]
    meta = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "compiler": f"neurodeploy {__version__}",
        "source": {k: source[k] for k in ("path", "sha256", "kind", "arch") if k in source},
        "target": tgt.name,
        "numerics": vars(fmt),
        "input_shape": [int(s) for s in shape],
        "time_steps": int(time_steps or source.get("time_steps") or 1),
        "dt": float(graph.metadata.get("dt", 1.0)),
        "readout": "spike_count_argmax",
        "input_encoding": dict(source.get("input_encoding") or {}),
        "pipeline_depth": pipeline_depth(qgraph),
        "quantization": report.as_dict(),
        "saturated_weights": int(sum(x.n_saturated for x in report.layers)),
    }
    return CompiledModel(graph=qgraph, meta=meta)


def compile_file(path, target="loihi-sim", trust_pickle=False, input_shape=None, time_steps=None,
                 dt=None) -> CompiledModel:
    graph, info = load_source(path, trust_pickle, input_shape, time_steps, dt)
    return compile_graph(graph, target, source=info, time_steps=info.get("time_steps"))


def pad_for_pipeline(x: np.ndarray, depth: int) -> np.ndarray:
    """Append ``depth`` empty steps so the last inputs reach the output through the pipeline."""
    return np.concatenate([x, np.zeros((depth, *x.shape[1:]), dtype=x.dtype)])
