"""Tests of neurodeploy.fixedpoint (pure numpy, no Lava).

Three kinds of evidence:
* golden cases computed by hand (the arithmetic is spelled out in the comments);
* hypothesis properties (decay toward zero, wrap/clip counters fire exactly when provoked,
  ternary odd symmetry);
* equality with ``ScalarLIF``/``scalar_dense``, an independent per-element Python-int reference
  written from Lava 0.10.0's ``PyLifModelBitAcc``/``PyTernLifModelFixed`` source, over 150 steps
  of random inputs large enough to provoke wraps, int32 overflow and saturation.

``ScalarLIF`` and ``scalar_dense`` are also used by tests/test_lava_processes.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodeploy import fixedpoint as fp

# --------------------------------------------------------------------------------------------
# Independent scalar reference (Python ints, explicit int32 wrap, one element at a time)
# --------------------------------------------------------------------------------------------

TWO23 = 2**23
TWO24 = 2**24


def i32(x: int) -> int:
    """Two's-complement int32 wrap of a Python int."""
    x &= 0xFFFFFFFF
    return x - 2**32 if x >= 2**31 else x


def trunc4096(p: int) -> int:
    """p / 4096 rounded toward zero."""
    q = abs(p) // 4096
    return q if p >= 0 else -q


class ScalarLIF:
    """Per-element LIF/TernaryLIF in Python ints; reset 'zero' or 'subtract'.

    ``vth``, ``bias_mant``, ``bias_exp``, ``vth_lo`` are lists (one entry per element).
    """

    def __init__(self, n, *, du, dv, vth, bias_mant, bias_exp, reset="zero", vth_lo=None):
        self.n, self.du, self.dv, self.reset = n, int(du), int(dv), reset
        self.vth = [int(x) for x in vth]
        self.vth_lo = None if vth_lo is None else [int(x) for x in vth_lo]
        self.bias_mant = [int(x) for x in bias_mant]
        self.bias_exp = [int(x) for x in bias_exp]
        self.u = [0] * n
        self.v = [0] * n
        self.wraps = [0] * n
        self.clips = [0] * n

    def step(self, a_in):
        spikes = []
        for i in range(self.n):
            # current: decay by (du + 1)/4096 toward zero, add a << 6, all in int32
            u = i32(trunc4096(self.u[i] * (4096 - (self.du + 1))))
            u = i32(u + i32(int(a_in[i]) * 64))
            if u > TWO23:
                u -= TWO24
                self.wraps[i] += 1
            elif u <= -TWO23:
                u += TWO24
                self.wraps[i] += 1
            self.u[i] = u
            # voltage: decay by dv/4096, add u and bias, saturate to +-(2^23 - 1)
            bm, be = i32(self.bias_mant[i]), self.bias_exp[i]
            bias = i32(bm * 2**be) if be >= 0 else bm >> -be  # Python >> floors
            v = i32(i32(trunc4096(self.v[i] * (4096 - self.dv))) + u + bias)
            if v > TWO23 - 1:
                v = TWO23 - 1
                self.clips[i] += 1
            elif v < -(TWO23 - 1):
                v = -(TWO23 - 1)
                self.clips[i] += 1
            hi = self.vth[i] * 64
            lo = None if self.vth_lo is None else self.vth_lo[i] * 64
            s = 0
            if v > hi:
                s = 1
            if lo is not None and v < lo:
                s -= 1
            if s != 0:
                if self.reset == "zero":
                    v = 0
                else:
                    v = i32(v - (hi if s > 0 else lo))
            self.v[i] = v
            spikes.append(s)
        return spikes


def scalar_effective_weights(w, num_weight_bits=8):
    """Lava Dense weight preparation, one weight at a time (auto sign mode)."""
    flat = [int(x) for x in np.asarray(w).reshape(-1)]
    mixed = min(flat) < 0 < max(flat)
    inhibitory = max(flat) <= 0 and min(flat) < 0
    k = 8 - num_weight_bits + (1 if mixed else 0)
    out = []
    for x in flat:
        if inhibitory:
            x = -x
        x = max(-256 if mixed else 0, min(255, x))
        x = (x >> k) << k
        out.append(-x if inhibitory else x)
    return np.array(out, dtype=np.int64).reshape(np.shape(w))


