"""Read ``.nir`` files from any exporter, and infer every node's shape from the Input shape.

``read_nir`` accepts what snnTorch, Norse, Sinabs, Rockpool, Spyx, Lava-dl and NIR's own
examples write:

* graphs that pass NIR's strict type inference, and graphs that do not (older exporters leave
  pooling types unset, leak the batch dimension into types, or give scalar neuron parameters):
  those are loaded with ``type_check=False`` and one warning, and :func:`infer_shapes`
  recomputes every ``input_type``/``output_type`` from the ``Input`` shape and the node
  parameters (declared types of inner nodes are not trusted);
* nested subgraphs, flattened into one graph with prefixed names
  (:func:`neurodeploy.passes.flatten_subgraphs`);
* scalar or one-element neuron parameters, broadcast to the layer shape.

Bad files give one :class:`InputFileError` (not HDF5, no ``/node`` group, unknown node type,
a node NIR cannot build) or :class:`GraphError` (shape mismatch along an edge, NaN/inf
parameter, a cycle without a neuron), each naming the node. NIR has no time step: the caller
sets graph metadata ``dt`` (``--dt``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import nir
import numpy as np

from ..errors import GraphError, InputFileError
from ..graph import NEURON_TYPES, evaluation_order, predecessors, validate

#: NIR node types a file may contain (``NIRGraph`` is flattened).
KNOWN_TYPES = ("Affine", "AvgPool2d", "Conv1d", "Conv2d", "CubaLI", "CubaLIF", "Delay", "Flatten",
               "I", "IF", "Input", "LI", "LIF", "Linear", "NIRGraph", "Output", "Scale",
               "SumPool2d", "Threshold")

_PARAMS = {
    nir.IF: ("r", "v_threshold", "v_reset"),
    nir.LIF: ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    nir.CubaLIF: ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    nir.LI: ("tau", "r", "v_leak"),
    nir.I: ("r",),
    nir.CubaLI: ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    nir.Threshold: ("threshold",),
    nir.Delay: ("delay",),
}


def _type_of(group) -> str:
    t = group["type"][()] if "type" in group else b"?"
    return t.decode() if isinstance(t, bytes) else str(t)


def _check_node_types(group, prefix: str, path: Path) -> None:
    """Name the first node whose type NIR does not define (NIR itself only asserts)."""
    kind = _type_of(group)
    where = prefix or "<root>"
    if kind not in KNOWN_TYPES:
        raise InputFileError(f"{path}: node {where!r} has unknown NIR type {kind!r}; known: "
                             f"{', '.join(KNOWN_TYPES)}")
    if kind == "NIRGraph":
        if "nodes" not in group or "edges" not in group:
            raise InputFileError(f"{path}: graph {where!r} has no 'nodes'/'edges'")
        for name, sub in group["nodes"].items():
            _check_node_types(sub, f"{prefix}.{name}" if prefix else name, path)


def _build_lenient(d: dict, where: str, path: Path):
    """Build nodes from NIR's dict form without type checks, nested graphs included."""
    if d.get("type") == "NIRGraph":
        nodes = {k: _build_lenient(v, f"{where}.{k}" if where else k, path)
                 for k, v in d["nodes"].items()}
        edges = [(nir.ir.utils.ensure_str(a), nir.ir.utils.ensure_str(b)) for a, b in d["edges"]]
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(d.get("metadata", {})),
                            type_check=False)
    try:
        return nir.dict2NIRNode(dict(d))
    except Exception as e:  # NIR's constructors raise assorted types
        raise InputFileError(f"{path}: node {where!r} ({d.get('type')}) cannot be built: "
                             f"{e}") from e


