"""Inline nested ``NIRGraph`` nodes into one flat graph with prefixed node names.

NIR allows a node to be a whole graph (snnTorch's ``RLeaky``/``RSynaptic`` and other
recurrent blocks are written that way by some exporters). A subgraph ``sub`` with nodes
``input``, ``lif``, ``w_rec``, ``output`` becomes the outer nodes ``sub.lif`` and ``sub.w_rec``:

* inner nodes are renamed ``<sub>.<name>``, recursively (``a.b.c`` for a graph in a graph);
* an outer edge ``x -> sub`` goes to the subgraph's only ``Input`` node (with several inputs
  the edge must name one: ``x -> sub.<input name>``), ``sub -> y`` leaves from its only
  ``Output`` node, likewise;
* inner ``Input``/``Output`` nodes are pass-throughs and are removed: every node feeding one is
  connected to every node it fed.

The outer graph keeps its own metadata (``dt``); subgraph metadata is dropped.
"""

from __future__ import annotations

import nir

from ..errors import GraphError


def _endpoint(name: str, sub: nir.NIRGraph, kind: type, role: str) -> str:
    names = [k for k, n in sub.nodes.items() if isinstance(n, kind)]
    if len(names) != 1:
        raise GraphError(
            f"subgraph {name!r} has {len(names)} {kind.__name__} nodes; an edge {role} it must "
            f"name one of them as '{name}.<node>' (found: {', '.join(sorted(names)) or 'none'})")
    return f"{name}.{names[0]}"


def _remove_passthrough(nodes: dict, edges: list[tuple[str, str]], name: str) -> list:
    preds = [a for a, b in edges if b == name and a != name]
    succs = [b for a, b in edges if a == name and b != name]
    kept = [e for e in edges if name not in e]
    for p in preds:
        for s in succs:
            if (p, s) not in kept:
                kept.append((p, s))
    del nodes[name]
    return kept


def flatten_subgraphs(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Return an equivalent graph without nested ``NIRGraph`` nodes (the input is unchanged)."""
    if not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        return nir.NIRGraph(nodes=dict(graph.nodes), edges=list(graph.edges),
                            metadata=dict(graph.metadata or {}), type_check=False)
    nodes: dict[str, nir.NIRNode] = {}
    passthrough: list[str] = []
    redirect_in: dict[str, str] = {}
    redirect_out: dict[str, str] = {}
    inner_edges: list[tuple[str, str]] = []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        sub = flatten_subgraphs(node)
        for k, n in sub.nodes.items():
            full = f"{name}.{k}"
            if full in graph.nodes:
                raise GraphError(f"flattening subgraph {name!r}: its node {k!r} would be named "
                                 f"{full!r}, which the outer graph already uses")
            nodes[full] = n
            if isinstance(n, (nir.Input, nir.Output)):
                passthrough.append(full)
        inner_edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in sub.edges]
        if any(b == name for _, b in graph.edges):
            redirect_in[name] = _endpoint(name, sub, nir.Input, "into")
        if any(a == name for a, _ in graph.edges):
            redirect_out[name] = _endpoint(name, sub, nir.Output, "out of")
    edges: list[tuple[str, str]] = []
    for a, b in list(graph.edges) + inner_edges:
        e = (redirect_out.get(a, a), redirect_in.get(b, b))
        for end in e:
            if end not in nodes:
                raise GraphError(f"edge ({a!r}, {b!r}) names unknown node {end!r}")
        if e not in edges:
            edges.append(e)
    for name in passthrough:
        edges = _remove_passthrough(nodes, edges, name)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}),
                        type_check=False)
