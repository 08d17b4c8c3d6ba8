"""Fuse chains of linear nodes so that every synapse layer is a single Affine or Conv2d.

Loihi-style hardware has one kind of synapse layer between neuron layers, so SumPool2d,
AvgPool2d, Flatten and Scale nodes are composed into the weighted node that follows them
(exactly: the composition of linear maps is linear):

* pooling -> Conv2d becomes one strided Conv2d with an expanded kernel
  (``kernel = stride_p (k - 1) + k_p``, ``stride = stride_p * stride``);
* anything linear -> Affine becomes one Affine whose matrix is computed by pushing the
  identity basis through the chain;
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
from ._util import clone

_MAX_AFFINE_INPUTS = 1 << 15


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


def _pool_into_conv(pool, conv: nir.Conv2d, in_hw) -> nir.Conv2d:
    kp, sp, pp = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    if pp != (0, 0) or _pair(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
        raise GraphError("pooling with padding, or before a dilated/'same' conv, cannot be fused")
    w = np.asarray(conv.weight, dtype=np.float64)
    o, c, kh, kw = w.shape
    pad = _pair(conv.padding)
    for d in range(2):
        if pad[d] and in_hw[d] % sp[d]:
            raise GraphError(f"pool stride {sp} must divide the input size {in_hw} to fuse "
                             "with a padded conv")
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
