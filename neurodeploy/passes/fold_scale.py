"""Fold uniform ``Scale`` nodes (AvgPool's 1/k^2, spike amplitudes) into the next weights.

A scalar scale commutes with SumPool2d and Flatten, so it is pushed through them into the
first Conv2d/Affine/Linear on every branch downstream, provided each node on the way has this
chain as its only input. A positive uniform scale that feeds only the graph's Output (a spike
amplitude of the last neuron layer) is dropped: the readout counts spikes, and scaling every
count by the same positive factor leaves the arg-max unchanged. Non-uniform scales, or scales
feeding a sum, stay in the graph.
"""

from __future__ import annotations

import nir
import numpy as np

from ..graph import predecessors, successors
from ._util import clone, remove_node

_COMMUTES = (nir.SumPool2d, nir.Flatten)
_WEIGHTED = (nir.Conv2d, nir.Conv1d, nir.Affine, nir.Linear)


def fold_scale(graph: nir.NIRGraph) -> nir.NIRGraph:
    g = clone(graph)
    changed = True
    while changed:
        changed = False
        pred, succ = predecessors(g), successors(g)
        for name, node in list(g.nodes.items()):
            if not isinstance(node, nir.Scale):
                continue
            s = np.asarray(node.scale, dtype=np.float64)
            if s.size == 0 or not np.all(s == s.flat[0]):
                continue
            if succ[name] and s.flat[0] > 0 and all(isinstance(g.nodes[k], nir.Output)
                                                    for k in succ[name]):
                remove_node(g, name)
                changed = True
                break
            targets = [_weighted_target(g, pred, succ, nxt) for nxt in succ[name]
                       if len(pred[nxt]) == 1]
            if not succ[name] or len(targets) != len(succ[name]) or None in targets:
                continue
            for target in targets:
                g.nodes[target].weight = np.asarray(g.nodes[target].weight) * s.flat[0]
            remove_node(g, name)
            changed = True
            break
    return g


def _weighted_target(g, pred, succ, start):
    """The weighted node reached from ``start`` through single-input commuting nodes, or None."""
    cur = start
    while True:
        if isinstance(g.nodes[cur], _WEIGHTED):
            return cur
        if not isinstance(g.nodes[cur], _COMMUTES) or len(succ[cur]) != 1:
            return None
        cur = succ[cur][0]
        if len(pred[cur]) != 1:
            return None
