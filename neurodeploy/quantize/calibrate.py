"""Calibration: per-layer scales and threshold nudges that keep firing rates close to float.

:func:`calibrate` runs the float model once on calibration data (``[T, B, *input_shape]``
integer event counts) and records every neuron layer's spikes. Then, layer by layer in
topological order, it quantizes the graph with candidate ``(scale, vth_factor)`` pairs from a
:class:`~.observers.SearchObserver` and keeps the pair whose fixed-point spikes are closest to the
float spikes of that layer. Upstream layers are already fixed at their chosen values, so each
layer also compensates the errors of the layers before it; downstream layers cannot influence it.

* **Rate error** of a layer: ``mean |sum_t s_fixed - sum_t s_float| / T`` over samples and
  neurons, i.e. the mean absolute difference of firing rates (spikes per step).
* **Objective**: the sum of the rate errors of all neuron layers. After the greedy search the
  objective is compared with that of plain min/max scales; min/max is kept unless the search is
  strictly better, so calibration never makes the objective worse.
* **Timing**: the fixed-point model runs with training-time timing (no synapse delays,
  ``simulate_fixed(pipeline=False)``), so rates compare step for step with the float model.
* **Recurrence**: neuron layers that sit on a common cycle (a self-recurrent layer, or a loop
  through several layers) form one unit: they are simulated together, step by step, and a
  candidate for one of them is judged by the summed error of the unit.
* **Determinism**: more than ``max_samples`` samples are thinned to evenly spaced ones; nothing is
  random, and ties between candidates go to the one proposed first (min/max).

The layer simulation (:func:`simulate_layerwise`) uses the shared arithmetic of the native engine
(:func:`neurodeploy.fixedpoint.lif_step` and the engine's ``synapse_output``) and gives the same
spikes as ``simulate_fixed(graph, x, pipeline=False)``; synapse layers whose inputs come from
earlier units are evaluated for all steps at once, in float32 when that is provably exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import nir
import numpy as np
import torch

from .. import fixedpoint as fp
from ..engine.fixed_engine import synapse_output
from ..engine.float_engine import simulate_float
from ..engine.ops import apply_linear
from ..errors import InputFileError, QuantizationError
from ..graph import evaluation_order, is_neuron, predecessors
from .loihi import SYNAPSE_TYPES, LoihiFormat, QuantReport, layer_inputs, quantize_graph
from .observers import ScaleObserver, SearchObserver, make_observer
from .rounding import (
    LayerGram,
    WeightRounding,
    accumulate_gram,
    accumulate_layer_gram,
    unstackable,
)

#: Synapse sums below this bound are exact in float32 with ample margin (2**24 is the limit).
_F32_EXACT = 1 << 20


def load_calibration(path) -> np.ndarray:
    """Calibration inputs ``[T, N, *shape]`` from an ``.npz`` holding ``x`` ``[N, T, *shape]``
    (the layout ``neurodeploy run --input`` reads; labels are not needed)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        with np.load(path) as data:
            x = data["x"]
    except Exception as e:
        raise InputFileError(f"{path}: expected an .npz with 'x' [N, T, *shape]: {e}") from e
    if x.ndim < 3:
        raise InputFileError(f"{path}: 'x' has shape {x.shape}; expected [N, T, *shape]")
    return np.moveaxis(x, 0, 1)


def subsample(x: np.ndarray, max_samples: int) -> np.ndarray:
    """At most ``max_samples`` evenly spaced samples of ``x`` (``[T, B, ...]``), deterministic."""
    B = x.shape[1]
    if max_samples <= 0 or B <= max_samples:
        return x
    idx = np.unique(np.linspace(0, B - 1, max_samples).round().astype(int))
    return x[:, idx]


def rate_error(s_fixed: np.ndarray, s_float: np.ndarray) -> float:
    """Mean absolute firing-rate difference (spikes per step) of two ``[T, B, ...]`` records."""
    T = s_fixed.shape[0]
    if T == 0:
        return 0.0
    d = np.asarray(s_fixed, np.float64).sum(0) - np.asarray(s_float, np.float64).sum(0)
    return float(np.abs(d).mean() / T)


def _integer_input(x) -> np.ndarray:
    xs = np.asarray(x)
    if xs.dtype.kind == "f":
        if not np.all(xs == np.round(xs)):
            raise QuantizationError("calibration input must be integer event counts")
    return xs.astype(np.int64)


