"""Compile a quantized NIR graph to Lava processes and run it (``Loihi2SimCfg('fixed_pt')``).

Mapping (one Lava process per node):

* Affine -> ``lava.proc.dense.Dense`` (8-bit mantissa, ``weight_exp``);
* synapses fed by the input use graded messages (``num_message_bits=16``): event frames carry
  counts, and with binary messages Lava would treat a count of 2 as one spike;
* Conv2d -> ``lava.proc.conv.Conv``; Lava stores images as (X, Y, C) = (W, H, C) and computes a
  true convolution, so kernels are flipped and transposed to (C_out, W, H, C_in);
* IF/LIF/CubaLIF with reset to zero -> Lava's stock ``LIF`` where the layer has one threshold,
  our ``LIFZero`` where thresholds differ (per-channel scales; Lava's ``LIF`` has one ``vth``
  per process); with reset by subtraction -> our ``LIFSubtract`` (bit-accurate models in
  ``models.py``);
* Input -> our ``EventSource`` that injects only the events that occurred.

Timing: every synapse process adds one step (docs/timing.md); callers run ``T + depth`` steps.
"""

from __future__ import annotations

import nir
import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIF

from ....errors import GraphError
from ....graph import evaluation_order, is_neuron, predecessors, successors
from ..processes import EventSource, LIFSubtract, LIFZero
from ..run_utils import run_and_record


def to_lava_layout(a: np.ndarray) -> np.ndarray:
    """NIR (C, H, W) -> Lava (W, H, C); vectors are unchanged. Works on trailing axes."""
    a = np.asarray(a)
    return np.swapaxes(a, -1, -3) if a.ndim >= 3 else a


def from_lava_layout(a: np.ndarray, nir_shape) -> np.ndarray:
    """Lava (..., W, H, C) recordings back to NIR (..., C, H, W)."""
    return np.swapaxes(a, -1, -3) if len(nir_shape) == 3 else a


def _lava_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    return shape[::-1] if len(shape) == 3 else shape


def _flat_perm(shape) -> np.ndarray:
    """Column order of a Dense fed by a Lava-layout (W, H, C) port flattened in C order."""
    shape = tuple(int(s) for s in shape)
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    return to_lava_layout(idx).reshape(-1)


class LavaNetwork:
    """Lava processes for one sample of a quantized graph."""

    def __init__(self, graph: nir.NIRGraph, x: np.ndarray):
        self.graph = graph
        order, back = evaluation_order(graph)
        pred, succ = predecessors(graph), successors(graph)
        self.procs: dict[str, object] = {}
        self.out_port: dict[str, object] = {}
        inp = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        if len(inp) != 1:
            raise GraphError("the Lava backend needs exactly one Input node")
        self.input = inp[0]
        in_shape = tuple(int(s) for s in graph.nodes[self.input].output_type["output"])
        consumers = {type(graph.nodes[s]) for s in succ[self.input]}
        flat_in = consumers <= {nir.Affine} and len(in_shape) == 3
        src_shape = (int(np.prod(in_shape)),) if flat_in else _lava_shape(in_shape)
        xs = np.asarray(x)  # [T, *in_shape]
        xl = xs.reshape(xs.shape[0], -1) if flat_in else to_lava_layout(xs).reshape(
            xs.shape[0], -1)
        t_idx, n_idx = np.nonzero(xl)
        self.procs[self.input] = EventSource(
            shape=src_shape, t_idx=(t_idx + 1).astype(np.int64), neuron_idx=n_idx.astype(np.int64),
            value=xl[t_idx, n_idx].astype(np.int64), name=self.input)
        self.out_port[self.input] = self.procs[self.input].s_out
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            if is_neuron(node):
                self.procs[name] = _neuron(name, node)
            elif isinstance(node, (nir.Affine, nir.Conv2d)):
                src_shape_n = graph.nodes[pred[name][0]].output_type["output"]
                dst = [graph.nodes[k] for k in succ[name] if is_neuron(graph.nodes[k])]
                self.procs[name] = _synapse(name, node, src_shape_n,
                                            from_input=pred[name] == [self.input],
                                            out_shape=dst[0].output_type["output"] if dst
                                            else None)
            else:
                raise GraphError(f"node {name!r}: {type(node).__name__} has no Lava mapping; "
                                 "lower the graph first")
            self.out_port[name] = (self.procs[name].s_out if is_neuron(node)
                                   else self.procs[name].a_out)
        for a, b in graph.edges:
            nb = graph.nodes[b]
            if isinstance(nb, nir.Output):
                continue
            port_in = self.procs[b].a_in if is_neuron(nb) else self.procs[b].s_in
            src = self.out_port[a]
            if isinstance(nb, nir.Affine) and len(src.shape) > 1:
                src = src.flatten()
            if isinstance(graph.nodes[a], nir.Affine) and port_in.shape != src.shape:
                src = src.reshape(port_in.shape)  # a dense synapse into a (W, H, C) layer
            src.connect(port_in)
        self.neurons = [k for k, n in graph.nodes.items() if is_neuron(n)]

    def run(self, num_steps: int, record_states: bool = False):
        """Run and return spikes of every neuron layer, ``[num_steps, *nir_shape]``.

        With ``record_states``, returns ``(spikes, states)``: ``states[name]["u"/"v"]`` are the
        neuron layer's ``u`` and ``v`` after every step, ``[num_steps, *nir_shape]``, read by
        one Lava ``Monitor`` per Var (reading costs ~0.1 ms per value: keep layers small).
        """
        ports = {k: self.procs[k].s_out for k in self.neurons}
        variables = {}
        if record_states:
            for k in self.neurons:
                variables[(k, "u")] = self.procs[k].u
                variables[(k, "v")] = self.procs[k].v
        rec = run_and_record(self.procs[self.neurons[0]], num_steps, ports=ports,
                             variables=variables)
        out, states = {}, {}
        for k in self.neurons:
            shape = tuple(int(s) for s in self.graph.nodes[k].output_type["output"])
            out[k] = from_lava_layout(rec[k], shape).reshape(num_steps, *shape)
            if record_states:
                states[k] = {q: from_lava_layout(rec[(k, q)], shape).reshape(num_steps, *shape)
                             for q in ("u", "v")}
        return (out, states) if record_states else out


