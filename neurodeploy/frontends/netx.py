"""Read a lava-dl ``netx`` HDF5 network (``.net``) as a NIR graph.

Layers ``input``, ``dense``, ``dense_rec``, ``conv`` and ``flatten`` with ``CUBA`` (or legacy
``LOIHI``) neurons are read; everything netx itself cannot build (pool, convT, unpool, average,
concat) and neuron models without a NIR counterpart (SDNN, RF, ALIF, graded spikes, refractory
delays, synaptic delays) raise :class:`UnsupportedLayerError` naming the layer. The reader
tolerates the variations seen in lava-dl's own files: ``type`` as fixed or variable-length
strings, 4-D or 5-D conv weights, a 1-D weight for a single output, scalar or one-element
parameters, dense shapes ``[N]`` or ``[N, 1, 1]``, no ``input`` layer, no ``simulation`` group.

The fixed-point network becomes a float NIR graph in units of Lava's ``v >> 6`` with time step
``dt`` = ``simulation/Ts`` (1 when absent), so that compiling it with scale 1 per layer gives
back the file's integers exactly:

* ``iDecay = 4096`` (no current memory), ``vDecay = 0``: ``IF`` (r = 1);
* ``iDecay = 4096``, ``vDecay > 0``: ``LIF`` with ``tau = 4096 dt / vDecay``, r = 1;
* ``iDecay < 4096``: ``CubaLIF`` with ``tau_syn = 4096 dt / iDecay``,
  ``tau_mem = 4096 dt / vDecay``, r = ``w_in`` = 1;
* ``v_threshold = vThMant``, ``v_reset = 0``, reset to zero (Lava's LIF);
* weights ``W = w / g`` with ``g`` the neuron's per-step input gain (IF ``dt``, LIF
  ``dt / tau``, CubaLIF ``(dt / tau_syn)(dt / tau_mem)``); the bias (``bias << 6`` added to
  ``v`` per step) becomes the synapse bias ``bias / g``, or for CubaLIF ``v_leak``.

A layer without a ``neuron`` group gets netx's default: a non-leaky integrator whose threshold
(``1 << 18 - 1`` = 2**17 in netx's source) it practically never reaches.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np

from ..errors import InputFileError, UnsupportedLayerError

SUPPORTED = ["input", "dense", "dense_rec", "conv", "flatten", "neuron CUBA", "neuron LOIHI"]
_ONE = 4096
_DEFAULT_VTH = 1 << 17  # netx writes `1 << 18 - 1`, which Python evaluates as 2**17


def _str(v) -> str:
    a = v[()] if isinstance(v, h5py.Dataset) else v
    a = np.asarray(a).ravel()
    x = a[0] if a.size else b""
    return x.decode("ascii") if isinstance(x, bytes) else str(x)


def _num(g, key, default=None):
    if key not in g:
        if default is None:
            raise InputFileError(f"netx layer {g.name!r}: missing {key!r}")
        return default
    return np.asarray(g[key][()]).ravel()


def _scalar(g, key, default=None) -> float:
    a = _num(g, key, default)
    return float(np.asarray(a).ravel()[0])


def _pair(g, key) -> np.ndarray:
    a = _num(g, key).astype(int)
    return np.array([a[0], a[-1]])


def _neuron(layer: str, g, shape, dt: float):
    """(node, gain, bias_to_v_leak) for a layer's neuron group."""
    ones = np.ones(shape)
    meta = {"reset": "zero"}
    if "neuron" not in g:
        return nir.IF(r=ones, v_threshold=_DEFAULT_VTH * ones, v_reset=0 * ones,
                      metadata=meta), dt, False
    n = g["neuron"]
    kind = _str(n["type"]) if "type" in n else "CUBA"
    if kind not in ("CUBA", "LOIHI"):
        raise UnsupportedLayerError(layer, f"netx neuron {kind}", SUPPORTED,
                                    "only CUBA/LOIHI leaky integrate-and-fire neurons map to NIR")
    if "gradedSpike" in n and bool(np.asarray(n["gradedSpike"][()]).ravel()[0]):
        raise UnsupportedLayerError(layer, "netx CUBA with gradedSpike", SUPPORTED)
    if "refDelay" in n and _scalar(n, "refDelay") > 1:
        raise UnsupportedLayerError(layer, "netx CUBA with refDelay > 1", SUPPORTED,
                                    "NIR neurons have no refractory period")
    i_decay, v_decay = _scalar(n, "iDecay"), _scalar(n, "vDecay")
    vth = _scalar(n, "vThMant") * ones
    if not (0 <= i_decay <= _ONE and 0 <= v_decay <= _ONE):
        raise InputFileError(f"netx layer {layer!r}: iDecay {i_decay} / vDecay {v_decay} out of "
                             "0..4096")
    if i_decay >= _ONE:
        if v_decay == 0:
            return nir.IF(r=ones, v_threshold=vth, v_reset=0 * ones, metadata=meta), dt, False
        tau = _ONE * dt / v_decay
        return nir.LIF(tau=tau * ones, r=ones, v_leak=0 * ones, v_threshold=vth,
                       v_reset=0 * ones, metadata=meta), dt / tau, False
    if v_decay == 0 or i_decay == 0:
        raise UnsupportedLayerError(layer, f"netx CUBA with iDecay {i_decay:g}, vDecay "
                                    f"{v_decay:g}", SUPPORTED,
                                    "a non-decaying current or membrane beside a decaying one "
                                    "has no NIR neuron")
    ts, tm = _ONE * dt / i_decay, _ONE * dt / v_decay
    node = nir.CubaLIF(tau_syn=ts * ones, tau_mem=tm * ones, r=ones, v_leak=0 * ones,
                       v_threshold=vth, v_reset=0 * ones, w_in=ones, metadata=meta)
    return node, (dt / ts) * (dt / tm), True


