"""Native Loihi fixed-point simulation of a quantized graph, batched, bit-exact with Lava.

Runs the graph produced by ``quantize.quantize_graph`` with the arithmetic of
:mod:`neurodeploy.fixedpoint` (the one definition shared with our Lava process models) and
Lava's timing: every synapse layer delays its output by one step (``pipeline=True``, default),
so an input at step ``t`` reaches a neuron ``k`` synapse layers deep at ``t + k``.
``pipeline=False`` gives the training-time timing instead (same arithmetic, no delays).

Synapse layers are evaluated with float64 matrix products and convolutions on integer values,
which is exact while sums stay below 2**53; results are then wrapped like Lava's int32 ports
(Conv outputs additionally wrap to 24 bits, note section 3).
"""

from __future__ import annotations

import nir
import numpy as np
import torch

from .. import fixedpoint as fp
from ..errors import GraphError
from ..graph import evaluation_order, is_neuron, predecessors
from .float_engine import SimResult
from .ops import apply_linear


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
    """
    xs = np.asarray(x)
    if xs.dtype.kind == "f":
        if not np.all(xs == np.round(xs)):
            raise GraphError("fixed-point input must be integer spike counts")
        xs = xs.astype(np.int64)
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    T, B = xs.shape[0], xs.shape[1]
    neurons = {k: n for k, n in graph.nodes.items() if is_neuron(n)}
    for k, n in graph.nodes.items():
        if not isinstance(n, (nir.Input, nir.Output)) and "loihi" not in n.metadata:
            raise GraphError(f"node {k!r} ({type(n).__name__}) is not quantized; compile first")
    u, v, stats = {}, {}, {}
    for k, n in neurons.items():
        shape = (B, *[int(s) for s in n.output_type["output"]])
        q = n.metadata["loihi"]
        u[k] = np.zeros(shape, np.int64)
        v[k] = np.broadcast_to(np.asarray(q["v_init"], np.int64), shape).copy()
        stats[k] = {}
    prev: dict[str, np.ndarray] = {}
    buf: dict[str, np.ndarray] = {}
    rec: dict[str, list] = {k: [] for k in graph.nodes}
    srec: dict[str, dict[str, list]] = {k: {"u": [], "v": []} for k in neurons}
    for t in range(T):
        cur: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                cur[name] = xs[t]
                continue
            ins = [prev.get(p) if (p, name) in back else cur[p] for p in pred[name]]
            ins = [a for a in ins if a is not None]
            if name in neurons:
                q = node.metadata["loihi"]
                a_in = sum(ins[1:], ins[0]) if ins else 0
                u[name], v[name], s = fp.lif_step(
                    u[name], v[name], fp.wrap_int32(a_in), du=q["du"], dv=q["dv"],
                    vth=q["vth"], bias_mant=q["bias_mant"], bias_exp=q["bias_exp"],
                    reset=q["reset"], stats=stats[name])
                cur[name] = s
            elif isinstance(node, nir.Output):
                cur[name] = sum(ins[1:], ins[0])
            else:
                y = synapse_output(name, node, sum(ins[1:], ins[0]) if ins else 0)
                if pipeline:
                    y, buf[name] = buf.get(name, np.zeros_like(y)), y
                cur[name] = y
        prev = cur
        for k, val in cur.items():
            if record or isinstance(graph.nodes[k], nir.Output):
                rec[k].append(val)
        if record_states:
            for k in neurons:
                srec[k]["u"].append(u[k].copy())
                srec[k]["v"].append(v[k].copy())
    stack = {k: np.stack(val) for k, val in rec.items() if val}
    outs = {k: stack[k] for k, n in graph.nodes.items() if isinstance(n, nir.Output)}
    states = {}
    for k in neurons:
        states[k] = {q: np.stack(val) for q, val in srec[k].items() if val}
        states[k].update({key: cnt for key, cnt in stats[k].items()})
    return SimResult(outputs=outs, activity=stack if record else {}, states=states)
