"""Native Loihi fixed-point simulation of a quantized graph, batched, bit-exact with Lava.

Runs the graph produced by ``quantize.quantize_graph`` with the arithmetic of
:mod:`neurodeploy.fixedpoint` (the one definition shared with our Lava process models) and
Lava's timing: every synapse layer delays its output by one step (``pipeline=True``, default),
so an input at step ``t`` reaches a neuron ``k`` synapse layers deep at ``t + k``, and a
recurrent connection (neuron -> synapse -> same neuron) feeds a spike back one step later, as
Lava's Dense does. ``pipeline=False`` gives the training-time timing instead (same arithmetic,
no synaptic delays; recurrent edges carry NIR's one-step delay).

How it runs (:mod:`neurodeploy.engine.fixed_kernels` has the exact arithmetic):

* Time is cut into blocks (``BLOCK_ELEMENTS``). Layers outside cycles are evaluated a whole
  block at a time: a synapse layer processes ``steps x batch`` inputs in one call (event driven
  over the non-zero inputs when they are sparse, else a BLAS product or torch's ``conv2d``), a
  neuron layer runs its recurrence over the block in one compiled loop (numba, when installed)
  or a few numpy calls per step. The synaptic delay is a shift of the block by one step.
* Strongly connected parts of the graph (recurrent layers) are evaluated step by step inside the
  block, in Lava's order: synapses send what they computed at the previous step, neurons
  update, synapses compute from this step's spikes.
* Torch runs on one intra-op thread meanwhile (its calls here are small).
"""

from __future__ import annotations

from contextlib import contextmanager

import networkx as nx
import nir
import numpy as np
import torch

from .. import fixedpoint as fp
from ..errors import GraphError
from ..graph import evaluation_order, is_neuron, predecessors
from .fixed_kernels import NeuronKernel, SynapseKernel
from .float_engine import SimResult
from .ops import apply_linear

#: Values one node's block holds (``steps x batch x neurons``): 512k float64 (4 MiB). Larger
#: blocks cost less Python per step; smaller ones keep torch's conv2d in cache (dvs-cnn, one
#: sample, CPU steps/s: 24k at 4M, 23k at 512k, 19k at 128k, 11k at 16k).
BLOCK_ELEMENTS = 1 << 19
#: ... but at least this many steps per block (large batches), memory permitting.
BLOCK_MIN_STEPS = 16
BLOCK_MAX_ELEMENTS = 1 << 23


def _wrap24(x: np.ndarray) -> np.ndarray:
    return (x + (1 << 23)) % (1 << 24) - (1 << 23)


def synapse_output(name: str, node, s_in: np.ndarray) -> np.ndarray:
    """Integer synaptic input produced by synapse node ``node`` for presynaptic values ``s_in``."""
    q = node.metadata["loihi"]
    x = torch.as_tensor(np.asarray(s_in, dtype=np.float64))
    y = apply_linear(name, node, x, weight=np.asarray(q["weight_mant"], dtype=np.float64),
                     bias=False).numpy()
    y = np.rint(y).astype(np.int64)
    if isinstance(node, nir.Conv2d):  # Lava's Conv ignores weight_exp and wraps to 24 bits
        return _wrap24(fp.wrap_int32(y))
    return fp.wrap_int32(fp.shift_exp(y, int(q["weight_exp"])))


def pipeline_depth(graph: nir.NIRGraph) -> int:
    """Longest number of synapse layers between the input and an output (Lava's latency)."""
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    depth: dict[str, int] = {}
    for n in order:
        d = max((depth[p] for p in pred[n] if (p, n) not in back), default=0)
        depth[n] = d + (1 if "loihi" in graph.nodes[n].metadata and not is_neuron(
            graph.nodes[n]) else 0)
    return max(depth[o] for o, node in graph.nodes.items() if isinstance(node, nir.Output))


def _shape(node) -> tuple[int, ...]:
    return tuple(int(s) for s in node.output_type["output"])


