"""Command line: ``neurodeploy compile | inspect | run | eval | energy | export``.

User errors (bad files, unsupported layers, values out of range) print one line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .errors import InputFileError, NeurodeployError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Deploy PyTorch spiking neural networks to Loihi-style hardware via NIR and Lava.",
)
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


class Backend(str, Enum):
    native = "native"
    lava = "lava"


class Observer(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    search = "search"


class Rounding(str, Enum):
    nearest = "nearest"
    gptq = "gptq"
    auto = "auto"


COMPILE_EXAMPLES = """
Examples:

  neurodeploy compile models/default/model.pt -o build/model.ndp

  neurodeploy compile graph.nir --dt 1e-4 --time-steps 100 -o graph.ndp

  neurodeploy compile cnn.onnx --convert --calibrate train.npz --time-steps 64 -o cnn.ndp

  neurodeploy compile ckpt.pth --arch dsr-preact-resnet18 --arch-kwargs neuron=lif,alpha=0.5
"""


@app.command("compile", epilog=COMPILE_EXAMPLES)
def compile_cmd(
    model: Annotated[Path, typer.Argument(
        help="model.pt (neurodeploy.save checkpoint), an official checkpoint (--arch) or .nir")],
    output: Annotated[Path, typer.Option("-o", "--output", help="compiled .ndp to write")] = Path(
        "model.ndp"),
    target: Annotated[str, typer.Option(help="target name from targets/ or a .toml path")] = (
        "loihi-sim"),
    time_steps: Annotated[int | None, typer.Option(help="time steps per sample")] = None,
    input_shape: Annotated[str | None, typer.Option(help="per-step input shape, e.g. 2,34,34")
                           ] = None,
    dt: Annotated[float | None, typer.Option(help="time step for NIR ODEs (NIR has none)")
                  ] = None,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="allow loading a whole pickled nn.Module (runs its code)")] = False,
    arch: Annotated[str | None, typer.Option(
        help="architecture of a checkpoint written by a method's official code (e.g. "
             "dsr-preact-resnet18, dsr-vgg11, ltl-vgg11, spide-f, lee-vgg9) or a plain "
             "state_dict of a registered architecture")] = None,
    arch_kwargs: Annotated[list[str] | None, typer.Option(
        "--arch-kwargs", help="with --arch: what the checkpoint does not store, as JSON "
        "'{\"neuron\": \"lif\"}' or key=value pairs (comma-separated or repeated)")] = None,
    calibrate: Annotated[Path | None, typer.Option(
        help="calibration data: .npz with x [N, T, *shape], or a folder of recordings "
             "(a few hundred samples are used)")
                         ] = None,
    observer: Annotated[Observer | None, typer.Option(
        help="how layer scales are chosen (default: search with --calibrate, else minmax)")
                        ] = None,
    convert: Annotated[bool | None, typer.Option(
        "--convert/--no-convert", help="convert a ReLU ANN (.onnx, .pt2, TorchScript .pt) to "
        "IF neurons; --calibrate then balances thresholds [default: for .onnx/.pt2]")] = None,
    align: Annotated[bool, typer.Option(
        "--align/--no-align", help="pipeline alignment: on Loihi/Lava every synapse layer delays "
        "by one step, so a neuron d layers deep sees the input from step d on; align pre-charges "
        "biases (or feeds them from clock neurons) and adds relay neurons to shorter residual "
        "branches, so the deployed network reproduces the trained one")] = True,
    per_channel: Annotated[bool | None, typer.Option(
        "--per-channel/--per-layer", help="one scale per output channel (per-neuron thresholds)"
        " or one per layer (default: per channel where the target allows per-neuron "
        "thresholds)")] = None,
    rounding: Annotated[Rounding | None, typer.Option(
        help="weight rounding at the chosen scales: nearest; gptq (integer weights that "
             "minimise the error of each layer's summed input current on the --calibrate "
             "data); or auto (per layer, whichever of nearest and gptq gives the lowest "
             "firing-rate error on held-out calibration samples). gptq and auto need "
             "--calibrate; default: nearest")] = None,
):
    """Export to NIR, lower, quantize to Loihi fixed point and write one .ndp artifact."""
    from . import artifact
    from .compiler import compile_file

    shape = parse_shape(input_shape) if input_shape else None
    kw = parse_arch_kwargs(arch_kwargs or [])
    ann = model.suffix.lower() in (".onnx", ".pt2")
    if convert is False and ann:
        raise InputFileError(f"{model}: an ANN; compile it with --convert")
    if convert or ann:
        from .compiler import compile_graph, load_source

        graph, info = load_source(model, trust_pickle, shape, time_steps, dt, convert=True,
                                  calibration=calibrate, arch=arch, arch_kwargs=kw)
        if rounding is not None and rounding is not Rounding.nearest:
            raise InputFileError(f"--rounding {rounding.value} is not available with --convert: "
                                 "the calibration data sets the ANN's thresholds there")
        cm = compile_graph(graph, target, source=info, time_steps=info["time_steps"],
                           observer=observer.value if observer else None,
                           per_channel=per_channel, align=align)
    else:
        cm = compile_file(model, target, trust_pickle, shape, time_steps, dt,
                          calibration=calibrate, observer=observer.value if observer else None,
                          log=lambda line: err.print(f"calibration: {line}", highlight=False),
                          arch=arch, arch_kwargs=kw,
                          per_channel=per_channel, align=align,
                          rounding=rounding.value if rounding else None)
    artifact.save(cm, output)
    q = cm.meta["quantization"]["layers"]
    out.print(f"compiled {model} -> {output} (target {cm.meta['target']}, "
              f"{len(q)} neuron layers, pipeline depth {cm.meta['pipeline_depth']})")
    out.print(alignment_text(cm.meta))
    if arch and not shape:
        out.print(f"input shape {','.join(map(str, cm.meta['input_shape']))} from {arch}'s "
                  "defaults (--input-shape to change)")
    _quant_table(cm.meta)
    cal = cm.meta["quantization"].get("calibration")
    if cal:
        mm = (f" (min/max scales: {cal['objective_minmax']:.4g}, kept: {cal['used']})"
              if "objective_minmax" in cal else "")
        out.print(f"calibration on {cal['samples']} samples: summed firing-rate error "
                  f"{cal['objective']:.4g}{mm}")
    if cm.meta["saturated_weights"]:
        err.print(f"warning: {cm.meta['saturated_weights']} weights saturated during "
                  "quantization: " + ", ".join(f"layer {k}: {v}" for k, v in
                                               cm.meta["saturated_layers"].items()))


def alignment_text(meta: dict) -> str:
    """One line on pipeline alignment: off, or what it added (``meta["alignment"]``)."""
    if not meta.get("aligned"):
        return (f"pipeline alignment: off (biases act during the first {meta['pipeline_depth']}"
                " steps, residual branches of unequal depth meet out of phase)")
    a = meta.get("alignment") or {}
    text = (f"pipeline alignment: on; added {a.get('relay_neurons', 0)} relay neurons "
            f"({a.get('relay_layers', 0)} layers) and {a.get('clock_neurons', 0)} clock neurons "
            f"({a.get('clock_layers', 0)} layers, feeding {a.get('clocked_bias_layers', 0)} "
            f"biases); {a.get('precharged_neurons', 0)} neurons pre-charged")
    if a.get("skipped_layers"):
        text += "; not aligned: " + ", ".join(map(str, a["skipped_layers"]))
    return text


def _scale_text(ly: dict) -> str:
    """The layer scale; with per-channel scales also their range, ``lambda [min..max]``."""
    lo, hi = ly.get("channel_scale_min"), ly.get("channel_scale_max")
    if ly.get("per_channel") and lo is not None and hi is not None and lo != hi:
        return f"{ly['scale']:.4g} [{lo:.4g}..{hi:.4g}]"
    return f"{ly['scale']:.4g}"


def _node_scale(q: dict) -> str:
    """A node's scale, and the range of its channel scales where they differ."""
    c = np.asarray(q.get("channel_scale", q["scale"]), float)
    if c.size and c.min() != c.max():
        return f"{q['scale']:.4g} (channels {c.min():.4g}..{c.max():.4g})"
    return f"{q['scale']:.4g}"