def scalar_dense(s_in, w_eff, weight_exp=0, graded=False):
    """One Dense step for a single sample: list of int32 outputs."""
    out = []
    for row in np.asarray(w_eff).tolist():
        acc = 0
        for wi, si in zip(row, np.asarray(s_in).tolist(), strict=True):
            if graded:
                acc += wi * si
            elif si != 0:
                acc += wi
        if graded:
            acc = i32(acc)
        acc = acc * 2**weight_exp if weight_exp > 0 else acc >> -weight_exp
        out.append(i32(acc))
    return out


# --------------------------------------------------------------------------------------------
# Golden cases (computed by hand)
# --------------------------------------------------------------------------------------------

P = {"du": 0, "dv": 0, "bias_mant": 0, "bias_exp": 0}


def run_steps(a_seq, **kw):
    u = np.zeros((1, 1), np.int64)
    v = np.zeros((1, 1), np.int64)
    rows = []
    for a in a_seq:
        u, v, s = fp.lif_step(u, v, np.array([[a]]), **kw)
        rows.append((int(u[0, 0]), int(v[0, 0]), int(s[0, 0])))
    return rows


def test_constants():
    assert (fp.STATE_BITS, fp.DECAY_SHIFT, fp.VTH_SHIFT, fp.ACT_SHIFT) == (24, 12, 6, 6)
    assert (fp.STATE_MAX, fp.V_MAX, fp.V_MIN) == (2**23, 2**23 - 1, -(2**23 - 1))


def test_golden_zero_reset_integrates_and_fires():
    # vth = 1 -> vth_eff = 64; du = 0 still decays u by 1/4096 (ds_offset 1); dv = 0: no leak.
    # t1: u = 0 + (1 << 6) = 64;             v = 0 + 64 = 64     -> 64 > 64? no
    # t2: u = trunc(64 * 4095/4096) = 63;    v = 64 + 63 = 127   -> spike, v = 0
    # t3: u = trunc(63 * 4095/4096) = 62;    v = 0 + 62 = 62     -> no spike
    expect = [(64, 64, 0), (63, 0, 1), (62, 62, 0)]
    assert run_steps([1, 0, 0], vth=1, reset="zero", **P) == expect


def test_golden_subtract_reset_keeps_the_excess():
    # same as above but v -= 64 at a spike:
    # t2: v = 127 -> spike, v = 127 - 64 = 63
    # t3: v = 63 + 62 = 125 -> spike, v = 61
    expect = [(64, 64, 0), (63, 63, 1), (62, 61, 1)]
    assert run_steps([1, 0, 0], vth=1, reset="subtract", **P) == expect


def test_golden_bias_and_decays():
    # bias = 3 << 2 = 12 per step; du = 2047 -> u *= 2048/4096 = 1/2; dv = 1024 -> v *= 3/4.
    # t1: u = 0 + 2*64 = 128;      v = 0 + 128 + 12 = 140
    # t2: u = 64;                  v = trunc(140*3072/4096) = 105; v = 105 + 64 + 12 = 181
    # t3: u = 32;                  v = trunc(181*3/4) = trunc(135.75) = 135; v = 135+32+12 = 179
    kw = {"du": 2047, "dv": 1024, "bias_mant": 3, "bias_exp": 2, "vth": 1000}
    assert run_steps([2, 0, 0], **kw) == [(128, 140, 0), (64, 181, 0), (32, 179, 0)]
    # negative exponent floors: -3 >> 1 = -2 per step
    assert run_steps([0], du=0, dv=0, bias_mant=-3, bias_exp=-1, vth=10) == [(0, -2, 0)]


def test_golden_decay_rounds_toward_zero():
    # 3 * 2048 / 4096 = 1.5 -> 1 ; -3 * 2048/4096 = -1.5 -> -1 (floor would give -2)
    got = fp.decay(np.array([3, -3, 4096, -4097]), 2048)
    np.testing.assert_array_equal(got, [1, -1, 2048, -2048])
    np.testing.assert_array_equal(fp.decay(np.array([5, -5]), 4096), [0, 0])


