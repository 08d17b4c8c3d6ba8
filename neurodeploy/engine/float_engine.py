"""Float reference simulation of a NIR graph, batched, in discrete time.

NIR neurons are ODEs; we discretise them with forward Euler at step ``dt`` (graph metadata
``dt`` unless given), the convention NIR's reference simulators use:

* IF:      ``v += dt r I``
* LIF:     ``v += dt/tau (v_leak - v + r I)``
* CubaLIF: ``i += dt/tau_syn (-i + w_in I)``, then ``v += dt/tau_mem (v_leak - v + r i)``
* LI, I, CubaLI: as above, without firing; their output is ``v``.
* fire ``z = v > v_threshold``; reset ``v = v_reset`` (``"zero"``) or
  ``v -= v_threshold - v_reset`` (``"subtract"``, neurodeploy metadata).
* Delay:   ``y[t] = x[t - k]`` with ``k = delay / dt`` steps per element (zeros before).

Timing: by default every node sees its inputs of the same step (the training-time semantics).
With ``pipeline=True`` every connection node delays its output by one step, as Lava and Loihi
do; then outputs lag by the number of connection layers on the path (see docs/timing.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from ..errors import GraphError
from ..graph import evaluation_order, is_neuron, is_stateful, predecessors, reset_mode, validate
from .ops import apply_linear


@dataclass
class SimResult:
    """Recorded activity: ``activity[name]`` is ``[T, B, *shape]`` for every recorded node."""

    outputs: dict[str, np.ndarray]
    activity: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def output(self) -> np.ndarray:
        if len(self.outputs) != 1:
            raise GraphError(f"graph has {len(self.outputs)} outputs; pick one from .outputs")
        return next(iter(self.outputs.values()))


def _arr(v, like):
    return torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=like.dtype)


class FloatNeuron:
    """State and update of one stateful NIR node for a batch."""

    def __init__(self, name, node, batch, dt, dtype=torch.float64):
        self.name, self.node, self.dt = name, node, float(dt)
        shape = tuple(int(s) for s in node.output_type["output"])
        ref = torch.zeros((), dtype=dtype)
        v0 = node.metadata.get("v_init", 0.0)
        self.v = torch.zeros((batch, *shape), dtype=dtype) + _arr(v0, ref)
        self.i = torch.zeros((batch, *shape), dtype=dtype)
        self.p = {k: _arr(getattr(node, k), ref) for k in
                  ("tau", "r", "v_leak", "v_threshold", "v_reset", "tau_syn", "tau_mem", "w_in")
                  if getattr(node, k, None) is not None}
        self.reset = reset_mode(node) if is_neuron(node) else None

    def step(self, I: torch.Tensor) -> torch.Tensor:
        p, dt, n = self.p, self.dt, self.node
        if isinstance(n, (nir.IF, nir.I)):
            self.v = self.v + dt * p["r"] * I
        elif isinstance(n, (nir.LIF, nir.LI)):
            self.v = self.v + dt / p["tau"] * (p["v_leak"] - self.v + p["r"] * I)
        elif isinstance(n, (nir.CubaLIF, nir.CubaLI)):
            self.i = self.i + dt / p["tau_syn"] * (-self.i + p["w_in"] * I)
            self.v = self.v + dt / p["tau_mem"] * (p["v_leak"] - self.v + p["r"] * self.i)
        if not is_neuron(n):
            return self.v
        z = (self.v > p["v_threshold"]).to(self.v.dtype)
        if self.reset == "subtract":
            self.v = self.v - z * (p["v_threshold"] - p["v_reset"])
        else:
            self.v = torch.where(z > 0, p["v_reset"] + 0 * self.v, self.v)
        return z


class DelayLine:
    """NIR ``Delay``: every element repeats its input ``round(delay / dt)`` steps later."""

    def __init__(self, name, node, dt):
        d = np.asarray(node.delay, dtype=np.float64) / float(dt)
        k = np.rint(d)
        if np.any(k < 0) or np.any(np.abs(d - k) > 1e-6 * np.maximum(1.0, np.abs(d))):
            raise GraphError(f"node {name!r} (Delay): delays must be non-negative multiples of "
                             f"dt={dt}")
        self.k = torch.as_tensor(k.astype(np.int64))
        self.hist: torch.Tensor | None = None  # hist[j] = input j steps ago

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if self.hist is None:
            n = int(self.k.max()) + 1 if self.k.numel() else 1
            self.hist = torch.zeros((n, *x.shape), dtype=x.dtype)
        self.hist = torch.cat([x[None], self.hist[:-1]])
        return torch.gather(self.hist, 0, self.k.expand(x.shape)[None])[0]


def _rest_outputs(graph, order, back, pred, batch) -> dict[str, torch.Tensor]:
    """Node outputs before the first step: inputs zero, every neuron silent.

    A connection node on a recurrent loop then already emits its bias (NIR's Affine is
    ``W s + b`` at all times; snnTorch's RLeaky adds its recurrent bias from step 0, and the
    fixed-point engine, which adds biases in the neuron, does the same).
    """
    out: dict[str, torch.Tensor] = {}
    passive = (nir.Input, nir.Output, nir.Threshold, nir.Delay)
    for name in order:
        node = graph.nodes[name]
        ins = [out[p] for p in pred[name] if (p, name) not in back and p in out]
        if not (is_stateful(node) or isinstance(node, passive)) and ins:
            out[name] = apply_linear(name, node, sum(ins[1:], ins[0]))
            continue
        shape = (node.output_type or {}).get("output")
        if shape is not None:
            out[name] = torch.zeros((batch, *[int(s) for s in np.atleast_1d(shape)]),
                                    dtype=torch.float64)
    return out


def simulate_float(
    graph: nir.NIRGraph,
    x: np.ndarray,
    dt: float | None = None,
    pipeline: bool = False,
    record: bool = True,
    record_states: bool = False,
) -> SimResult:
    """Simulate ``graph`` on input ``x`` of shape ``[T, B, *input_shape]``."""
    validate(graph)
    if dt is None:
        dt = graph.metadata.get("dt")
        if dt is None:
            raise GraphError("graph has no metadata 'dt'; pass dt= (the simulation time step)")
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    T, B = xt.shape[0], xt.shape[1]
    state = {k: FloatNeuron(k, n, B, dt) for k, n in graph.nodes.items() if is_stateful(n)}
    delays = {k: DelayLine(k, n, dt) for k, n in graph.nodes.items() if isinstance(n, nir.Delay)}
    # last step's outputs, for recurrent edges; before step 0: the network at rest
    prev: dict[str, torch.Tensor] = _rest_outputs(graph, order, back, pred, B) if back else {}
    buf: dict[str, torch.Tensor] = {}  # pipeline registers of connection nodes
    rec: dict[str, list] = {k: [] for k in graph.nodes}
    srec: dict[str, dict[str, list]] = {k: {"v": [], "i": []} for k in state}
    for t in range(T):
        cur: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                cur[name] = xt[t]
                continue
            ins = []
            for p_ in pred[name]:
                if (p_, name) in back:
                    if p_ in prev:
                        ins.append(prev[p_])
                else:
                    ins.append(cur[p_])
            if name in state:  # a dense synapse (Affine) may feed a neuron layer of any shape
                ins = [v.reshape(state[name].v.shape) for v in ins]
            total = sum(ins[1:], ins[0]) if ins else None
            if total is None:
                raise GraphError(f"node {name!r} has no input at step {t}")
            if isinstance(node, nir.Output):
                cur[name] = total
            elif name in state:
                cur[name] = state[name].step(total)
            elif name in delays:
                cur[name] = delays[name].step(total)
            elif isinstance(node, nir.Threshold):
                cur[name] = (total > _arr(node.threshold, total)).to(total.dtype)
            else:
                y = apply_linear(name, node, total)
                if pipeline:
                    out = buf.get(name, torch.zeros_like(y))
                    buf[name] = y
                    y = out
                cur[name] = y
        prev = cur
        for k, v in cur.items():
            if record or isinstance(graph.nodes[k], nir.Output):
                rec[k].append(v)
        if record_states:
            for k, s in state.items():
                srec[k]["v"].append(s.v.clone())
                srec[k]["i"].append(s.i.clone())
    stack = {k: torch.stack(v).numpy() for k, v in rec.items() if v}
    outs = {k: stack[k] for k, n in graph.nodes.items() if isinstance(n, nir.Output)}
    states = {k: {q: torch.stack(v).numpy() for q, v in d.items() if v}
              for k, d in srec.items()} if record_states else {}
    return SimResult(outputs=outs, activity=stack if record else {}, states=states)
