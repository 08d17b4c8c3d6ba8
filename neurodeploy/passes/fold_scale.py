"""Fold uniform ``Scale`` nodes (AvgPool's 1/k^2, spike amplitudes) into the next weights.

A scalar scale commutes with SumPool2d and Flatten, so it is pushed through them into the
first Conv2d/Affine/Linear downstream, provided each node on the way has this chain as its
only input. Non-uniform scales, or scales feeding a sum, stay in the graph.
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
            target, cur = None, name
            while len(succ[cur]) == 1:
                nxt = succ[cur][0]
                if len(pred[nxt]) != 1:
                    break
                if isinstance(g.nodes[nxt], _WEIGHTED):
                    target = nxt
                    break
                if not isinstance(g.nodes[nxt], _COMMUTES):
                    break
                cur = nxt
            if target is None:
                continue
            g.nodes[target].weight = np.asarray(g.nodes[target].weight) * s.flat[0]
            remove_node(g, name)
            changed = True
            break
    return g