def test_golden_u_wrap_v_clip_and_int32_overflow():
    stats: dict = {}
    kw = {"du": 4095, "dv": 4095, "bias_mant": 0, "bias_exp": 0, "vth": 131071, "stats": stats}
    u0 = np.zeros((1, 3), np.int64)
    # a = 2^17     -> a << 6 = 2^23: not > 2^23, u stays 2^23; v = 2^23 saturates to 2^23 - 1,
    #                 which is > 131071 << 6 = 8388544 -> spike
    # a = 2^17 + 1 -> 2^23 + 64 > 2^23: u = 2^23 + 64 - 2^24 = -8388544; v = -8388544 (no clip)
    # a = 2^25     -> a << 6 = 2^31 wraps in int32 to -2^31 <= -2^23: u = -2^31 + 2^24
    #                 = -2130706432; v = -2130706432 saturates to -(2^23 - 1)
    a = np.array([[2**17, 2**17 + 1, 2**25]])
    u, v, s = fp.lif_step(u0, u0, a, **kw)
    np.testing.assert_array_equal(u, [[2**23, -8388544, -2130706432]])
    np.testing.assert_array_equal(v, [[0, -8388544, -(2**23 - 1)]])
    np.testing.assert_array_equal(s, [[1, 0, 0]])
    np.testing.assert_array_equal(stats["u_wrap"], [[0, 1, 1]])
    np.testing.assert_array_equal(stats["v_clip"], [[1, 0, 1]])
    fp.lif_step(u0, u0, a, **kw)  # counts accumulate
    np.testing.assert_array_equal(stats["u_wrap"], [[0, 2, 2]])


def test_golden_ternary():
    # vth_hi = 2, vth_lo = -2 -> +-128. a = -3: u = -192, v = -192 < -128 -> s = -1
    #   zero reset: v = 0 ; subtract: v = -192 - (-128) = -64
    # a = +3 on the other neuron: v = 192 > 128 -> s = +1; subtract: v = 64
    u0 = np.zeros((1, 2), np.int64)
    a = np.array([[-3, 3]])
    common = {"du": 4095, "dv": 0, "bias_mant": 0, "bias_exp": 0, "vth": 2, "vth_lo": -2}
    _, v, s = fp.lif_step(u0, u0, a, reset="zero", **common)
    np.testing.assert_array_equal(s, [[-1, 1]])
    np.testing.assert_array_equal(v, [[0, 0]])
    _, v, s = fp.lif_step(u0, u0, a, reset="subtract", **common)
    np.testing.assert_array_equal(s, [[-1, 1]])
    np.testing.assert_array_equal(v, [[-64, 64]])


