"""Real Lava 0.10.0 runs (``Loihi2SimCfg(select_tag="fixed_pt")``) against our arithmetic.

(a) stock ``Dense`` + ``LIF`` == ``fixedpoint.dense_fixed`` + ``fixedpoint.lif_step``;
(b) our ``LIFSubtract`` (fixed) == the independent scalar reference of test_fixedpoint.py;
(c) ``LIFSubtract`` floating_pt == a float numpy reference;
(d) ``EventSource`` == ``RingBuffer`` of the same dense data, through graded and binary Dense and
    a grouped Conv;
(e) stock ``TernaryLIF`` == ``lif_step(vth_lo=...)``, ``TernaryLIFSubtract`` == the references;
(f) our ``LIFZero`` (reset to zero, per-neuron ``vth``) == stock ``LIF`` where ``vth`` is uniform,
    == the references where it differs per neuron.

Timing convention of the references: Lava step ``t = 1..T`` is row ``t - 1``; a Dense sends at
step ``t`` what it computed from its input at ``t - 1`` (its buffer starts at 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIF, TernaryLIF

from neurodeploy import fixedpoint as fp
from neurodeploy.backends.lava.processes import (
    EventSource,
    LIFSubtract,
    LIFZero,
    TernaryLIFSubtract,
)
from neurodeploy.backends.lava.run_utils import run_and_record
from tests.test_fixedpoint import ScalarLIF, scalar_dense, scalar_effective_weights

pytestmark = pytest.mark.lava

T = 120


def build_chain(source, layers):
    """source -> (Dense -> neuron) per layer; returns the neuron processes."""
    prev = source.s_out
    neurons = []
    for layer in layers:
        dense = Dense(weights=layer["w"], num_message_bits=layer.get("nmb", 0),
                      **layer.get("dense_kw", {}))
        neuron = layer["cls"](shape=(layer["w"].shape[0],), **layer["lif_kw"])
        prev.connect(dense.s_in)
        dense.a_out.connect(neuron.a_in)
        neurons.append(neuron)
        prev = neuron.s_out
    return neurons


def run_chain(source, layers, num_steps=T):
    neurons = build_chain(source, layers)
    ports = {f"s{i}": n.s_out for i, n in enumerate(neurons)}
    variables = {}
    for i, n in enumerate(neurons):
        variables[f"u{i}"] = n.u
        variables[f"v{i}"] = n.v
    final = {}
    for i, n in enumerate(neurons):
        if isinstance(n, LIFSubtract | LIFZero | TernaryLIFSubtract):
            final[f"wraps{i}"] = n.n_wrap_u
            final[f"clips{i}"] = n.n_clip_v
    return run_and_record(neurons[-1], num_steps, ports=ports, variables=variables,
                          final_vars=final)


def fixedpoint_chain(inp, layers):
    """numpy reference built only from neurodeploy.fixedpoint; ``inp`` is ``[T, n_in]``."""
    rec: dict = {}
    state = []
    for layer in layers:
        n = layer["w"].shape[0]
        dkw = layer.get("dense_kw", {})
        w_eff = fp.effective_dense_weights(layer["w"], dkw.get("num_weight_bits", 8))
        state.append({"w": w_eff, "buf": np.zeros((1, n), np.int64), "u": np.zeros((1, n)),
                      "v": np.zeros((1, n)), "stats": {}})
    for t in range(inp.shape[0]):
        x = inp[t][None]
        for i, (layer, st) in enumerate(zip(layers, state, strict=True)):
            a = st["buf"]
            dkw = layer.get("dense_kw", {})
            st["buf"] = fp.dense_fixed(x, st["w"], weight_exp=dkw.get("weight_exp", 0),
                                       num_message_bits=layer.get("nmb", 0))
            kw = dict(layer["lif_kw"])
            if "vth_hi" in kw:
                kw["vth"] = kw.pop("vth_hi")
            reset = "zero" if layer["cls"] in (LIF, LIFZero, TernaryLIF) else "subtract"
            st["u"], st["v"], x = fp.lif_step(st["u"], st["v"], a, reset=reset,
                                              stats=st["stats"], **kw)
            for key, val in ((f"s{i}", x), (f"u{i}", st["u"]), (f"v{i}", st["v"])):
                rec.setdefault(key, []).append(val[0])
    out = {k: np.array(v) for k, v in rec.items()}
    for i, st in enumerate(state):
        out[f"wraps{i}"] = st["stats"]["u_wrap"][0]
        out[f"clips{i}"] = st["stats"]["v_clip"][0]
    return out


def scalar_chain(inp, layers):
    """Independent reference: scalar_dense + ScalarLIF (Python ints), ``inp`` is ``[T, n_in]``."""
    rec: dict = {}
    refs, bufs, weights = [], [], []
    for layer in layers:
        n = layer["w"].shape[0]
        kw = dict(layer["lif_kw"])
        vth = kw.pop("vth_hi") if "vth_hi" in kw else kw.pop("vth")
        vth_lo = kw.pop("vth_lo", None)
        per = {k: np.broadcast_to(kw.pop(k, 0), (n,)) for k in ("bias_mant", "bias_exp")}
        refs.append(ScalarLIF(
            n, du=kw.pop("du", 0), dv=kw.pop("dv", 0), vth=np.broadcast_to(vth, (n,)),
            vth_lo=None if vth_lo is None else np.broadcast_to(vth_lo, (n,)),
            reset="zero" if layer["cls"] in (LIF, LIFZero, TernaryLIF) else "subtract", **per,
        ))
        dkw = layer.get("dense_kw", {})
        weights.append(scalar_effective_weights(layer["w"], dkw.get("num_weight_bits", 8)))
        bufs.append([0] * n)
    for t in range(inp.shape[0]):
        x = inp[t]
        for i, layer in enumerate(layers):
            a = bufs[i]
            bufs[i] = scalar_dense(x, weights[i], layer.get("dense_kw", {}).get("weight_exp", 0),
                                   graded=layer.get("nmb", 0) > 0)
            x = np.array(refs[i].step(a))
            for key, val in ((f"s{i}", x), (f"u{i}", refs[i].u), (f"v{i}", refs[i].v)):
                rec.setdefault(key, []).append(list(val))
    out = {k: np.array(v) for k, v in rec.items()}
    for i, ref in enumerate(refs):
        out[f"wraps{i}"] = np.array(ref.wraps)
        out[f"clips{i}"] = np.array(ref.clips)
    return out


def assert_recordings_equal(lava, ref, keys):
    for key in keys:
        got, want = np.asarray(lava[key]), np.asarray(ref[key])
        assert got.shape == want.shape, f"{key}: shape {got.shape} != {want.shape}"
        bad = np.argwhere(got != want)
        assert bad.size == 0, (
            f"{key}: {len(bad)} mismatches, first at step {bad[0][0] + 1}: "
            f"lava {got[tuple(bad[0])]} != ref {want[tuple(bad[0])]}"
        )


def binary_input(rng, n_in, p=0.3):
    return (rng.random((T, n_in)) < p).astype(np.int64)


# --------------------------------------------------------------------------------------------
# (a) stock Dense + LIF == fixedpoint
# --------------------------------------------------------------------------------------------

def _stock_cases():
    rng = np.random.default_rng(2026)
    n_in, n1, n2, n_big = 24, 16, 8, 24
    return {
        # mixed weights beyond 8 bits (clip + LSB truncation), weight_exp -1/+1, 6-bit weights,
        # per-neuron bias with bias_exp 3, du/dv != 0
        "mixed": [
            {"w": rng.integers(-300, 300, (n1, n_in)), "cls": LIF,
             "dense_kw": {"weight_exp": -1, "num_weight_bits": 6},
             "lif_kw": {"du": 410, "dv": 205, "vth": 80,
                        "bias_mant": rng.integers(-20, 40, n1), "bias_exp": 3}},
            {"w": rng.integers(-300, 300, (n2, n1)), "cls": LIF, "dense_kw": {"weight_exp": 1},
             "lif_kw": {"du": 1000, "dv": 3000, "vth": 60, "bias_mant": 5, "bias_exp": 5}},
        ],
        # excitatory layer feeding an inhibitory layer driven up by a large bias
        "exc_inh": [
            {"w": rng.integers(0, 300, (n1, n_in)), "cls": LIF,
             "dense_kw": {"weight_exp": -3, "num_weight_bits": 5},
             "lif_kw": {"du": 2000, "dv": 1000, "vth": 400, "bias_mant": 0, "bias_exp": 0}},
            {"w": rng.integers(-300, 1, (n2, n1)), "cls": LIF,
             "dense_kw": {"weight_exp": -3, "num_weight_bits": 7},
             "lif_kw": {"du": 0, "dv": 0, "vth": 200, "bias_mant": 2000, "bias_exp": 2}},
        ],
        # huge weight_exp: u wraps, v saturates, layer-2 u overflows int32 (note §6/§7 case C)
        "overflow": [
            {"w": rng.integers(0, 256, (n_big, n_in)), "cls": LIF, "dense_kw": {"weight_exp": 7},
             "lif_kw": {"du": 4095, "dv": 0, "vth": 131071, "bias_mant": 0, "bias_exp": 0}},
            {"w": rng.integers(0, 256, (n2, n_big)), "cls": LIF, "dense_kw": {"weight_exp": 10},
             "lif_kw": {"du": 0, "dv": 0, "vth": 131071, "bias_mant": 0, "bias_exp": 0}},
        ],
    }


@pytest.mark.parametrize("case", ["mixed", "exc_inh", "overflow"])
def test_stock_dense_lif_matches_fixedpoint(case):
    layers = _stock_cases()[case]
    inp = binary_input(np.random.default_rng(7), layers[0]["w"].shape[1])
    lava = run_chain(RingBuffer(data=inp.T.copy()), layers)
    ref = fixedpoint_chain(inp, layers)
    assert_recordings_equal(lava, ref, ["s0", "u0", "v0", "s1", "u1", "v1"])
    assert ref["s0"].sum() > 0 and ref["s1"].sum() > 0
    if case == "overflow":
        assert ref["wraps1"].sum() > 0 and ref["clips0"].sum() > 0
        assert np.abs(ref["u1"]).max() > 2**30  # far beyond 24 bits: int32 storage matters


# --------------------------------------------------------------------------------------------
# (b) LIFSubtract fixed_pt == independent scalar reference (and == fixedpoint)
# --------------------------------------------------------------------------------------------

def test_lif_subtract_fixed_matches_scalar_reference():
    rng = np.random.default_rng(11)
    n_in, n1, n2 = 20, 12, 6
    layers = [
        {"w": rng.integers(-300, 300, (n1, n_in)), "cls": LIFSubtract,
         "dense_kw": {"weight_exp": 1},
         "lif_kw": {"du": 300, "dv": 120, "vth": rng.integers(40, 200, n1),
                    "bias_mant": rng.integers(-30, 30, n1), "bias_exp": rng.integers(0, 4, n1)}},
        {"w": rng.integers(0, 256, (n2, n1)), "cls": LIFSubtract, "dense_kw": {"weight_exp": 8},
         "lif_kw": {"du": 4095, "dv": 10, "vth": rng.integers(10_000, 131_071, n2),
                    "bias_mant": 0, "bias_exp": 0}},
    ]
    inp = binary_input(rng, n_in)
    lava = run_chain(EventSource.from_dense(inp.T), layers)
    keys = ["s0", "u0", "v0", "s1", "u1", "v1", "wraps0", "clips0", "wraps1", "clips1"]
    ref = scalar_chain(inp, layers)
    assert_recordings_equal(lava, ref, keys)
    assert_recordings_equal(lava, fixedpoint_chain(inp, layers), keys)
    assert ref["s0"].sum() > 0 and ref["s1"].sum() > 0
    assert ref["wraps1"].sum() > 0 and ref["clips1"].sum() > 0
    # the subtractive reset is exercised: some spike leaves a non-zero voltage behind
    assert (ref["v0"][ref["s0"] == 1] != 0).any()


# --------------------------------------------------------------------------------------------
# (c) LIFSubtract floating_pt == float numpy reference
# --------------------------------------------------------------------------------------------

def test_lif_subtract_float_matches_numpy_reference():
    rng = np.random.default_rng(5)
    n_in, n = 16, 10
    w = rng.normal(0.0, 1.0, (n, n_in))
    du, dv = 0.1, 0.05
    vth = rng.uniform(0.5, 2.0, n)
    bias = rng.normal(0.0, 0.05, n)
    inp = binary_input(rng, n_in).astype(float)
    src = RingBuffer(data=inp.T.copy())
    dense = Dense(weights=w)
    lif = LIFSubtract(shape=(n,), du=du, dv=dv, vth=vth, bias_mant=bias)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    got = run_and_record(lif, T, ports={"s": lif.s_out}, variables={"v": lif.v},
                         select_tag="floating_pt")
    u, v, buf = np.zeros(n), np.zeros(n), np.zeros(n)
    s_ref, v_ref = [], []
    for t in range(T):
        a, buf = buf, w[:, inp[t].astype(bool)].sum(axis=1)
        u = u * (1 - du) + a
        v = v * (1 - dv) + u + bias
        s = v > vth
        v = np.where(s, v - vth, v)
        s_ref.append(s.astype(float))
        v_ref.append(v)
    np.testing.assert_array_equal(got["s"], np.array(s_ref))
    np.testing.assert_allclose(got["v"], np.array(v_ref), rtol=1e-12, atol=1e-12)
    assert 0 < np.sum(s_ref) < T * n


# --------------------------------------------------------------------------------------------
# (d) EventSource == RingBuffer with the same dense data
# --------------------------------------------------------------------------------------------

def _source_network(source, rng_seed):
    """source [4, 4, 2] -> graded Dense / binary Dense / grouped graded Conv, each into a LIF."""
    rng = np.random.default_rng(rng_seed)
    w_d = rng.integers(-60, 60, (6, 32))
    dense_g = Dense(weights=w_d, num_message_bits=8)
    dense_b = Dense(weights=w_d, num_message_bits=0)
    conv = Conv(weight=rng.integers(-20, 21, (4, 3, 3, 1)), input_shape=(4, 4, 2), padding=1,
                groups=2, num_message_bits=8)
    lifs = {"g": LIF(shape=(6,), du=200, dv=100, vth=20),
            "b": LIF(shape=(6,), du=200, dv=100, vth=20),
            "c": LIF(shape=(4, 4, 4), du=200, dv=100, vth=10)}
    source.s_out.flatten().connect(dense_g.s_in)
    source.s_out.flatten().connect(dense_b.s_in)
    source.s_out.connect(conv.s_in)
    dense_g.a_out.connect(lifs["g"].a_in)
    dense_b.a_out.connect(lifs["b"].a_in)
    conv.a_out.connect(lifs["c"].a_in)
    ports = {f"s_{k}": lif.s_out for k, lif in lifs.items()}
    ports.update({"a_g": dense_g.a_out, "a_b": dense_b.a_out})
    variables = {f"v_{k}": lif.v for k, lif in lifs.items()}
    return lifs["c"], ports, variables, w_d


def test_event_source_equals_ringbuffer():
    rng = np.random.default_rng(3)
    steps = 60
    data = rng.integers(-3, 4, (4, 4, 2, steps)) * (rng.random((4, 4, 2, steps)) < 0.25)
    data[..., -5:] = 0  # trailing silent steps
    events = EventSource.from_dense(data)
    np.testing.assert_array_equal(events.to_dense(steps), data)

    root, ports, variables, w_d = _source_network(events, rng_seed=4)
    from_events = run_and_record(root, steps, ports=ports, variables=variables)
    root, ports, variables, _ = _source_network(RingBuffer(data=data.astype(np.int32)), 4)
    from_ring = run_and_record(root, steps, ports=ports, variables=variables)
    assert_recordings_equal(from_events, from_ring, sorted(from_ring))

    # graded Dense computes W_eff @ counts (negative and > 1 included); binary Dense counts any
    # non-zero entry once -- both exactly as fp.dense_fixed, one step late
    flat = data.reshape(32, steps).T
    w_eff = fp.effective_dense_weights(w_d)
    for key, nmb in (("a_g", 8), ("a_b", 0)):
        want = np.vstack([np.zeros((1, 6), np.int64),
                          fp.dense_fixed(flat[:-1], w_eff, num_message_bits=nmb)])
        assert_recordings_equal({key: from_events[key]}, {key: want}, [key])
    assert not np.array_equal(from_events["a_g"], from_events["a_b"])
    assert from_events["s_c"].sum() > 0 and from_events["s_g"].sum() > 0


def test_event_source_validation():
    with pytest.raises(ValueError, match="1-based"):
        EventSource(shape=(3,), t_idx=[0], neuron_idx=[1])
    with pytest.raises(ValueError, match="neuron_idx"):
        EventSource(shape=(3,), t_idx=[1], neuron_idx=[3])
    with pytest.raises(ValueError, match="same length"):
        EventSource(shape=(3,), t_idx=[1, 2], neuron_idx=[1])
    with pytest.raises(TypeError, match="integer"):
        EventSource(shape=(3,), t_idx=[1.5], neuron_idx=[1])
    # unsorted events are sorted (stably); duplicates add up
    src = EventSource(shape=(2,), t_idx=[3, 1, 3], neuron_idx=[1, 0, 1], value=[2, 5, 1])
    np.testing.assert_array_equal(src.t_idx.get(), [1, 3, 3])
    np.testing.assert_array_equal(src.to_dense(3), [[5, 0, 0], [0, 0, 3]])


# --------------------------------------------------------------------------------------------
# (e) ternary neurons: stock TernaryLIF (zero reset) and our TernaryLIFSubtract
# --------------------------------------------------------------------------------------------

def test_ternary_lif_matches_fixedpoint_and_scalar_reference():
    rng = np.random.default_rng(17)
    n_in, n1, n2 = 20, 14, 8
    layers = [
        {"w": rng.integers(-200, 200, (n1, n_in)), "cls": TernaryLIF, "nmb": 8,
         "lif_kw": {"du": 500, "dv": 200, "vth_hi": 40, "vth_lo": -30,
                    "bias_mant": rng.integers(-10, 10, n1), "bias_exp": 2}},
        {"w": rng.integers(-200, 200, (n2, n1)), "cls": TernaryLIFSubtract, "nmb": 8,
         "dense_kw": {"weight_exp": 1},
         "lif_kw": {"du": 800, "dv": 100, "vth_hi": rng.integers(20, 80, n2),
                    "vth_lo": -rng.integers(20, 80, n2), "bias_mant": 0, "bias_exp": 0}},
    ]
    inp = rng.integers(-1, 2, (T, n_in)) * (rng.random((T, n_in)) < 0.4)
    lava = run_chain(RingBuffer(data=inp.T.astype(np.int32)), layers)
    keys = ["s0", "u0", "v0", "s1", "u1", "v1"]
    assert_recordings_equal(lava, fixedpoint_chain(inp, layers), keys)
    ref = scalar_chain(inp, layers)
    assert_recordings_equal(lava, ref, keys + ["wraps1", "clips1"])
    for i in (0, 1):
        assert (ref[f"s{i}"] == 1).any() and (ref[f"s{i}"] == -1).any()
    # subtractive reset moves v toward 0 by the threshold instead of zeroing it
    assert (ref["v1"][ref["s1"] != 0] != 0).any()


# --------------------------------------------------------------------------------------------
# (f) LIFZero: Lava's LIF with a per-neuron threshold
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["mixed", "overflow"])
def test_lif_zero_equals_stock_lif_with_a_uniform_threshold(case):
    stock = _stock_cases()[case]
    ours = [{**layer, "cls": LIFZero} for layer in stock]
    inp = binary_input(np.random.default_rng(8), stock[0]["w"].shape[1])
    keys = ["s0", "u0", "v0", "s1", "u1", "v1"]
    assert_recordings_equal(run_chain(RingBuffer(data=inp.T.copy()), ours, num_steps=50),
                            run_chain(RingBuffer(data=inp.T.copy()), stock, num_steps=50), keys)


def test_lif_zero_per_neuron_threshold_matches_references():
    rng = np.random.default_rng(12)
    n_in, n1, n2 = 20, 12, 6
    layers = [
        {"w": rng.integers(-300, 300, (n1, n_in)), "cls": LIFZero,
         "lif_kw": {"du": 300, "dv": 120, "vth": rng.integers(40, 400, n1),
                    "bias_mant": rng.integers(-30, 30, n1), "bias_exp": rng.integers(0, 4, n1)}},
        {"w": rng.integers(-100, 256, (n2, n1)), "cls": LIFZero, "dense_kw": {"weight_exp": 2},
         "lif_kw": {"du": 4095, "dv": 10, "vth": rng.integers(100, 3000, n2),
                    "bias_mant": 0, "bias_exp": 0}},
    ]
    inp = binary_input(rng, n_in)
    lava = run_chain(EventSource.from_dense(inp.T), layers)
    keys = ["s0", "u0", "v0", "s1", "u1", "v1", "wraps0", "clips0", "wraps1", "clips1"]
    ref = scalar_chain(inp, layers)
    assert_recordings_equal(lava, ref, keys)
    assert_recordings_equal(lava, fixedpoint_chain(inp, layers), keys)
    for i, n in ((0, n1), (1, n2)):  # several neurons with different thresholds fire
        vth = layers[i]["lif_kw"]["vth"]
        fired = ref[f"s{i}"].sum(0) > 0
        assert fired.sum() >= 2 and len(set(vth[fired].tolist())) >= 2 and n == len(vth)
    assert np.all(ref["v0"][ref["s0"] == 1] == 0)  # reset to zero


def test_lif_zero_float_matches_numpy_reference():
    rng = np.random.default_rng(6)
    n_in, n = 16, 10
    w = rng.normal(0.0, 1.0, (n, n_in))
    vth = rng.uniform(0.5, 2.0, n)
    inp = binary_input(rng, n_in).astype(float)
    src = RingBuffer(data=inp.T.copy())
    dense = Dense(weights=w)
    lif = LIFZero(shape=(n,), du=0.1, dv=0.05, vth=vth)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    got = run_and_record(lif, T, ports={"s": lif.s_out}, variables={"v": lif.v},
                         select_tag="floating_pt")
    u, v, buf, s_ref, v_ref = np.zeros(n), np.zeros(n), np.zeros(n), [], []
    for t in range(T):
        a, buf = buf, w[:, inp[t].astype(bool)].sum(axis=1)
        u = u * 0.9 + a
        v = v * 0.95 + u
        s = v > vth
        v = np.where(s, 0.0, v)
        s_ref.append(s.astype(float))
        v_ref.append(v)
    np.testing.assert_array_equal(got["s"], np.array(s_ref))
    np.testing.assert_allclose(got["v"], np.array(v_ref), rtol=1e-12, atol=1e-12)
    assert 0 < np.sum(s_ref) < T * n
