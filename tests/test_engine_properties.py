"""Property tests of the native fixed-point engine (``simulate_fixed``).

* Kernels: the neuron kernel equals :func:`fixedpoint.lif_step` step by step (extreme inputs:
  int32 wraps, the 24-bit wrap of ``u``, saturation of ``v``), Dense layers equal
  :func:`fixedpoint.dense_fixed` (Lava's bit-accurate Dense), convolutions an exact integer
  convolution wrapped to 24 bits (Lava's Conv); for both the numpy and the compiled kernels.
* The engine equals a plain step loop over those definitions on random compiled graphs (dense
  chains, convolutions with random stride/padding/dilation/groups, residual and recurrent
  layers, IF/LIF/CubaLIF, both reset modes, biases, per-layer or per-channel scales), with and
  without the synaptic pipeline, at any block size.
* The engine equals Lava 0.10.0 ``fixed_pt`` on spikes and on ``u`` and ``v`` of every neuron
  layer at every step, for over 100 steps (``@pytest.mark.lava``; few examples, ~3 s each).
"""

from __future__ import annotations

import importlib.util

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy import fixedpoint as fp
from neurodeploy.backends.lava.network import simulate_lava
from neurodeploy.compiler import compile_graph, pad_for_pipeline
from neurodeploy.engine import fixed_engine, fixed_kernels, simulate_fixed
from neurodeploy.engine.fixed_kernels import NeuronKernel, SynapseKernel
from neurodeploy.engine.ops import apply_linear
from neurodeploy.graph import evaluation_order, is_neuron, predecessors

