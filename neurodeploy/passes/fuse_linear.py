"""Fuse chains of linear nodes so that every synapse layer is a single Affine or Conv2d.

Loihi-style hardware has one kind of synapse layer between neuron layers, so SumPool2d,
AvgPool2d, Flatten and Scale nodes are composed into the weighted node that follows them
(exactly: the composition of linear maps is linear):

* pooling -> Conv2d becomes one strided Conv2d with an expanded kernel
  (``kernel = stride_p (k - 1) + k_p``, ``stride = stride_p * stride``);
* anything linear -> Affine becomes one Affine whose matrix is computed by pushing the
  identity basis through the chain (also pooling -> padded Conv2d when the pooling drops
  trailing rows/columns, which the padded conv would otherwise read);
* pooling that no weighted node follows (it feeds a neuron) joins the Conv2d before it
  (``kernel = stride_c (k_p - 1) + k_c``, ``stride = stride_c * stride_p``) or, after a
  neuron, becomes its own fixed Conv2d (identity over channels), a Scale beside it included;
* Linear becomes Affine with zero bias; a direct neuron -> neuron edge (identity shortcut)
  gets an identity Affine so that it, too, is a synapse layer.
"""

from __future__ import annotations

import nir
import numpy as np
import torch

from ..engine.ops import apply_linear
from ..errors import GraphError
from ..graph import is_neuron, predecessors, successors
from ._util import clone, remove_node

_MAX_AFFINE_INPUTS = 1 << 15
_MAX_DENSE_WEIGHTS = 1 << 22


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return int(a[0]), int(a[-1])


def _in_shape(graph, name) -> tuple[int, ...]:
    return tuple(int(s) for s in graph.nodes[name].input_type["input"])


def _shape_of(graph, name) -> tuple[int, ...]:
    return tuple(int(s) for s in graph.nodes[name].output_type["output"])


def _compose_affine(g, first: str, chain_in_shape, x_node: str, affine: nir.Affine) -> nir.Affine:
    n = int(np.prod(chain_in_shape))
    if n > _MAX_AFFINE_INPUTS:
        raise GraphError(f"node {first!r}: cannot fuse a {n}-input linear chain into an Affine")
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *chain_in_shape)
    m = apply_linear(x_node, g.nodes[x_node], basis).reshape(n, -1)  # [n, features]
    w = np.asarray(affine.weight, dtype=np.float64) @ m.numpy().T
    bias = np.asarray(getattr(affine, "bias", np.zeros(w.shape[0])), dtype=np.float64)
    return nir.Affine(weight=w, bias=bias, metadata=dict(affine.metadata))


