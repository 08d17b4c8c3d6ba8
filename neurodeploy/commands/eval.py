"""``neurodeploy eval``: what quantization and the hardware timing cost, on the same data.

Three runs of one compiled model on inputs ``[T, B, *input_shape]``:

* **float**: the graph's float parameters (``simulate_float``, equal to the PyTorch model);
* **fake-quant**: the fixed-point parameters with training-time timing (no synapse delays,
  :func:`neurodeploy.quantize.calibrate.simulate_layerwise`, equal to
  ``simulate_fixed(pipeline=False)``): the error of quantization alone; a pipeline-aligned
  model runs from its trained membranes (``passes.training_timing``), as the float run does;
* **loihi-sim**: the native engine with Lava's one-step delay per synapse layer (bit-exact with
  Lava), read out over the aligned window like ``neurodeploy run`` (docs/timing.md); with
  ``backend="lava"`` Lava itself produces the readout (checked against the native engine;
  per-layer rates and overflow counts still come from the native run, which is bit-exact).

Reported: top-1 (with labels), agreement of each run's predictions with float, per neuron layer
the mean firing rates and the rate error ``mean |rate - rate_float|`` (the calibration metric),
and the overflow counters of the fixed-point runs (``u`` wraps, ``v`` clips). A layer ``k``
synapse layers deep is compared over loihi-sim steps ``k .. k + T - 1``.

:class:`Evaluator` accumulates batch by batch (``update(x, y)``), so inputs can come from any
source of ``[T, B, ...]`` arrays; :func:`evaluate` splits one array into batches.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated

import nir
import numpy as np
import typer

from ..artifact import CompiledModel
from ..compiler import pad_for_pipeline
from ..engine import simulate_fixed
from ..errors import NeurodeployError
from ..graph import is_neuron
from ..passes.align_pipeline import node_depths, training_timing

VARIANTS = ("float", "fake_quant", "loihi_sim")


class EvalBackend(str, Enum):
    native = "native"
    lava = "lava"


def neuron_depths(graph: nir.NIRGraph) -> dict[str, int]:
    """Synapse layers on the longest path from the input to every neuron layer (its delay;
    clock-fed biases of pipeline alignment do not count, :func:`passes.node_depths`)."""
    depth = node_depths(graph)
    return {n: d for n, d in depth.items() if is_neuron(graph.nodes[n])}


def _readout_source(graph: nir.NIRGraph) -> str:
    outs = [a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output)]
    if len(outs) != 1 or not is_neuron(graph.nodes[outs[0]]):
        raise NeurodeployError("eval needs exactly one neuron layer feeding the Output")
    return outs[0]


@dataclass
class LayerEval:
    neuron: str
    depth: int
    n_neurons: int
    rate_float: float
    rate_fake_quant: float
    rate_loihi_sim: float
    rate_error_fake_quant: float
    rate_error_loihi_sim: float
    u_wrap: int  # loihi-sim run, summed over samples, neurons and steps
    v_clip: int
    u_wrap_fake_quant: int
    v_clip_fake_quant: int


@dataclass
class EvalReport:
    samples: int
    time_steps: int
    backend: str
    top1: dict[str, float | None]
    agreement_with_float: dict[str, float]
    layers: list[LayerEval] = field(default_factory=list)
    lava_equals_native: bool | None = None

    @property
    def overflow(self) -> dict[str, dict[str, int]]:
        """Layers whose ``u`` wrapped or ``v`` clipped in the loihi-sim run."""
        return {x.neuron: {"u_wrap": x.u_wrap, "v_clip": x.v_clip} for x in self.layers
                if x.u_wrap or x.v_clip}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["overflow"] = self.overflow
        return d


class Evaluator:
    """Accumulates the three runs over batches; :meth:`report` summarises them."""

    def __init__(self, model: CompiledModel, backend: str = "native"):
        if backend not in ("native", "lava"):
            raise NeurodeployError(f"unknown backend {backend!r}; choose native or lava")
        self.model, self.backend = model, backend
        self.src = _readout_source(model.graph)
        self.depths = neuron_depths(model.graph)
        self.pipeline = int(model.meta.get("pipeline_depth", 0))
        self.n = 0
        self.T: int | None = None
        self.correct = {v: 0 for v in VARIANTS}
        self.labelled = 0
        self.agree = {v: 0 for v in VARIANTS}
        self.spikes = {v: {k: 0.0 for k in self.depths} for v in VARIANTS}
        self.abs_err = {v: {k: 0.0 for k in self.depths} for v in VARIANTS[1:]}
        self.overflow = {v: {k: {"u_wrap": 0, "v_clip": 0} for k in self.depths}
                         for v in VARIANTS[1:]}
        self.size = {k: int(np.prod(model.graph.nodes[k].output_type["output"]))
                     for k in self.depths}
        self.lava_equals_native: bool | None = None if backend == "native" else True

    def _runs(self, x: np.ndarray) -> tuple[dict, dict, dict]:
        """Per variant: readout counts ``[B, classes]``, aligned neuron spikes, overflow stats."""
        from ..quantize.calibrate import simulate_layerwise
        from ..runtime import run

        g, T, B = self.model.graph, x.shape[0], x.shape[1]
        counts, spikes, stats = {}, {}, {}
        fl = run(self.model, x, "float")
        counts["float"] = fl.counts
        spikes["float"] = {k: fl.activity[k] for k in self.depths}
        stats["fake_quant"] = {}
        spikes["fake_quant"] = simulate_layerwise(training_timing(g), x, stats["fake_quant"])
        counts["fake_quant"] = spikes["fake_quant"][self.src].sum(0).reshape(B, -1)
        hw = simulate_fixed(g, pad_for_pipeline(x, self.pipeline).astype(np.int64))
        spikes["loihi_sim"] = {k: hw.activity[k][d:d + T] for k, d in self.depths.items()}
        stats["loihi_sim"] = hw.states
        d = self.pipeline
        counts["loihi_sim"] = hw.activity[self.src][d:d + T].sum(0).reshape(B, -1)
        if self.backend == "lava":
            lava = run(self.model, x, "lava").counts
            self.lava_equals_native = bool(self.lava_equals_native and
                                           np.array_equal(lava, counts["loihi_sim"]))
            counts["loihi_sim"] = lava
        return counts, spikes, stats

    def update(self, x: np.ndarray, y: np.ndarray | None = None) -> None:
        """Add one batch: ``x`` ``[T, B, *input_shape]`` event counts, ``y`` ``[B]`` labels."""
        x = np.asarray(x)
        if tuple(x.shape[2:]) != self.model.input_shape:
            raise NeurodeployError(f"input has per-step shape {tuple(x.shape[2:])}, model "
                                   f"expects {self.model.input_shape}")
        if self.T is not None and x.shape[0] != self.T:
            raise NeurodeployError(f"batches differ in length: {x.shape[0]} vs {self.T} steps")
        self.T = x.shape[0]
        counts, spikes, stats = self._runs(x)
        pred = {v: c.argmax(1) for v, c in counts.items()}
        for v in VARIANTS:
            self.agree[v] += int((pred[v] == pred["float"]).sum())
            if y is not None:
                self.correct[v] += int((pred[v] == np.asarray(y)).sum())
            for k in self.depths:
                self.spikes[v][k] += float(spikes[v][k].sum())
        for v in VARIANTS[1:]:
            for k in self.depths:
                diff = (spikes[v][k].sum(0).astype(np.float64) - spikes["float"][k].sum(0))
                self.abs_err[v][k] += float(np.abs(diff).sum())
                for key in ("u_wrap", "v_clip"):
                    self.overflow[v][k][key] += int(np.sum(stats[v][k].get(key, 0)))
        self.n += x.shape[1]
        if y is not None:
            self.labelled += x.shape[1]

    def report(self) -> EvalReport:
        if not self.n:
            raise NeurodeployError("no samples evaluated")
        T = int(self.T or 0)
        per = {k: self.n * T * self.size[k] for k in self.depths}
        layers = []
        for k in sorted(self.depths, key=lambda k: (self.depths[k], k)):
            layers.append(LayerEval(
                k, self.depths[k], self.size[k],
                *(self.spikes[v][k] / per[k] for v in VARIANTS),
                *(self.abs_err[v][k] / per[k] for v in VARIANTS[1:]),
                self.overflow["loihi_sim"][k]["u_wrap"], self.overflow["loihi_sim"][k]["v_clip"],
                self.overflow["fake_quant"][k]["u_wrap"],
                self.overflow["fake_quant"][k]["v_clip"]))
        top1 = {v: (self.correct[v] / self.labelled if self.labelled == self.n else None)
                for v in VARIANTS}
        return EvalReport(self.n, T, self.backend, top1,
                          {v: self.agree[v] / self.n for v in VARIANTS}, layers,
                          self.lava_equals_native)


def evaluate(model: CompiledModel, x: np.ndarray, y: np.ndarray | None = None,
             backend: str = "native", batch_size: int = 64, progress=None) -> EvalReport:
    """Evaluate ``model`` on ``x`` (``[T, B, *input_shape]``) with labels ``y`` (``[B]``)."""
    ev = Evaluator(model, backend)
    B = x.shape[1]
    for i in range(0, B, max(1, batch_size)):
        ev.update(x[:, i:i + batch_size], None if y is None else np.asarray(y)[i:i + batch_size])
        if progress:
            progress(min(B, i + batch_size), B)
    return ev.report()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def print_report(rep: EvalReport, title: str, console) -> None:
    from rich.table import Table

    names = {"float": "float", "fake_quant": "fake-quant (no delays)",
             "loihi_sim": f"loihi-sim ({rep.backend})"}
    t = Table(title=f"{title}: {rep.samples} samples x {rep.time_steps} steps")
    for c in ("model", "top-1", "drop vs float", "agreement with float"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for v in VARIANTS:
        top, ref = rep.top1[v], rep.top1["float"]
        drop = "-" if top is None or v == "float" else f"{100 * (ref - top):+.2f} pp"
        t.add_row(names[v], _pct(top), drop, _pct(rep.agreement_with_float[v]))
    console.print(t)
    lt = Table(title="firing rate per neuron and step; |err|: mean |rate - float rate|")
    for c in ("layer", "depth", "float", "fake-quant", "loihi-sim", "|err| fq", "|err| sim",
              "u wraps", "v clips"):
        lt.add_column(c, justify="left" if c == "layer" else "right")
    for ly in rep.layers:
        lt.add_row(ly.neuron, str(ly.depth), f"{ly.rate_float:.3f}", f"{ly.rate_fake_quant:.3f}",
                   f"{ly.rate_loihi_sim:.3f}", f"{ly.rate_error_fake_quant:.4f}",
                   f"{ly.rate_error_loihi_sim:.4f}", str(ly.u_wrap), str(ly.v_clip))
    console.print(lt)
    if rep.lava_equals_native is not None:
        console.print(f"lava readout equals native engine: {rep.lava_equals_native}")


def _dataset_frames(cm, folder: Path, samples: int | None, console):
    """Frames ``[T, N, ...]`` of every labelled recording in ``folder``, plus event totals."""
    from ..streaming import collect_recordings, recording_frames

    recs = collect_recordings(folder)
    if any(label is None for _, label in recs):
        raise NeurodeployError(f"{folder}: recordings must sit in <label>/ folders (e.g. 3/x.bin)")
    recs = recs[: samples or None]
    frames, totals = [], {"n_read": 0, "n_used": 0, "dropped": {}}
    with console.status(f"reading {len(recs)} recordings..."):
        for path, _ in recs:
            f, rep = recording_frames(cm, path)
            frames.append(f)
            totals["n_read"] += rep["n_read"]
            totals["n_used"] += rep["n_used"]
            for k, n in rep["dropped"].items():
                totals["dropped"][k] = totals["dropped"].get(k, 0) + n
    y = np.array([label for _, label in recs], np.int64)
    return np.stack(frames, axis=1), y, totals


def register(app) -> None:
    """Add the ``eval`` command to the typer ``app``."""

    @app.command("eval")
    def eval_cmd(
        model: Annotated[Path, typer.Argument(help="compiled .ndp")],
        input: Annotated[Path | None, typer.Option(
            "--input", help=".npz with x [N, T, *shape] (+ y labels)")] = None,
        dataset: Annotated[Path | None, typer.Option(
            "--dataset", help="folder of labelled recordings (<label>/<file>, any event format)"
        )] = None,
        backend: Annotated[EvalBackend, typer.Option(
            help="loihi-sim run: native (bit-exact engine) or lava")] = EvalBackend.native,
        samples: Annotated[int | None, typer.Option(help="use only the first N samples")] = None,
        batch_size: Annotated[int, typer.Option(help="samples simulated at once")] = 64,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ):
        """Compare float, fake-quantized and loihi-sim runs: top-1, agreement, layer rates."""
        from rich.console import Console

        from .. import artifact
        from ..cli import _load_inputs

        out, err = Console(width=None if sys.stdout.isatty() else 120), Console(stderr=True)
        cm = artifact.load(model)
        if (input is None) == (dataset is None):
            raise NeurodeployError("give exactly one of --input FILE.npz or --dataset DIR")
        if dataset is not None:
            x, y, events = _dataset_frames(cm, dataset, samples, err)
        else:
            x, y = _load_inputs(input, cm.input_shape, samples)
            events = None
        if as_json:
            rep = evaluate(cm, x, y, backend.value, batch_size)
            print(json.dumps(dict(rep.as_dict(), events=events), indent=1))
        else:
            with out.status(f"evaluating {x.shape[1]} samples x {x.shape[0]} steps...") as st:
                rep = evaluate(cm, x, y, backend.value, batch_size,
                               progress=lambda i, n: st.update(f"evaluated {i}/{n} samples"))
            print_report(rep, model.name, out)
            if events is not None:
                why = ", ".join(f"{n} {k}" for k, n in events["dropped"].items()) or "none"
                out.print(f"events read {events['n_read']} = used {events['n_used']} + dropped "
                          f"{events['n_read'] - events['n_used']} ({why})")
        if rep.overflow:
            err.print("warning: fixed-point overflow in the loihi-sim run: " + ", ".join(
                f"{k} ({v['u_wrap']} u wraps, {v['v_clip']} v clips)"
                for k, v in rep.overflow.items()), soft_wrap=True)