def parse_shape(text: str) -> tuple[int, ...]:
    """``'2,34,34'`` -> ``(2, 34, 34)``."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise NeurodeployError(f"--input-shape {text!r}: expected integers, e.g. 2,34,34"
                               ) from None
    if not shape or min(shape) <= 0:
        raise NeurodeployError(f"--input-shape {text!r}: sizes must be positive")
    return shape


def parse_arch_kwargs(items: list[str]) -> dict:
    """``--arch-kwargs`` values: JSON objects or ``key=value`` pairs (comma-separated outside
    brackets); values are read as JSON where possible (``size=48``, ``blocks=[1,1]``), else
    kept as strings (``neuron=lif``)."""
    kw: dict = {}
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise NeurodeployError(f"--arch-kwargs {text!r}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise NeurodeployError(f"--arch-kwargs {text!r}: expected a JSON object")
            kw.update(obj)
            continue
        parts, depth, cur = [], 0, ""
        for ch in text:
            depth += (ch in "[{(") - (ch in "]})")
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for part in filter(str.strip, parts):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise NeurodeployError(f"--arch-kwargs {part!r}: expected key=value or a JSON "
                                       "object")
            try:
                kw[key.strip()] = json.loads(value.strip())
            except json.JSONDecodeError:
                kw[key.strip()] = value.strip()
    return kw


def _rounding_cells(ly: dict) -> tuple[str, str]:
    """Rounding of a layer and its relative input-current error on calibration data."""
    if ly.get("output_error") is None:
        return ly.get("rounding", "nearest"), "-"
    return (ly.get("rounding", "nearest"),
            f"{ly['output_error_nearest']:.2e} -> {ly['output_error']:.2e}")


def _quant_table(meta: dict) -> None:
    q = meta["quantization"]
    t = Table(title="quantization, scales per output channel" if q.get("per_channel")
              else "quantization")
    layers = q["layers"]
    rates = any(ly.get("rate_error") is not None for ly in layers)
    outs = any(ly.get("output_error") is not None for ly in layers)
    for c in ("layer", "synapses", "observer", "scale", "vth", "dv", "du", "weights",
              "saturated", "max |err|") + (("rate err",) if rates else ()) + (
              ("rounding", "out err nearest -> used") if outs else ()):
        t.add_column(c, justify="right" if c not in ("layer", "synapses", "observer") else "left")
    for ly in layers:
        obs = ly.get("observer", "minmax")
        if ly.get("vth_factor", 1.0) != 1.0:
            obs += f" vth*{ly['vth_factor']:.3f}"
        t.add_row(ly["neuron"], ",".join(ly["synapses"]), obs, _scale_text(ly),
                  str(ly["vth"]), str(ly["dv"]), str(ly["du"]), str(ly["n_weights"]),
                  str(ly["n_saturated"]), f"{ly['max_abs_weight_error']:.2e}",
                  *((f"{ly['rate_error']:.4f}" if ly.get("rate_error") is not None else "-",)
                    if rates else ()), *(_rounding_cells(ly) if outs else ()))
    out.print(t)


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="compiled .ndp")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Show layers, shapes, bit widths and every scale recorded in a compiled model."""
    from . import artifact
    from .graph import evaluation_order
    from .passes.align_pipeline import added_by_alignment

    cm = artifact.load(model)
    if as_json:
        print(json.dumps(cm.meta, indent=1))
        return
    m = cm.meta
    out.print(f"[bold]{model}[/] format v{m['ndp_version']}, {m['compiler']}, "
              f"created {m['created']}")
    out.print(f"source: {m['source'].get('path')} ({m['source'].get('kind')}, sha256 "
              f"{m['source'].get('sha256', '')[:12]}...)")
    out.print(f"target: {m['target']}; input {tuple(m['input_shape'])} x {m['time_steps']} steps;"
              f" dt {m['dt']}; readout {m['readout']}; pipeline depth {m['pipeline_depth']}")
    out.print(alignment_text(m))
    f = m["numerics"]
    out.print(f"numerics: {f['weight_bits']}-bit weights, {f['state_bits']}-bit u/v, "
              f"{f['decay_bits']}-bit decays, {f['vth_bits']}-bit threshold")
    t = Table(title="layers")
    for c in ("node", "type", "shape", "parameters"):
        t.add_column(c)
    order, _ = evaluation_order(cm.graph)
    for name in order:
        node = cm.graph.nodes[name]
        shape = tuple(int(s) for s in node.output_type.get("output", []))
        q = node.metadata.get("loihi", {})
        if "weight_mant" in q:
            w = np.asarray(q["weight_mant"])
            desc = (f"w {tuple(w.shape)} in [{w.min()}, {w.max()}], exp {q['weight_exp']}, "
                    f"scale {_node_scale(q)}")
        elif "vth" in q:
            desc = (f"vth {int(np.max(q['vth']))}, du {q['du']}, dv {q['dv']}, bias_exp "
                    f"{q['bias_exp']}, reset {q['reset']}, scale {_node_scale(q)}")
        else:
            desc = ""
        role = added_by_alignment(node)
        kind = type(node).__name__ + (f" ({role}, alignment)" if role else "")
        t.add_row(name, kind, str(shape), desc)
    out.print(t)
    _quant_table(m)