def units(graph: nir.NIRGraph) -> list[list[str]]:
    """Neuron layers grouped by the cycles they share, in an order where inputs come first.

    A neuron on no cycle is a unit of its own; every unit's synapse inputs come from earlier
    units, the graph input, or the unit itself.
    """
    order, _ = evaluation_order(graph)
    pos = {n: i for i, n in enumerate(order)}
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from(graph.edges)
    cond = nx.condensation(g)
    members = cond.graph["mapping"]
    groups: dict[int, list[str]] = {}
    for n in order:
        if is_neuron(graph.nodes[n]):
            groups.setdefault(members[n], []).append(n)
    comp_order = nx.lexicographical_topological_sort(
        cond, key=lambda c: min(pos[n] for n in cond.nodes[c]["members"]))
    return [groups[c] for c in comp_order if c in groups]


def _check_synapse_inputs(graph: nir.NIRGraph, pred) -> None:
    for name, node in graph.nodes.items():
        if is_neuron(node):
            continue
        if "loihi" in node.metadata and "weight_mant" in node.metadata["loihi"]:
            for p in pred[name]:
                if not (is_neuron(graph.nodes[p]) or isinstance(graph.nodes[p], nir.Input)):
                    raise QuantizationError(
                        f"synapse layer {name!r} reads {p!r} ({type(graph.nodes[p]).__name__}); "
                        "calibration needs a lowered graph whose synapses read neurons or inputs")


def _synapse_all_steps(name: str, node, x: np.ndarray) -> np.ndarray:
    """``synapse_output`` of ``x`` (``[T, B, ...]``) for every step in one batched call."""
    T, B = x.shape[:2]
    flat = x.reshape(T * B, *x.shape[2:])
    q = node.metadata["loihi"]
    mant = np.asarray(q["weight_mant"], np.int64)
    per_out = np.abs(mant).reshape(mant.shape[0], -1).sum(1).max(initial=0)
    bound = int(per_out) * int(np.abs(flat).max(initial=0))
    if int(q["weight_exp"]) == 0 and bound < _F32_EXACT:
        # every partial sum is an integer below 2**20: float32 is exact, and no wrap applies
        xt = torch.as_tensor(flat, dtype=torch.float32)
        y = apply_linear(name, node, xt, weight=mant.astype(np.float32), bias=False).numpy()
        y = np.rint(y).astype(np.int64)
    else:
        y = synapse_output(name, node, flat)
    return y.reshape(T, B, *y.shape[1:])


@dataclass
class _Sim:
    """Fixed-point graph state shared by the unit runs of one simulation."""

    graph: nir.NIRGraph
    order: list[str]
    back: set
    pred: dict[str, list[str]]

    @classmethod
    def of(cls, graph: nir.NIRGraph) -> _Sim:
        order, back = evaluation_order(graph)
        pred = predecessors(graph)
        _check_synapse_inputs(graph, pred)
        return cls(graph, order, back, pred)

    def run_unit(self, unit: list[str], acts: dict[str, np.ndarray], T: int,
                 cache: dict | None = None, stats: dict | None = None) -> dict[str, np.ndarray]:
        """Spikes ``[T, B, ...]`` (int8) of the neurons in ``unit``, given the activity ``acts``
        of the input and of earlier units. ``cache`` keeps batched synapse outputs keyed by
        synapse and scales; ``stats[name]`` receives the ``u_wrap``/``v_clip`` counts."""
        g, pred, back = self.graph, self.pred, self.back
        neurons = set(unit)
        syn = [s for n in unit for s in pred[n]]
        ext = [s for s in syn if not any(p in neurons for p in pred[s])]
        ff = {}
        for s in ext:
            q = g.nodes[s].metadata["loihi"]
            key = (s, float(q["scale"]), np.asarray(q.get("channel_scale", ())).tobytes())
            if cache is not None and key in cache:
                ff[s] = cache[key]
                continue
            ins = [acts[p] for p in pred[s]]
            ff[s] = _synapse_all_steps(s, g.nodes[s], sum(ins[1:], ins[0]))
            if cache is not None:
                cache[key] = ff[s]
        local = [k for k in self.order if k in neurons or (k in syn and k not in ff)]
        B = next(iter(acts.values())).shape[1]
        u, v, rec, st = {}, {}, {n: [] for n in unit}, {n: {} for n in unit}
        for n in unit:
            q = g.nodes[n].metadata["loihi"]
            shape = (B, *[int(s) for s in g.nodes[n].output_type["output"]])
            u[n] = np.zeros(shape, np.int64)
            v[n] = np.broadcast_to(np.asarray(q["v_init"], np.int64), shape).copy()
        prev: dict[str, np.ndarray] = {}
        for t in range(T):
            cur: dict[str, np.ndarray] = {}
            for k in local:
                ins = []
                for p in pred[k]:
                    if (p, k) in back:
                        val = prev.get(p)
                    elif p in cur:
                        val = cur[p]
                    else:
                        val = ff[p][t] if p in ff else acts[p][t]
                    if val is not None:
                        ins.append(val)
                if k in neurons:
                    q = g.nodes[k].metadata["loihi"]
                    a_in = sum(ins[1:], ins[0]) if ins else 0
                    u[k], v[k], s = fp.lif_step(
                        u[k], v[k], fp.wrap_int32(a_in), du=q["du"], dv=q["dv"], vth=q["vth"],
                        bias_mant=q["bias_mant"], bias_exp=q["bias_exp"], reset=q["reset"],
                        stats=st[k])
                    cur[k] = s
                    rec[k].append(s.astype(np.int8))
                elif ins:
                    cur[k] = synapse_output(k, g.nodes[k], sum(ins[1:], ins[0]))
            prev = cur
        if stats is not None:
            stats.update(st)
        return {n: np.stack(r) for n, r in rec.items()}