def read_nir(path: str | Path, reset: str | None = None) -> nir.NIRGraph:
    """Read, flatten and shape-check a NIR graph; see the module docstring.

    ``reset`` (``"zero"``/``"subtract"``) overrides the reset of every IF/LIF/CubaLIF neuron,
    for exporters whose framework resets differently from what NIR's ``v_reset`` says (Sinabs
    and snnTorch default to reset by subtraction but write NIR's reset-to-``v_reset`` nodes).
    """
    from ..passes.flatten_subgraphs import flatten_subgraphs

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise InputFileError(f"{path}: not a NIR file (no /node group)")
            _check_node_types(f["node"], "", path)
    except OSError as e:
        raise InputFileError(f"{path}: not a readable NIR (HDF5) file ({e})") from e
    try:
        graph = nir.read(path)
    except Exception as strict_error:  # NIR raises assorted types from its type inference
        try:
            with h5py.File(path, "r") as f:
                d = nir.serialization.hdf2dict(f["node"])
        except OSError as e:
            raise InputFileError(f"{path}: cannot read NIR graph: {e}") from e
        graph = _build_lenient(d, "", path)
        warnings.warn(f"{path}: NIR's type check failed ({strict_error}); loaded without it "
                      "and inferred shapes from the Input node", stacklevel=2)
    if not isinstance(graph, nir.NIRGraph):
        raise InputFileError(f"{path}: the root node is a {type(graph).__name__}, not a graph")
    graph = flatten_subgraphs(graph)
    infer_shapes(graph)
    if reset is not None:
        if reset not in ("zero", "subtract"):
            raise InputFileError(f"reset must be 'zero' or 'subtract', got {reset!r}")
        for node in graph.nodes.values():
            if isinstance(node, NEURON_TYPES):
                node.metadata = dict(node.metadata or {}, reset=reset)
    validate(graph)
    return graph


# --- shape inference -------------------------------------------------------------------------

def _shape(a) -> tuple[int, ...]:
    return tuple(int(s) for s in np.atleast_1d(np.asarray(a)).ravel())


def _pair(v, n: int = 2) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return tuple(int(a[min(i, len(a) - 1)]) for i in range(n))


def _conv_len(size, k, s, p, d) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_out(name: str, node, shape: tuple[int, ...]) -> tuple[int, ...]:
    w = np.asarray(node.weight)
    nd = w.ndim - 2
    if len(shape) != nd + 1:
        raise GraphError(f"node {name!r} ({type(node).__name__}): input shape {shape} is not "
                         f"(channels, {'length' if nd == 1 else 'height, width'})")
    groups = int(np.asarray(node.groups))
    if shape[0] != w.shape[1] * groups:
        raise GraphError(f"node {name!r} ({type(node).__name__}): input has {shape[0]} channels,"
                         f" weight {w.shape} with groups={groups} expects {w.shape[1] * groups}")
    ks, st, dl = w.shape[2:], _pair(node.stride, nd), _pair(node.dilation, nd)
    pad = node.padding
    if isinstance(pad, (str, bytes)):
        pad = pad.decode() if isinstance(pad, bytes) else pad
        if pad == "same":
            return (w.shape[0], *shape[1:])
        pd = (0,) * nd
    else:
        pd = _pair(pad, nd)
    out = tuple(_conv_len(shape[1 + i], ks[i], st[i], pd[i], dl[i]) for i in range(nd))
    if min(out) < 1:
        raise GraphError(f"node {name!r}: kernel {tuple(ks)} does not fit input {shape}")
    if isinstance(node, nir.Conv2d):
        node.input_shape = tuple(shape[1:])
    else:
        node.input_shape = int(shape[1])
    return (int(w.shape[0]), *out)


def _pool_out(name: str, node, shape) -> tuple[int, ...]:
    if len(shape) != 3:
        raise GraphError(f"node {name!r} ({type(node).__name__}): input shape {shape} is not "
                         "(channels, height, width)")
    k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    out = tuple(_conv_len(shape[1 + i], k[i], s[i], p[i], 1) for i in range(2))
    if min(out) < 1:
        raise GraphError(f"node {name!r}: pooling window {k} does not fit input {shape}")
    return (shape[0], *out)


def _flatten_out(name: str, node, shape) -> tuple[int, ...]:
    n = len(shape)
    s, e = int(np.asarray(node.start_dim)), int(np.asarray(node.end_dim))
    s, e = s + n if s < 0 else s, e + n if e < 0 else e
    if not 0 <= s <= e < n:
        raise GraphError(f"node {name!r} (Flatten): dims {int(np.asarray(node.start_dim))}.."
                         f"{int(np.asarray(node.end_dim))} do not fit input shape {shape}")
    return (*shape[:s], int(np.prod(shape[s:e + 1])), *shape[e + 1:])