def _load_inputs(path: Path, model_shape, samples: int | None):
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        data = np.load(path)
        x = data["x"]
        y = data["y"] if "y" in data else None
    except Exception as e:
        raise InputFileError(f"{path}: expected an .npz with 'x' [N, T, *shape] (and 'y'): {e}"
                             ) from e
    if samples:
        x = x[:samples]
        y = y[:samples] if y is not None else None
    if tuple(x.shape[2:]) != tuple(model_shape):
        raise InputFileError(f"{path}: 'x' has per-step shape {tuple(x.shape[2:])}, model "
                             f"expects {tuple(model_shape)}")
    return np.moveaxis(x, 0, 1), y  # [T, N, ...]


def parse_duration_us(text: str) -> int:
    """'50ms', '0.3s', '20000us' or a plain number of microseconds -> microseconds."""
    t = text.strip().lower()
    for unit, f in (("us", 1), ("ms", 1000), ("s", 1_000_000)):
        if t.endswith(unit):
            t, factor = t[: -len(unit)], f
            break
    else:
        factor = 1
    try:
        value = float(t) * factor
    except ValueError:
        raise NeurodeployError(f"cannot read duration {text!r}; use e.g. 50ms, 0.3s, 20000us"
                               ) from None
    if value <= 0:
        raise NeurodeployError(f"duration {text!r} must be positive")
    return int(round(value))