def _pool_into_conv(pool, conv: nir.Conv2d, in_hw) -> nir.Conv2d | None:
    """One Conv2d for pooling then ``conv``; ``None`` where the conv's zero padding would fall
    on input rows/columns that the pooling drops (compose into an Affine instead)."""
    kp, sp, pp = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    if pp != (0, 0) or _pair(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
        raise GraphError("pooling with padding, or before a dilated/'same' conv, cannot be fused")
    w = np.asarray(conv.weight, dtype=np.float64)
    o, c, kh, kw = w.shape
    pad = _pair(conv.padding)
    for d in range(2):
        pooled = (in_hw[d] - kp[d]) // sp[d] + 1
        if pad[d] and in_hw[d] > sp[d] * pooled:
            return None
    KH, KW = sp[0] * (kh - 1) + kp[0], sp[1] * (kw - 1) + kp[1]
    big = np.zeros((o, c, KH, KW))
    scale = 1.0 / (kp[0] * kp[1]) if isinstance(pool, nir.AvgPool2d) else 1.0
    for j in range(kh):
        for l in range(kw):
            big[:, :, sp[0] * j:sp[0] * j + kp[0], sp[1] * l:sp[1] * l + kp[1]] += (
                w[:, :, j:j + 1, l:l + 1] * scale)
    st = _pair(conv.stride)
    return nir.Conv2d(input_shape=tuple(in_hw), weight=big,
                      stride=np.array([sp[0] * st[0], sp[1] * st[1]]),
                      padding=np.array([sp[0] * pad[0], sp[1] * pad[1]]),
                      dilation=np.array([1, 1]), groups=int(conv.groups),
                      bias=np.asarray(conv.bias, dtype=np.float64), metadata=dict(conv.metadata))


def _compose_dense(g, names: list[str], in_shape, out_shape, bias) -> nir.Affine:
    """The chain ``names`` (linear nodes, biases left out) as one Affine with ``bias`` per
    output channel."""
    n, m = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n > _MAX_AFFINE_INPUTS or n * m > _MAX_DENSE_WEIGHTS:
        raise GraphError(f"node {names[0]!r}: the padded conv after this pooling would read "
                         "rows/columns the pooling skips as its zero padding; the exact dense "
                         f"synapse needs {n} x {m} weights, too many (use sizes the pooling "
                         "covers exactly)")
    y = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    for k in names:
        y = apply_linear(k, g.nodes[k], y, bias=False)
    b = np.repeat(np.asarray(bias, dtype=np.float64), m // len(bias))
    return nir.Affine(weight=y.reshape(n, m).numpy().T, bias=b,
                      metadata=dict(g.nodes[names[-1]].metadata))


def _per_channel(scale, shape) -> np.ndarray | None:
    """A Scale's factor per channel of ``shape``, or ``None`` if it varies within a channel."""
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape).reshape(shape[0], -1)
    return s[:, 0].copy() if np.all(s == s[:, :1]) else None


def _pool_as_conv(pool, in_shape, factor) -> nir.Conv2d:
    """Pooling as a fixed Conv2d, identity over channels, times ``factor`` per channel."""
    kp, sp, pp = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    c = int(in_shape[0])
    avg = 1.0 / (kp[0] * kp[1]) if isinstance(pool, nir.AvgPool2d) else 1.0
    w = np.eye(c)[:, :, None, None] * np.ones(kp) * avg * factor[:, None, None, None]
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=np.array(sp),
                      padding=np.array(pp), dilation=np.array([1, 1]), groups=1,
                      bias=np.zeros(c))


