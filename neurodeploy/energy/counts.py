"""Exact per-layer, per-step operation counts of a NIR graph from recorded activity.

Vocabulary
----------
*emitter*
    a node whose output is recorded in ``activity``: every ``Input`` and every neuron node
    (``IF``, ``LIF``, ``CubaLIF``, ``LI``, ``I``, ``CubaLI``, ``Threshold``).
*population*
    a group of compartments on the chip: every neuron node, plus every ``Output`` that is fed
    through a connection node (a *readout*: the accumulators that realise that connection).
*synapse layer*
    every connection node with synapses (``Affine``, ``Linear``, ``Conv1d``, ``Conv2d``,
    ``SumPool2d``, ``AvgPool2d``, ``Scale``), plus an implicit ``Identity`` layer named
    ``"src->dst"`` for each edge that goes straight from an emitter into a population (one
    synapse per neuron, as in a residual skip). ``Flatten`` is a reshape and costs nothing.

Counting conventions (all numbers are per sample, i.e. summed over time steps and averaged
over the batch dimension ``B``, as NeuroBench does)
----------------------------------------------------------------------------------------
``Effective`` operations (NeuroBench ``Effective_ACs``/``Effective_MACs``)
    the number of (non-zero input, non-zero weight) pairs: the layer is run with each
    non-zero weight set to 1 and no bias on the input binarised to {0, 1}; the sum of its
    output. Zero padding contributes nothing, so borders, strides and groups are exact. A
    layer's operations at step ``t`` are ACs when every input value at that step (over the
    whole batch) is in {-1, 0, 1} and MACs otherwise (NeuroBench decides per call, i.e. per
    step). ``synops`` = ACs + MACs.
``Dense`` (NeuroBench ``Dense``)
    every in-bounds connection, zero weights included, every step.
``sinabs`` synops
    sum over inputs of |value| x fan-out, where the fan-out counts every in-bounds connection
    (sinabs's transposed-convolution-of-ones fan-out map); a 2-valued spike counts twice.
Pooling and Identity layers
    counted as synaptic operations of their own (each input event reaches the pooling
    windows it belongs to), like sinabs; NeuroBench does not count them, so
    :meth:`NetworkCounts.neurobench` leaves them out (``counted_by_neurobench`` is False).
Neuron updates
    ``neuron_updates`` = every neuron of a population, every step. A neuron's update at step
    ``t`` is *active* when its total input at ``t`` is non-zero (synaptic input or bias of the
    incoming layer) or it emits a non-zero output at ``t``; otherwise it is *inactive* (only
    leak, on hardware the cheap update). Inputs are evaluated with the real weights and biases.
Time alignment
    connection nodes are evaluated on their sources' output of the same step (NIR has no
    delays); a backend that adds a step per connection shifts the per-step curves, not totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import nir
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..errors import GraphError, NeurodeployError, UnsupportedLayerError

NEURON_TYPES = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI, nir.I, nir.CubaLI, nir.Threshold)
CONNECTION_TYPES = (
    nir.Affine,
    nir.Linear,
    nir.Conv1d,
    nir.Conv2d,
    nir.SumPool2d,
    nir.AvgPool2d,
    nir.Scale,
    nir.Flatten,
)
NEUROBENCH_TYPES = ("Affine", "Linear", "Conv1d", "Conv2d")
_MODES = ("value", "mask", "ones")
_RASTER_MAX_EVENTS = 200_000


class ActivityError(NeurodeployError, ValueError):
    """``activity`` does not match the graph (missing node, wrong shape, inconsistent T or B)."""


# ---------------------------------------------------------------------------------------------
# linear operators: evaluate one connection node on a batch, and its structural connectivity
# ---------------------------------------------------------------------------------------------


class LinearOp:
    """A connection node as a linear operator on a batch ``[N, *in_shape]``.

    ``apply(x, mode)``: ``"value"`` uses the real weights and bias, ``"mask"`` each non-zero
    weight as 1 and no bias, ``"ones"`` every weight as 1 and no bias.
    """

    kind = "Linear"
    has_synapses = True

    def __init__(self, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        self.name = name
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    @property
    def counted_by_neurobench(self) -> bool:
        return self.kind in NEUROBENCH_TYPES

    def parameters(self) -> list[np.ndarray]:
        """Stored parameter arrays (for the NeuroBench footprint)."""
        return []

    def weight_array(self) -> np.ndarray | None:
        """The weights counted by NeuroBench's ConnectionSparsity (None: no weights)."""
        return None

    def apply(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        raise GraphError(f"node {self.name!r}: {type(self).__name__} cannot be evaluated")

    def structural(self, nonzero_only: bool = True) -> sp.csr_matrix:
        """Connectivity ``[out_size, in_size]`` with 1 where a (non-zero) weight connects."""
        raise GraphError(f"node {self.name!r}: {type(self).__name__} has no structure")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a writable copy


def _variants(w: np.ndarray) -> dict[str, torch.Tensor]:
    """The weights for each ``apply`` mode: real, non-zero mask, all ones."""
    return {"value": _t(w), "mask": _t(w != 0), "ones": torch.ones(w.shape, dtype=torch.float64)}


class DenseOp(LinearOp):
    """``Affine`` / ``Linear``: ``y = W x (+ b)`` on the flattened input."""

    def __init__(self, name: str, node, in_shape: tuple[int, ...]):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise UnsupportedLayerError(name, f"{type(node).__name__} with {w.ndim}-D weight",
                                        ["Affine/Linear with a 2-D weight [out, in]"])
        if math.prod(in_shape) != w.shape[1]:
            raise GraphError(f"node {name!r}: input has {math.prod(in_shape)} values, weight "
                             f"expects {w.shape[1]}")
        super().__init__(name, in_shape, (w.shape[0],))
        self.kind = type(node).__name__
        self.weight = w
        self.bias = np.asarray(node.bias) if isinstance(node, nir.Affine) else None
        self._w = _variants(w)
        self._b = None if self.bias is None else _t(np.broadcast_to(self.bias, (w.shape[0],)))

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def weight_array(self):
        return self.weight

    def apply(self, x, mode):
        y = x.reshape(x.shape[0], -1) @ self._w[mode].T
        if mode == "value" and self._b is not None:
            y = y + self._b
        return y

    def structural(self, nonzero_only=True):
        m = (self.weight != 0) if nonzero_only else np.ones(self.weight.shape, bool)
        return sp.csr_matrix(m.astype(np.float64))


def _pair(v, n: int) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    if a.size == 1:
        return tuple(int(a[0]) for _ in range(n))
    if a.size != n:
        raise GraphError(f"expected {n} values, got {a.tolist()}")
    return tuple(int(x) for x in a)


class ConvOp(LinearOp):
    """``Conv1d``/``Conv2d``/``SumPool2d``/``AvgPool2d`` as a grouped 2-D convolution.

    1-D layers are run as 2-D with a spatial height of 1. Padding is explicit (lo, hi) per
    dimension; ``"same"`` pads like PyTorch (the extra element at the end).
    """

    def __init__(self, name: str, node, in_shape: tuple[int, ...]):
        self.kind = type(node).__name__
        one_d = isinstance(node, nir.Conv1d)
        nd = 1 if one_d else 2
        if len(in_shape) != nd + 1:
            raise GraphError(f"node {name!r}: {self.kind} needs a (C, {'L' if one_d else 'H, W'}) "
                             f"input, got shape {tuple(in_shape)}")
        c_in = int(in_shape[0])
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            k = _pair(node.kernel_size, 2)
            w = np.ones((c_in, 1, *k))
            if isinstance(node, nir.AvgPool2d):
                w = w / (k[0] * k[1])
            stride, dil, groups = _pair(node.stride, 2), (1, 1), c_in
            pad = _pair(node.padding, 2)
            pads = [(p, p) for p in pad]
            bias = None
        else:
            w = np.asarray(node.weight)
            stride, dil = _pair(node.stride, nd), _pair(node.dilation, nd)
            groups = int(node.groups)
            ksz = w.shape[2:]
            if isinstance(node.padding, str):
                if node.padding == "valid":
                    pads = [(0, 0)] * nd
                else:  # "same"
                    tot = [d * (k - 1) for d, k in zip(dil, ksz, strict=True)]
                    pads = [(t // 2, t - t // 2) for t in tot]
            else:
                pads = [(p, p) for p in _pair(node.padding, nd)]
            bias = np.asarray(node.bias) if node.bias is not None else None
            if w.shape[1] * groups != c_in:
                raise GraphError(f"node {name!r}: weight expects {w.shape[1] * groups} input "
                                 f"channels (groups={groups}), input has {c_in}")
            if one_d:
                w = w[:, :, None, :]
                stride, dil, pads = (1, *stride), (1, *dil), [(0, 0), *pads]
        is_pool = isinstance(node, (nir.SumPool2d, nir.AvgPool2d))
        self.node_weight = None if is_pool else np.asarray(node.weight)
        self.bias = bias
        self.one_d = one_d
        self.stride, self.dilation, self.groups, self.pads = stride, dil, groups, pads
        self.w = w
        sp_in = (1, int(in_shape[1])) if one_d else (int(in_shape[1]), int(in_shape[2]))
        k2 = w.shape[2:]
        sp_out = tuple(
            (sp_in[i] + pads[i][0] + pads[i][1] - dil[i] * (k2[i] - 1) - 1) // stride[i] + 1
            for i in range(2)
        )
        if min(sp_out) < 1:
            raise GraphError(f"node {name!r}: {self.kind} output would be empty for input "
                             f"{tuple(in_shape)}")
        self.sp_in, self.sp_out = sp_in, sp_out
        out_shape = (w.shape[0], sp_out[1]) if one_d else (w.shape[0], *sp_out)
        super().__init__(name, in_shape, out_shape)
        self._w = _variants(w)
        self._b = None if bias is None else _t(np.broadcast_to(bias, (w.shape[0],)))

    def parameters(self):
        if self.node_weight is None:
            return []
        return [self.node_weight] + ([] if self.bias is None else [self.bias])

    def weight_array(self):
        return self.node_weight

    def apply(self, x, mode):
        n = x.shape[0]
        x = x.reshape(n, self.in_shape[0], *self.sp_in)
        (plo_h, phi_h), (plo_w, phi_w) = self.pads
        if any((plo_h, phi_h, plo_w, phi_w)):
            x = F.pad(x, (plo_w, phi_w, plo_h, phi_h))
        y = F.conv2d(x, self._w[mode], None, self.stride, 0, self.dilation, self.groups)
        if mode == "value" and self._b is not None:
            y = y + self._b.view(1, -1, 1, 1)
        return y.reshape(n, *self.out_shape)

    def structural(self, nonzero_only=True):
        w = self.w
        c_out, cin_g = w.shape[0], w.shape[1]
        cout_g = c_out // self.groups
        (hi_, wi_), (ho, wo) = self.sp_in, self.sp_out
        mask = (w != 0) if nonzero_only else np.ones(w.shape, bool)
        co, ci, ky, kx = (a.astype(np.int64) for a in np.nonzero(mask))
        oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
        oy, ox = oy.ravel(), ox.ravel()
        rows_l, cols_l = [], []
        step = max(1, 4_000_000 // max(1, oy.size))  # taps per chunk, bounds memory
        for s in range(0, co.size, step):
            tco, tci, tky, tkx = co[s:s + step], ci[s:s + step], ky[s:s + step], kx[s:s + step]
            iy = oy[None, :] * self.stride[0] - self.pads[0][0] + tky[:, None] * self.dilation[0]
            ix = ox[None, :] * self.stride[1] - self.pads[1][0] + tkx[:, None] * self.dilation[1]
            ok = (iy >= 0) & (iy < hi_) & (ix >= 0) & (ix < wi_)
            cin = (tco // cout_g) * cin_g + tci
            rows = (tco[:, None] * ho + oy[None, :]) * wo + ox[None, :]
            cols = (cin[:, None] * hi_ + iy) * wi_ + ix
            rows_l.append(rows[ok])
            cols_l.append(cols[ok])
        rows = np.concatenate(rows_l) if rows_l else np.zeros(0, np.int64)
        cols = np.concatenate(cols_l) if cols_l else np.zeros(0, np.int64)
        m = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(self.out_size, self.in_size))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


class ScaleOp(LinearOp):
    """``Scale``: element-wise ``y = s * x``."""

    kind = "Scale"

    def __init__(self, name: str, node, in_shape: tuple[int, ...]):
        s = np.broadcast_to(np.asarray(node.scale, dtype=float), in_shape)
        super().__init__(name, in_shape, in_shape)
        self.scale = np.asarray(node.scale)
        self._s = _variants(s)
        self._flat = s.ravel()

    def parameters(self):
        return [self.scale]

    def apply(self, x, mode):
        return x.reshape(x.shape[0], *self.in_shape) * self._s[mode]

    def structural(self, nonzero_only=True):
        d = (self._flat != 0) if nonzero_only else np.ones(self._flat.size, bool)
        return sp.diags(d.astype(np.float64), format="csr")


class ReshapeOp(LinearOp):
    """``Flatten`` (NIR shapes exclude the batch): a reshape, no synapses."""

    kind = "Flatten"
    has_synapses = False

    def __init__(self, name: str, node, in_shape: tuple[int, ...]):
        start, end = int(node.start_dim), int(node.end_dim)
        nd = len(in_shape)
        start, end = start % nd if nd else 0, end % nd if nd else 0
        out = (*in_shape[:start], math.prod(in_shape[start:end + 1]), *in_shape[end + 1:])
        super().__init__(name, in_shape, out)

    def apply(self, x, mode):
        return x.reshape(x.shape[0], *self.out_shape)

    def structural(self, nonzero_only=True):
        return sp.identity(self.in_size, format="csr")


class IdentityOp(LinearOp):
    """An edge from an emitter straight into a population: one synapse per neuron."""

    kind = "Identity"

    def __init__(self, name: str, shape: tuple[int, ...]):
        super().__init__(name, shape, shape)

    def apply(self, x, mode):
        return x.reshape(x.shape[0], *self.out_shape)

    def structural(self, nonzero_only=True):
        return sp.identity(self.in_size, format="csr")


def make_op(name: str, node, in_shape: tuple[int, ...]) -> LinearOp:
    """Build the :class:`LinearOp` of a NIR connection node for a given input shape."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return DenseOp(name, node, in_shape)
    if isinstance(node, (nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)):
        return ConvOp(name, node, in_shape)
    if isinstance(node, nir.Scale):
        return ScaleOp(name, node, in_shape)
    if isinstance(node, nir.Flatten):
        return ReshapeOp(name, node, in_shape)
    supported = [t.__name__ for t in CONNECTION_TYPES]
    raise UnsupportedLayerError(name, type(node).__name__, supported)


# ---------------------------------------------------------------------------------------------
# network structure
# ---------------------------------------------------------------------------------------------


def _shape_of(types: dict | None, key: str) -> tuple[int, ...] | None:
    if not types or types.get(key) is None:
        return None
    a = np.atleast_1d(np.asarray(types[key])).astype(int)
    return tuple(int(x) for x in a.ravel())


@dataclass
class NetworkStructure:
    """Emitters, populations and synapse layers of a flat NIR graph, with shapes.

    ``preds`` maps each synapse layer and population to the names it sums; implicit Identity
    layers replace direct emitter -> population edges. ``op_order`` evaluates synapse layers
    after everything they read.
    """

    graph: nir.NIRGraph
    emitters: list[str]
    inputs: list[str]
    populations: list[str]
    ops: dict[str, LinearOp]
    preds: dict[str, list[str]]
    op_order: list[str]
    shapes: dict[str, tuple[int, ...]]
    display_order: list[str]

    @classmethod
    def from_graph(cls, graph: nir.NIRGraph, shape_hints: dict[str, tuple[int, ...]] | None = None):
        hints = shape_hints or {}
        nodes = graph.nodes
        for name, node in nodes.items():
            if isinstance(node, nir.NIRGraph):
                raise GraphError(f"node {name!r} is a nested subgraph: flatten it first")
            if not isinstance(node, (nir.Input, nir.Output, *NEURON_TYPES, *CONNECTION_TYPES)):
                supported = ["Input", "Output"]
                supported += [t.__name__ for t in NEURON_TYPES + CONNECTION_TYPES]
                raise UnsupportedLayerError(name, type(node).__name__, supported)
        raw_preds: dict[str, list[str]] = {n: [] for n in nodes}
        for a, b in graph.edges:
            if a not in nodes or b not in nodes:
                raise GraphError(f"edge ({a!r}, {b!r}) names an unknown node")
            raw_preds[b].append(a)
        inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
        if not inputs:
            raise GraphError("graph has no Input node")
        neurons = [n for n, v in nodes.items() if isinstance(v, NEURON_TYPES)]
        emitters = inputs + neurons
        conn = [n for n, v in nodes.items() if isinstance(v, CONNECTION_TYPES)]
        readouts = [
            n for n, v in nodes.items()
            if isinstance(v, nir.Output) and any(p in conn for p in raw_preds[n])
        ]
        populations = neurons + readouts

        shapes: dict[str, tuple[int, ...]] = {}
        for n in emitters:
            node = nodes[n]
            own = _shape_of(node.input_type, "input") if isinstance(node, nir.Input) else \
                _shape_of(node.output_type, "output")
            hint = hints.get(n)
            if hint is not None and own is not None and math.prod(own) not in (1, math.prod(hint)):
                raise ActivityError(f"node {n!r}: activity has shape {tuple(hint)} per sample, "
                                    f"the graph says {own}")
            shape = tuple(hint) if hint is not None else own
            if shape is None:
                raise GraphError(f"node {n!r} has no shape; set its input/output type")
            shapes[n] = tuple(int(s) for s in shape)

        # order connection nodes: edges among them must form a DAG
        g = nx.DiGraph()
        g.add_nodes_from(conn)
        g.add_edges_from((a, b) for a, b in graph.edges if a in conn and b in conn)
        if not nx.is_directed_acyclic_graph(g):
            cycle = [e[0] for e in nx.find_cycle(g)]
            raise GraphError(f"cycle {' -> '.join(cycle + cycle[:1])} has no neuron in it")
        ops: dict[str, LinearOp] = {}
        preds: dict[str, list[str]] = {}
        op_order: list[str] = []
        for n in nx.topological_sort(g):
            ps = raw_preds[n]
            if not ps:
                raise GraphError(f"connection node {n!r} has no input edge")
            for p in ps:
                if isinstance(nodes[p], nir.Output):
                    raise GraphError(f"edge ({p!r}, {n!r}) leaves an Output node")
            in_shapes = {p: (ops[p].out_shape if p in ops else shapes[p]) for p in ps}
            first = in_shapes[ps[0]]
            for s in in_shapes.values():
                if s != first:
                    raise GraphError(f"node {n!r} sums inputs of different shapes: "
                                     + ", ".join(f"{q}: {in_shapes[q]}" for q in ps))
            declared = _shape_of(nodes[n].input_type, "input")
            if getattr(nodes[n], "groups", 1) != 1:
                declared = None  # NIR derives a grouped conv's input type without the groups
            if declared is not None and math.prod(declared) != math.prod(first):
                raise GraphError(f"node {n!r} declares input shape {declared} but receives "
                                 f"{first}")
            ops[n] = make_op(n, nodes[n], first)
            shapes[n] = ops[n].out_shape
            preds[n] = list(ps)
            op_order.append(n)
        # populations: direct emitter edges become Identity layers
        for d in populations:
            ps: list[str] = []
            for p in raw_preds[d]:
                if p in ops:
                    ps.append(p)
                elif p in emitters:
                    ident = f"{p}->{d}"
                    ops[ident] = IdentityOp(ident, shapes[p])
                    preds[ident] = [p]
                    op_order.append(ident)
                    ps.append(ident)
                else:
                    raise GraphError(f"edge ({p!r}, {d!r}) leaves an Output node")
            in_shapes = [ops[p].out_shape for p in ps]  # empty: no input (it may still spike)
            if d in readouts:
                shapes[d] = in_shapes[0]
            for p, s in zip(ps, in_shapes, strict=True):
                if math.prod(s) != math.prod(shapes[d]):
                    raise GraphError(f"node {d!r} of shape {shapes[d]} gets input of shape {s} "
                                     f"from {p!r}")
            preds[d] = ps

        keep = set(emitters) | set(ops) | set(readouts)
        display = _display_order(inputs, list(nodes), keep, preds)
        return cls(graph, emitters, inputs, populations, ops, preds, op_order, shapes, display)

    def size(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def role(self, name: str) -> str:
        if name in self.inputs:
            return "input"
        if name in self.ops:
            return "synapse"
        if isinstance(self.graph.nodes.get(name), nir.Output):
            return "readout"
        return "neuron"

    def kind(self, name: str) -> str:
        if name in self.ops:
            return self.ops[name].kind
        return type(self.graph.nodes[name]).__name__

    def sources_of(self, op_name: str) -> list[str]:
        """Emitters whose output reaches synapse layer ``op_name`` without crossing a neuron."""
        out: list[str] = []
        stack = list(self.preds[op_name])
        while stack:
            p = stack.pop()
            if p in self.ops:
                stack.extend(self.preds[p])
            elif p not in out:
                out.append(p)
        return out

    def targets_of(self, op_name: str) -> list[str]:
        """Populations that synapse layer ``op_name`` feeds (through other connection nodes)."""
        consumers: dict[str, list[str]] = {}
        for n, ps in self.preds.items():
            for p in ps:
                consumers.setdefault(p, []).append(n)
        out: list[str] = []
        stack = list(consumers.get(op_name, []))
        while stack:
            c = stack.pop()
            if c in self.ops:
                stack.extend(consumers.get(c, []))
            elif c not in out:
                out.append(c)
        return out

    def projections(self, population: str, nonzero_only: bool = True) -> dict[str, sp.csr_matrix]:
        """Structural connectivity into ``population``: ``{emitter: [n_pop, n_emitter]}``.

        Entry (i, j) is 1 when emitter neuron j reaches neuron i through a chain of non-zero
        weights (several paths count once, as a folded hardware synapse would).
        """
        memo: dict[str, dict[str, sp.csr_matrix]] = {}

        def reach(name: str) -> dict[str, sp.csr_matrix]:
            if name in memo:
                return memo[name]
            acc: dict[str, sp.csr_matrix] = {}
            for p in self.preds[name]:
                parts = reach(p) if p in self.ops else {p: sp.identity(self.size(p), format="csr")}
                for src, m in parts.items():
                    acc[src] = m if src not in acc else acc[src] + m
            op = self.ops[name]
            s = op.structural(nonzero_only)
            res = {}
            for src, m in acc.items():
                r = (s @ m).tocsr()
                r.data[:] = 1.0
                r.eliminate_zeros()
                res[src] = r
            memo[name] = res
            return res

        out: dict[str, sp.csr_matrix] = {}
        for p in self.preds[population]:
            for src, m in reach(p).items():
                out[src] = m if src not in out else out[src] + m
        for src, m in out.items():
            m = m.tocsr()
            m.data[:] = 1.0
            out[src] = m
        return out


def _display_order(inputs, all_nodes, keep, preds) -> list[str]:
    """Breadth-first order from the inputs (stable, ignores back edges)."""
    succ: dict[str, list[str]] = {}
    for n, ps in preds.items():
        for p in ps:
            succ.setdefault(p, []).append(n)
    order: list[str] = []
    seen: set[str] = set()
    queue = list(inputs)
    while queue:
        n = queue.pop(0)
        if n in seen:
            continue
        seen.add(n)
        if n in keep:
            order.append(n)
        queue.extend(s for s in succ.get(n, []) if s not in seen)
    order.extend(n for n in all_nodes if n in keep and n not in seen)
    order.extend(n for n in preds if n in keep and n not in order)
    return order


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass
class SynapseLayerCounts:
    """Counts of one synapse layer; ``*_per_sample`` are summed over steps, averaged over B."""

    name: str
    kind: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    counted_by_neurobench: bool
    n_weights: int  # stored weight parameters (conv kernels counted once)
    n_zero_weights: int
    n_connections: int  # in-bounds (input, output) pairs = Dense ops per step per sample
    n_synapses: int  # in-bounds pairs with a non-zero weight (hardware synapses)
    footprint_bytes: int  # NeuroBench Footprint of this layer's stored parameters
    weight_memory_bits: int | None  # n_weights x target weight_bits (None without numerics)
    effective_acs_per_sample: float
    effective_macs_per_sample: float
    dense_ops_per_sample: float
    sinabs_synops_per_sample: float
    input_events_per_sample: float  # non-zero input values
    synops_per_step: np.ndarray  # effective ops per step, per sample, shape [T]
    sinabs_synops_per_step: np.ndarray
    input_events_per_step: np.ndarray
    input_is_spiking_per_step: np.ndarray  # bool [T]: NeuroBench AC (True) or MAC (False)

    @property
    def synops_per_sample(self) -> float:
        return self.effective_acs_per_sample + self.effective_macs_per_sample

    @property
    def connection_sparsity(self) -> float:
        return self.n_zero_weights / self.n_weights if self.n_weights else 0.0

    @property
    def input_is_spiking(self) -> bool:
        return bool(np.all(self.input_is_spiking_per_step))


@dataclass
class PopulationCounts:
    """Counts of one emitter or readout (Input, neuron node, or readout Output)."""

    name: str
    kind: str
    role: str  # "input" | "neuron" | "readout"
    shape: tuple[int, ...]
    n_neurons: int
    spikes_per_sample: float  # non-zero outputs (events)
    spike_value_per_sample: float  # sum of |output|
    spikes_per_step: np.ndarray  # [T], per sample
    spike_count_per_neuron: np.ndarray  # [n_neurons], per sample
    neuron_updates_per_sample: float  # n_neurons x T (0 for inputs)
    active_updates_per_sample: float
    active_updates_per_step: np.ndarray  # [T], per sample
    activation_zeros: int  # over all steps and samples (NeuroBench ActivationSparsity)
    activation_total: int
    is_binary: bool  # every output in {0, 1}
    is_spiking: bool  # every output in {-1, 0, 1} (NeuroBench: counts as spikes)
    state_memory_bits: int | None
    parameter_bytes: int
    raster_t: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    raster_neuron: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    raster_truncated: bool = False

    @property
    def firing_rate_per_step(self) -> float:
        """Mean events per neuron per step."""
        steps = len(self.spikes_per_step)
        if not steps or not self.n_neurons:
            return 0.0
        return self.spikes_per_sample / (self.n_neurons * steps)

    @property
    def activation_sparsity(self) -> float:
        return self.activation_zeros / self.activation_total if self.activation_total else 0.0


@dataclass
class NetworkCounts:
    """All counts of one run. ``n_samples`` = B, ``n_steps`` = T."""

    n_steps: int
    n_samples: int
    populations: list[PopulationCounts]
    synapse_layers: list[SynapseLayerCounts]
    display_order: list[str]
    raster_sample: int
    structure: NetworkStructure = field(repr=False)

    def layer(self, name: str) -> PopulationCounts | SynapseLayerCounts:
        for x in (*self.populations, *self.synapse_layers):
            if x.name == name:
                return x
        raise KeyError(name)

    @property
    def synops_per_sample(self) -> float:
        return sum(s.synops_per_sample for s in self.synapse_layers)

    @property
    def sinabs_synops_per_sample(self) -> float:
        return sum(s.sinabs_synops_per_sample for s in self.synapse_layers)

    @property
    def synops_per_step(self) -> np.ndarray:
        out = np.zeros(self.n_steps)
        for s in self.synapse_layers:
            out += s.synops_per_step
        return out

    @property
    def neuron_updates_per_sample(self) -> float:
        return sum(p.neuron_updates_per_sample for p in self.populations)

    @property
    def active_updates_per_sample(self) -> float:
        return sum(p.active_updates_per_sample for p in self.populations)

    @property
    def spikes_per_sample(self) -> float:
        """Events emitted by neuron populations (inputs excluded)."""
        return sum(p.spikes_per_sample for p in self.populations if p.role == "neuron")

    def neurobench(self) -> dict[str, float]:
        """The NeuroBench metrics, under their NeuroBench names (see module docstring).

        ``Footprint`` is in bytes of the graph's stored parameter arrays (connection and neuron
        nodes). ``ConnectionSparsity`` and ``ActivationSparsity`` are not rounded.
        """
        nb = [s for s in self.synapse_layers if s.counted_by_neurobench]
        n_w = sum(s.n_weights for s in nb)
        neurons = [p for p in self.populations if p.role == "neuron"]
        act_total = sum(p.activation_total for p in neurons)
        return {
            "Effective_MACs": sum(s.effective_macs_per_sample for s in nb),
            "Effective_ACs": sum(s.effective_acs_per_sample for s in nb),
            "Dense": sum(s.dense_ops_per_sample for s in nb),
            "ActivationSparsity": (sum(p.activation_zeros for p in neurons) / act_total
                                   if act_total else 0.0),
            "ConnectionSparsity": sum(s.n_zero_weights for s in nb) / n_w if n_w else 0.0,
            "Footprint": float(sum(s.footprint_bytes for s in self.synapse_layers)
                               + sum(p.parameter_bytes for p in self.populations)),
        }

    def to_dict(self) -> dict[str, Any]:
        def arr(a):
            return np.asarray(a).tolist()

        return {
            "n_steps": self.n_steps,
            "n_samples": self.n_samples,
            "neurobench": self.neurobench(),
            "totals": {
                "synops_per_sample": self.synops_per_sample,
                "sinabs_synops_per_sample": self.sinabs_synops_per_sample,
                "neuron_updates_per_sample": self.neuron_updates_per_sample,
                "active_updates_per_sample": self.active_updates_per_sample,
                "spikes_per_sample": self.spikes_per_sample,
            },
            "synops_per_step": arr(self.synops_per_step),
            "populations": [
                {
                    "name": p.name, "kind": p.kind, "role": p.role, "shape": list(p.shape),
                    "n_neurons": p.n_neurons, "spikes_per_sample": p.spikes_per_sample,
                    "spike_value_per_sample": p.spike_value_per_sample,
                    "firing_rate_per_step": p.firing_rate_per_step,
                    "neuron_updates_per_sample": p.neuron_updates_per_sample,
                    "active_updates_per_sample": p.active_updates_per_sample,
                    "activation_sparsity": p.activation_sparsity,
                    "is_binary": p.is_binary, "is_spiking": p.is_spiking,
                    "state_memory_bits": p.state_memory_bits,
                    "spikes_per_step": arr(p.spikes_per_step),
                    "active_updates_per_step": arr(p.active_updates_per_step),
                }
                for p in self.populations
            ],
            "synapse_layers": [
                {
                    "name": s.name, "kind": s.kind, "sources": list(s.sources),
                    "targets": list(s.targets), "input_shape": list(s.input_shape),
                    "output_shape": list(s.output_shape),
                    "counted_by_neurobench": s.counted_by_neurobench,
                    "n_weights": s.n_weights, "n_zero_weights": s.n_zero_weights,
                    "n_connections": s.n_connections, "n_synapses": s.n_synapses,
                    "footprint_bytes": s.footprint_bytes,
                    "weight_memory_bits": s.weight_memory_bits,
                    "synops_per_sample": s.synops_per_sample,
                    "effective_acs_per_sample": s.effective_acs_per_sample,
                    "effective_macs_per_sample": s.effective_macs_per_sample,
                    "dense_ops_per_sample": s.dense_ops_per_sample,
                    "sinabs_synops_per_sample": s.sinabs_synops_per_sample,
                    "input_events_per_sample": s.input_events_per_sample,
                    "synops_per_step": arr(s.synops_per_step),
                    "sinabs_synops_per_step": arr(s.sinabs_synops_per_step),
                    "input_is_spiking_per_step": arr(s.input_is_spiking_per_step),
                }
                for s in self.synapse_layers
            ],
        }


# ---------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------


def _check_activity(structure_graph: nir.NIRGraph, activity: dict[str, Any]):
    nodes = structure_graph.nodes
    emitters = [n for n, v in nodes.items() if isinstance(v, (nir.Input, *NEURON_TYPES))]
    arrays: dict[str, np.ndarray] = {}
    tb: tuple[int, int] | None = None
    first = None
    for n in emitters:
        if n not in activity:
            raise ActivityError(f"activity has no entry for node {n!r} ({type(nodes[n]).__name__});"
                                " every Input and neuron node needs its output [T, B, ...]")
        a = np.asarray(activity[n])
        if a.ndim < 2:
            raise ActivityError(f"activity[{n!r}] has shape {a.shape}; expected [T, B, ...]")
        if tb is None:
            tb, first = a.shape[:2], n
        elif a.shape[:2] != tb:
            raise ActivityError(f"activity[{n!r}] has T, B = {a.shape[:2]} but activity[{first!r}]"
                                f" has {tb}")
        if a.dtype.kind not in "biuf":
            raise ActivityError(f"activity[{n!r}] has dtype {a.dtype}; expected numbers")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ActivityError(f"activity[{n!r}] contains NaN or inf")
        arrays[n] = a
    assert tb is not None  # there is always an Input (checked by NetworkStructure)
    if tb[0] < 1 or tb[1] < 1:
        raise ActivityError(f"activity has T, B = {tb}; need at least one step and one sample")
    return arrays, tb


def _in_pm1(a: np.ndarray) -> bool:
    return bool(np.all((a == 0) | (a == 1) | (a == -1)))


def count_operations(
    graph: nir.NIRGraph,
    activity: dict[str, Any],
    *,
    numerics=None,
    raster_sample: int = 0,
    chunk_elements: int = 1 << 24,
) -> NetworkCounts:
    """Count operations of ``graph`` given the recorded ``activity``.

    Parameters
    ----------
    graph
        a flat ``nir.NIRGraph``.
    activity
        ``{node: array [T, B, *shape]}`` for every ``Input`` and neuron node.
    numerics
        a :class:`neurodeploy.targets.Numerics` (or a target) for the weight and state memory
        in bits; without it those fields are ``None``.
    raster_sample
        the batch index whose spike times are kept for the raster plot.
    chunk_elements
        bound on the number of values evaluated at once (time steps are processed in chunks).
    """
    numerics = getattr(numerics, "numerics", numerics)
    arrays, (n_t, n_b) = _check_activity(graph, activity)
    if not 0 <= raster_sample < n_b:
        raise ActivityError(f"raster_sample={raster_sample} is outside the batch of {n_b}")
    hints = {n: tuple(int(s) for s in a.shape[2:]) for n, a in arrays.items()}
    st = NetworkStructure.from_graph(graph, hints)

    per_step_elems = n_b * (sum(st.size(n) for n in st.emitters)
                            + sum(op.out_size + op.in_size for op in st.ops.values())
                            + sum(st.size(p) for p in st.populations))
    chunk_t = max(1, min(n_t, chunk_elements // max(1, per_step_elems)))

    syn_acc = {n: {"eff": np.zeros(n_t), "sinabs": np.zeros(n_t), "events": np.zeros(n_t),
                   "spiking": np.zeros(n_t, bool)} for n in st.ops if st.ops[n].has_synapses}
    active = {p: np.zeros(n_t) for p in st.populations}

    for t0 in range(0, n_t, chunk_t):
        t1 = min(n_t, t0 + chunk_t)
        tc = t1 - t0
        vals: dict[str, torch.Tensor] = {
            e: torch.tensor(arrays[e][t0:t1].reshape(tc * n_b, *st.shapes[e]), dtype=torch.float64)
            for e in st.emitters
        }
        for name in st.op_order:
            op = st.ops[name]
            x = _sum_inputs(vals, st.preds[name], op.in_shape, tc * n_b)
            vals[name] = op.apply(x, "value")
            if not op.has_synapses:
                continue
            acc = syn_acc[name]
            per_t = x.reshape(tc, -1)
            nz = (per_t != 0)
            acc["events"][t0:t1] = nz.sum(1).numpy()
            acc["spiking"][t0:t1] = ((per_t == 0) | (per_t == 1) | (per_t == -1)).all(1).numpy()
            eff = op.apply(nz.reshape(x.shape).to(torch.float64), "mask")
            acc["eff"][t0:t1] = eff.reshape(tc, -1).sum(1).numpy()
            sin = op.apply(x.abs(), "ones")
            acc["sinabs"][t0:t1] = sin.reshape(tc, -1).sum(1).numpy()
        for p in st.populations:
            x = _sum_inputs(vals, st.preds[p], st.shapes[p], tc * n_b).reshape(tc, n_b, -1)
            act = x != 0
            if p in arrays:
                out = torch.tensor(arrays[p][t0:t1].reshape(tc, n_b, -1) != 0)
                act = act | (out != 0)
            active[p][t0:t1] = act.reshape(tc, -1).sum(1).numpy()
        del vals

    syn_layers: list[SynapseLayerCounts] = []
    for name in st.op_order:
        op = st.ops[name]
        if not op.has_synapses:
            continue
        acc = syn_acc[name]
        ones = torch.ones((1, *op.in_shape), dtype=torch.float64)
        n_conn = int(round(float(op.apply(ones, "ones").sum())))
        n_syn = int(round(float(op.apply(ones, "mask").sum())))
        w = op.weight_array()
        n_w = 0 if w is None else int(np.asarray(w).size)
        n_zero = 0 if w is None else int(np.count_nonzero(np.asarray(w) == 0))
        eff = acc["eff"] / n_b
        spiking = acc["spiking"]
        syn_layers.append(SynapseLayerCounts(
            name=name,
            kind=op.kind,
            sources=tuple(st.sources_of(name)),
            targets=tuple(st.targets_of(name)),
            input_shape=op.in_shape,
            output_shape=op.out_shape,
            counted_by_neurobench=op.counted_by_neurobench,
            n_weights=n_w,
            n_zero_weights=n_zero,
            n_connections=n_conn,
            n_synapses=n_syn,
            footprint_bytes=int(sum(np.asarray(a).nbytes for a in op.parameters())),
            weight_memory_bits=None if numerics is None else n_w * int(numerics.weight_bits),
            effective_acs_per_sample=float(eff[spiking].sum()),
            effective_macs_per_sample=float(eff[~spiking].sum()),
            dense_ops_per_sample=float(n_conn * n_t),
            sinabs_synops_per_sample=float(acc["sinabs"].sum() / n_b),
            input_events_per_sample=float(acc["events"].sum() / n_b),
            synops_per_step=eff,
            sinabs_synops_per_step=acc["sinabs"] / n_b,
            input_events_per_step=acc["events"] / n_b,
            input_is_spiking_per_step=spiking.copy(),
        ))

    pops: list[PopulationCounts] = []
    for name in st.emitters + [p for p in st.populations if p not in st.emitters]:
        role = st.role(name)
        n = st.size(name)
        if name in arrays:
            a = arrays[name].reshape(n_t, n_b, n)
            nz = a != 0
            spikes_t = nz.sum(axis=(1, 2)) / n_b
            per_neuron = nz.sum(axis=(0, 1)) / n_b
            value = float(np.abs(a, dtype=np.float64).sum() / n_b)
            zeros, total = int(a.size - np.count_nonzero(a)), int(a.size)
            is_bin = bool(np.all((a == 0) | (a == 1)))
            is_spk = _in_pm1(a)
            ts, ns = np.nonzero(nz[:, raster_sample, :])
        else:
            spikes_t, per_neuron, value = np.zeros(n_t), np.zeros(n), 0.0
            zeros = total = 0
            is_bin = is_spk = True
            ts = ns = np.zeros(0, np.int64)
        truncated = ts.size > _RASTER_MAX_EVENTS
        node = st.graph.nodes[name]
        params = 0
        if role == "neuron":
            params = sum(v.nbytes for k, v in vars(node).items()
                         if isinstance(v, np.ndarray) and k not in ("input_type", "output_type"))
        updates = 0.0 if role == "input" else float(n * n_t)
        act_t = np.zeros(n_t) if role == "input" else active[name] / n_b
        state_bits = None
        if numerics is not None and role != "input":
            state_bits = n * int(numerics.state_vars_per_neuron) * int(numerics.state_bits)
        pops.append(PopulationCounts(
            name=name,
            kind=type(node).__name__,
            role=role,
            shape=st.shapes[name],
            n_neurons=n,
            spikes_per_sample=float(np.sum(spikes_t)),
            spike_value_per_sample=value,
            spikes_per_step=np.asarray(spikes_t, dtype=float),
            spike_count_per_neuron=np.asarray(per_neuron, dtype=float),
            neuron_updates_per_sample=updates,
            active_updates_per_sample=float(act_t.sum()),
            active_updates_per_step=act_t,
            activation_zeros=zeros if role == "neuron" else 0,
            activation_total=total if role == "neuron" else 0,
            is_binary=is_bin,
            is_spiking=is_spk,
            state_memory_bits=state_bits,
            parameter_bytes=int(params),
            raster_t=np.asarray(ts[:_RASTER_MAX_EVENTS], dtype=np.int64),
            raster_neuron=np.asarray(ns[:_RASTER_MAX_EVENTS], dtype=np.int64),
            raster_truncated=bool(truncated),
        ))
    return NetworkCounts(n_steps=n_t, n_samples=n_b, populations=pops, synapse_layers=syn_layers,
                         display_order=st.display_order, raster_sample=raster_sample, structure=st)


def _sum_inputs(vals: dict[str, torch.Tensor], preds: list[str], shape, n: int) -> torch.Tensor:
    """Sum of the predecessors' outputs as ``[n, *shape]`` (zeros when there are none)."""
    x = None
    for p in preds:
        v = vals[p].reshape(n, *shape)
        x = v if x is None else x + v
    return torch.zeros((n, *shape), dtype=torch.float64) if x is None else x
