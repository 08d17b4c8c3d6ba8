"""``compile``: model file -> NIR -> lowered graph -> Loihi fixed point -> ``CompiledModel``."""

from __future__ import annotations

import time
from pathlib import Path

import nir
import numpy as np

from . import __version__
from .artifact import CompiledModel, sha256
from .engine.fixed_engine import pipeline_depth
from .errors import InputFileError, QuantizationError
from .graph import input_names, validate
from .passes import lower_for_hardware
from .passes.align_pipeline import (
    align_for_pipeline,
    alignment_summary,
    clock_scales,
    data_depth,
    is_aligned,
    settle_precharge,
    training_timing,
)
from .quantize import LoihiFormat, quantize_graph
from .targets import load_target

ANN_SUFFIXES = (".onnx", ".pt2")
#: Weight rounding when calibration data is given (``compile_graph(rounding=None)``). ``gptq``
#: and ``auto`` lower every layer's current error on calibration data, but on the accuracy
#: benchmark they do not beat nearest (docs/fixed-point.md, "Rounding the weights") and cost
#: minutes of compile time, so they are opt-in.
DEFAULT_ROUNDING = "nearest"


def load_source(path: str | Path, trust_pickle: bool = False, input_shape=None,
                time_steps: int | None = None, dt: float | None = None, *,
                convert: bool | None = None, calibration=None, percentile: float = 99.9,
                arch: str | None = None, arch_kwargs: dict | None = None):
    """Read any supported model file; returns ``(graph, info)``.

    ``.nir`` graphs, ``.net`` lava-dl netx networks and neurodeploy checkpoints are SNNs.
    ReLU ANNs (``.onnx``, ``torch.export`` ``.pt2``, TorchScript ``.pt`` with
    ``trust_pickle``) are converted to IF SNNs (:mod:`neurodeploy.frontends.onnx`): ``convert``
    ``None`` converts those formats, ``False`` refuses them, ``True`` also treats a ``.pt`` as
    TorchScript. ``calibration`` (array or ``.npz`` with ``x``: ANN inputs ``[N, *shape]`` or
    event counts ``[N, T, *shape]``) sets the thresholds from the ``percentile`` of each layer's
    activations; without it they come from weight bounds (safe, slower to fire).
    ``arch``/``arch_kwargs``: the checkpoint was written by a method's official code (see
    :func:`neurodeploy.checkpoint.load_checkpoint`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if arch is None and arch_kwargs:
        raise InputFileError("--arch-kwargs needs --arch")
    if arch is not None and (suffix in ANN_SUFFIXES + (".nir", ".net") or convert):
        raise InputFileError(f"{path}: --arch applies to PyTorch checkpoints of spiking "
                             "networks, not to .nir/.net graphs or ANNs to convert")
    info = {"path": str(path), "sha256": sha256(path), "kind": suffix.lstrip(".")}
    torchscript = (suffix in (".pt", ".pth") and convert is not False and arch is None
                   and _is_torchscript(path))
    if suffix in ANN_SUFFIXES or torchscript or (convert and suffix in (".pt", ".pth")):
        if convert is False:
            raise InputFileError(f"{path}: {suffix} models are ANNs; compile them with "
                                 "--convert (ReLU -> integrate-and-fire)")
        return _convert_ann(path, info, trust_pickle, input_shape, time_steps, calibration,
                            percentile)
    if suffix == ".net":
        from .frontends.netx import read_netx

        graph = read_netx(path, input_shape)
        if dt is not None:
            graph.metadata["dt"] = float(dt)
        shape = [int(s) for s in graph.nodes["input"].output_type["output"]]
        info.update(input_shape=shape,
                    time_steps=time_steps or graph.metadata.get("time_steps"))
        return graph, info
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
    if suffix in (".pt", ".pth", ".ckpt", ".tar") or arch is not None:
        from .checkpoint import load_checkpoint
        from .frontends.torch import torch_to_nir

        model, ck = load_checkpoint(path, trust_pickle=trust_pickle, arch=arch,
                                    arch_kwargs=arch_kwargs, input_shape=input_shape)
        shape = input_shape or ck.get("input_shape")
        if not shape:
            hint = f" (arch {arch} has no default)" if arch else ""
            raise InputFileError(f"{path}: checkpoint has no input shape{hint}; pass "
                                 "--input-shape C,H,W")
        graph = torch_to_nir(model.double(), tuple(shape))
        info.update(arch=ck.get("arch"), input_shape=[int(s) for s in shape],
                    time_steps=time_steps or ck.get("time_steps"),
                    input_encoding=dict(ck.get("extra", {}).get("input_encoding", {})))
        return graph, info
    raise InputFileError(f"{path}: unknown model file type {suffix!r}; expected .pt/.pth "
                         "(neurodeploy.save checkpoint), .nir, .net (lava-dl netx), or an ANN "
                         "to convert: .onnx, .pt2 (torch.export), TorchScript .pt")


def _is_torchscript(path: Path) -> bool:
    from .frontends.onnx import is_torchscript

    return is_torchscript(path)


def _convert_ann(path: Path, info: dict, trust_pickle: bool, input_shape, time_steps,
                 calibration, percentile: float):
    from .frontends.onnx import onnx_to_nir, torch_program_to_nir

    if calibration is not None and not isinstance(calibration, np.ndarray):
        cal_path = Path(calibration)
        try:
            with np.load(cal_path) as data:
                calibration = data["x"]
        except (OSError, KeyError, ValueError) as e:
            raise InputFileError(f"{cal_path}: expected an .npz with 'x' (ANN inputs [N, "
                                 f"*shape] or event counts [N, T, *shape]): {e}") from e
    steps = int(time_steps or 64)
    shape = tuple(input_shape) if input_shape else None
    if path.suffix.lower() == ".onnx":
        graph = onnx_to_nir(path, calibration, steps, percentile, input_shape=shape)
    else:
        graph = torch_program_to_nir(path, calibration, steps, percentile, input_shape=shape,
                                     trust_pickle=trust_pickle)
    info.update(input_shape=[int(s) for s in graph.nodes["input"].output_type["output"]],
                time_steps=steps, conversion={"input_scale": graph.metadata["input_scale"],
                                              "percentile": graph.metadata["ann_percentile"]})
    return graph, info


def compile_graph(graph: nir.NIRGraph, target: str = "loihi-sim", source: dict | None = None,
                  time_steps: int | None = None, scales: dict | None = None, *,
                  calibration: np.ndarray | None = None, observer: str | None = None,
                  calibration_samples: int = 256, log=None,
                  per_channel: bool | None = None, align: bool = True,
                  rounding: str | None = None) -> CompiledModel:
    """Lower and quantize ``graph`` for ``target``; returns the artifact in memory.

    ``observer``: ``"minmax"`` (default without calibration data), ``"percentile"`` or
    ``"search"`` (default with it; needs it). ``calibration``: ``[T, B, *input_shape]`` integer
    event counts; at most ``calibration_samples`` evenly spaced samples are used. With
    calibration data every layer's firing-rate error against the float model is recorded,
    whichever observer chose the scales. ``scales`` overrides the scale of named neuron layers
    (with ``"search"`` they stay fixed and the search chooses the others). ``log`` receives
    progress lines. ``align``: rewrite the lowered graph for the hardware's one-step delay per
    synapse layer (:func:`~neurodeploy.passes.align_for_pipeline`: relays, bias pre-charge and
    clocks), so that from step ``pipeline_depth`` on every neuron does what it did in training;
    meta ``aligned`` and ``alignment`` say what was added (an already aligned graph is always
    compiled as one). Calibration and the recorded rate errors use the training-time view of
    the aligned graph (no delays). ``per_channel``: one
    scale per output channel (``True``) or per layer (``False``); ``None`` takes the target's
    default (per channel where its thresholds may differ per neuron, ``per_neuron_vth``),
    except that given ``scales`` are then applied as they are, per layer. ``rounding``:
    ``"nearest"``, ``"gptq"`` (:mod:`neurodeploy.quantize.rounding`: integer weights that
    minimise the summed input current error on the calibration data, at the observer's scales)
    or ``"auto"`` (per layer, the candidate with the lowest firing-rate error on held-out
    calibration samples); the last two need calibration data. ``None``: ``DEFAULT_ROUNDING``.
    """
    from .quantize.calibrate import (
        calibrate,
        choose_rounding,
        float_spikes,
        rate_errors,
        subsample,
    )
    from .quantize.rounding import METHODS, WeightRounding

    tgt = load_target(target)
    validate(graph)
    lowered = lower_for_hardware(graph)
    aligned = bool(align or is_aligned(lowered))
    if aligned:
        lowered = align_for_pipeline(lowered)
    fmt = LoihiFormat.from_target(tgt)
    source = dict(source or {})
    shape = source.get("input_shape") or [
        int(s) for s in graph.nodes[input_names(graph)[0]].output_type["output"]]
    observer = observer or ("search" if calibration is not None else "minmax")
    allowed = bool(getattr(tgt.numerics, "per_neuron_vth", 0))
    if per_channel is None:
        per_channel = allowed and not scales
    if per_channel and not allowed:
        raise QuantizationError(f"target {tgt.name!r} has one threshold per layer "
                                "(per_neuron_vth = 0): per-channel scales need per-neuron "
                                "thresholds; compile per layer (--per-layer)")
    if aligned:  # after the per-channel default, which looks at the caller's scales only
        scales = {**clock_scales(lowered), **(scales or {})}
    if calibration is not None:
        calibration = np.asarray(calibration)
        if calibration.ndim < 2 or tuple(calibration.shape[2:]) != tuple(int(s) for s in shape):
            raise QuantizationError(
                f"calibration data has shape {tuple(calibration.shape)}; expected [T, B, "
                f"{', '.join(str(int(s)) for s in shape)}]")
    rounding = rounding or (DEFAULT_ROUNDING if calibration is not None else "nearest")
    if rounding not in METHODS:
        raise QuantizationError(f"rounding must be one of {', '.join(METHODS)}, got {rounding!r}")
    if rounding != "nearest" and calibration is None:
        raise QuantizationError(f"rounding {rounding!r} needs calibration data (compile "
                                "--calibrate FILE.npz, or calibration=[T, B, ...] counts)")
    rnd = WeightRounding(rounding)
    if observer == "search":
        if calibration is None:
            raise QuantizationError("observer 'search' needs calibration data (compile "
                                    "--calibrate FILE.npz, or calibration=[T, B, ...] counts)")
        cal = calibrate(training_timing(lowered), calibration, fmt,
                        max_samples=calibration_samples, log=log, per_channel=per_channel,
                        fixed=scales)
        cal.rounding = rnd  # scales are searched with nearest weights, then rounded
    else:
        cal = None

    def quantize(g):
        if cal is not None:
            return cal.quantize(g, fmt)
        return quantize_graph(g, fmt, scales=scales, observer=observer, per_channel=per_channel,
                              rounding=rnd)

    if rounding != "nearest":
        t0 = time.time()
        choose_rounding(training_timing(lowered), subsample(calibration, calibration_samples),
                        lambda g: quantize(g)[0], rnd, log=log)
        rnd.summary["seconds"] = round(time.time() - t0, 2)
    qgraph, report = quantize(lowered)
    if aligned:
        qgraph = settle_precharge(qgraph, quantize(training_timing(lowered))[0])
    if cal is None and calibration is not None:
        xs = subsample(calibration, calibration_samples)
        errs = rate_errors(training_timing(qgraph), xs, float_spikes(training_timing(lowered), xs))
        for ly in report.layers:
            ly.rate_error = errs[ly.neuron]
        report.calibration = {"observer": observer, "samples": int(xs.shape[1]),
                              "time_steps": int(xs.shape[0]),
                              "objective": float(sum(errs.values())), "rate_errors": errs}
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
        "pipeline_depth": data_depth(qgraph) if aligned else pipeline_depth(qgraph),
        "aligned": aligned,
        "quantization": report.as_dict(),
        "saturated_weights": int(sum(x.n_saturated for x in report.layers)),
        "saturated_layers": report.saturated_layers,
    }
    if aligned:
        meta["alignment"] = alignment_summary(qgraph)
    return CompiledModel(graph=qgraph, meta=meta)


def compile_file(path, target="loihi-sim", trust_pickle=False, input_shape=None, time_steps=None,
                 dt=None, *, calibration=None, observer=None, calibration_samples=256,
                 arch: str | None = None, arch_kwargs: dict | None = None,
                 log=None, per_channel: bool | None = None, align: bool = True,
                 rounding: str | None = None) -> CompiledModel:
    """:func:`load_source` then :func:`compile_graph`; ``calibration`` may be an array or the
    path of an ``.npz`` with ``x`` ``[N, T, *shape]`` (as ``neurodeploy run --input`` reads);
    ``arch``/``arch_kwargs`` as in :func:`load_source`; ``align`` and ``rounding`` as in
    :func:`compile_graph`.
    """
    graph, info = load_source(path, trust_pickle, input_shape, time_steps, dt, arch=arch,
                              arch_kwargs=arch_kwargs)
    if calibration is not None and not isinstance(calibration, np.ndarray):
        if Path(calibration).is_dir():
            calibration = recordings_as_calibration(calibration, info, calibration_samples)
        else:
            from .quantize.calibrate import load_calibration

            calibration = load_calibration(calibration)
    return compile_graph(graph, target, source=info, time_steps=info.get("time_steps"),
                         calibration=calibration, observer=observer,
                         calibration_samples=calibration_samples, log=log,
                         per_channel=per_channel, align=align, rounding=rounding)


def recordings_as_calibration(folder, info: dict, max_samples: int) -> np.ndarray:
    """``[T, N, ...]`` counts from up to ``max_samples`` evenly spaced recordings in ``folder``,
    binned as the checkpoint's ``input_encoding`` says (the runtime's binning)."""
    from .events import read_events
    from .streaming import bin_events, collect_recordings

    bin_us = int((info.get("input_encoding") or {}).get("bin_us", 0))
    steps = info.get("time_steps")
    if bin_us <= 0 or not steps:
        raise InputFileError(f"{folder}: calibrating on recordings needs the checkpoint's time "
                             "bin and time steps; pass an .npz of frames instead")
    recs = collect_recordings(folder)
    idx = np.unique(np.linspace(0, len(recs) - 1, min(max_samples, len(recs))).round().astype(int))
    c, h, w = (int(s) for s in info["input_shape"])
    frames = []
    for i in idx:
        ev = read_events(recs[i][0], sensor_size=(w, h, 2)).events
        t0 = int(ev["t"].min()) if len(ev) else 0
        frames.append(bin_events(ev, t0, int(steps), bin_us, (c, h, w)))
    return np.stack(frames, axis=1)


def pad_for_pipeline(x: np.ndarray, depth: int) -> np.ndarray:
    """Append ``depth`` empty steps so the last inputs reach the output through the pipeline."""
    return np.concatenate([x, np.zeros((depth, *x.shape[1:]), dtype=x.dtype)])