def _total(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Sum of several inputs (spikes arrive as bool, which numpy would OR, so cast first)."""
    if not parts:
        return np.zeros(shape)
    if len(parts) == 1:
        return parts[0]
    out = parts[0].astype(np.float64)
    for p in parts[1:]:
        out = out + p
    return out


def _input_array(x) -> tuple[np.ndarray, float]:
    """Input as bool (0/1 events) or int64 counts, and its largest magnitude.

    Lava sends int32 messages, so larger counts are rejected.
    """
    xs = np.asarray(x)
    if xs.dtype == np.bool_:
        return xs, 1.0
    if xs.dtype.kind == "f" and not np.all(xs == np.round(xs)):
        raise GraphError("fixed-point input must be integer spike counts")
    if xs.dtype.kind not in "fiu":
        raise GraphError(f"fixed-point input must be numeric, got dtype {xs.dtype}")
    if xs.dtype.kind in "iu" and (xs.size == 0 or xs.view(f"u{xs.itemsize}").max() <= 1):
        return xs != 0, 1.0  # 0/1 events (one pass: negatives are huge unsigned)
    hi, lo = (float(xs.max()), float(xs.min())) if xs.size else (0.0, 0.0)
    if hi > np.iinfo(np.int32).max or lo < np.iinfo(np.int32).min:
        raise GraphError("fixed-point input must fit in int32 (Lava's message type)")
    if lo >= 0 and hi <= 1:  # binary events: the same values, 1/8 of the memory traffic
        return xs != 0, 1.0
    return xs.astype(np.int64, copy=False), max(hi, -lo)


class _Engine:
    """Per-node kernels and the block/step schedule of one simulation."""

    def __init__(self, graph: nir.NIRGraph, batch: int, x_max: float, pipeline: bool):
        self.graph, self.pipeline, self.batch = graph, pipeline, batch
        for k, n in graph.nodes.items():
            if not isinstance(n, (nir.Input, nir.Output)) and "loihi" not in n.metadata:
                raise GraphError(f"node {k!r} ({type(n).__name__}) is not quantized; "
                                 "compile first")
        self.order, self.back = evaluation_order(graph)
        self.pred = predecessors(graph)
        inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        self.neurons: dict[str, NeuronKernel] = {}
        self.synapses: dict[str, SynapseKernel] = {}
        for k in self.order:
            n = graph.nodes[k]
            if is_neuron(n):
                self.neurons[k] = NeuronKernel(k, n, batch)
            elif not isinstance(n, (nir.Input, nir.Output)):
                graded = len(inputs) == 1 and self.pred[k] == inputs
                self.synapses[k] = SynapseKernel(k, n, graded=graded, x_max=x_max)
        self.shapes = {k: _shape(n) for k, n in graph.nodes.items()}
        # bound on |summed input| of each neuron layer: what its synapses can send
        out_bound = {k: x_max for k in inputs}
        out_bound.update({k: 1.0 for k in self.neurons})
        out_bound.update({k: kern.out_bound for k, kern in self.synapses.items()})
        self.in_bound = {k: float(sum(out_bound[p] for p in self.pred[k]))
                         for k in self.neurons}
        # pipeline registers: what each synapse sends at the next step
        self.buf = {k: np.zeros((batch, *self.shapes[k])) for k in self.synapses}
        self.prev: dict[str, np.ndarray] = {}  # last step's values inside cycles (per node)
        g = nx.DiGraph()
        g.add_nodes_from(graph.nodes)
        g.add_edges_from(graph.edges)
        cond = nx.condensation(g)
        rank = {k: i for i, k in enumerate(self.order)}
        self.components: list[list[str]] = []
        for c in nx.topological_sort(cond):
            members = sorted(cond.nodes[c]["members"], key=rank.__getitem__)
            self.components.append(members)
        self.cyclic = {k for comp in self.components for k in comp
                       if len(comp) > 1 or g.has_edge(k, k)}

    def run(self, x: np.ndarray, vals: dict, record_states: bool) -> dict:
        """Advance every layer by the block ``x``; fills ``vals`` with each node's values of the
        block and returns the neuron states recorded (``record_states``)."""
        states: dict[str, tuple] = {}
        for comp in self.components:
            if comp[0] in self.cyclic:
                self._steps(comp, x, vals, states, record_states)
            else:
                self._node(comp[0], x, vals, states, record_states)
        return states

    def _node(self, k, x, vals, states, record_states):
        node, n, b = self.graph.nodes[k], len(x), self.batch
        if isinstance(node, nir.Input):
            vals[k] = x
            return
        in_shape = self.synapses[k].in_shape if k in self.synapses else self.shapes[k]
        total = _total([vals[p] for p in self.pred[k]], (n, b, *in_shape))
        if isinstance(node, nir.Output):
            vals[k] = total
        elif k in self.neurons:
            kern = self.neurons[k]
            s, u, v = kern.run(total.reshape(n, b, -1), record_states, self.in_bound[k])
            vals[k] = s.reshape(n, b, *self.shapes[k])
            if record_states:
                states[k] = (u, v)
        else:
            kern = self.synapses[k]
            xin = total.reshape(n, b, *kern.in_shape)
            out = np.empty((n, b, *self.shapes[k]), kern.out_dtype)
            if self.pipeline:  # send last step's result, keep this block's last for the next
                out[0] = self.buf[k]
                kern(xin[:-1].reshape(-1, *kern.in_shape), out=out[1:].reshape(-1, *self.shapes[k]))
                self.buf[k] = kern(xin[-1])
            else:
                kern(xin.reshape(-1, *kern.in_shape), out=out.reshape(-1, *self.shapes[k]))
            vals[k] = out

    def _steps(self, comp, x, vals, states, record_states):
        n, b = len(x), self.batch
        members = set(comp)
        blocks = {k: np.empty((n, b, *self.shapes[k]), bool if k in self.neurons else float)
                  for k in comp}
        size = {k: int(np.prod(self.shapes[k])) for k in comp}
        srec = {k: (np.empty((n, b, size[k])), np.empty((n, b, size[k])))
                for k in comp if k in self.neurons and record_states}
        delayed = {k for k in comp if self.pipeline and k in self.synapses}

        def inputs(k, t, cur, final):
            parts = []
            for p in self.pred[k]:
                if p not in members:
                    parts.append(vals[p][t])
                elif final or p in delayed or (p, k) not in self.back:
                    parts.append(cur[p])
                elif p in self.prev:
                    parts.append(self.prev[p])
            in_shape = self.synapses[k].in_shape if k in self.synapses else self.shapes[k]
            return _total(parts, (b, *in_shape))

        for t in range(n):
            cur = {k: self.buf[k] for k in delayed}
            for k in comp:
                if k in delayed:
                    continue
                total = inputs(k, t, cur, final=False)
                if k in self.neurons:
                    s, u, v = self.neurons[k].run(total.reshape(1, b, -1), record_states,
                                                  self.in_bound[k])
                    cur[k] = s[0].reshape(b, *self.shapes[k])
                    if record_states:
                        srec[k][0][t], srec[k][1][t] = u[0], v[0]
                elif k in self.synapses:
                    kern = self.synapses[k]
                    cur[k] = kern(total.reshape(b, *kern.in_shape))
                else:
                    raise GraphError(f"node {k!r} cannot be part of a cycle")
            for k in delayed:
                kern = self.synapses[k]
                self.buf[k] = kern(inputs(k, t, cur, final=True).reshape(b, *kern.in_shape))
            for k in comp:
                blocks[k][t] = cur[k]
                self.prev[k] = cur[k]
        vals.update(blocks)
        states.update(srec)


@contextmanager
def _torch_threads(n: int):
    """Run torch's convolutions on ``n`` intra-op threads, restoring the setting afterwards.

    The engine's calls are small (one block); with two OpenMP threads on a busy 2-core machine
    a 56-step conv2d took 0.4-0.8 ms instead of 15-20 us (threads wait for each other).
    """
    prev = torch.get_num_threads()
    if prev != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if prev != n:
            torch.set_num_threads(prev)


def simulate_fixed(
    graph: nir.NIRGraph,
    x: np.ndarray,
    pipeline: bool = True,
    record: bool = True,
    record_states: bool = False,
) -> SimResult:
    """Run the quantized ``graph`` on integer input ``x`` of shape ``[T, B, *input_shape]``.

    Returns spikes (and, on request, ``u``/``v`` per neuron layer as ``states[name]``) for every
    Lava step ``1..T``; ``states[name]["u_wrap"/"v_clip"]`` hold overflow counts per neuron.
    Recorded arrays are int64 ``[T, B, *shape]``; with ``record=False`` only outputs are kept.
    """
    xs, x_max = _input_array(x)
    T, B = xs.shape[0], xs.shape[1]
    eng = _Engine(graph, B, x_max, pipeline)
    keep = [k for k, n in graph.nodes.items() if record or isinstance(n, nir.Output)]
    act = {k: np.empty((T, B, *eng.shapes[k]), np.int64) for k in keep}
    srec = {k: {q: np.empty((T, B, *eng.shapes[k]), np.int64) for q in ("u", "v")}
            for k in eng.neurons} if record_states else {}
    widest = max(B * int(np.prod(s)) for s in eng.shapes.values())
    tb = max(BLOCK_ELEMENTS // widest, min(BLOCK_MIN_STEPS, BLOCK_MAX_ELEMENTS // widest), 1)
    tb = min(T, tb) if T else 1

    def store(t0: int, vals: dict, st: dict) -> None:
        n = min(tb, T - t0)
        for k in act:
            act[k][t0:t0 + n] = vals[k].reshape(n, B, *eng.shapes[k])
        for k, (u, v) in st.items():
            srec[k]["u"][t0:t0 + n] = u.reshape(n, B, *eng.shapes[k])
            srec[k]["v"][t0:t0 + n] = v.reshape(n, B, *eng.shapes[k])

    with _torch_threads(1):
        for t0 in range(0, T, tb):
            vals: dict = {}
            store(t0, vals, eng.run(xs[t0:t0 + tb], vals, record_states))
    outs = {k: act[k] for k, n in graph.nodes.items() if isinstance(n, nir.Output)}
    states = {}
    for k, kern in eng.neurons.items():
        states[k] = dict(srec.get(k, {}))
        states[k][fp.STAT_U_WRAP] = kern.u_wrap.reshape(B, *eng.shapes[k])
        states[k][fp.STAT_V_CLIP] = kern.v_clip.reshape(B, *eng.shapes[k])
    return SimResult(outputs=outs, activity=act if record else {}, states=states)
