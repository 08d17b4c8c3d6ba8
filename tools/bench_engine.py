"""Benchmark: the native fixed-point engine against Lava (same compiled network, same input).

    .venv/bin/python tools/bench_engine.py [--steps 300] [--quick]

For each network (a small dense IF/LIF net, the bundled ``dvs-cnn`` and the NIR paper's
``cnn_sinabs.nir``) this compiles the model once, runs one sample in Lava 0.10.0
(``Loihi2SimCfg("fixed_pt")``) and in :func:`neurodeploy.engine.simulate_fixed`, asserts that
every neuron layer spikes identically at every step, and prints a markdown table of:

* steps/s at batch 1 (steady state, see below) and the batched throughput of the native engine
  (batch 1, 32, 128; sample-steps/s);
* synaptic events/s: input events and spikes times the number of synapses each one drives
  (structural fan-out; the count is the same for every simulator of the same run);
* CPU time per sample and step (Lava: all its processes), which a busy machine distorts less
  than wall-clock time: Lava runs one OS process per layer and gets more of a shared CPU than
  a single-process simulator does;
* float references on the uncompiled NIR graph: ``simulate_float`` and, for ``dvs-cnn``, a
  hand-written PyTorch step loop and snnTorch (``snn.Leaky``), when installed.

Steady state, excluding start-up:

* Lava: the network is compiled, spawned and run for ``--warmup`` steps; then the remaining
  steps run in a second ``run()`` call, which is what is timed. Spikes are recorded for every
  step by one small recorder process per layer that packs them into bits (reading Lava Vars
  costs ~0.1 ms per element, so unpacked recordings of a conv net would take minutes).
* native and float: the marginal rate ``(T - T0) / (t(T) - t(T0))`` between a long and a short
  run (``T0`` = 10 steps), which removes the per-call set-up; median of ``--repeats`` runs.
  Compilation of the numba kernels (first call ever, then cached on disk) is excluded too.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import nir
import numpy as np
import torch
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neurodeploy import nn as snn  # noqa: E402
from neurodeploy import zoo  # noqa: E402
from neurodeploy.backends.lava.network import LavaNetwork, from_lava_layout  # noqa: E402
from neurodeploy.compiler import compile_graph  # noqa: E402
from neurodeploy.engine import fixed_kernels, simulate_fixed, simulate_float  # noqa: E402
from neurodeploy.frontends.torch import torch_to_nir  # noqa: E402
from neurodeploy.graph import is_neuron, predecessors  # noqa: E402

SINABS = REPO.parent / "shared" / "reference" / "nir-paper" / "cnn_sinabs.nir"
CHECKPOINT = REPO / "models" / "default" / "model.pt"
BITS = 52  # spikes per float64 word (integers below 2**53 are exact)


# -- Lava side ---------------------------------------------------------------------------------
def _cpu_seconds_of_tree(root: int | None = None) -> float:
    """CPU time (user + system) of process ``root`` (default: this one) and its descendants."""
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)  # ppid, cpu
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(p for p, (pp, _) in stats.items() if pp == pid)
    return total

class SpikeBits(AbstractProcess):
    """Records a spike port: bit ``t * n + i`` of ``bits`` is set when neuron ``i`` fires at
    step ``t + 1``. Packing 52 spikes per Var element keeps the final read short."""

    def __init__(self, *, shape, num_steps: int, name: str | None = None):
        super().__init__(shape=shape, num_steps=num_steps, name=name)
        words = -(-int(np.prod(shape)) * int(num_steps) // BITS)
        self.a_in = InPort(shape=shape)
        self.bits = Var(shape=(words,), init=np.zeros(words))


@implements(proc=SpikeBits, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeBitsModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    bits: np.ndarray = LavaPyType(np.ndarray, np.float64)

    def run_spk(self) -> None:
        s = self.a_in.recv().reshape(-1)
        idx = np.flatnonzero(s) + (self.time_step - 1) * s.size
        np.add.at(self.bits, idx // BITS, np.exp2(idx % BITS))


def _unpack(words: np.ndarray, steps: int, lava_shape) -> np.ndarray:
    w = np.rint(np.asarray(words)).astype(np.int64)
    bits = (w[:, None] >> np.arange(BITS)) & 1
    n = int(np.prod(lava_shape))
    return bits.reshape(-1)[: n * steps].reshape(steps, *lava_shape)


def run_lava(graph: nir.NIRGraph, x1: np.ndarray, warmup: int):
    """Run one sample ``x1`` (``[T, *in_shape]``) in Lava.

    Returns ``(spikes per neuron layer, steady-state steps/s, CPU seconds per step of all Lava
    processes, start-up seconds)``.
    """
    steps = len(x1)
    t0 = time.perf_counter()
    net = LavaNetwork(graph, x1)
    recs = {}
    for k in net.neurons:
        port = net.procs[k].s_out
        recs[k] = SpikeBits(shape=port.shape, num_steps=steps)
        port.connect(recs[k].a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt",
                       exception_proc_model_map={r: PySpikeBitsModel for r in recs.values()})
    root = net.procs[net.neurons[0]]
    try:
        root.run(condition=RunSteps(num_steps=warmup), run_cfg=cfg)
        t1, c1 = time.perf_counter(), _cpu_seconds_of_tree()
        root.run(condition=RunSteps(num_steps=steps - warmup), run_cfg=cfg)
        t2, c2 = time.perf_counter(), _cpu_seconds_of_tree()
        words = {k: r.bits.get() for k, r in recs.items()}
    finally:
        root.stop()
    spikes = {}
    for k, w in words.items():
        shape = tuple(int(s) for s in graph.nodes[k].output_type["output"])
        lshape = tuple(int(s) for s in net.procs[k].s_out.shape)
        spikes[k] = from_lava_layout(_unpack(w, steps, lshape), shape).reshape(steps, *shape)
    return spikes, (steps - warmup) / (t2 - t1), (c2 - c1) / (steps - warmup), t1 - t0


# -- timing helpers ----------------------------------------------------------------------------
def marginal_rate(fn, x: np.ndarray, repeats: int, short: int = 10) -> tuple[float, float]:
    """Steady state of ``fn(x[:T])``: ``(T - short) / (t(T) - t(short))`` steps/s, medians of
    ``repeats`` runs, and the CPU seconds per step of this process measured the same way."""
    def timed(xx):
        wall, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fn(xx)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return float(np.median(wall)), float(np.median(cpu))

    fn(x[:short])  # warm-up (compiles the numba kernels on first use)
    (w1, c1), (w0, c0) = timed(x), timed(x[:short])
    steps = len(x) - short
    return steps / max(w1 - w0, 1e-9), max(c1 - c0, 1e-9) / steps


def events_per_step(graph: nir.NIRGraph, activity: dict[str, np.ndarray]) -> float:
    """Mean synaptic events per step and sample: active inputs x structural fan-out."""
    pred = predecessors(graph)
    total = 0.0
    for k, node in graph.nodes.items():
        if not isinstance(node, (nir.Affine, nir.Conv2d)):
            continue
        src = sum(activity[p].astype(np.float64) for p in pred[k])
        active = (src != 0).reshape(src.shape[0] * src.shape[1], -1)
        total += float((active @ _fan_out(node).reshape(-1)).sum()) / active.shape[0]
    return total


def _fan_out(node) -> np.ndarray:
    """Number of synapses from each input element of a synapse node."""
    if isinstance(node, nir.Affine):
        return np.full(int(np.prod(node.input_type["input"])), float(node.weight.shape[0]))
    c, h, w = (int(s) for s in node.input_type["input"])
    _, ho, wo = (int(s) for s in node.output_type["output"])
    _, _, kh, kw = np.asarray(node.weight).shape
    pad = np.broadcast_to(np.asarray(node.padding), (2,)).astype(int)
    stride = np.broadcast_to(np.asarray(node.stride), (2,)).astype(int)
    dil = np.broadcast_to(np.asarray(node.dilation), (2,)).astype(int)

    def axis(n, k, out, s, p, d):
        num = np.arange(n)[:, None] + p - np.arange(k)[None, :] * d
        return ((num >= 0) & (num % s == 0) & (num // s < out)).sum(1)

    ny = axis(h, kh, ho, stride[0], pad[0], dil[0])
    nx = axis(w, kw, wo, stride[1], pad[1], dil[1])
    per_group = np.asarray(node.weight).shape[0] // int(node.groups)
    return np.broadcast_to(ny[:, None] * nx[None, :] * per_group, (c, h, w)).astype(float)


# -- float references for dvs-cnn --------------------------------------------------------------
def _layers(model: nn.Module) -> list[nn.Module]:
    out = []
    for m in model:
        out.append(m.module if isinstance(m, snn.TimeDistributed) else m)
    return out


def torch_loop(model: nn.Module):
    """A plain PyTorch step loop of a Sequential SNN (conv/linear + IF/LIF, subtract reset)."""
    layers = _layers(model)

    @torch.no_grad()
    def run(x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(x, dtype=torch.float32)
        state: dict[int, torch.Tensor] = {}
        count = 0
        for t in range(xt.shape[0]):
            h = xt[t]
            for i, m in enumerate(layers):
                if isinstance(m, snn.SpikingNeuron):
                    v = state.get(i, torch.zeros_like(h))
                    v = m.charge(v, h)
                    h = (v > m.threshold).to(h.dtype)
                    state[i] = v - m.threshold * h
                else:
                    h = m(h)
            count += int(h.sum())
        return count

    return run


def snntorch_net(model: nn.Module):
    """The same network in snnTorch (``Leaky`` with subtract reset), or None if not installed."""
    try:
        import snntorch
        import snntorch.utils
    except ImportError:
        return None
    layers = []
    for m in _layers(model):
        if isinstance(m, snn.SpikingNeuron):
            beta = getattr(m, "beta", 1.0)
            layers.append(snntorch.Leaky(beta=beta, threshold=float(m.threshold),
                                         reset_mechanism="subtract", init_hidden=True))
        else:
            layers.append(m)
    net = nn.Sequential(*layers).float()

    @torch.no_grad()
    def run(x: np.ndarray) -> int:
        snntorch.utils.reset(net)
        xt = torch.as_tensor(x, dtype=torch.float32)
        return int(sum(float(net(xt[t]).sum()) for t in range(xt.shape[0])))

    return run, snntorch.__version__


# -- networks ----------------------------------------------------------------------------------
def dense_net(seed: int = 0):
    torch.manual_seed(seed)
    m = snn.multistep(nn.Sequential(
        nn.Linear(100, 200), snn.LIF(beta=0.9, threshold=1.0, reset="subtract"),
        nn.Linear(200, 10), snn.IF(threshold=1.0, reset="subtract"),
    ))
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    return m.double().eval(), (100,)


def conv_net():
    """``dvs-cnn``: the trained default model if present, else random weights that spike."""
    if CHECKPOINT.is_file():
        from neurodeploy.checkpoint import load_checkpoint

        model, _ = load_checkpoint(CHECKPOINT)
        return model.double().eval(), (2, 34, 34), "trained checkpoint"
    torch.manual_seed(0)
    model = zoo.build("dvs-cnn")
    with torch.no_grad():  # PyTorch's default init times 3: every layer fires at ~3 % per step
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
                m.bias.zero_()
    return model.double().eval(), (2, 34, 34), "random weights"


def sinabs_graph():
    from neurodeploy.frontends.nir_file import read_nir

    g = read_nir(SINABS)
    g.metadata = dict(g.metadata or {})
    g.metadata["dt"] = 1.0
    return g


def events(steps: int, batch: int, shape, p: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, *shape)) < p).astype(np.int64)


# -- main --------------------------------------------------------------------------------------
class Row:
    def __init__(self, net, sim, batch, rate, cpu, events, lava):
        self.net, self.sim, self.batch, self.rate = net, sim, batch, rate
        self.cpu, self.events, self.lava = cpu, events, lava  # cpu: s per step (whole batch)

    def markdown(self) -> str:
        b = self.batch
        return (f"| {self.net} | {self.sim} | {b} | {self.rate:,.0f} | {self.rate * b:,.0f} | "
                f"{self.rate * b * self.events:,.3g} | {self.cpu / b * 1e6:,.1f} | "
                f"{self.rate / self.lava.rate:,.1f} | {self.lava.cpu / (self.cpu / b):,.0f} |")


def bench(name, graph, in_shape, args, rows, float_refs=(), note=""):
    g = compile_graph(graph, time_steps=args.steps).graph
    x = events(args.steps, 1, in_shape, args.p, seed=1)
    lava_spikes, lava_rate, lava_cpu, lava_start = run_lava(g, x[:, 0], args.warmup)
    native = simulate_fixed(g, x)
    for k, s in lava_spikes.items():
        if not np.array_equal(s, native.activity[k][:, 0]):
            bad = np.argwhere(s != native.activity[k][:, 0])[0]
            raise AssertionError(f"{name}: layer {k} differs from Lava first at {bad}")
    n_spikes = sum(int(s.sum()) for s in lava_spikes.values())
    ev = events_per_step(g, native.activity)
    neurons = sum(int(np.prod(n.output_type["output"])) for n in g.nodes.values()
                  if is_neuron(n))
    print(f"{name} {note}: {neurons} neurons; {n_spikes} spikes in {args.steps} steps, identical "
          f"in Lava and native in every layer at every step; {ev:.0f} synaptic events/step; "
          f"Lava start-up {lava_start:.2f} s", flush=True)
    lava = Row(name, "Lava 0.10 fixed_pt", 1, lava_rate, lava_cpu, ev, None)
    lava.lava = lava
    rows.append(lava)

    def native_fn(xx):
        return simulate_fixed(g, xx, record=False)

    for b in args.batches:
        xb = events(max(40, args.long // b), b, in_shape, args.p, seed=2)
        rows.append(Row(name, "native fixed-point", b, *marginal_rate(native_fn, xb,
                                                                      args.repeats), ev, lava))
    refs = [("simulate_float (float64, NIR)", lambda xx: simulate_float(graph, xx), (1,))]
    refs += [(label, fn, (1, 32)) for label, fn in float_refs]
    for label, fn, batches in refs:
        for b in batches:
            xb = events(max(20, args.long // (8 * b)), b, in_shape, args.p, seed=3)
            rows.append(Row(name, label, b, *marginal_rate(fn, xb, args.repeats), ev, lava))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="Lava steps per network")
    ap.add_argument("--warmup", type=int, default=20, help="Lava steps before timing")
    ap.add_argument("--long", type=int, default=4000,
                    help="native steps timed at batch 1 (divided by the batch size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p", type=float, default=0.05, help="input event probability per step")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    args = ap.parse_args()
    torch.set_num_threads(1)  # the engine uses one anyway; two spin badly on a busy machine
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}; torch {torch.__version__} on "
          f"{torch.get_num_threads()} thread; numba kernels: "
          f"{fixed_kernels.jit_kernels() is not None}", flush=True)
    rows: list[Row] = []

    model, shape = dense_net()
    bench("dense 100-200-10", torch_to_nir(model, shape), shape, args, rows,
          note="(IF/LIF, random weights)")

    model, shape, how = conv_net()
    refs = [("PyTorch step loop (float32)", torch_loop(copy.deepcopy(model).float()))]
    snt = snntorch_net(copy.deepcopy(model).float())
    if snt is not None:
        refs.append((f"snnTorch {snt[1]} (float32)", snt[0]))
    else:
        print("snnTorch is not installed: skipped", flush=True)
    bench("dvs-cnn", torch_to_nir(model.double(), shape), shape, args, rows, refs, f"({how})")

    try:
        graph = sinabs_graph()
        compile_graph(graph)
    except Exception as e:  # report and go on: NIR import is work in progress elsewhere
        print(f"cnn_sinabs.nir: not benchmarked: {type(e).__name__}: {e}", flush=True)
    else:
        bench("cnn_sinabs.nir", graph, (2, 34, 34), args, rows, note="(NIR paper, dt = 1)")

    print("\n| network | simulator | batch | steps/s | sample-steps/s | synaptic events/s "
          "| CPU us per sample-step | x Lava steps/s | x Lava CPU/sample-step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(r.markdown())
    conv = next(r for r in rows if r.net == "dvs-cnn" and r.sim.startswith("native")
                and r.batch == 1)
    print(f"\ndvs-cnn, batch 1: native = {conv.rate / conv.lava.rate:.0f}x Lava's steps/s "
          f"(target >= 200x), {conv.lava.cpu / conv.cpu:.0f}x less CPU time per step; load "
          f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