def test_golden_per_neuron_vth_and_bias_broadcast_over_batch():
    # two samples, three neurons, vth = [0, 1, 2] -> [0, 64, 128]; a = 1 everywhere (u = 64)
    # bias [0, 1, 100]: v = [64, 65, 164] -> spikes [1, 1, 1]; with bias 0 for neuron 2: 64 < 128
    u0 = np.zeros((2, 3), np.int64)
    _, v, s = fp.lif_step(
        u0, u0, np.ones((2, 3), np.int64), du=0, dv=0, vth=np.array([0, 1, 2]),
        bias_mant=np.array([0, 1, 100]), bias_exp=0, reset="subtract",
    )
    np.testing.assert_array_equal(s, [[1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(v, [[64, 1, 36], [64, 1, 36]])


def test_golden_effective_dense_weights():
    # mixed: clip to [-256, 255] then zero 1 LSB (arithmetic): -300->-256, -3->-4, 3->2, 300->254
    np.testing.assert_array_equal(fp.effective_dense_weights([[-300, -3, 3, 300]]),
                                  [[-256, -4, 2, 254]])
    # excitatory: clip [0, 255]; 6 bits zero 2 LSBs: 3 -> 0, 300 -> 255 -> 252
    np.testing.assert_array_equal(fp.effective_dense_weights([[0, 3, 300]]), [[0, 3, 255]])
    np.testing.assert_array_equal(fp.effective_dense_weights([[0, 3, 300]], 6), [[0, 0, 252]])
    # inhibitory: negate, clip [0, 255], truncate, negate back: rounds toward zero
    np.testing.assert_array_equal(fp.effective_dense_weights([[-3, -300, 0]]), [[-3, -255, 0]])
    np.testing.assert_array_equal(fp.effective_dense_weights([[-3, -300, 0]], 7), [[-2, -254, 0]])
    # explicit sign mode overrides detection: excitatory mode clips negatives to 0
    np.testing.assert_array_equal(
        fp.effective_dense_weights([[-5, 7]], sign_mode="excitatory"), [[0, 7]]
    )
    # floats are stored as int32 first (truncated toward zero): -0.9 -> 0, 2.7 -> 2
    np.testing.assert_array_equal(fp.effective_dense_weights([[-0.9, 2.7]]), [[0, 2]])
    with pytest.raises(ValueError, match="num_weight_bits"):
        fp.effective_dense_weights([[1]], 9)
    with pytest.raises(ValueError, match="sign_mode"):
        fp.effective_dense_weights([[1]], sign_mode="bogus")


def test_golden_dense_fixed():
    w = np.array([[10, 2], [-4, 6]])
    s = np.array([[2, -1]])
    # binary: any non-zero counts once: [10 + 2, -4 + 6] = [12, 2]
    np.testing.assert_array_equal(fp.dense_fixed(s, w), [[12, 2]])
    # graded: W @ s = [20 - 2, -8 - 6] = [18, -14]; weight_exp -2 floors: [4, -4]
    np.testing.assert_array_equal(fp.dense_fixed(s, w, num_message_bits=8), [[18, -14]])
    np.testing.assert_array_equal(
        fp.dense_fixed(s, w, num_message_bits=8, weight_exp=-2), [[4, -4]]
    )
    np.testing.assert_array_equal(fp.dense_fixed(s, w, weight_exp=3), [[96, 16]])


def test_shift_exp_and_bias():
    np.testing.assert_array_equal(fp.shift_exp([5, -5], 2), [20, -20])
    np.testing.assert_array_equal(fp.shift_exp([5, -5], -1), [2, -3])
    np.testing.assert_array_equal(fp.shift_exp([5, -5], 0), [5, -5])
    np.testing.assert_array_equal(fp.effective_bias([3, -3, 7], [2, -1, 0]), [12, -2, 7])


def test_invalid_reset():
    z = np.zeros((1, 1), np.int64)
    with pytest.raises(ValueError, match="reset"):
        fp.lif_step(z, z, z, du=0, dv=0, vth=1, bias_mant=0, bias_exp=0, reset="hold")


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

int32s = st.integers(-(2**31), 2**31 - 1)


@settings(max_examples=200, deadline=None)
@given(x=int32s, d=st.integers(0, 4096))
def test_decay_moves_toward_zero(x, d):
    y = int(fp.decay(np.array([x]), d)[0])
    assert abs(y) <= abs(x)
    assert y == 0 or np.sign(y) == np.sign(x)
    if d >= 1 and x != 0:
        assert abs(y) < abs(x)
    assert y == trunc4096(x * (4096 - d))


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-(2**19), 2**19), u0=st.integers(-(2**23) + 1, 2**23))
def test_u_wrap_counter_fires_exactly_when_provoked(a, u0):
    # du = 4095 -> effective 4096: the old current is forgotten, so the pre-wrap value is a << 6
    stats: dict = {}
    u, _, _ = fp.lif_step(
        np.array([[u0]]), np.zeros((1, 1), np.int64), np.array([[a]]),
        du=4095, dv=0, vth=2**16, bias_mant=0, bias_exp=0, stats=stats,
    )
    pre = a * 64
    provoked = pre > 2**23 or pre <= -(2**23)
    assert int(stats["u_wrap"][0, 0]) == int(provoked)
    assert int(u[0, 0]) == (pre - 2**24 if pre > 2**23 else pre + 2**24 if provoked else pre)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-(2**17), 2**17), bias=st.integers(-4096, 4095), be=st.integers(0, 7),
       v0=st.integers(-(2**23) + 1, 2**23 - 1))
def test_v_clip_counter_fires_exactly_when_provoked(a, bias, be, v0):
    stats: dict = {}
    _, v, _ = fp.lif_step(
        np.zeros((1, 1), np.int64), np.array([[v0]]), np.array([[a]]),
        du=4095, dv=0, vth=2**20, bias_mant=bias, bias_exp=be, stats=stats,
    )
    cur = a * 64  # |a| <= 2^17: cur in [-2^23, 2^23], only cur = -2^23 wraps (to +2^23)
    pre = v0 + (cur + 2**24 if cur <= -(2**23) else cur) + bias * 2**be
    assert int(stats["v_clip"][0, 0]) == int(abs(pre) > 2**23 - 1)
    assert int(v[0, 0]) == max(-(2**23 - 1), min(2**23 - 1, pre))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), reset=st.sampled_from(["zero", "subtract"]))