def read_netx(path: str | Path, input_shape=None) -> nir.NIRGraph:
    """Read ``path`` as a NIR graph; ``input_shape`` is needed only without an input layer."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputFileError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        if "layer" not in f:
            raise InputFileError(f"{path}: not a netx network (no /layer group)")
        try:
            keys = sorted(f["layer"], key=int)
        except ValueError as e:
            raise InputFileError(f"{path}: netx layer names must be integers ({e})") from e
        dt = _scalar(f["simulation"], "Ts", 1.0) if "simulation" in f else 1.0
        meta = {"dt": float(dt)}
        if "simulation" in f and "tSample" in f["simulation"]:
            meta["time_steps"] = int(_scalar(f["simulation"], "tSample"))
        return _build(path, f["layer"], keys, input_shape, meta)


def _build(path, layers, keys, input_shape, meta) -> nir.NIRGraph:
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    prev, shape = None, None
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
    for i, key in enumerate(keys):
        g = layers[key]
        name = f"layer{key}"
        kind = _str(g["type"]) if "type" in g else "?"
        if kind == "input":
            if i:
                raise InputFileError(f"{path}: input layer {key} is not the first")
            if "neuron" in g:
                raise UnsupportedLayerError(name, "netx input layer with neurons", SUPPORTED,
                                            "input encoding through the bias is not supported")
            shape = tuple(int(s) for s in _num(g, "shape"))
            nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
            prev = "input"
            continue
        if prev is None:
            if kind == "dense":
                shape = shape or (int(_scalar(g, "inFeatures")),)
            elif shape is None:
                raise InputFileError(f"{path}: no input layer; pass the input shape")
            nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
            prev = "input"
        if kind == "flatten":
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            nodes[name] = node
            edges.append((prev, name))
            prev, shape = name, (int(np.prod(shape)),)
            continue
        if kind not in ("dense", "dense_rec", "conv"):
            raise UnsupportedLayerError(name, f"netx layer {kind!r}", SUPPORTED,
                                        "netx itself cannot build it either")
        if "delay" in g and np.any(np.asarray(g["delay"][()])):
            raise UnsupportedLayerError(name, f"netx {kind} with synaptic delays", SUPPORTED)
        if kind in ("dense", "dense_rec"):
            w = np.asarray(g["weight"][()], np.float64)
            if w.ndim == 1:
                w = w.reshape(1, -1)
            if len(shape) > 1:
                flat = f"{name}.flatten"
                nodes[flat] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                          end_dim=-1)
                edges.append((prev, flat))
                prev, shape = flat, (int(np.prod(shape)),)
            if w.shape[1] != shape[0]:
                raise InputFileError(f"{path}: layer {key} weight {w.shape} does not take the "
                                     f"previous layer's {shape[0]} outputs")
            out_shape = (w.shape[0],)
        else:
            w = np.asarray(g["weight"][()], np.float64)
            if w.ndim == 5:
                w = w[..., 0]
            stride, pad, dil = _pair(g, "stride"), _pair(g, "padding"), _pair(g, "dilation")
            groups = int(_scalar(g, "groups", 1))
            conv = nir.Conv2d(input_shape=tuple(shape[1:]), weight=w, stride=stride,
                              padding=pad, dilation=dil, groups=groups,
                              bias=np.zeros(w.shape[0]))
            hw = [(shape[1 + d] + 2 * pad[d] - dil[d] * (w.shape[2 + d] - 1) - 1) // stride[d] + 1
                  for d in range(2)]
            out_shape = (w.shape[0], *hw)
        neuron, gain, bias_on_v = _neuron(name, g, out_shape, meta["dt"])
        bias = np.asarray(g["bias"][()], np.float64).ravel() if "bias" in g else None
        syn = f"{name}.{'dense' if kind != 'conv' else 'conv'}"
        if kind == "conv":
            conv.weight = w / gain
            if bias is not None and not bias_on_v:
                conv.bias = np.broadcast_to(bias, (w.shape[0],)) / gain
            nodes[syn] = conv
        else:
            b = np.zeros(w.shape[0])
            if bias is not None and not bias_on_v:
                b = np.broadcast_to(bias, (w.shape[0],)) / gain
            nodes[syn] = nir.Affine(weight=w / gain, bias=b)
        if bias is not None and bias_on_v:
            b = bias.reshape(-1, *([1] * (len(out_shape) - 1))) if bias.size > 1 else bias
            neuron.v_leak = np.broadcast_to(b, out_shape) * neuron.tau_mem / meta["dt"]
        nodes[f"{name}.neuron"] = neuron
        edges += [(prev, syn), (syn, f"{name}.neuron")]
        if kind == "dense_rec":
            wr = np.asarray(g["weight_rec"][()], np.float64)
            rec = f"{name}.dense_rec"
            nodes[rec] = nir.Affine(weight=wr / gain, bias=np.zeros(wr.shape[0]))
            edges += [(f"{name}.neuron", rec), (rec, f"{name}.neuron")]
        prev, shape = f"{name}.neuron", out_shape
    if prev is None or prev == "input":
        raise InputFileError(f"{path}: the network has no layer with neurons")
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
    from .nir_file import infer_shapes

    infer_shapes(graph)
    return graph
