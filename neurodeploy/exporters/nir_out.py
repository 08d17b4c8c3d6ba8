"""Export a compiled (quantized) model as a plain NIR graph with dequantized parameters.

The graph is what the Loihi fixed-point model computes, written back in float units so that any
NIR simulator (snnTorch, Norse, Sinabs, Rockpool, Spyx, our float engine) runs the deployed
network rather than the trained one. For neuron layer ``n`` with scale ``lambda`` (integer
synaptic units per float membrane unit; per output channel, ``channel_scale``, where the model
was compiled with per-channel scales) and the fixed-point decays ``du``/``dv``:

* the neuron type follows the decays: ``du = 4095`` (no synaptic memory) and ``dv = 0`` is an
  ``IF``; ``dv > 0`` an ``LIF`` with ``tau = 4096 dt / dv``; ``du < 4095`` a ``CubaLIF`` with
  ``tau_syn = 4096 dt / (du + 1)`` and ``tau_mem = 4096 dt / dv``. ``r = 1`` and ``w_in = 1``
  (what Norse's importer assumes), except ``r = 1 / dt`` for IF (Norse's IAF adds its input
  without ``dt``); the fixed-point membrane is shifted so that the reset is 0, and so is the
  exported one;
* ``v_threshold = (vth + 2**-7) / lambda``: Loihi compares integers (``v > vth << 6``), so the
  float threshold sits half a membrane LSB above ``vth``, where float round-off cannot flip a
  tie; with reset by subtraction ``v_reset = 2**-7 / lambda``, so that NIR's subtraction
  ``v_threshold - v_reset`` is exactly ``vth / lambda``. ``v_init = v_init_int / (64 lambda)``
  (metadata); the reset mode in metadata ``reset`` as everywhere in neurodeploy;
* weights ``W = w_int / (lambda g)`` with ``w_int`` the effective integer weight (Dense:
  mantissa ``<< weight_exp``; Conv: the mantissa, Lava's Conv ignores the exponent) and ``g``
  the input gain of the exported neuron (IF 1, LIF ``dt / tau``, CubaLIF
  ``(dt / tau_syn)(dt / tau_mem)``);
* the integer bias ``bias_mant << bias_exp`` (added to ``v`` every step) becomes the bias of
  the neuron's first synapse layer, ``b = bias / (64 lambda g)``; where that cannot hold it (a
  convolution whose bias differs within a channel, or a CubaLIF, whose synapse would filter it)
  it becomes ``v_leak = bias / (64 lambda) * tau_mem / dt`` instead;
* an ``Affine`` fed by a multi-dimensional layer gets an explicit ``Flatten`` before it;
* a pipeline-aligned model keeps its relay and clock neurons but starts from the trained
  membranes, not the pre-charged ones: NIR simulators have no synapse delays, so relays pass
  spikes on in the same step and clocks fire from step 0 (``passes.training_timing``).

Graph metadata ``dt`` carries the time step (NIR has none: simulate at that step). The float
simulation of this graph differs from the fixed-point run only by the fixed-point rounding of
``v`` and ``u`` (decays, 24-bit saturation), not by any weight or threshold difference.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from ..errors import GraphError
from ..graph import is_neuron, predecessors, successors
from ..passes.align_pipeline import training_timing

_ONE = 4096  # 2**decay_bits, the unit of du/dv
_HALF_LSB = 1.0 / 128  # half of v's least significant bit (v carries 6 more bits than u)


def _loihi(name: str, node) -> dict:
    q = node.metadata.get("loihi")
    if not isinstance(q, dict):
        raise GraphError(f"node {name!r} ({type(node).__name__}) is not quantized; export a "
                         "compiled model (neurodeploy compile)")
    return q


def effective_weight(node) -> np.ndarray:
    """Integer weights a synapse layer applies (Lava's Conv ignores ``weight_exp``)."""
    q = node.metadata["loihi"]
    w = np.asarray(q["weight_mant"], dtype=np.float64)
    if isinstance(node, nir.Conv2d):
        return w
    return w * 2.0 ** int(q.get("weight_exp", 0))


def effective_bias(q: dict) -> np.ndarray:
    """Integer bias added to ``v`` every step (``bias_mant << bias_exp``)."""
    return np.asarray(q["bias_mant"], np.float64) * 2.0 ** int(q["bias_exp"])


def channel_scale(q: dict, ndim: int):
    """The scale ``lambda`` of a quantized node, per output channel (axis 0) where the model
    was compiled with per-channel scales, shaped to broadcast over an ``ndim`` array."""
    c = np.asarray(q.get("channel_scale", q["scale"]), np.float64).reshape(-1)
    if ndim == 0 or np.all(c == c[0]):
        return float(c[0])
    return c.reshape(-1, *([1] * (ndim - 1)))


def _neuron(name: str, node, q: dict, dt: float, shape):
    """The float neuron of the fixed-point layer and its input gain ``g``."""
    lam, du, dv = channel_scale(q, len(shape)), int(q["du"]), int(q["dv"])
    ones = np.ones(shape)
    meta = {"reset": str(q["reset"]),
            "v_init": np.broadcast_to(np.asarray(q["v_init"], np.float64) / (64 * lam),
                                      shape).copy()}
    if not np.any(meta["v_init"]):
        meta["v_init"] = 0.0
    # Loihi fires on integers, v > vth << 6: put the float threshold half a membrane LSB
    # (2**-7 synaptic units) above, so float round-off cannot flip a tie; a subtractive reset
    # still removes exactly vth / lambda (NIR: v -= v_threshold - v_reset).
    vth = np.broadcast_to((np.asarray(q["vth"], np.float64) + _HALF_LSB) / lam, shape).copy()
    v_reset = (_HALF_LSB / lam if meta["reset"] == "subtract" else 0.0) * ones
    if du >= _ONE - 1 and dv == 0:  # r = 1/dt: a gain of 1 per step (Norse's IAF ignores dt)
        return nir.IF(r=ones / dt, v_threshold=vth, v_reset=v_reset, metadata=meta), 1.0, None
    if du >= _ONE - 1:
        tau = _ONE * dt / dv
        node_q = nir.LIF(tau=tau * ones, r=ones, v_leak=0 * ones, v_threshold=vth,
                         v_reset=v_reset, metadata=meta)
        return node_q, dt / tau, tau
    if dv == 0:
        raise GraphError(f"node {name!r}: a current-based neuron without membrane decay "
                         "(du < 4095, dv = 0) has no NIR equivalent")
    ts, tm = _ONE * dt / (du + 1), _ONE * dt / dv
    node_q = nir.CubaLIF(tau_syn=ts * ones, tau_mem=tm * ones, r=ones, v_leak=0 * ones,
                         v_threshold=vth, v_reset=v_reset, w_in=ones, metadata=meta)
    return node_q, (dt / ts) * (dt / tm), tm


def dequantize(model, dt: float | None = None) -> nir.NIRGraph:
    """Plain NIR graph (no ``loihi`` metadata) of a compiled model or a quantized graph."""
    graph = training_timing(getattr(model, "graph", model))
    if dt is None:
        meta = getattr(model, "meta", {}) or {}
        dt = float(meta.get("dt", graph.metadata.get("dt", 1.0)))
    pred, succ = predecessors(graph), successors(graph)
    nodes: dict[str, nir.NIRNode] = {}
    edges = list(graph.edges)
    synapse_of: dict[str, tuple] = {}  # synapse -> (lambda, gain[, bias])
    for name, node in graph.nodes.items():
        if not is_neuron(node):
            continue
        q = _loihi(name, node)
        shape = tuple(int(s) for s in node.output_type["output"])
        nodes[name], gain, tau_mem = _neuron(name, node, q, dt, shape)
        lam = channel_scale(q, len(shape))
        for s in pred[name]:
            if len(succ[s]) != 1:
                raise GraphError(f"synapse layer {s!r} feeds {len(succ[s])} nodes")
            synapse_of[s] = (lam, gain)
        bias = np.broadcast_to(effective_bias(q), shape) / (64 * lam)  # float v units per step
        if not np.any(bias):
            continue
        first = pred[name][0] if pred[name] else None
        syn = graph.nodes.get(first)
        per_channel = bias.reshape(shape[0], -1) if len(shape) > 1 else None
        fits_synapse = isinstance(syn, nir.Affine) or (
            isinstance(syn, nir.Conv2d) and np.all(per_channel == per_channel[:, :1]))
        if fits_synapse and not isinstance(nodes[name], nir.CubaLIF):
            b = bias if isinstance(syn, nir.Affine) else per_channel[:, 0]
            synapse_of[first] = (lam, gain, b.reshape(-1) / gain)
        elif tau_mem is not None:
            nodes[name].v_leak = bias * tau_mem / dt
        else:
            raise GraphError(f"node {name!r}: its bias varies within a channel and an IF neuron "
                             "has no v_leak to carry it")
    for name, node in graph.nodes.items():
        if name in nodes:
            continue
        if isinstance(node, (nir.Input, nir.Output)):
            nodes[name] = type(node)(**({"input_type": node.input_type} if isinstance(
                node, nir.Input) else {"output_type": node.output_type}))
            continue
        if name not in synapse_of:
            raise GraphError(f"node {name!r} ({type(node).__name__}) is not a synapse layer of a "
                             "neuron; export a compiled (lowered and quantized) model")
        _loihi(name, node)
        _, gain, *rest = synapse_of[name]
        w = effective_weight(node)
        w = w / (channel_scale(node.metadata["loihi"], w.ndim) * gain)
        nout = w.shape[0]
        b = rest[0] if rest else np.zeros(nout)
        if isinstance(node, nir.Conv2d):
            in_shape = tuple(int(s) for s in node.input_type["input"])
            nodes[name] = nir.Conv2d(input_shape=in_shape[1:], weight=w, stride=node.stride,
                                     padding=node.padding, dilation=node.dilation,
                                     groups=node.groups, bias=np.asarray(b, np.float64))
            nodes[name].input_type = {"input": np.array(in_shape)}
            nodes[name].output_type = {"output": np.asarray(node.output_type["output"])}
            continue
        nodes[name] = nir.Affine(weight=w, bias=np.asarray(b, np.float64))
        src = pred[name][0] if pred[name] else None
        src_shape = tuple(int(s) for s in graph.nodes[src].output_type["output"]) if src else ()
        if len(src_shape) > 1:
            flat = f"{name}.flatten"
            nodes[flat] = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0,
                                      end_dim=-1)
            edges = [(a, flat) if b_ == name else (a, b_) for a, b_ in edges] + [(flat, name)]
    order = [k for k in graph.nodes if k in nodes] + [k for k in nodes if k not in graph.nodes]
    out = nir.NIRGraph(nodes={k: nodes[k] for k in order}, edges=edges,
                       metadata={"dt": float(dt)}, type_check=False)
    from ..frontends.nir_file import infer_shapes

    infer_shapes(out)
    return out


def export_nir(model, path: str | Path, dt: float | None = None) -> nir.NIRGraph:
    """Write :func:`dequantize` of ``model`` to ``path`` (atomically); returns the graph."""
    from ..artifact import atomic_path

    graph = dequantize(model, dt)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
    return graph