def test_ternary_is_odd_symmetric(seed, reset):
    # trunc-toward-zero decay, symmetric clip and vth_lo = -vth_hi make the ternary neuron odd
    # (inputs kept small so the asymmetric u wrap (> vs <=) and bias floor are not involved)
    rng = np.random.default_rng(seed)
    n = 8
    kw = {"du": int(rng.integers(0, 4096)), "dv": int(rng.integers(0, 4096)),
          "bias_mant": rng.integers(-50, 50, n), "bias_exp": rng.integers(0, 4, n)}
    vth = rng.integers(1, 400, n)
    up = [np.zeros((1, n), np.int64)] * 2
    un = [np.zeros((1, n), np.int64)] * 2
    for _ in range(20):
        a = rng.integers(-300, 300, (1, n))
        *up, sp = fp.lif_step(*up, a, vth=vth, vth_lo=-vth, reset=reset, **kw)
        kw_neg = dict(kw, bias_mant=-kw["bias_mant"])
        *un, sn = fp.lif_step(*un, -a, vth=vth, vth_lo=-vth, reset=reset, **kw_neg)
        np.testing.assert_array_equal(sp, -sn)
        np.testing.assert_array_equal(up[1], -un[1])


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_effective_weights_match_scalar_reference(seed):
    rng = np.random.default_rng(seed)
    lo, hi = [(-400, 400), (0, 400), (-400, 1)][seed % 3]
    w = rng.integers(lo, hi, (4, 5))
    nwb = int(rng.integers(1, 9))
    np.testing.assert_array_equal(fp.effective_dense_weights(w, nwb),
                                  scalar_effective_weights(w, nwb))


def test_inputs_are_not_mutated():
    u = np.array([[5, -7]])
    v = np.array([[100, -100]])
    a = np.array([[1, 2]])
    copies = [x.copy() for x in (u, v, a)]
    fp.lif_step(u, v, a, du=10, dv=10, vth=1, bias_mant=0, bias_exp=0, reset="subtract")
    for x, c in zip((u, v, a), copies, strict=True):
        np.testing.assert_array_equal(x, c)


# --------------------------------------------------------------------------------------------
# Vectorised implementation == scalar reference on random inputs, 150 steps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("ternary", [False, True])
def test_lif_step_matches_scalar_reference(reset, ternary):
    rng = np.random.default_rng(1234 + 2 * ternary + (reset == "subtract"))
    B, N, T = 2, 16, 150
    du, dv = int(rng.integers(0, 4096)), int(rng.integers(0, 4096))
    vth = rng.integers(1, 3000, N)
    vth_lo = -rng.integers(1, 3000, N) if ternary else None
    bias_mant = rng.integers(-4096, 4096, N)
    bias_exp = rng.integers(-3, 8, N)
    refs = [
        ScalarLIF(N, du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                  reset=reset, vth_lo=vth_lo)
        for _ in range(B)
    ]
    u = np.zeros((B, N), np.int64)
    v = np.zeros((B, N), np.int64)
    stats: dict = {}
    for t in range(T):
        a = rng.integers(-2000, 2000, (B, N))
        big = rng.random((B, N)) < 0.05  # provoke wraps, int32 overflow and saturation
        a[big] = rng.integers(-(2**26), 2**26, int(big.sum()))
        u, v, s = fp.lif_step(u, v, a, du=du, dv=dv, vth=vth, bias_mant=bias_mant,
                              bias_exp=bias_exp, reset=reset, vth_lo=vth_lo, stats=stats)
        for b, ref in enumerate(refs):
            s_ref = ref.step(a[b])
            assert s[b].tolist() == s_ref, f"spikes differ at step {t + 1}, sample {b}"
            assert u[b].tolist() == ref.u, f"u differs at step {t + 1}, sample {b}"
            assert v[b].tolist() == ref.v, f"v differs at step {t + 1}, sample {b}"
    assert stats["u_wrap"].tolist() == [r.wraps for r in refs]
    assert stats["v_clip"].tolist() == [r.clips for r in refs]
    assert stats["u_wrap"].sum() > 0 and stats["v_clip"].sum() > 0
    assert (s != 0).any()


@pytest.mark.parametrize("graded", [False, True])
def test_dense_fixed_matches_scalar_reference(graded):
    rng = np.random.default_rng(7 + graded)
    w_eff = fp.effective_dense_weights(rng.integers(-300, 300, (6, 9)))
    for weight_exp in (-3, 0, 4):
        s = rng.integers(-3, 4, (5, 9)) * (rng.random((5, 9)) < 0.5)
        got = fp.dense_fixed(s, w_eff, weight_exp=weight_exp, num_message_bits=8 * graded)
        want = [scalar_dense(row, w_eff, weight_exp, graded) for row in s]
        assert got.tolist() == want