RUN_EXAMPLES = """
Examples:

  neurodeploy run model.ndp --input samples.npz --compare

  neurodeploy run model.ndp --events recording.bin --window 320ms

  cat camera.raw | neurodeploy run model.ndp --events - --window 320ms --stride 100ms
"""


@app.command(epilog=RUN_EXAMPLES)
def run(
    model: Annotated[Path, typer.Argument(help="compiled .ndp")],
    input: Annotated[Path | None, typer.Option(
        "--input", help=".npz with x [N, T, *shape] event-count frames (+ y labels)")] = None,
    events: Annotated[str | None, typer.Option(
        "--events", help="event recording (any supported format), or - for EVT 3.0 on stdin")
    ] = None,
    window: Annotated[str | None, typer.Option(
        help="--events: window per decision, e.g. 320ms (default: the model's T x bin)")] = None,
    stride: Annotated[str | None, typer.Option(
        help="--events: time between window starts (default: the window)")] = None,
    backend: Annotated[Backend | None, typer.Option(
        help="lava (reference, bit-accurate) or native engine (same spikes, much faster); "
             "default lava for --input, native for --events")] = None,
    samples: Annotated[int | None, typer.Option(help="use only the first N samples")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="also run the float model and the other fixed-point backend")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Run a compiled model on event-count frames (--input) or an event stream (--events)."""
    from . import artifact

    if (input is None) == (events is None):
        raise NeurodeployError("give exactly one of --input FILE.npz or --events FILE")
    cm = artifact.load(model)
    if events is not None:
        _run_events(cm, model, events, window, stride, (backend or Backend.native).value,
                    as_json)
        return
    _run_frames(cm, model, input, (backend or Backend.lava).value, samples, compare, as_json)


def _run_events(cm, model: Path, source: str, window, stride, backend: str, as_json: bool):
    from rich.progress import Progress

    from .streaming import stream_file

    enc = cm.meta.get("input_encoding") or {}
    default_w = int(enc.get("bin_us", 0)) * cm.time_steps
    window_us = parse_duration_us(window) if window else default_w
    stride_us = parse_duration_us(stride) if stride else None
    with Progress(transient=True, disable=as_json, console=err) as prog:
        task = prog.add_task("windows", total=None)
        summary = stream_file(cm, source, window_us, stride_us, backend,
                              progress=lambda w: prog.advance(task))
    rep = {
        "model": str(model), "source": source, "backend": backend,
        "window_us": window_us, "stride_us": stride_us or window_us,
        "decisions": [vars(d) for d in summary.decisions],
        "events_read": summary.events_read, "events_used": summary.events_used,
        "events_dropped": summary.dropped, "anomalies": summary.anomalies,
        "events_per_s": summary.events_per_s, "real_time_factor": summary.real_time_factor,
    }
    if as_json:
        print(json.dumps(rep, indent=1))
        return
    t = Table(title=f"{model.name} on {source}: one decision per window")
    for c in ("window start (s)", "events", "decision", "output spikes"):
        t.add_column(c, justify="right")
    for d in summary.decisions:
        t.add_row(f"{d.t_start_us / 1e6:.3f}", str(d.n_events), str(d.prediction),
                  str(max(d.counts)))
    out.print(t)
    dropped = ", ".join(f"{n} {k}" for k, n in summary.dropped.items()) or "none"
    out.print(f"events read {summary.events_read} = used {summary.events_used} + dropped "
              f"{summary.events_read - summary.events_used} ({dropped})")
    out.print(f"throughput {summary.events_per_s:,.0f} events/s; real-time factor "
              f"{summary.real_time_factor:.3g}x ({backend} backend)")


def _run_frames(cm, model: Path, input: Path, backend: str, samples, compare: bool,
                as_json: bool):
    from .runtime import run as run_model

    x, y = _load_inputs(input, cm.input_shape, samples)
    backends = [backend]
    if compare:
        backends += ["native" if backend == "lava" else "lava", "float"]
    res = {}
    for b in backends:
        with err.status(f"running {x.shape[1]} samples x {x.shape[0]} steps on {b}..."):
            res[b] = run_model(cm, x, b)
    report = {"samples": int(x.shape[1]), "backends": {}}
    for b, r in res.items():
        entry = {"predictions": r.predictions.tolist()}
        if y is not None:
            entry["accuracy"] = float((r.predictions == y).mean())
        report["backends"][b] = entry
    if compare:
        fx = [b for b in backends if b != "float"]
        report["lava_equals_native_counts"] = bool(np.array_equal(res[fx[0]].counts,
                                                                  res[fx[1]].counts))
        report["agreement_fixed_vs_float"] = float(
            (res[backend].predictions == res["float"].predictions).mean())
    if as_json:
        print(json.dumps(report, indent=1))
        return
    t = Table(title=f"{model.name}: readout per sample")
    t.add_column("sample", justify="right")
    if y is not None:
        t.add_column("label", justify="right")
    for b in backends:
        t.add_column(b, justify="right")
    for i in range(x.shape[1]):
        row = [str(i)] + ([str(int(y[i]))] if y is not None else [])
        row += [str(int(res[b].predictions[i])) for b in backends]
        t.add_row(*row)
    out.print(t)
    for b in backends:
        acc = report["backends"][b].get("accuracy")
        out.print(f"{b:>6}: " + (f"accuracy {acc:.1%}" if acc is not None else ""))
    if compare:
        out.print(f"lava and native output spike counts identical: "
                  f"{report['lava_equals_native_counts']}")
        out.print(f"agreement {backend} vs float predictions: "
                  f"{report['agreement_fixed_vs_float']:.1%}")


from .commands import energy as _energy  # noqa: E402
from .commands import eval as _eval  # noqa: E402
from .commands import export as _export  # noqa: E402

_eval.register(app)
_energy.register(app)
_export.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors and bad usage)."""
    try:
        app(args=argv, prog_name="neurodeploy")
    except NeurodeployError as e:
        err.print(f"error: {e}", soft_wrap=True, highlight=False, markup=False)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
