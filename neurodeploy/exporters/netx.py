"""Write a compiled model as a lava-dl ``netx`` HDF5 network (``.net``).

Schema (lava-dl's slayer writer and netx reader; docs/interop.md lists every key):

* ``layer/"0"`` .. ``layer/"n-1"`` in input -> output order, each with ``type`` (``|S10``,
  shape (1,)) and ``shape`` (int64, slayer order (C, H, W) or (N,));
* ``input``: ``shape`` only (no ``neuron`` group: netx then only records the input shape);
* ``dense``: ``inFeatures``, ``outFeatures``, ``weight`` float32 [out, in] holding integers,
  optional ``bias`` float32 [out], ``neuron``; ``dense_rec`` adds ``weight_rec`` [out, out] (a
  recurrent layer: the neuron's own spikes through a second Dense);
* ``conv``: ``inChannels``, ``outChannels``, ``kernelSize``, ``stride``, ``padding``,
  ``dilation`` (int64 [2], (y, x)), ``groups``, ``weight`` float32 [out, in / groups, kH, kW]
  in torch's cross-correlation orientation (netx flips and transposes it for Lava), optional
  ``bias`` [out], ``neuron``;
* ``flatten``: ``shape`` [C H W, 1, 1] before a dense layer fed by a 3-D layer;
* ``neuron``: ``type`` ``"CUBA"`` (variable-length string), int64 scalars ``iDecay`` (= Lava
  ``du + 1``), ``vDecay`` (= ``dv``), ``vThMant`` (= Lava ``vth``), ``refDelay`` = 1 and bool
  ``gradedSpike`` = False;
* ``simulation``: ``Ts`` = 1 and ``tSample`` = the model's time steps.

netx builds Lava's stock ``LIF`` with ``bias_exp = 6``; so our integer bias
``bias_mant << bias_exp`` is written as ``bias = bias_mant << bias_exp >> 6`` (exact when it is
a multiple of 64, otherwise rounded with a warning naming the largest error).

What netx cannot represent, and what the exporter does:

* reset by subtraction: Lava's ``LIF`` (netx CUBA) resets ``v`` to 0. The exporter refuses
  such a model (``NetxExportError``) unless ``allow_reset_change=True``, which writes it with
  reset to zero and a warning: the network then computes something else;
* a non-zero initial membrane potential: likewise refused, or dropped with a warning; the
  pre-charged membranes of pipeline alignment are replaced by the trained ones, with a warning;
  the relay and clock neurons alignment adds are refused (compile with ``--no-align``);
* anything but a chain input -> layer -> layer (residual additions, fan-out, several inputs)
  and recurrent convolutions: refused;
* graded (multi-bit) input messages are a ``netx.hdf5.Network(input_message_bits=...)``
  argument, not part of the file; our compiled models feed event counts from the input, so
  pass ``input_message_bits=16`` when the input carries counts above 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import nir
import numpy as np

from ..errors import NeurodeployError
from ..graph import is_neuron, predecessors, successors
from ..passes.align_pipeline import added_by_alignment, training_timing
from .nir_out import effective_bias, effective_weight


class NetxExportError(NeurodeployError):
    """The compiled model cannot be written as a netx network."""


def _shape(node, port="output") -> tuple[int, ...]:
    t = node.output_type["output"] if port == "output" else node.input_type["input"]
    return tuple(int(s) for s in t)


def _uniform(name: str, what: str, a) -> int:
    a = np.asarray(a)
    if a.size and not np.all(a == a.flat[0]):
        raise NetxExportError(f"node {name!r}: {what} differs between neurons; netx stores one "
                              "value per layer")
    return int(a.flat[0]) if a.size else 0


def _chain(graph: nir.NIRGraph):
    """``[(forward_synapse, neuron, recurrent_synapse | None), ...]`` from input to output."""
    pred, succ = predecessors(graph), successors(graph)
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NetxExportError(f"netx networks have one input; the graph has {len(inputs)}")
    layers, cur, seen = [], inputs[0], set()
    while True:
        nxt = [s for s in succ[cur] if not isinstance(graph.nodes[s], nir.Output)]
        outs = [s for s in succ[cur] if isinstance(graph.nodes[s], nir.Output)]
        recurrent = [s for s in nxt if succ[s] == [cur]]
        forward = [s for s in nxt if s not in recurrent]
        if outs and not forward:
            if cur == inputs[0]:
                raise NetxExportError("the graph has no neuron layer")
            return inputs[0], layers
        if len(forward) != 1 or outs:
            raise NetxExportError(f"node {cur!r} feeds {len(forward) + len(outs)} layers; netx "
                                  "writes only chains (no fan-out, residual or side outputs)")
        syn = forward[0]
        if len(succ[syn]) != 1 or not is_neuron(graph.nodes[succ[syn][0]]):
            raise NetxExportError(f"synapse {syn!r} must feed exactly one neuron layer")
        neuron = succ[syn][0]
        if neuron in seen:
            raise NetxExportError(f"node {neuron!r} is reached twice")
        seen.add(neuron)
        rec = [s for s in pred[neuron] if s != syn]
        if any(pred[s] != [neuron] for s in rec) or len(rec) > 1:
            raise NetxExportError(f"neuron layer {neuron!r} has {len(pred[neuron])} inputs; "
                                  "netx layers take one (plus at most one recurrent Dense)")
        layers.append((syn, neuron, rec[0] if rec else None))
        cur = neuron


def _write_type(g: h5py.Group, kind: str) -> None:
    g.create_dataset("type", data=np.array([kind.encode("ascii")], dtype="S10"))


def _int(g: h5py.Group, key: str, value) -> None:
    g.create_dataset(key, data=np.int64(value))


def _ints(g: h5py.Group, key: str, values) -> None:
    g.create_dataset(key, data=np.asarray(values, dtype=np.int64))


def _pair(v) -> list[int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return [int(a[0]), int(a[-1])]


def _neuron_group(g: h5py.Group, name: str, node, allow_reset_change: bool) -> None:
    q = node.metadata["loihi"]
    if q["reset"] != "zero":
        msg = (f"neuron layer {name!r} resets by subtraction; netx (Lava's LIF, CUBA) resets to "
               "zero")
        if not allow_reset_change:
            raise NetxExportError(msg + "; pass allow_reset_change=True (--allow-reset-change) "
                                  "to write it with reset to zero anyway")
        warnings.warn(msg + ": written with reset to zero, the netx network computes something "
                      "else", stacklevel=3)
    if np.any(np.asarray(q["v_init"])):
        msg = f"neuron layer {name!r} starts at a non-zero membrane potential; netx starts at 0"
        if not allow_reset_change:
            raise NetxExportError(msg)
        warnings.warn(msg + ": dropped", stacklevel=3)
    cs = np.asarray(q.get("channel_scale", q["scale"]))
    if np.any(cs != cs.flat[0]) and np.any(np.asarray(q["vth"]) != np.max(q["vth"])):
        raise NetxExportError(f"neuron layer {name!r} has one scale and threshold per output "
                              "channel; netx stores one threshold per layer: compile with "
                              "--per-layer (per_channel=False) to export to netx")
    n = g.create_group("neuron")
    n.create_dataset("type", data=b"CUBA", dtype=h5py.special_dtype(vlen=bytes))
    _int(n, "iDecay", int(q["du"]) + 1)
    _int(n, "vDecay", int(q["dv"]))
    _int(n, "vThMant", _uniform(name, "vth", q["vth"]))
    _int(n, "refDelay", 1)
    n.create_dataset("gradedSpike", data=np.bool_(False))


def _bias(g: h5py.Group, name: str, node, shape, per_channel: bool) -> None:
    b = np.broadcast_to(effective_bias(node.metadata["loihi"]), shape) / 64.0
    if not np.any(b):
        return
    if per_channel:
        b2 = b.reshape(shape[0], -1)
        if not np.all(b2 == b2[:, :1]):
            raise NetxExportError(f"neuron layer {name!r}: bias differs within a channel; netx "
                                  "conv layers have one bias per channel")
        b = b2[:, 0]
    r = np.round(b)
    if np.any(r != b):
        warnings.warn(f"neuron layer {name!r}: netx biases have 6 fewer fractional bits "
                      f"(bias_exp = 6); rounded by up to {np.abs(r - b).max() * 64:.0f} of "
                      f"{64} membrane LSB per step", stacklevel=3)
    g.create_dataset("bias", data=r.reshape(-1).astype(np.float32))


def _weight(name: str, node) -> np.ndarray:
    w = effective_weight(node)
    if w.min(initial=0) < -256 or w.max(initial=0) > 255:
        raise NetxExportError(f"synapse {name!r}: weights {w.min():.0f}..{w.max():.0f} exceed "
                              "netx's 8-bit range")
    return w.astype(np.float32)


def export_netx(model, path: str | Path, *, allow_reset_change: bool = False,
                time_steps: int | None = None) -> list[str]:
    """Write ``model`` (a compiled model or quantized graph) to ``path``; returns layer types."""
    from ..artifact import atomic_path

    graph = getattr(model, "graph", model)
    meta = getattr(model, "meta", {}) or {}
    steps = int(time_steps or meta.get("time_steps") or 1)
    added = sorted(k for k, n in graph.nodes.items() if is_neuron(n) and added_by_alignment(n))
    if added:
        raise NetxExportError(f"pipeline alignment added relay/clock neurons ({', '.join(added)})"
                              ", which netx cannot write as a chain; compile with --no-align "
                              "to export to netx")
    if any("v_init_train" in n.metadata for n in graph.nodes.values()):
        warnings.warn("netx starts every membrane at its trained value: the pre-charge of "
                      "pipeline alignment is dropped (biases then act during the first steps, "
                      "as when compiled with --no-align)", stacklevel=2)
        graph = training_timing(graph)
    for k, n in graph.nodes.items():
        if not isinstance(n, (nir.Input, nir.Output)) and "loihi" not in n.metadata:
            raise NetxExportError(f"node {k!r} ({type(n).__name__}) is not quantized; export a "
                                  "compiled model")
    inp, chain = _chain(graph)
    kinds: list[str] = []
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        layers = f.create_group("layer")

        def new(kind: str, shape) -> h5py.Group:
            g = layers.create_group(str(len(kinds)))
            _write_type(g, kind)
            _ints(g, "shape", shape)
            kinds.append(kind)
            return g

        prev_shape = _shape(graph.nodes[inp])
        new("input", prev_shape)
        for syn, neuron, rec in chain:
            s, n = graph.nodes[syn], graph.nodes[neuron]
            shape = _shape(n)
            if isinstance(s, nir.Affine):
                if len(prev_shape) > 1:
                    new("flatten", [int(np.prod(prev_shape)), 1, 1])
                g = new("dense_rec" if rec else "dense", shape)
                w = _weight(syn, s)
                _int(g, "inFeatures", w.shape[1])
                _int(g, "outFeatures", w.shape[0])
                g.create_dataset("weight", data=w)
                if rec:
                    r = graph.nodes[rec]
                    if not isinstance(r, nir.Affine):
                        raise NetxExportError(f"recurrent synapse {rec!r} must be a Dense layer")
                    g.create_dataset("weight_rec", data=_weight(rec, r))
                _bias(g, neuron, n, shape, per_channel=False)
            elif isinstance(s, nir.Conv2d):
                if rec:
                    raise NetxExportError(f"neuron layer {neuron!r}: netx has no recurrent "
                                          "convolution")
                if isinstance(s.padding, str):
                    raise NetxExportError(f"synapse {syn!r}: padding {s.padding!r} must be "
                                          "explicit numbers")
                g = new("conv", shape)
                w = _weight(syn, s)
                _int(g, "inChannels", prev_shape[0])
                _int(g, "outChannels", w.shape[0])
                _ints(g, "kernelSize", w.shape[2:])
                _ints(g, "stride", _pair(s.stride))
                _ints(g, "padding", _pair(s.padding))
                _ints(g, "dilation", _pair(s.dilation))
                _int(g, "groups", int(np.asarray(s.groups)))
                g.create_dataset("weight", data=w)
                _bias(g, neuron, n, shape, per_channel=True)
            else:
                raise NetxExportError(f"synapse {syn!r} is a {type(s).__name__}; netx writes "
                                      "Dense and Conv layers")
            _neuron_group(g, neuron, n, allow_reset_change)
            prev_shape = shape
        sim = f.create_group("simulation")
        _int(sim, "Ts", 1)
        _int(sim, "tSample", steps)
    return kinds
