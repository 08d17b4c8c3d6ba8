"""Pipeline alignment: make a graph's transient on Lava/Loihi match training-time timing.

Every synapse layer delays by one step on Loihi and in Lava, so a neuron ``d`` synapse layers
deep first sees the input at step ``d`` (docs/timing.md). Two things then go wrong: residual
branches of different depth meet out of phase, and biases are integrated during the ``d`` steps
before the data arrives. :func:`align_for_pipeline` rewrites a lowered graph so that, run with
the delays, every neuron does from step ``d`` on exactly what it did from step 0 in training:

* **relays** (an identity synapse and an IF that copies binary spikes) lengthen short branches;
* **pre-charge**: the initial membrane starts where ``d`` steps of bias alone bring it to the
  trained ``v_init`` (node metadata ``v_init``; the trained value is kept in ``v_init_train``);
* **clocks**: a bias that cannot be pre-charged (it would fire early) is fed from a chain of
  neurons that fire on every step, the ``k``-th from step ``k`` on.

After quantization, :func:`settle_precharge` recomputes the integer pre-charge from the
quantized bias so that the fixed-point run lands exactly on the quantized trained state, and
:func:`training_timing` gives the same graph with the trained initial state: without synapse
delays (float reference, fake-quant, calibration) relays are transparent and clocks fire from
step 0, so that graph behaves exactly like the unaligned model.
"""

from __future__ import annotations

import copy

import nir
import numpy as np

from .. import fixedpoint as fp
from ..graph import evaluation_order, input_names, is_neuron, predecessors
from ._util import clone

#: Scale (integer units per membrane unit) of the neurons the pass adds: clocks have zero
#: weights (nothing for the min/max observer to bound), relays are exact at any scale.
CLOCK_SCALE = 254.0

_SYNAPSES = (nir.Affine, nir.Conv2d)
_FLAG = "pipeline_aligned"


def _shape(node) -> tuple[int, ...]:
    return tuple(int(v) for v in node.output_type["output"])


def _identity_synapse(shape: tuple[int, ...], role: str = "relay"):
    """1x1 identity convolution (or identity matrix) into a relay; ``role`` tags it."""
    meta = {"align_synapse": role}
    if len(shape) == 3:
        c = shape[0]
        return nir.Conv2d(input_shape=tuple(shape[1:]),
                          weight=np.eye(c).reshape(c, c, 1, 1), stride=np.array([1, 1]),
                          padding=np.array([0, 0]), dilation=np.array([1, 1]), groups=1,
                          bias=np.zeros(c), metadata=meta)
    n = int(np.prod(shape))
    return nir.Affine(weight=np.eye(n), bias=np.zeros(n), metadata=meta)


def _relay_neuron(shape: tuple[int, ...], clock: bool = False):
    """IF that copies binary spikes (threshold 0.5, reset to 0); ``clock`` marks clock chains."""
    ones = np.ones(shape)
    meta = {"reset": "zero", "v_init": 0.0, "relay": True}
    if clock:
        meta["clock"] = True
    return nir.IF(r=ones, v_threshold=0.5 * ones, v_reset=0 * ones, metadata=meta)


def _clock_source(in_shape: tuple[int, ...], shape: tuple[int, ...]):
    """Synapse and IF of a clock that fires on every step from step 0.

    The synapse reads the graph input with zero weights (so it has an input on every step) and
    carries the bias 1 that drives the neuron over its threshold 0.5 each step. A convolution
    gets a square kernel (NIR infers output shapes from the kernel height alone) with a stride
    and padding per axis that give the neuron's spatial shape.
    """
    ones = np.ones(shape)
    neuron = nir.IF(r=ones, v_threshold=0.5 * ones, v_reset=0 * ones,
                    metadata={"reset": "zero", "v_init": 0.0, "clock": True})
    meta = {"align_synapse": "clock"}
    if len(shape) == 1:
        syn = nir.Affine(weight=np.zeros((shape[0], int(np.prod(in_shape)))),
                         bias=np.ones(shape[0]), metadata=meta)
        return syn, neuron
    geometry = (_clock_geometry(in_shape[1:], shape[1:]) if len(in_shape) == len(shape) == 3
                else None)
    if geometry is None:
        raise ValueError(f"cannot build a clock of shape {shape} from input {in_shape}")
    k, stride, pad = geometry
    syn = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=np.zeros((1, in_shape[0], k, k)),
                     stride=np.array(stride), padding=np.array(pad), dilation=np.array([1, 1]),
                     groups=1, bias=np.ones(1), metadata=meta)
    return syn, neuron