def simulate_layerwise(graph: nir.NIRGraph, x: np.ndarray, stats: dict | None = None
                       ) -> dict[str, np.ndarray]:
    """Spikes ``[T, B, ...]`` of every neuron layer of a quantized graph, without synapse delays.

    Same spikes as ``simulate_fixed(graph, x, pipeline=False)``, computed unit by unit (faster:
    feed-forward synapse layers are evaluated for all steps at once). ``stats``, if given,
    receives per neuron layer ``{"u_wrap": counts, "v_clip": counts}`` (``[B, ...]``).
    """
    sim = _Sim.of(graph)
    xs = _integer_input(x)
    acts: dict[str, np.ndarray] = {n: xs for n, node in graph.nodes.items()
                                   if isinstance(node, nir.Input)}
    for unit in units(graph):
        acts.update(sim.run_unit(unit, acts, xs.shape[0], stats=stats))
    return {n: a for n, a in acts.items() if is_neuron(graph.nodes[n])}


def float_spikes(graph: nir.NIRGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Spikes of every neuron layer of the float model (``simulate_float``, no delays)."""
    act = simulate_float(graph, x).activity
    return {n: act[n] for n, node in graph.nodes.items() if is_neuron(node)}


def _delivered(graph: nir.NIRGraph, pred, back, s: str, n: str, acts: dict[str, np.ndarray]
               ) -> np.ndarray | None:
    """What synapse ``s`` multiplies at every step on its way into neuron ``n``: the summed
    activity ``[T, B, *in_shape]`` of its sources, one step late across a recurrent (back)
    edge; ``None`` when a source was not recorded."""
    parts = []
    for p in pred[s]:
        if p not in acts:
            return None
        a = np.asarray(acts[p], np.float64)
        if (p, s) in back or (s, n) in back:
            a = np.concatenate([np.zeros_like(a[:1]), a[:-1]])
        parts.append(a)
    return sum(parts[1:], parts[0]) if parts else None


def _chunk(nodes: list) -> int:
    """Rows (sample steps) per Gram update, so that the unfolded patches stay near 2e7 values."""
    per_row = 0
    for nd in nodes:
        k = int(np.prod(np.shape(nd.weight)[1:]))
        per_row += k * (int(np.prod(nd.input_type["input"][1:])) if isinstance(nd, nir.Conv2d)
                        else 1)
    return max(1, int(2e7 // max(per_row, 1)))


def layer_grams(graph: nir.NIRGraph, acts: dict[str, np.ndarray], neurons=None,
                inputs: str = "float") -> dict[str, LayerGram]:
    """Gram matrices of the inputs of every neuron layer's synapses (``neurons``: only these).

    ``acts``: activity ``[T, B, ...]`` of the graph inputs and neuron layers (every sample,
    step and, for a Conv2d, kernel position is a column of ``X``). The synapses into one layer
    are stacked (:func:`~.rounding.accumulate_layer_gram`) so they can be rounded jointly;
    where they cannot be, each gets its own Gram matrix and the reason is kept. Layers with an
    unrecorded source are left out (their weights are then rounded to nearest). ``inputs``
    names where ``acts`` came from, for the record.
    """
    pred = predecessors(graph)
    _, back = evaluation_order(graph)
    out: dict[str, LayerGram] = {}
    for n, node in graph.nodes.items():
        if not is_neuron(node) or (neurons is not None and n not in neurons):
            continue
        syn = pred[n]
        if not syn or not all(isinstance(graph.nodes[s], SYNAPSE_TYPES) for s in syn):
            continue
        xs = [_delivered(graph, pred, back, s, n, acts) for s in syn]
        if any(x is None for x in xs):
            continue
        nodes = [graph.nodes[s] for s in syn]
        why = unstackable(nodes)
        flat = [x.reshape(-1, *x.shape[2:]) for x in xs]
        step = _chunk(nodes)
        grams: list | None = None
        for r0 in range(0, flat[0].shape[0], step):
            part = [f[r0:r0 + step] for f in flat]
            if why is None:
                grams = [accumulate_layer_gram(nodes, part, grams[0] if grams else None)]
            else:
                grams = [accumulate_gram(nd, p, grams[k] if grams else None)
                         for k, (nd, p) in enumerate(zip(nodes, part, strict=True))]
        out[n] = LayerGram(list(syn), grams or [], why is None, inputs, why)
    return out


#: Roundings :func:`choose_rounding` tries per layer, by the method asked for; on equal
#: held-out error the earlier one is kept.
CANDIDATES = {"auto": ("nearest", "gptq-float", "gptq-quantized"),
              "gptq": ("gptq-float", "gptq-quantized")}
#: Every ``HELD_OUT``-th calibration sample judges the candidates; the others fit GPTQ.
HELD_OUT = 4


def choose_rounding(graph: nir.NIRGraph, x: np.ndarray,
                    quantize: Callable[[nir.NIRGraph], nir.NIRGraph], rounding: WeightRounding,
                    log: Callable[[str], None] | None = None) -> dict:
    """Choose every neuron layer's rounding on calibration data; fills ``rounding`` in place.

    ``graph``: the lowered float graph (no delays); ``quantize``: quantizes it with the chosen
    scales, rounding as ``rounding`` says. The samples of ``x`` are split: every
    ``HELD_OUT``-th is held out, the rest give the Gram matrices. Layers are visited in
    evaluation order (:func:`units`, a recurrent group at once); for each, every candidate of
    ``CANDIDATES[rounding.method]`` is quantized: ``nearest``; ``gptq-float`` (inputs: the
    float model's spikes); ``gptq-quantized`` (inputs: the spikes of the model whose earlier
    layers are quantized with their choices, so the rounding also corrects what they got
    wrong; a layer's own recurrent input stays the float one; skipped when the layer reads only
    the graph input). The candidate with the lowest firing-rate error against the float model
    on the held-out samples (the ``search`` observer's metric, given the chosen earlier layers)
    is kept. Returns the summary recorded in the artifact.
    """
    xs = _integer_input(x)
    T, B = xs.shape[:2]
    held = np.arange(B) % HELD_OUT == HELD_OUT - 1
    fit = ~held
    if not held.any() or not fit.any():  # too few samples to hold any out: judge on all
        held = fit = np.ones(B, bool)
    xf, xh = xs[:, fit], xs[:, held]
    inputs = [n for n, nd in graph.nodes.items() if isinstance(nd, nir.Input)]
    ref_f = {**float_spikes(graph, xf), **{n: xf for n in inputs}}
    ref_h = float_spikes(graph, xh)
    grams_f = layer_grams(graph, ref_f, inputs="float")
    rounding.grams, rounding.samples = dict(grams_f), int(xf.shape[1])
    rounding.choice = {n: "nearest" for n in grams_f}
    cands = CANDIDATES[rounding.method]
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    acts_f = {n: xf for n in inputs}
    acts_h = {n: xh for n in inputs}
    chosen: dict[str, str] = {}
    for unit in units(graph):
        own = [n for n in unit if n in grams_f]
        srcs = {p for n in own for s in pred[n] for p in pred[s]}
        fresh = any(p not in unit and is_neuron(graph.nodes[p]) for p in srcs)
        errs: dict[str, float] = {}
        best, best_spk = None, None
        for c in cands if own else ("nearest",):
            if c == "gptq-quantized" and not fresh:
                continue
            g = (layer_grams(graph, {**ref_f, **acts_f}, own, "quantized")
                 if c == "gptq-quantized" else grams_f)
            for n in own:
                rounding.grams[n] = g[n] if n in g else grams_f[n]
                rounding.choice[n] = "nearest" if c == "nearest" else "gptq"
            spk = _Sim(quantize(graph), order, back, pred).run_unit(unit, acts_h, T)
            errs[c] = float(sum(rate_error(spk[m], ref_h[m]) for m in unit))
            if best is None or errs[c] < errs[best]:
                best, best_spk, best_grams = c, spk, {n: rounding.grams[n] for n in own}
        for n in own:
            rounding.grams[n] = best_grams[n]
            rounding.choice[n] = "nearest" if best == "nearest" else "gptq"
            rounding.records[n] = {"rounding_rate_errors": errs}
            chosen[n] = best
        acts_f.update(_Sim(quantize(graph), order, back, pred).run_unit(unit, acts_f, T))
        acts_h.update(best_spk)
        if log and own:
            log(f"rounding {', '.join(own)}: {best} (held-out rate error "
                + ", ".join(f"{c} {e:.4g}" for c, e in errs.items()) + ")")
    rounding.summary = {
        "rule": "per layer, in evaluation order: the candidate with the lowest firing-rate error "
                "against the float model on held-out calibration samples (ties: earlier "
                "candidate)",
        "candidates": list(cands), "fit_samples": int(xf.shape[1]),
        "held_out_samples": int(xh.shape[1]) if held is not fit else 0,
        "chosen": chosen}
    return rounding.summary


def rate_errors(qgraph: nir.NIRGraph, x: np.ndarray, reference: dict[str, np.ndarray]
                ) -> dict[str, float]:
    """Per neuron layer rate error of the quantized graph against ``reference`` spikes."""
    spk = simulate_layerwise(qgraph, x)
    return {n: rate_error(spk[n], reference[n]) for n in spk}


@dataclass
class Calibration:
    """Result of :func:`calibrate`: what to pass to :func:`~.loihi.quantize_graph`."""

    observer: str
    samples: int
    time_steps: int
    scales: dict[str, float]
    vth_factors: dict[str, float]
    records: dict[str, dict]  # per layer, merged into metadata["loihi"]
    objective: float  # sum of layer rate errors with the chosen parameters
    objective_minmax: float  # ... with min/max scales
    used: str  # "search", or "minmax" when the search found nothing better
    rate_errors: dict[str, float] = field(default_factory=dict)
    per_channel: bool = False  # channel multipliers on top of the layer scales
    rounding: WeightRounding | None = None  # how weights were rounded in the search

    def quantize(self, graph: nir.NIRGraph, fmt: LoihiFormat | None = None
                 ) -> tuple[nir.NIRGraph, QuantReport]:
        """Quantize ``graph`` (the one calibrated) with the chosen parameters."""
        q, rep = quantize_graph(graph, fmt, scales=self.scales, vth_factors=self.vth_factors,
                                records=self.records, per_channel=self.per_channel,
                                rounding=self.rounding)
        rep.observer = self.observer
        rep.calibration = self.summary()
        return q, rep

    def summary(self) -> dict:
        return {"observer": self.observer, "samples": self.samples,
                "time_steps": self.time_steps, "objective": self.objective,
                "objective_minmax": self.objective_minmax, "used": self.used,
                "rate_errors": dict(self.rate_errors)}


def calibrate(graph: nir.NIRGraph, x: np.ndarray, fmt: LoihiFormat | None = None, *,
              observer: str | Callable[..., ScaleObserver] = "search", max_samples: int = 256,
              log: Callable[[str], None] | None = None, per_channel: bool = False,
              fixed: dict[str, float] | None = None,
              rounding: WeightRounding | None = None) -> Calibration:
    """Choose per-layer scales and threshold nudges of the lowered float ``graph`` on ``x``.

    ``x``: ``[T, B, *input_shape]`` integer event counts (at most ``max_samples`` are used,
    evenly spaced). ``observer``: ``"search"`` (default), or a :class:`SearchObserver`
    constructor with other candidate steps. ``log`` receives one line per layer.
    ``per_channel``: every candidate is quantized with per-channel multipliers on top of its
    layer scale (:func:`~.loihi.quantize_graph`), so the search chooses ``lambda`` under them.
    ``fixed``: scales of neuron layers that are not searched (e.g. the clocks and relays of
    pipeline alignment); the search chooses every other layer around them. ``rounding``: how
    every candidate's weights are rounded (:class:`~.rounding.WeightRounding`; default nearest),
    so scales and threshold nudges are chosen for the weights that will be deployed.
    """
    fmt = fmt or LoihiFormat()
    xs = _integer_input(subsample(np.asarray(x), max_samples))
    T, B = xs.shape[:2]
    if log:
        log(f"float reference and search on {B} samples x {T} steps")
    ref = float_spikes(graph, xs)
    layers = {ly.neuron: ly for ly in layer_inputs(graph, fmt)}
    fixed = dict(fixed or {})
    base_graph, base_rep = quantize_graph(graph, fmt, scales=fixed, per_channel=per_channel,
                                          rounding=rounding)
    base = {ly.neuron: ly.scale for ly in base_rep.layers}
    sim = _Sim.of(base_graph)
    scales, factors = dict(base), {n: 1.0 for n in base}
    acts: dict[str, np.ndarray] = {n: xs for n, node in graph.nodes.items()
                                   if isinstance(node, nir.Input)}
    observers: dict[str, SearchObserver] = {}
    unit_error: dict[int, float] = {}
    for ui, unit in enumerate(units(graph)):
        cache: dict = {}  # batched feed-forward synapse outputs, by (synapse, scale)
        best_spikes: dict[str, np.ndarray] = {}
        if all(n in fixed for n in unit):  # base_graph holds these layers at their scales
            best_spikes = sim.run_unit(unit, acts, T, cache)
            unit_error[ui] = sum(rate_error(best_spikes[m], ref[m]) for m in unit)
        for n in (m for m in unit if m not in fixed):
            obs = make_observer(observer, fmt)
            if not isinstance(obs, SearchObserver):
                raise QuantizationError(f"calibrate() needs a SearchObserver, got "
                                        f"{type(obs).__name__}")
            obs.observe(layers[n].w_eff, layers[n].theta)
            observers[n] = obs
            for stage in (obs.candidates, lambda o=obs: o.nudges(o.calculate_scale())):
                for lam, factor in stage():
                    trial_scales, trial_factors = {**scales, n: lam}, {**factors, n: factor}
                    try:
                        q, _ = quantize_graph(graph, fmt, scales=trial_scales,
                                              vth_factors=trial_factors, per_channel=per_channel,
                                              rounding=rounding)
                    except QuantizationError:
                        obs.observe_candidate(lam, factor, np.inf)
                        continue
                    spk = _Sim(q, sim.order, sim.back, sim.pred).run_unit(unit, acts, T, cache)
                    err = sum(rate_error(spk[m], ref[m]) for m in unit)
                    if not obs.tried or err < obs.best()[2]:
                        best_spikes = spk
                    obs.observe_candidate(lam, factor, err)
            scales[n], factors[n], unit_error[ui] = obs.best()
            if log:
                log(f"{n}: scale {scales[n]:.4g} (min/max {base[n]:.4g}), vth x "
                    f"{factors[n]:.4f}, rate error {unit_error[ui]:.4g} (min/max scale "
                    f"{obs.record()['rate_error_minmax']:.4g})")
        acts.update(best_spikes)
    objective = float(sum(unit_error.values()))
    errs = {n: rate_error(acts[n], ref[n]) for n in base}  # acts: spikes of the final choice
    errs_mm = rate_errors(base_graph, xs, ref)
    objective_mm = float(sum(errs_mm.values()))
    records = {n: {**o.record(), "observer": "search"} for n, o in observers.items()}
    used = "search" if objective < objective_mm else "minmax"
    if used == "minmax":  # keep the candidate errors, but quantize with min/max
        scales, factors, errs, objective = dict(base), {n: 1.0 for n in base}, errs_mm, objective_mm
    for n, rec in records.items():
        rec.update(rate_error=errs[n], rate_error_minmax=errs_mm[n], observer=used)
    for n in fixed.keys() & errs.keys():  # not searched: errors only, observer "override"
        records[n] = {"rate_error": errs[n], "rate_error_minmax": errs_mm[n]}
    return Calibration("search", B, T, scales, factors, records, objective, objective_mm, used,
                       errs, per_channel, rounding)