def _conv_then_pool(conv: nir.Conv2d, pool, factor) -> nir.Conv2d | None:
    """``conv`` followed by pooling (times ``factor`` per channel) as one Conv2d."""
    kp, sp, pp = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    if pp != (0, 0) or _pair(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
        return None
    w = np.asarray(conv.weight, dtype=np.float64)
    o, c, kh, kw = w.shape
    st = _pair(conv.stride)
    big = np.zeros((o, c, st[0] * (kp[0] - 1) + kh, st[1] * (kp[1] - 1) + kw))
    avg = 1.0 / (kp[0] * kp[1]) if isinstance(pool, nir.AvgPool2d) else 1.0
    for a in range(kp[0]):
        for b in range(kp[1]):
            big[:, :, st[0] * a:st[0] * a + kh, st[1] * b:st[1] * b + kw] += w * avg
    total = avg * kp[0] * kp[1]
    return nir.Conv2d(input_shape=tuple(int(v) for v in conv.input_shape),
                      weight=big * factor[:, None, None, None],
                      stride=np.array([st[0] * sp[0], st[1] * sp[1]]), padding=conv.padding,
                      dilation=np.array([1, 1]), groups=int(conv.groups),
                      bias=np.asarray(conv.bias, dtype=np.float64) * total * factor,
                      metadata=dict(conv.metadata))


def _pool_before_neuron(g) -> bool:
    """Rewrite one pooling node that feeds a neuron (through at most one Scale on each side):
    into the Conv2d before it, or as its own synapse after a neuron or the input."""
    pred, succ = predecessors(g), successors(g)
    single = [k for k in g.nodes if len(pred[k]) == 1 and len(succ[k]) == 1]
    for name in single:
        node = g.nodes[name]
        if not isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            continue
        in_shape = _in_shape(g, name)
        chain, factor = [name], np.ones(in_shape[0])
        src, nxt = pred[name][0], succ[name][0]
        for side in ("before", "after"):
            k = src if side == "before" else nxt
            if isinstance(g.nodes[k], nir.Scale) and k in single:
                f = _per_channel(g.nodes[k].scale, in_shape if side == "before"
                                 else _shape_of(g, name))
                if f is None:
                    break
                factor = factor * f
                chain.append(k)
                if side == "before":
                    src = pred[k][0]
                else:
                    nxt = succ[k][0]
        else:
            if not is_neuron(g.nodes[nxt]):
                continue
            prev = g.nodes[src]
            if isinstance(prev, nir.Conv2d) and len(succ[src]) == 1:
                fused = _conv_then_pool(prev, node, factor)
                if fused is None:
                    continue
                g.nodes[src] = fused
                for k in chain:
                    remove_node(g, k)
            elif is_neuron(prev) or isinstance(prev, nir.Input):
                for k in chain[1:]:
                    remove_node(g, k)
                g.nodes[name] = _pool_as_conv(node, in_shape, factor)
            else:
                continue
            return True
    return False


def _replace(g, old: str, keep: str, node) -> None:
    """Merge ``old`` (a linear node) into its single successor ``keep``, which becomes ``node``."""
    g.edges = [(a, keep) if b == old else (a, b) for a, b in g.edges if (a, b) != (old, keep)]
    del g.nodes[old]
    g.nodes[keep] = node


def fuse_linear(graph: nir.NIRGraph) -> nir.NIRGraph:
    g = clone(graph)
    for k, n in list(g.nodes.items()):
        if isinstance(n, nir.Linear):
            g.nodes[k] = nir.Affine(weight=np.asarray(n.weight, dtype=np.float64),
                                    bias=np.zeros(np.asarray(n.weight).shape[0]),
                                    metadata=dict(n.metadata))
    movable = (nir.SumPool2d, nir.AvgPool2d, nir.Flatten, nir.Scale)
    changed = True
    while changed:
        changed = False
        pred, succ = predecessors(g), successors(g)
        for name, node in list(g.nodes.items()):
            if not isinstance(node, movable) or len(succ[name]) != 1:
                continue
            nxt = succ[name][0]
            if len(pred[nxt]) != 1:
                continue
            target = g.nodes[nxt]
            in_shape = _in_shape(g, name)
            if isinstance(target, nir.Affine):
                fused = _compose_affine(g, name, in_shape, name, target)
            elif isinstance(target, nir.Conv2d) and isinstance(node, (nir.SumPool2d,
                                                                       nir.AvgPool2d)):
                fused = _pool_into_conv(node, target, in_shape[1:])
                if fused is None:
                    fused = _compose_dense(g, [name, nxt], in_shape, _shape_of(g, nxt),
                                           target.bias)
            elif isinstance(target, nir.Conv2d) and isinstance(node, nir.Scale):
                s = np.asarray(node.scale, dtype=np.float64).reshape(in_shape)
                per_c = s.reshape(s.shape[0], -1)
                if not np.all(per_c == per_c[:, :1]) or int(target.groups) != 1:
                    continue
                fused = nir.Conv2d(input_shape=tuple(in_shape[1:]),
                                   weight=np.asarray(target.weight) * per_c[:, 0][None, :, None,
                                                                                  None],
                                   stride=target.stride, padding=target.padding,
                                   dilation=target.dilation, groups=target.groups,
                                   bias=target.bias, metadata=dict(target.metadata))
            elif isinstance(target, (nir.SumPool2d, nir.AvgPool2d, nir.Flatten, nir.Scale)):
                continue
            else:
                continue
            _replace(g, name, nxt, fused)
            changed = True
            break
    while _pool_before_neuron(g):
        pass
    _insert_identity_synapses(g)
    g = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata, type_check=False)
    _infer_missing_types(g)
    return g


def _insert_identity_synapses(g: nir.NIRGraph) -> None:
    for a, b in list(g.edges):
        src, dst = g.nodes[a], g.nodes[b]
        if (is_neuron(src) or isinstance(src, nir.Input)) and is_neuron(dst):
            n = int(np.prod(_shape_of(g, a)))
            name = f"{a}->{b}.identity"
            g.nodes[name] = nir.Affine(weight=np.eye(n), bias=np.zeros(n))
            g.edges.remove((a, b))
            g.edges += [(a, name), (name, b)]


def _infer_missing_types(g: nir.NIRGraph) -> None:
    """Give freshly built nodes input/output types from their neighbours."""
    pred = predecessors(g)
    for name, node in g.nodes.items():
        if isinstance(node, nir.Affine) and pred[name]:
            src = g.nodes[pred[name][0]]
            node.input_type = {"input": np.asarray(src.output_type["output"])}