def _clock_geometry(size_in, size_out):
    """Smallest square kernel ``k`` with a stride and padding per axis that map ``size_in`` to
    ``size_out`` (``(size + 2 pad - k) // stride + 1``), or None."""
    for k in range(1, max(size_in) + 1):
        axes = []
        for i, o in zip(size_in, size_out, strict=True):
            fit = next(((st, p) for st in range(1, i + 1) for p in range(k)
                        if (i + 2 * p - k) // st + 1 == o and i + 2 * p >= k), None)
            if fit is None:
                break
            axes.append(fit)
        else:
            return k, [a[0] for a in axes], [a[1] for a in axes]
    return None


def is_aligned(graph: nir.NIRGraph) -> bool:
    """Whether :func:`align_for_pipeline` already rewrote ``graph`` (or its compiled form)."""
    if (graph.metadata or {}).get(_FLAG):
        return True
    return any(n.metadata.get(k) is not None for n in graph.nodes.values()
               for k in ("relay", "clock", "v_init_train", "align_synapse"))


def clock_scales(graph: nir.NIRGraph) -> dict[str, float]:
    """``compile_graph(scales=...)`` entries for the neurons the pass added (clocks, relays)."""
    return {k: CLOCK_SCALE for k, n in graph.nodes.items()
            if is_neuron(n) and (n.metadata.get("clock") or n.metadata.get("relay"))}


def align_for_pipeline(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Lower ``graph`` and rewrite it so that pipelined hardware reproduces training timing.

    Exact for feed-forward graphs: a neuron ``d`` synapse layers deep does from step ``d`` on
    what it did from step 0 without delays. Where synapses of different depth meet (residual
    shortcuts), the shorter branch gets one relay stage per missing step. Biases (and the leak
    of an LIF with ``v_leak``) are pre-charged where the initial membrane stays below the
    threshold and within 16 thresholds of the reset; a channel whose bias cannot be pre-charged
    takes it from clock ``d - 1`` through a 1x1 (or one-column) synapse, so it starts exactly
    with the input (clock neurons: one per spatial position per depth). Compile with
    ``scales=clock_scales(graph)`` and read out after :func:`data_depth` steps
    (``compile_graph(align=True)`` does both). A neuron that cannot be aligned (per-position
    biases, a clock of a shape the input cannot drive) keeps its bias and gets metadata
    ``align_skipped``. Returns a new lowered graph; an aligned graph is returned unchanged.
    """
    from . import lower_for_hardware

    g = clone(lower_for_hardware(graph))
    if is_aligned(g):
        return g
    dt = float(g.metadata.get("dt", 1.0))
    order, back = evaluation_order(g)
    depth: dict[str, int] = {}
    clocks: dict[tuple, str] = {}

    def clock(level: int, shape: tuple[int, ...]) -> str:
        key = (level, shape)
        if key not in clocks:
            name = f"clock{level}_" + "x".join(str(v) for v in shape)
            if level == 0:
                inp = input_names(g)[0]
                syn, neuron = _clock_source(_shape(g.nodes[inp]), shape)
                g.nodes[f"{name}.syn"], g.nodes[name] = syn, neuron
                g.edges += [(inp, f"{name}.syn"), (f"{name}.syn", name)]
            else:
                prev = clock(level - 1, shape)
                g.nodes[f"{name}.syn"] = _identity_synapse(shape, "clock")
                g.nodes[name] = _relay_neuron(shape, clock=True)
                g.edges += [(prev, f"{name}.syn"), (f"{name}.syn", name)]
            clocks[key] = name
        return clocks[key]

    for name in order:
        node = g.nodes[name]
        pred = predecessors(g)
        preds = [p for p in pred[name] if (p, name) not in back]
        if not is_neuron(node):
            base = max((depth[p] for p in preds), default=0)
            depth[name] = base + (1 if isinstance(node, _SYNAPSES) else 0)
            continue
        want = max((depth[p] for p in preds), default=0)
        for syn in preds:
            missing = want - depth[syn]
            src = [p for p in pred[syn] if (p, syn) not in back]
            if missing <= 0 or len(src) != 1 or not is_neuron(g.nodes[src[0]]):
                continue
            shape = _shape(g.nodes[src[0]])
            prev, d = src[0], depth[src[0]]
            g.edges.remove((src[0], syn))
            for k in range(missing):
                sname, rname = f"{syn}.align{k}", f"{syn}.align{k}.relay"
                g.nodes[sname] = _identity_synapse(shape)
                g.nodes[rname] = _relay_neuron(shape)
                g.edges += [(prev, sname), (sname, rname)]
                depth[sname] = depth[rname] = d + k + 1
                prev = rname
            g.edges.append((prev, syn))
            depth[syn] += missing
        depth[name] = want
        if want >= 1:
            syns = [p for p in preds if isinstance(g.nodes[p], _SYNAPSES)]
            _align_bias(g, name, syns, want, dt, clock)
    g = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={**g.metadata, _FLAG: True},
                     type_check=False)
    _set_types(g)
    return lower_for_hardware(g)


def _precharge(node, v_init, Bc, d: int, dt: float, per_channel):
    """Initial membrane from which ``d`` steps of bias ``Bc`` (and leak) reach ``v_init``.

    IF: ``v0 = v_init - d dt r B``; LIF: ``v0 = v* + (v_init - v*) / a**d`` with
    ``a = 1 - dt/tau`` and ``v* = v_leak + r B``. Returns ``(v0, ok)``: ``ok`` per channel where
    ``v0`` stays below the threshold (no early spike) and within 16 thresholds of the reset.
    """
    theta = per_channel(node.v_threshold) - per_channel(node.v_reset)
    r = per_channel(node.r)
    if isinstance(node, nir.IF):
        v0 = v_init - d * dt * r * Bc
    else:
        a = 1.0 - dt / per_channel(node.tau)
        v_star = per_channel(node.v_leak) + r * Bc
        v0 = v_star + (v_init - v_star) / a ** d
    rel = (v0 - per_channel(node.v_reset)) / theta
    return v0, np.all((rel < 1.0 - 1e-6) & (rel > -16.0), axis=1)


def _align_bias(g, name: str, synapses: list[str], d: int, dt: float, clock) -> None:
    """Pre-charge or clock the bias of neuron ``name`` (``d`` synapse layers deep), in place.

    Per channel, pre-charge where :func:`_precharge` allows it, otherwise remove the bias from
    the synapses and feed it from clock ``d - 1`` (a CubaLIF filters its bias through the
    current, so its biases are always clocked). Channels with a clocked bias still pre-charge
    an LIF's leak where they can.
    """
    node = g.nodes[name]
    if not isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
        return
    shape = _shape(node)
    biases = [np.asarray(g.nodes[s].bias, dtype=np.float64) for s in synapses]
    B = sum(biases[1:], biases[0]) if biases else np.zeros(shape[0])
    if B.ndim != 1 or B.shape[0] != shape[0]:
        node.metadata = {**node.metadata, "align_skipped": "per-position bias"}
        return

    def per_channel(a):
        return np.broadcast_to(np.asarray(a, dtype=np.float64), shape).reshape(shape[0], -1)

    v_init = per_channel(node.metadata.get("v_init", 0.0))
    Bc = B[:, None]
    if isinstance(node, nir.CubaLIF):
        v0, ok = v_init, B == 0
    else:
        v0, ok = _precharge(node, v_init, Bc, d, dt, per_channel)
    clocked = ~ok & (B != 0)
    if np.any(clocked):
        try:
            src = clock(d - 1, (1, *shape[1:]) if len(shape) == 3 else (1,))
        except ValueError as e:
            node.metadata = {**node.metadata, "align_skipped": str(e)}
            return
        bias = np.where(clocked, B, 0.0)
        bname = f"{name}.bias"
        if len(shape) == 3:
            g.nodes[bname] = nir.Conv2d(
                input_shape=tuple(shape[1:]), weight=bias.reshape(-1, 1, 1, 1),
                stride=np.array([1, 1]), padding=np.array([0, 0]), dilation=np.array([1, 1]),
                groups=1, bias=np.zeros(shape[0]), metadata={"align_synapse": "clock bias"})
        else:
            g.nodes[bname] = nir.Affine(weight=bias.reshape(-1, 1), bias=np.zeros(shape[0]),
                                        metadata={"align_synapse": "clock bias"})
        g.edges += [(src, bname), (bname, name)]
        for s, b in zip(synapses, biases, strict=True):
            g.nodes[s].bias = np.where(clocked, 0.0, b)
        if isinstance(node, nir.LIF):  # the leak alone still acts before the data arrives
            v0c, okc = _precharge(node, v_init, 0.0 * Bc, d, dt, per_channel)
            v0 = np.where(clocked[:, None], np.where(okc[:, None], v0c, v_init), v0)
    start = np.where((ok | clocked)[:, None], v0, v_init)
    if np.array_equal(start, v_init):
        return
    node.metadata = {**node.metadata, "v_init": start.reshape(shape),
                     "v_init_train": np.array(v_init.reshape(shape)), "align_depth": d}


def _set_types(g) -> None:
    """Input types of the Affine nodes this module creates, from their sources."""
    pred = predecessors(g)
    for name, node in g.nodes.items():
        if isinstance(node, nir.Affine) and pred[name]:
            src = g.nodes[pred[name][0]]
            node.input_type = {"input": np.asarray(src.output_type["output"])}


def node_depths(graph: nir.NIRGraph) -> dict[str, int]:
    """Synapse layers between the input and every node: the step from which the data reaches it.

    The synapses that feed a bias from a clock (:func:`align_for_pipeline`) do not count: the
    clock they read fires from step ``d - 1`` on, so they deliver exactly when the data does,
    although the clock chain sits one synapse layer below the input (its source reads the input
    with zero weights). Clock neurons get the depth of their chain (clock ``k``: ``k + 1``).
    """
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    depth: dict[str, int] = {}
    for n in order:
        node = graph.nodes[n]
        ps = [] if added_by_alignment(node) == "clock bias" else [
            p for p in pred[n] if (p, n) not in back]
        step = 1 if isinstance(node, _SYNAPSES) and not is_neuron(node) else 0
        depth[n] = max((depth[p] for p in ps), default=0) + step
    return depth


def data_depth(graph: nir.NIRGraph) -> int:
    """Pipeline depth of the data path (synapse layers from the input to the output), where
    clock-fed biases do not count (:func:`node_depths`); read out after this many steps."""
    depth = node_depths(graph)
    return max(depth[o] for o, node in graph.nodes.items() if isinstance(node, nir.Output))


def training_timing(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with the trained initial membranes instead of the pre-charged ones.

    Run without synapse delays (the float reference, fake-quant, calibration), relays pass
    spikes on in the same step and clocks fire from step 0, so this graph computes what the
    unaligned model computes. Works on float and on quantized graphs; the input is not
    modified (unchanged nodes are shared).
    """
    nodes = {}
    for k, n in graph.nodes.items():
        if "v_init_train" not in n.metadata:
            nodes[k] = n
            continue
        n = copy.copy(n)
        n.metadata = {**n.metadata, "v_init": n.metadata["v_init_train"]}
        q = n.metadata.get("loihi")
        if isinstance(q, dict) and "v_init_train" in q:
            n.metadata["loihi"] = {**q, "v_init": q["v_init_train"]}
        nodes[k] = n
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}),
                        type_check=False)