def _neuron(name: str, node):
    q = node.metadata["loihi"]
    shape = tuple(int(s) for s in node.output_type["output"])
    lshape = _lava_shape(shape)

    def lay(a):
        return to_lava_layout(np.broadcast_to(np.asarray(a, np.int64), shape))

    kw = dict(shape=lshape, du=int(q["du"]), dv=int(q["dv"]), bias_mant=lay(q["bias_mant"]),
              bias_exp=int(q["bias_exp"]), v=lay(q["v_init"]), name=name)
    if q["reset"] == "subtract":
        return LIFSubtract(vth=lay(q["vth"]), **kw)
    vth = np.asarray(q["vth"])
    if not np.all(vth == vth.flat[0]):
        return LIFZero(vth=lay(vth), **kw)
    return LIF(vth=int(vth.flat[0]), **kw)


def _synapse(name: str, node, in_shape, from_input: bool, out_shape=None):
    q = node.metadata["loihi"]
    w = np.asarray(q["weight_mant"], np.int64)
    in_shape = tuple(int(s) for s in in_shape)
    if isinstance(node, nir.Affine):
        if len(in_shape) == 3 and not from_input:
            w = w[:, _flat_perm(in_shape)]
        if out_shape is not None and len(out_shape) == 3:
            w = w[_flat_perm(out_shape), :]
        return Dense(weights=w, weight_exp=int(q["weight_exp"]), num_weight_bits=8,
                     num_message_bits=16 if from_input else 0, name=name)
    lw = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
    pad = np.atleast_1d(np.asarray(node.padding)).astype(int)
    stride = np.atleast_1d(np.asarray(node.stride)).astype(int)
    dil = np.atleast_1d(np.asarray(node.dilation)).astype(int)
    return Conv(weight=lw, input_shape=_lava_shape(in_shape),
                padding=(int(pad[-1]), int(pad[0])), stride=(int(stride[-1]), int(stride[0])),
                dilation=(int(dil[-1]), int(dil[0])), groups=int(node.groups),
                num_message_bits=16 if from_input else 0, name=name)


def simulate_lava(graph: nir.NIRGraph, x: np.ndarray, num_steps: int | None = None,
                  record_states: bool = False):
    """Run each sample of ``x`` (``[T, B, *shape]``) in Lava; returns activity ``[T', B, ...]``.

    With ``record_states``, returns ``(activity, states)`` with ``states[name]["u"/"v"]`` of
    every neuron layer, ``[T', B, *shape]`` (NIR layout, as ``simulate_fixed``'s states).
    """
    xs = np.asarray(x)
    steps = int(num_steps or xs.shape[0])
    if steps > xs.shape[0]:
        xs = np.concatenate([xs, np.zeros((steps - xs.shape[0], *xs.shape[1:]), xs.dtype)])
    runs = [LavaNetwork(graph, xs[:, b]).run(steps, record_states=record_states)
            for b in range(xs.shape[1])]
    spikes = [r[0] for r in runs] if record_states else runs
    act = {k: np.stack([r[k] for r in spikes], axis=1) for k in spikes[0]}
    if not record_states:
        return act
    states = {k: {q: np.stack([r[1][k][q] for r in runs], axis=1) for q in ("u", "v")}
              for k in runs[0][1]}
    return act, states
