"""Helpers over ``nir.NIRGraph``: node classes, evaluation order, shapes and validation.

neurodeploy keeps one intermediate representation, NIR. These functions read a graph; passes
(``neurodeploy.passes``) return new graphs. Conventions on top of NIR live in node
``metadata`` (see ``docs/ir.md``):

* ``metadata["reset"]`` on IF/LIF/CubaLIF: ``"zero"`` (NIR's ``v = v_reset``) or
  ``"subtract"`` (``v -= v_threshold - v_reset``). Absent means ``"zero"``.
* ``metadata["v_init"]``: initial membrane potential (default ``v_reset``... 0).
* graph ``metadata["dt"]``: the time step used to discretise the NIR ODEs (forward Euler).
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import nir
import numpy as np

from .errors import GraphError

NEURON_TYPES = (nir.IF, nir.LIF, nir.CubaLIF)
STATEFUL_TYPES = NEURON_TYPES + (nir.LI, nir.I, nir.CubaLI)
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
SUPPORTED_TYPES = STATEFUL_TYPES + CONNECTION_TYPES + (nir.Input, nir.Output, nir.Threshold,
                                                    nir.Delay)


def type_name(node) -> str:
    return type(node).__name__


def is_neuron(node) -> bool:
    return isinstance(node, NEURON_TYPES)


def is_stateful(node) -> bool:
    return isinstance(node, STATEFUL_TYPES)


def reset_mode(node) -> str:
    return str(node.metadata.get("reset", "zero"))


def predecessors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    pred: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        pred[b].append(a)
    return {k: pred.get(k, []) for k in graph.nodes}


def successors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        succ[a].append(b)
    return {k: succ.get(k, []) for k in graph.nodes}


def input_names(graph: nir.NIRGraph) -> list[str]:
    return [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]


def output_names(graph: nir.NIRGraph) -> list[str]:
    return [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]


def evaluation_order(graph: nir.NIRGraph) -> tuple[list[str], set[tuple[str, str]]]:
    """Order in which to evaluate nodes within one step, and the recurrent (delayed) edges.

    An edge that closes a cycle carries the previous step's value (NIR's one-step recurrence).
    Back edges are found by depth-first search from the inputs; every cycle must pass through a
    stateful node, otherwise the graph has an algebraic loop and is rejected.
    """
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from(graph.edges)
    back: set[tuple[str, str]] = set()
    root = object()  # a virtual root visiting inputs first, then anything left
    g.add_edges_from((root, n) for n in input_names(graph) + list(graph.nodes))
    on_stack: set = set()
    for u, v, kind in nx.dfs_labeled_edges(g, root):
        if kind == "forward":
            on_stack.add(v)
        elif kind == "reverse":
            on_stack.discard(v)
        elif kind == "nontree" and v in on_stack:
            back.add((u, v))
    g.remove_node(root)
    dag = g.copy()
    dag.remove_edges_from(back)
    if not nx.is_directed_acyclic_graph(dag):
        cycle = nx.find_cycle(dag)
        raise GraphError(f"cannot order graph: cycle {cycle} is not reachable from an input")
    for u, v in back:
        # the loop u -> v -> ... -> u must contain a stateful node to be well defined
        path = nx.shortest_path(dag, v, u) if nx.has_path(dag, v, u) else [v, u]
        if not any(is_stateful(graph.nodes[n]) for n in path):
            raise GraphError(
                f"cycle through {' -> '.join(path + [v])} has no neuron or integrator in it; "
                "a recurrent loop needs a stateful node"
            )
    return list(nx.topological_sort(dag)), back


def _check_finite(name: str, node) -> None:
    for field, value in vars(node).items():
        if field in ("input_type", "output_type", "metadata"):
            continue
        bad = isinstance(value, np.ndarray) and value.dtype.kind == "f"
        if bad and not np.isfinite(value).all():
            raise GraphError(f"node {name!r} ({type_name(node)}): parameter {field!r} has NaN/inf")


def validate(graph: nir.NIRGraph) -> None:
    """Raise :class:`GraphError` naming the node for anything the toolchain cannot run."""
    names = set(graph.nodes)
    for a, b in graph.edges:
        for end in (a, b):
            if end not in names:
                raise GraphError(f"edge ({a!r}, {b!r}) names unknown node {end!r}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise GraphError(f"node {name!r} is a nested subgraph: flatten it first")
        if not isinstance(node, SUPPORTED_TYPES):
            supported = sorted({t.__name__ for t in SUPPORTED_TYPES})
            raise GraphError(
                f"node {name!r} has unsupported NIR type {type_name(node)}; "
                f"supported: {', '.join(supported)}"
            )
        _check_finite(name, node)
        if is_neuron(node) and reset_mode(node) not in ("zero", "subtract"):
            raise GraphError(f"node {name!r}: metadata reset={reset_mode(node)!r} "
                             "must be 'zero' or 'subtract'")
    if not input_names(graph):
        raise GraphError("graph has no Input node")
    if not output_names(graph):
        raise GraphError("graph has no Output node")
    evaluation_order(graph)