def settle_precharge(qgraph: nir.NIRGraph, trained: nir.NIRGraph) -> nir.NIRGraph:
    """Integer pre-charge of a quantized aligned graph, exact in Loihi's arithmetic.

    ``trained``: the same graph quantized from :func:`training_timing` (same scales); its
    ``v_init`` is the target. For every pre-charged neuron the new ``v_init`` is the integer
    from which ``d`` fixed-point steps of the quantized bias (and decay) land on the target
    (exactly for IF; nearest for LIF), provided no spike fires on the way; the target is kept
    as ``metadata["loihi"]["v_init_train"]``. Returns a new graph.
    """
    g = clone(qgraph)
    for name, node in g.nodes.items():
        d = node.metadata.get("align_depth")
        q = node.metadata.get("loihi")
        if d is None or not isinstance(q, dict):
            continue
        shape = _shape(node)
        target = np.broadcast_to(np.asarray(trained.nodes[name].metadata["loihi"]["v_init"],
                                            np.int64), shape)
        pre = np.broadcast_to(np.asarray(node.metadata["v_init"], np.float64)
                              != np.asarray(node.metadata["v_init_train"], np.float64), shape)
        bias = np.broadcast_to(fp.effective_bias(q["bias_mant"], q["bias_exp"]), shape)
        vth = np.broadcast_to(np.left_shift(np.asarray(q["vth"], np.int64), fp.VTH_SHIFT), shape)
        v0 = _solve_start(target, int(d), int(q["dv"]), bias)
        peak = np.max(_trajectory(v0, int(d), int(q["dv"]), bias), axis=0)
        use = pre & (peak <= vth) & (v0 <= vth)
        old = np.broadcast_to(np.asarray(q["v_init"], np.int64), shape)
        node.metadata["loihi"] = {**q, "v_init": np.where(use, v0, old).astype(np.int64),
                                  "v_init_train": np.array(target, dtype=np.int64)}
    return g