def _neuron_like(name: str, node, shape) -> tuple[int, ...]:
    """Parameters must have the input shape; scalars and one-element arrays are broadcast."""
    for field in _PARAMS[type(node)]:
        v = getattr(node, field, None)
        if v is None:
            continue
        a = np.asarray(v, dtype=np.float64)
        if a.shape == shape:
            setattr(node, field, a)
        elif a.size == 1:
            setattr(node, field, np.full(shape, float(a.ravel()[0])))
        else:
            raise GraphError(f"node {name!r} ({type(node).__name__}): parameter {field!r} has "
                             f"shape {a.shape}, its input has shape {shape}")
    return shape


def _affine_out(name: str, node, shape) -> tuple[int, ...]:
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise GraphError(f"node {name!r} ({type(node).__name__}): weight must be 2-D "
                         f"[out, in], got shape {w.shape}")
    squeezed = tuple(s for s in shape if s != 1) or (1,)
    if squeezed != (w.shape[1],):
        raise GraphError(f"node {name!r} ({type(node).__name__}): input shape {shape} does not "
                         f"match weight {w.shape} (expects ({w.shape[1]},); add a Flatten)")
    if isinstance(node, nir.Affine) and _shape(node.bias) != (w.shape[0],):
        node.bias = np.broadcast_to(np.asarray(node.bias, np.float64), (w.shape[0],)).copy()
    return (int(w.shape[0]),)


def _output_shape(name: str, node, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(node, (nir.Affine, nir.Linear)):
        return _affine_out(name, node, shape)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        return _conv_out(name, node, shape)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return _pool_out(name, node, shape)
    if isinstance(node, nir.Flatten):
        return _flatten_out(name, node, shape)
    if isinstance(node, nir.Scale):
        s = np.asarray(node.scale, np.float64)
        try:
            np.broadcast_shapes(s.shape, shape)
        except ValueError as e:
            raise GraphError(f"node {name!r} (Scale): scale of shape {s.shape} does not "
                             f"broadcast to its input shape {shape}") from e
        return shape
    if type(node) in _PARAMS:
        return _neuron_like(name, node, shape)
    if isinstance(node, nir.Output):
        return shape
    raise GraphError(f"node {name!r} has unsupported NIR type {type(node).__name__}")


def infer_shapes(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Set ``input_type``/``output_type`` of every node from the Input shapes (in place).

    Walks the nodes in evaluation order; each node's input shape is the common output shape of
    its predecessors (NIR sums them), checked against the node's parameters. Recurrent edges
    are checked once every shape is known. Raises :class:`GraphError` naming the node or edge.
    """
    if any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        raise GraphError("infer_shapes needs a flat graph: run passes.flatten_subgraphs first")
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    out: dict[str, tuple[int, ...]] = {}
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            t = (node.input_type or {}).get("input")
            if t is None:
                raise GraphError(f"Input node {name!r} has no shape")
            out[name] = _shape(t)
            node.input_type = {"input": np.array(out[name])}
            node.output_type = {"output": np.array(out[name])}
            continue
        fwd = [p for p in pred[name] if (p, name) not in back]
        if not fwd:
            raise GraphError(f"node {name!r} ({type(node).__name__}) has no input")
        shape = out[fwd[0]]
        for p in fwd[1:]:
            if out[p] != shape:
                raise GraphError(f"shape mismatch into node {name!r}: {fwd[0]!r} gives {shape}, "
                                 f"{p!r} gives {out[p]} (inputs of a node are summed)")
        try:
            out[name] = _output_shape(name, node, shape)
        except GraphError as e:
            raise GraphError(f"{e} (edge {fwd[0]!r} -> {name!r})") from e
        node.input_type = {"input": np.array(shape)}
        node.output_type = {"output": np.array(out[name])}
    for a, b in back:
        want = _shape(graph.nodes[b].input_type["input"])
        if out[a] != want:
            raise GraphError(f"shape mismatch along recurrent edge {a!r} -> {b!r}: {a!r} gives "
                             f"{out[a]}, {b!r} takes {want}")
    for name in graph.nodes:
        if name not in out:
            raise GraphError(f"node {name!r} is not reachable from an Input node")
    return graph
