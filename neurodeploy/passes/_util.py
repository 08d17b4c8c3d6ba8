"""Small helpers shared by passes: copying graphs and rewiring edges."""

from __future__ import annotations

import copy

import nir


def clone(graph: nir.NIRGraph) -> nir.NIRGraph:
    return nir.NIRGraph(nodes={k: copy.deepcopy(v) for k, v in graph.nodes.items()},
                        edges=list(graph.edges), metadata=dict(graph.metadata),
                        type_check=False)


def remove_node(graph: nir.NIRGraph, name: str) -> None:
    """Delete ``name`` and connect each of its predecessors to each of its successors."""
    preds = [a for a, b in graph.edges if b == name]
    succs = [b for a, b in graph.edges if a == name]
    graph.edges = [e for e in graph.edges if name not in e] + [(p, s) for p in preds for s in succs]
    del graph.nodes[name]