def _trajectory(v0: np.ndarray, d: int, dv: int, bias: np.ndarray) -> np.ndarray:
    """``v`` after each of ``d`` fixed-point steps with no input and no spike, ``[d, ...]``."""
    v, out = np.asarray(v0, np.int64), []
    for _ in range(d):
        v = np.clip(fp.decay(v, dv + fp.DM_OFFSET) + bias, fp.V_MIN, fp.V_MAX)
        out.append(v)
    return np.stack(out)


def _solve_start(target: np.ndarray, d: int, dv: int, bias: np.ndarray) -> np.ndarray:
    """Integer ``v0`` whose ``d``-step trajectory ends nearest to ``target`` (bisection: the end
    point is monotone in ``v0``)."""
    lo = np.full(target.shape, fp.V_MIN, np.int64)
    hi = np.full(target.shape, fp.V_MAX, np.int64)
    while np.any(lo < hi):  # smallest v0 with end(v0) >= target
        mid = (lo + hi) // 2
        above = _trajectory(mid, d, dv, bias)[-1] >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid + 1)
    below = np.maximum(lo - 1, fp.V_MIN)
    err_lo = np.abs(_trajectory(lo, d, dv, bias)[-1] - target)
    err_below = np.abs(_trajectory(below, d, dv, bias)[-1] - target)
    return np.where(err_below < err_lo, below, lo)