# numpy kernels always; the compiled ones too where numba is installed
JIT_MODES = [False] + ([True] if importlib.util.find_spec("numba") else [])
FAST = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _use_jit:
    """Select the compiled (True) or numpy (False) kernels inside a ``with`` block."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.prev = fixed_kernels.USE_JIT
        fixed_kernels.USE_JIT = self.on

    def __exit__(self, *exc):
        fixed_kernels.USE_JIT = self.prev


# -- neuron kernel against fixedpoint.lif_step -------------------------------------------------
@st.composite
def neuron_cases(draw):
    n, b, steps = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 14))
    decay = st.one_of(st.sampled_from([0, 1, 409, 2048, 4094, 4095]), st.integers(0, 4095))
    q = {"du": draw(decay), "dv": draw(decay), "reset": draw(st.sampled_from(["zero",
                                                                           "subtract"]))}
    uniform = draw(st.booleans())
    vth = draw(st.lists(st.integers(0, 2**17 - 1), min_size=1 if uniform else n,
                        max_size=1 if uniform else n))
    q["vth"] = np.resize(np.array(vth, np.int64), n)
    q["bias_mant"] = np.array(draw(st.lists(st.integers(-4095, 4095), min_size=n, max_size=n)))
    q["bias_exp"] = draw(st.integers(0, 7))
    q["v_init"] = np.array(draw(st.lists(st.integers(-2**23, 2**23), min_size=n, max_size=n)))
    mag = draw(st.sampled_from([1, 2**8, 2**14, 2**17, 2**25, 2**31, 2**40]))
    seed = draw(st.integers(0, 2**16))
    a = np.random.default_rng(seed).integers(-mag, mag + 1, (steps, b, n)).astype(np.float64)
    cut = draw(st.integers(0, steps))
    return q, a, cut


@pytest.mark.parametrize("jit", JIT_MODES)
@FAST
@given(case=neuron_cases())
def test_neuron_kernel_equals_lif_step(jit, case):
    q, a, cut = case
    n, b = a.shape[2], a.shape[1]
    node = nir.IF(r=np.ones(n), v_threshold=np.ones(n))
    node.metadata["loihi"] = q
    with _use_jit(jit):
        kern = NeuronKernel("n", node, b)
        parts = [kern.run(a[:cut], True), kern.run(a[cut:], True)]  # two blocks: state carries
    s = np.concatenate([p[0] for p in parts])
    u_rec = np.concatenate([p[1] for p in parts])
    v_rec = np.concatenate([p[2] for p in parts])
    u = np.zeros((b, n), np.int64)
    v = np.broadcast_to(q["v_init"], (b, n)).astype(np.int64)
    stats: dict = {}
    for t in range(len(a)):
        u, v, spk = fp.lif_step(u, v, a[t].astype(np.int64), du=q["du"], dv=q["dv"],
                                vth=q["vth"], bias_mant=q["bias_mant"],
                                bias_exp=q["bias_exp"], reset=q["reset"], stats=stats)
        assert np.array_equal(s[t], spk != 0), f"spikes differ at step {t}"
        assert np.array_equal(u_rec[t], u), f"u differs at step {t}"
        assert np.array_equal(v_rec[t], v), f"v differs at step {t}"
    if len(a):
        assert np.array_equal(kern.u_wrap, stats[fp.STAT_U_WRAP])
        assert np.array_equal(kern.v_clip, stats[fp.STAT_V_CLIP])


# -- synapse kernels ---------------------------------------------------------------------------
def _events(rng, shape, density: float, graded: bool, big: bool) -> np.ndarray:
    x = (rng.random(shape) < density).astype(np.int64)
    if graded:
        x *= rng.integers(-3 if big else 0, 2**20 if big else 4, shape)
    return x


@pytest.mark.parametrize("jit", JIT_MODES)
@FAST
@given(n_in=st.integers(1, 40), n_out=st.integers(1, 70), rows=st.sampled_from([1, 2, 65]),
       density=st.sampled_from([0.02, 0.2, 0.9]), graded=st.booleans(), big=st.booleans(),
       exp=st.integers(-3, 3), wmax=st.sampled_from([3, 255, 300]), seed=st.integers(0, 999))
def test_dense_kernel_equals_lava_dense(jit, n_in, n_out, rows, density, graded, big, exp, wmax,
                                        seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-wmax, wmax + 1, (n_out, n_in))  # odd and out-of-range values included
    node = nir.Affine(weight=w.astype(float), bias=np.zeros(n_out))
    node.metadata["loihi"] = {"weight_mant": w, "weight_exp": exp}
    x = _events(rng, (rows, n_in), density, graded, big)
    with _use_jit(jit):
        y = SynapseKernel("d", node, graded=graded, x_max=float(np.abs(x).max()))(x)
    ref = fp.dense_fixed(x, fp.effective_dense_weights(w), weight_exp=exp,
                         num_message_bits=16 if graded else 0)
    assert np.array_equal(y, ref)


@st.composite
def conv_nodes(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h, w = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    out = [(s + 2 * p - d * (kk - 1) - 1) // st_ + 1
           for s, p, d, kk, st_ in zip((h, w), pad, dil, k, stride, strict=True)]
    if min(out) < 1:
        h, w = h + 2 * k[0] * dil[0], w + 2 * k[1] * dil[1]
        out = [(s + 2 * p - d * (kk - 1) - 1) // st_ + 1
               for s, p, d, kk, st_ in zip((h, w), pad, dil, k, stride, strict=True)]
    wmax = draw(st.sampled_from([2, 127, 1000]))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    weight = rng.integers(-wmax, wmax + 1, (c_out, c_in // groups, *k))
    node = _conv(weight, (c_in, h, w), stride, pad, dil, groups, np.zeros(c_out))
    node.metadata["loihi"] = {"weight_mant": weight, "weight_exp": 0}
    return node


def _conv(weight, in_shape, stride, pad, dil, groups, bias) -> nir.Conv2d:
    """A Conv2d node with its types set explicitly (nir 1.0 infers them wrongly for groups > 1
    and for dilation)."""
    k = weight.shape[2:]
    out = [(s + 2 * p - d * (kk - 1) - 1) // st_ + 1
           for s, p, d, kk, st_ in zip(in_shape[1:], pad, dil, k, stride, strict=True)]
    node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=np.asarray(weight, float),
                      stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias)
    node.input_type = {"input": np.array(in_shape)}
    node.output_type = {"output": np.array([weight.shape[0], *out])}
    return node


@pytest.mark.parametrize("jit", JIT_MODES)
@FAST
@given(node=conv_nodes(), rows=st.sampled_from([1, 3, 40]),
       density=st.sampled_from([0.03, 0.3, 1.0]), graded=st.booleans(), big=st.booleans(),
       seed=st.integers(0, 999))
def test_conv_kernel_equals_lava_conv(jit, node, rows, density, graded, big, seed):
    rng = np.random.default_rng(seed)
    x = _events(rng, (rows, *node.input_type["input"]), density, graded, big)
    with _use_jit(jit):
        y = SynapseKernel("c", node, graded=graded, x_max=float(np.abs(x).max()))(x)
    # Lava's Conv: an exact integer cross-correlation (float64 is exact here), 24-bit wrap
    xs = x if graded else (x != 0)
    exact = apply_linear("c", node, torch.as_tensor(xs, dtype=torch.float64),
                         weight=node.metadata["loihi"]["weight_mant"], bias=False).numpy()
    ref = (fp.wrap_int32(np.rint(exact)) + 2**23) % 2**24 - 2**23
    assert np.array_equal(y, ref)


# -- random compiled graphs --------------------------------------------------------------------
def _neuron(draw, rng, shape):
    kind = draw(st.sampled_from(["IF", "LIF", "CubaLIF"]))
    reset = draw(st.sampled_from(["zero", "subtract"]))
    per_neuron = draw(st.booleans())
    theta = rng.uniform(0.5, 1.5, shape) if per_neuron else np.full(shape, rng.uniform(0.5, 1.5))
    zeros = np.zeros(shape)
    if kind == "IF":
        node = nir.IF(r=np.ones(shape), v_threshold=theta, v_reset=zeros)
    elif kind == "LIF":
        node = nir.LIF(tau=np.full(shape, rng.uniform(2, 20)), r=np.ones(shape),
                       v_leak=zeros, v_threshold=theta, v_reset=zeros)
        node.r = node.tau.copy()  # unit input gain
    else:
        tau_syn, tau_mem = rng.uniform(2, 10), rng.uniform(2, 20)
        node = nir.CubaLIF(tau_syn=np.full(shape, tau_syn), tau_mem=np.full(shape, tau_mem),
                           r=np.full(shape, tau_mem), v_leak=zeros, v_threshold=theta,
                           v_reset=zeros, w_in=np.full(shape, tau_syn))
    node.metadata["reset"] = reset
    return node


def _affine(rng, n_out, n_in, bias: bool) -> nir.Affine:
    w = rng.normal(0.25, 0.8, (n_out, n_in))
    return nir.Affine(weight=w, bias=rng.normal(0, 0.1, n_out) if bias else np.zeros(n_out))


@st.composite
def graphs(draw, kind: str):
    """A random NIR graph of one kind; returns ``(graph, input_shape)``."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    bias = draw(st.booleans())
    nodes: dict = {}
    edges: list = []

    def add(name, node, *srcs):
        nodes[name] = node
        edges.extend((s, name) for s in srcs)

    if kind == "conv":
        groups = draw(st.sampled_from([1, 2]))
        c_in, c_out = 2, 2 * draw(st.integers(1, 2))
        size = (draw(st.integers(4, 7)), draw(st.integers(4, 7)))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pad = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
        dil = (1, draw(st.integers(1, 2)))
        size = tuple(max(n, d * (kk - 1) + 1) for n, d, kk in zip(size, dil, k, strict=True))
        in_shape = (c_in, *size)
        w = rng.normal(0.4, 0.8, (c_out, c_in // groups, *k))
        conv = _conv(w, in_shape, stride, pad, dil, groups,
                     rng.normal(0, 0.1, c_out) if bias else np.zeros(c_out))
        shp = tuple(int(s) for s in conv.output_type["output"])
        add("conv", conv, "input")
        add("n1", _neuron(draw, rng, shp), "conv")
        add("flat", nir.Flatten(input_type={"input": np.array(shp)}, start_dim=0, end_dim=-1),
            "n1")
        n_out = draw(st.integers(2, 4))
        add("fc", _affine(rng, n_out, int(np.prod(shp)), bias), "flat")
        add("n2", _neuron(draw, rng, (n_out,)), "fc")
        last, n_last = "n2", n_out
    else:
        n0, n1 = draw(st.integers(3, 12)), draw(st.integers(2, 10))
        in_shape = (n0,)
        add("fc1", _affine(rng, n1, n0, bias), "input")
        add("n1", _neuron(draw, rng, (n1,)), "fc1")
        last, n_last = "n1", n1
        if kind == "recurrent":
            rec = _affine(rng, n1, n1, False)
            rec.weight *= 0.5
            add("rec", rec, "n1")
            edges.append(("rec", "n1"))
        if kind in ("dense", "residual", "recurrent"):
            n2 = draw(st.integers(2, 6))
            add("fc2", _affine(rng, n2, n1, bias), "n1")
            if kind == "residual":  # a second synapse layer into the same neurons
                add("skip", _affine(rng, n2, n0, False), "input")
                edges.append(("skip", "n2"))
            add("n2", _neuron(draw, rng, (n2,)), "fc2")
            last, n_last = "n2", n2
    add("input", nir.Input(input_type={"input": np.array(in_shape)}))
    add("output", nir.Output(output_type={"output": np.array([n_last])}), last)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False), in_shape


def _compile(graph, draw, rng):
    """Compile with one scale per layer or per output channel (per-neuron thresholds with either
    reset), then (sometimes) give Dense layers a weight exponent and raw 8-bit weights that
    Lava clips and truncates itself (the compiler never emits these, Lava accepts them)."""
    g = compile_graph(graph, per_channel=draw(st.booleans())).graph
    if draw(st.booleans()):
        for node in g.nodes.values():
            if isinstance(node, nir.Affine):
                q = node.metadata["loihi"]
                q["weight_exp"] = int(rng.integers(-2, 2))
                q["weight_mant"] = q["weight_mant"] + rng.integers(-1, 2, q["weight_mant"].shape)
    return g


def _stimulus(rng, steps, batch, in_shape, counts: bool) -> np.ndarray:
    x = (rng.random((steps, batch, *in_shape)) < rng.uniform(0.2, 0.6)).astype(np.int64)
    return x * rng.integers(1, 4, x.shape) if counts else x


def _reference(graph: nir.NIRGraph, x: np.ndarray, pipeline: bool):
    """Step loop over the fixedpoint definitions with Lava's timing: every synapse layer sends
    at step t what it computed at t - 1 (``pipeline``), else NIR's (recurrent edges only)."""
    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    inp = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    syn = {k for k, n in graph.nodes.items() if "loihi" in n.metadata and not is_neuron(n)}
    shape = {k: tuple(int(s) for s in n.output_type["output"]) for k, n in graph.nodes.items()}
    steps, b = x.shape[:2]
    u = {k: np.zeros((b, *shape[k]), np.int64) for k in graph.nodes if is_neuron(graph.nodes[k])}
    v = {k: np.broadcast_to(graph.nodes[k].metadata["loihi"]["v_init"], (b, *shape[k]))
         .astype(np.int64) for k in u}
    buf = {k: np.zeros((b, *shape[k]), np.int64) for k in syn}

    def synapse(k, total):
        node, q = graph.nodes[k], graph.nodes[k].metadata["loihi"]
        graded = pred[k] == [inp]
        if isinstance(node, nir.Conv2d):
            xs = torch.as_tensor(total if graded else total != 0, dtype=torch.float64)
            y = apply_linear(k, node, xs, weight=q["weight_mant"], bias=False).numpy()
            return (fp.wrap_int32(np.rint(y)) + 2**23) % 2**24 - 2**23
        y = fp.dense_fixed(total.reshape(b, -1), fp.effective_dense_weights(q["weight_mant"]),
                           weight_exp=q["weight_exp"], num_message_bits=16 if graded else 0)
        return y.reshape(b, *shape[k])

    rec = {k: [] for k in graph.nodes}
    states = {k: {"u": [], "v": []} for k in u}
    prev: dict = {}
    for t in range(steps):
        cur = {inp: x[t]}
        if pipeline:
            cur.update(buf)
        for k in order:
            if k in cur:
                continue
            parts = [prev[p] if (p, k) in back and not (pipeline and p in syn) else cur[p]
                     for p in pred[k] if p in cur or p in prev]
            total = sum(parts[1:], parts[0]) if parts else np.zeros((b, *shape[k]), np.int64)
            if k in u:
                q = graph.nodes[k].metadata["loihi"]
                u[k], v[k], cur[k] = fp.lif_step(
                    u[k], v[k], total, du=q["du"], dv=q["dv"], vth=q["vth"],
                    bias_mant=q["bias_mant"], bias_exp=q["bias_exp"], reset=q["reset"])
                states[k]["u"].append(u[k])
                states[k]["v"].append(v[k])
            elif k in syn:
                cur[k] = synapse(k, total)
            else:
                cur[k] = total
        if pipeline:
            buf = {k: synapse(k, sum(cur[p] for p in pred[k])) for k in syn}
        for k, val in cur.items():
            rec[k].append(val)
        prev = cur
    return ({k: np.stack(r) for k, r in rec.items()},
            {k: {q: np.stack(s) for q, s in d.items()} for k, d in states.items()})


KINDS = ["dense", "conv", "residual", "recurrent"]


@pytest.mark.parametrize("jit", JIT_MODES)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_engine_equals_reference_step_loop(jit, kind, data):
    graph, in_shape = data.draw(graphs(kind))
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    g = _compile(graph, data.draw, rng)
    x = _stimulus(rng, 40, data.draw(st.integers(1, 3)), in_shape, data.draw(st.booleans()))
    pipeline = data.draw(st.booleans())
    block = data.draw(st.sampled_from([1, 7, fixed_engine.BLOCK_ELEMENTS]))
    prev_block = fixed_engine.BLOCK_ELEMENTS
    fixed_engine.BLOCK_ELEMENTS = block
    try:
        with _use_jit(jit):
            res = simulate_fixed(g, x, pipeline=pipeline, record_states=True)
            outs = simulate_fixed(g, x, pipeline=pipeline, record=False).outputs
    finally:
        fixed_engine.BLOCK_ELEMENTS = prev_block
    act, states = _reference(g, x, pipeline)
    for k, a in act.items():
        assert np.array_equal(res.activity[k], a), f"node {k}"
    for k, s in states.items():
        for q in ("u", "v"):
            assert np.array_equal(res.states[k][q], s[q]), f"{q} of {k}"
    for k, o in outs.items():
        assert np.array_equal(o, act[k])


# -- against Lava ------------------------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_native_equals_lava_spikes_and_states(kind, data):
    graph, in_shape = data.draw(graphs(kind))
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    g = _compile(graph, data.draw, rng)
    depth = fixed_engine.pipeline_depth(g)
    x = pad_for_pipeline(_stimulus(rng, 100, 1, in_shape, data.draw(st.booleans())), depth)
    native = simulate_fixed(g, x, record_states=True)
    lava, states = simulate_lava(g, x, record_states=True)
    assert set(lava) == {k for k, n in g.nodes.items() if is_neuron(n)}
    for k, s in lava.items():
        assert np.array_equal(s, native.activity[k]), f"spikes of {k}"
        for q in ("u", "v"):
            assert np.array_equal(states[k][q], native.states[k][q]), f"{q} of {k}"
    assert sum(int(np.abs(native.states[k]["v"]).sum()) for k in lava) > 0