def alignment_summary(graph: nir.NIRGraph) -> dict:
    """What alignment added to ``graph``: relay and clock layers and neurons, pre-charged
    neurons, clocked-bias synapse layers and neurons left unaligned."""
    out = {"relay_layers": 0, "relay_neurons": 0, "clock_layers": 0, "clock_neurons": 0,
           "precharged_neurons": 0, "clocked_bias_layers": 0, "skipped_layers": []}
    for name, node in graph.nodes.items():
        m = node.metadata
        if m.get("align_synapse") == "clock bias":
            out["clocked_bias_layers"] += 1
        if not is_neuron(node):
            continue
        n = int(np.prod(_shape(node)))
        kind = "clock" if m.get("clock") else "relay" if m.get("relay") else None
        if kind:
            out[f"{kind}_layers"] += 1
            out[f"{kind}_neurons"] += n
        if "v_init_train" in m:
            out["precharged_neurons"] += int(np.count_nonzero(np.broadcast_to(
                np.asarray(m["v_init"]) != np.asarray(m["v_init_train"]), _shape(node))))
        if m.get("align_skipped"):
            out["skipped_layers"].append(name)
    return out


def added_by_alignment(node) -> str | None:
    """``"relay"``, ``"clock"`` or ``"clock bias"`` for a node the pass created, else None."""
    m = node.metadata
    if m.get("clock"):
        return "clock"
    if m.get("relay"):
        return "relay"
    role = m.get("align_synapse")
    return str(role.decode() if isinstance(role, bytes) else role) if role else None
