"""Exact, vectorised kernels of the native fixed-point engine: synapse layers and LIF neurons.

:mod:`neurodeploy.fixedpoint` defines the arithmetic one element and one step at a time, with an
int32 wrap after every stage. These kernels compute the same values for a block of steps and a
batch at once.

Neurons (:class:`NeuronKernel`): before each block, bounds on ``|a_in|``, ``|u|`` and ``|v|``
decide whether any int32 wrap can happen in it. If none can (any sane network), the int32 casts
are no-ops and float64 arithmetic is exact (integers below ``2**53``; a decay is a product with
a 12-bit fraction, truncated). Then the compiled ``fixed_jit.lif_block_float`` runs the block in
one vectorised loop, or, without numba, numpy runs the stateless stages over the whole block and
loops over steps only for the recurrences (``v``; ``u`` when ``du < 4095``), saturating ``v``
only where a running bound says it can saturate. Otherwise the block runs through
``fixed_jit.lif_block`` (``lif_step`` written out per element, every wrap included) or through
:func:`neurodeploy.fixedpoint.lif_step` itself.

Synapses (:class:`SynapseKernel`): Dense as Lava's bit-accurate Dense (effective 8-bit weights,
graded sums wrapped to int32 before ``weight_exp``), Conv as Lava's Conv (weights as given,
24-bit wrap). Sparse inputs are processed event driven (only non-zero inputs are visited) where
that is faster, else by a float32/float64 BLAS product or torch's ``conv2d``; float32 only
where every partial sum stays below ``2**24``.

``tests/test_engine_properties.py`` checks every path against ``lif_step``/``dense_fixed``, the
engine against a plain step loop and against Lava.
"""

from __future__ import annotations

from types import ModuleType

import nir
import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from .. import fixedpoint as fp
from ..errors import GraphError
from ..jit import OptionalModule
from .ops import _pair

#: Largest magnitude below which every float64 integer operation here is exact.
FLOAT64_EXACT = float(1 << 53)
FLOAT32_EXACT = float(1 << 24)
_I32 = float(1 << 31)
_M = float(fp.STATE_MAX)  # 2**23: threshold of u's conditional wrap
_VMAX, _VMIN = float(fp.V_MAX), float(fp.V_MIN)
_clip = np.core.umath.clip  # the ufunc; np.clip adds a slow Python wrapper

# When to exploit sparse input. Measured on the 2-core development machine (numpy 1.26 with
# OpenBLAS, torch 2 with one intra-op thread, numba 0.6x), CPU time per input row; both choices
# are exact, these only pick the faster one.
#
# Compiled kernels: for one row (step-by-step recurrent layers) the event-driven kernels win at
# every activity measured, up to 30 % (Dense 100 -> 200: 3.8 vs 13.6 us; conv 2x34x34 -> 8,
# 5x5/2: 36 vs 168 us). For blocks of 64 rows, event-driven Dense wins below 10 % (200 -> 10:
# 0.42 vs 0.39 us at 10 %) or 30 % for 64+ outputs (128 -> 256: 2.1 vs 2.7 us at 30 %), the
# event-driven convolution below 10-16 % (2x34x34 -> 8, 5x5/2: 20.7 vs 20.6 us at 16 %;
# 16x16x16 -> 16, 3x3/1: 35 vs 54 us at 8 %, 63 vs 52 at 16 %).
EVENT_DENSITY_ROW = 0.3
EVENT_DENSITY_DENSE = 0.1
EVENT_DENSITY_DENSE_WIDE = 0.3
EVENT_DENSITY_CONV = 0.1
# numpy kernels (no numba): gathering the rows of W^T of the active inputs beats BLAS for one
# row of a large layer below ~5 % activity (1000 -> 500: 24 vs 83 us at 1 %), scipy's CSR
# product for blocks only for wide layers (1000 -> 500, 64 rows: 43 vs 53 us at 10 %).
SPARSE_ROW_DENSITY = 0.05
SPARSE_ROW_MIN_WEIGHTS = 1 << 14
SPARSE_BLOCK_DENSITY = 0.05
SPARSE_BLOCK_MIN_OUT = 256


#: Whether to use the compiled kernels of :mod:`neurodeploy.engine.fixed_jit`: ``None`` (default)
#: uses them when numba is installed, unless the environment sets ``NEURODEPLOY_JIT=0``.
USE_JIT: bool | None = None
KERNELS = OptionalModule("neurodeploy.engine.fixed_jit")


def jit_kernels() -> ModuleType | None:
    """The compiled kernels module if it is to be used, else None (numpy kernels)."""
    return KERNELS.get(USE_JIT)


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of integer-valued float64 ``x`` to ``bits`` bits.

    Returns ``x`` itself when nothing is out of range, else a new array; exact for
    ``|x| < 2**53``.
    """
    half = float(1 << (bits - 1))
    if x.size == 0 or (x.max() < half and x.min() >= -half):
        return x
    return np.mod(x + half, 2.0 * half) - half


def _wrap_inplace(x: np.ndarray, bits: int) -> None:
    """:func:`wrap_signed` writing into ``x`` (a float64 array or view)."""
    half = float(1 << (bits - 1))
    if x.size and (x.max() >= half or x.min() < -half):
        np.add(x, half, out=x)
        np.mod(x, 2.0 * half, out=x)
        np.subtract(x, half, out=x)


def _density(x: np.ndarray, rows: int = 64) -> float:
    """Fraction of non-zero entries, estimated from up to ``rows`` evenly spaced rows."""
    if x.shape[0] > rows:
        x = x[:: x.shape[0] // rows]
    return np.count_nonzero(x) / max(1, x.size)


def conv_taps(w: np.ndarray, in_shape, out_shape, stride, pad, dil, groups: int):
    """Where each input element of a convolution sends its spikes, for ``conv_events``.

    Returns ``(ptr, acc_off, w_off, wk)``: input ``i`` (C-order index into ``in_shape``)
    reaches, for each ``p`` in ``ptr[i]:ptr[i + 1]``, the ``C_out / groups`` outputs of its
    group at one output pixel: ``acc_off[p]`` is that pixel's offset in a channels-last
    accumulator plus the group's first channel, ``w_off[p]`` the offset of the matching weights
    in ``wk`` (``[C_in / groups, KH, KW, C_out]``, flattened, float64); indices are uint64.
    Cross-correlation with ``pad`` before the first row/column, as ``torch.nn.functional.conv2d``.
    """
    c_out, cin_g, kh, kw = w.shape
    chans, height, width = in_shape
    _, out_h, out_w = out_shape
    cout_g = c_out // groups

    def axis(n, k, out, s, p, d):
        num = np.arange(n)[:, None] + p - np.arange(k)[None, :] * d
        i, kk = np.nonzero((num >= 0) & (num % s == 0) & (num // s < out))
        return i, kk, num[i, kk] // s

    iy, ky, oy = axis(height, kh, out_h, stride[0], pad[0], dil[0])
    ix, kx, ox = axis(width, kw, out_w, stride[1], pad[1], dil[1])
    c = np.arange(chans)[:, None, None]
    g, cl = c // cin_g, c % cin_g
    src = (c * height + iy[None, :, None]) * width + ix[None, None, :]
    acc = (oy[None, :, None] * out_w + ox[None, None, :]) * c_out + g * cout_g
    wof = ((cl * kh + ky[None, :, None]) * kw + kx[None, None, :]) * c_out + g * cout_g
    src, acc, wof = (np.broadcast_to(a, src.shape).reshape(-1) for a in (src, acc, wof))
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(chans * height * width + 1, np.uint64)
    np.cumsum(np.bincount(src, minlength=chans * height * width), out=ptr[1:])
    wk = np.zeros((cin_g, kh, kw, c_out))
    for gi in range(groups):
        part = w[gi * cout_g:(gi + 1) * cout_g]  # [cout_g, cin_g, kh, kw]
        wk[..., gi * cout_g:(gi + 1) * cout_g] = part.transpose(1, 2, 3, 0)
    return ptr, acc[order].astype(np.uint64), wof[order].astype(np.uint64), wk.reshape(-1)


class SynapseKernel:
    """One Affine or Conv2d layer as Lava's bit-accurate Dense / fixed-point Conv computes it.

    ``graded``: the layer reads integer messages (Lava ``num_message_bits > 0``, our layers fed
    by the input); otherwise any non-zero input counts as one spike. ``x_max``: largest input
    magnitude, used to pick the cheapest exact arithmetic: float32 while every partial sum stays
    below ``2**24``, else float64, else (Dense only) int64 modulo ``2**64``.

    Dense: weights as Lava uses them (:func:`fixedpoint.effective_dense_weights`), graded sums
    wrap to int32 before ``weight_exp`` is applied, the result wraps to int32. Conv: weights as
    given (Lava ignores ``weight_exp``), result wraps to 24 bits.

    Sparse inputs: with the compiled kernels, a layer whose input has few enough non-zeros
    (``EVENT_DENSITY_*``) visits only those (event driven); without them a Dense layer gathers
    the rows of the active inputs (one row) or uses a CSR product (many rows) when that is
    faster (``SPARSE_*``). Otherwise: a float BLAS product or torch's ``conv2d``.
    """

    def __init__(self, name: str, node, graded: bool, x_max: float):
        q = node.metadata["loihi"]
        self.name, self.graded = name, bool(graded)
        self.in_shape = tuple(int(s) for s in node.input_type["input"])
        self.out_shape = tuple(int(s) for s in node.output_type["output"])
        self.conv = isinstance(node, nir.Conv2d)
        self.jit = jit_kernels()
        if self.conv:
            w = fp.wrap_int32(q["weight_mant"])
            self.exp = 0
            k = (int(w.shape[2]), int(w.shape[3]))
            stride, dil = _pair(node.stride), _pair(node.dilation)
            pad = node.padding
            if isinstance(pad, str):
                pad = pad if pad in ("same", "valid") else "valid"
                # torch pads "same" by d (k - 1) in total, the smaller half first
                left = tuple((d * (kk - 1)) // 2 if pad == "same" else 0
                             for d, kk in zip(dil, k, strict=True))
            else:
                pad = left = _pair(pad)
            self.conv_args = (stride, pad, dil, int(node.groups))
            self.pad_left = left
        elif isinstance(node, (nir.Affine, nir.Linear)):
            w = fp.effective_dense_weights(q["weight_mant"])
            self.exp = int(q["weight_exp"])
        else:
            raise GraphError(f"node {name!r}: {type(node).__name__} is not a synapse layer")
        x_max = 1.0 if not graded else float(x_max)
        self.acc_bound = float(np.abs(w).reshape(w.shape[0], -1).sum(1).max(initial=0)) * x_max
        if self.acc_bound < FLOAT32_EXACT:
            self.dtype = np.float32
        elif self.acc_bound < FLOAT64_EXACT or self.conv:
            # Lava's Conv itself sums in float64 (scipy), so that is its precision too
            self.dtype = np.float64
        else:
            self.dtype = np.int64
        # bound on |output| after Lava's wraps (saves the neuron layer a pass over its input)
        if self.conv:
            self.out_bound = min(self.acc_bound, float(1 << 23))
        else:
            b = min(self.acc_bound, _I32) if self.graded else self.acc_bound
            self.out_bound = min(b * 2.0 ** self.exp + (1 if self.exp < 0 else 0), _I32)
        # float32 results are exact (and half the memory traffic) when nothing can wrap
        small = self.dtype == np.float32 and self.acc_bound < 1 << 23 and self.exp == 0
        self.out_dtype = np.float32 if small else np.float64
        if self.conv:
            self.w = torch.from_numpy(np.ascontiguousarray(w, dtype=self.dtype))
            self.taps = None
            if self.jit is not None:
                stride, _, dil, groups = self.conv_args
                ptr, acc_off, w_off, wk = conv_taps(w, self.in_shape, self.out_shape, stride,
                                                    self.pad_left, dil, groups)
                ev_dtype = np.float32 if self.dtype == np.float32 else np.float64
                self.taps = (ptr, acc_off, w_off, wk.astype(ev_dtype), w.shape[0] // groups)
        else:
            self.n_in = w.shape[1]
            self.wt = np.ascontiguousarray(w.T, dtype=self.dtype)  # [n_in, n_out]
            self.wt64 = np.ascontiguousarray(w.T, dtype=np.float64)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``x``: ``[M, *in_shape]`` (bool or integer values) -> float64 ``[M, *out_shape]``.

        ``out``: optional C-contiguous array of dtype ``out_dtype`` to write the result into
        (float32 where that is exact).
        """
        m = x.shape[0]
        if out is None:
            out = np.empty((m, *self.out_shape), self.out_dtype)
        if m == 0:
            return out
        if not self.graded and x.dtype != np.bool_:
            x = x != 0
        if self.conv:
            self._conv(x, out)
            if self.acc_bound >= 1 << 23:
                _wrap_inplace(out, 24)
            return out
        y = out.reshape(m, -1)
        self._dense(x.reshape(m, self.n_in), y)
        bound = self.acc_bound
        if self.graded and bound >= _I32:
            _wrap_inplace(y, 32)
            bound = _I32
        if self.exp < 0:
            np.multiply(y, 2.0 ** self.exp, out=y)
            np.floor(y, out=y)
        elif self.exp > 0:
            if bound * 2.0 ** self.exp < FLOAT64_EXACT:
                np.multiply(y, 2.0 ** self.exp, out=y)
            else:  # int64 shifts wrap modulo 2**64, which keeps the value modulo 2**32
                y[...] = np.left_shift(y.astype(np.int64), self.exp).astype(np.int32)
        if bound * 2.0 ** self.exp >= _I32:
            _wrap_inplace(y, 32)
        return out

    def _conv(self, x: np.ndarray, out: np.ndarray) -> None:
        m = x.shape[0]
        limit = EVENT_DENSITY_ROW if m == 1 else EVENT_DENSITY_CONV
        if self.taps is not None and _density(x) <= limit:
            self.jit.conv_events(np.ascontiguousarray(x).reshape(m, -1), *self.taps,
                                 x.dtype == np.bool_, out.reshape(m, out.shape[1], -1))
            return
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=self.dtype))
        stride, pad, dil, groups = self.conv_args
        out[...] = F.conv2d(xt, self.w, None, stride, pad, dil, groups).numpy()

    def _dense(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.dtype == np.int64:
            y[...] = (x.astype(np.int64) @ self.wt).astype(np.int32)  # int32 dot, wrapped
            return
        m, n_out = x.shape[0], self.wt.shape[1]
        if self.jit is not None:
            limit = (EVENT_DENSITY_ROW if m == 1 else EVENT_DENSITY_DENSE_WIDE if n_out >= 64
                     else EVENT_DENSITY_DENSE)
            if _density(x) <= limit:
                self.jit.dense_events(np.ascontiguousarray(x), self.wt, x.dtype == np.bool_, y)
                return
        elif m == 1:
            if self.wt.size >= SPARSE_ROW_MIN_WEIGHTS and _density(x) <= SPARSE_ROW_DENSITY:
                idx = np.flatnonzero(x[0])
                rows = self.wt64[idx]
                y[0] = rows.sum(0) if x.dtype == np.bool_ else x[0, idx].astype(float) @ rows
                return
        elif n_out >= SPARSE_BLOCK_MIN_OUT and _density(x) <= SPARSE_BLOCK_DENSITY:
            y[...] = scipy.sparse.csr_matrix(x, dtype=np.float64) @ self.wt64
            return
        if self.dtype == np.float64:
            np.matmul(x.astype(np.float64, copy=False), self.wt, out=y)
        else:
            y[...] = x.astype(self.dtype, copy=False) @ self.wt


class NeuronKernel:
    """A layer of fixed-point IF/LIF/CubaLIF neurons, state ``[B, N]`` (flattened NIR shape).

    :meth:`run` advances it over a block of steps and returns spikes; it equals calling
    :func:`fixedpoint.lif_step` once per step, with the same ``u_wrap``/``v_clip`` counts.
    """

    def __init__(self, name: str, node, batch: int):
        q = node.metadata["loihi"]
        self.name = name
        self.shape = tuple(int(s) for s in node.output_type["output"])
        n = int(np.prod(self.shape))

        def flat(a) -> np.ndarray:
            return np.broadcast_to(np.asarray(a, np.int64), self.shape).reshape(n)

        self.du, self.dv, self.reset = int(q["du"]), int(q["dv"]), str(q["reset"])
        if self.reset not in ("zero", "subtract"):
            raise GraphError(f"node {name!r}: reset must be 'zero' or 'subtract'")
        self.vth = flat(q["vth"])
        self.bias_mant = flat(q["bias_mant"])
        self.bias_exp = flat(q["bias_exp"])
        vth_eff = np.left_shift(self.vth, fp.VTH_SHIFT)
        self.vth_eff = vth_eff.astype(np.float64)
        self.bias_eff = fp.effective_bias(self.bias_mant, self.bias_exp).astype(np.float64)
        self.neg_vth = float(max(0, -int(vth_eff.min(initial=0))))
        self.bias_max = float(np.abs(self.bias_eff).max(initial=0.0))
        uniform = n > 0 and bool(np.all(vth_eff == vth_eff[0]))
        self.vth_scalar = float(vth_eff[0]) if uniform else None
        # the float kernels need decays in 0..4095 and thresholds far inside the int32 range
        self.fast = (0 <= self.du <= 4095 and 0 <= self.dv <= 4095
                     and np.abs(vth_eff).max(initial=0) < 2 ** 30)
        self.r_u = (fp.DECAY_UNITY - self.du - fp.DS_OFFSET) / fp.DECAY_UNITY
        self.r_v = (fp.DECAY_UNITY - self.dv - fp.DM_OFFSET) / fp.DECAY_UNITY
        self.u = np.zeros((batch, n))
        self.v = np.broadcast_to(np.asarray(q["v_init"], np.int64), self.shape).reshape(
            1, n).repeat(batch, 0).astype(np.float64)
        self.u_wrap = np.zeros((batch, n), np.int64)
        self.v_clip = np.zeros((batch, n), np.int64)
        self.jit = jit_kernels()

    def run(self, a: np.ndarray, record_states: bool = False, a_bound: float = np.inf):
        """Advance by ``len(a)`` steps; ``a``: summed synaptic input, ``[Tb, B, N]`` (float64, or
        float32 holding integers below ``2**23``).

        ``a_bound``: a known bound on ``|a|`` (from the synapse layers), which saves a pass over
        ``a``. Returns ``(s, u, v)``: spikes as bool ``[Tb, B, N]`` and, with
        ``record_states``, the states after each step (else None).
        """
        if len(a) == 0:
            empty = np.empty(a.shape)
            return np.empty(a.shape, bool), (empty if record_states else None), (
                empty if record_states else None)
        if not (self.jit is not None and a.dtype == np.float32):
            a = np.asarray(a, dtype=np.float64)
        if a_bound >= _I32:
            a_bound = max(float(a.max(initial=0.0)), -float(a.min(initial=0.0)))
            if a_bound >= _I32:
                a = wrap_signed(a, 32)
                a_bound = max(float(a.max(initial=0.0)), -float(a.min(initial=0.0)))
        if self.jit is not None:
            return self._run_jit(a, record_states, a_bound)
        if not self.fast:
            return self._run_exact(a, record_states)
        act = a * float(1 << fp.ACT_SHIFT)
        amax = a_bound * (1 << fp.ACT_SHIFT)
        if amax >= _I32:
            act = wrap_signed(act, 32)
            amax = float(np.abs(act).max(initial=0.0))
        u = self._current(act, amax)
        if u is None:
            return self._run_exact(a, record_states)
        umax = amax if u is act else float(np.abs(u).max(initial=0.0))
        w = u + self.bias_eff
        wmax = umax + self.bias_max
        if wmax >= _I32:
            w = wrap_signed(w, 32)
            wmax = float(np.abs(w).max(initial=0.0))
        v0 = float(np.abs(self.v).max(initial=0.0))
        if max(v0, _VMAX + self.neg_vth) + wmax >= _I32:
            return self._run_exact(a, record_states)
        s, v = self._voltage(w, wmax, v0, record_states)
        self.u = u[-1].copy()
        return s, (u if record_states else None), v

    def _float_safe(self, a_bound: float) -> bool:
        """Whether no int32 wrap can happen this block (then float64 arithmetic is exact)."""
        if not self.fast:
            return False
        act = a_bound * (1 << fp.ACT_SHIFT)
        u0 = float(np.abs(self.u).max(initial=0.0))
        # |u| never exceeds max(u0, 2**23, act / (1 - r_u)): decay shrinks it by r_u, the
        # conditional wrap keeps it below max(2**23, |u|); r_u = 0 when du = 4095
        ub = max(u0, _M, act / (1.0 - self.r_u))
        v0 = float(np.abs(self.v).max(initial=0.0))
        # |v| stays below max(v0, 2**23 + |negative thresholds|) after saturation and reset
        return act < _I32 and max(v0, _VMAX + self.neg_vth) + ub + self.bias_max < _I32

    def _run_jit(self, a: np.ndarray, record_states: bool, a_bound: float):
        a = np.ascontiguousarray(a)
        s = np.empty(a.shape, bool)
        rec_shape = a.shape if record_states else (0, 0, 0)
        if self.du == fp.DECAY_UNITY - fp.DS_OFFSET and a_bound * 64 < _M and self._float_safe(
                a_bound):
            v_rec = np.empty(rec_shape)
            self.jit.lif_block_if(a, self.v, self.r_v, self.vth_eff, self.bias_eff,
                                  self.reset == "subtract", s, v_rec, record_states, self.v_clip)
            self.u = a[-1].astype(np.float64) * 64.0  # u = a_in << 6 (no wrap: < 2**23)
            u_rec = a.astype(np.float64) * 64.0 if record_states else None
        elif self._float_safe(a_bound):
            u_rec, v_rec = np.empty(rec_shape), np.empty(rec_shape)
            self.jit.lif_block_float(a, self.u, self.v, self.r_u, self.r_v, self.vth_eff,
                                     self.bias_eff, self.reset == "subtract", s, u_rec, v_rec,
                                     record_states, self.u_wrap, self.v_clip)
        else:
            u, v = self.u.astype(np.int64), self.v.astype(np.int64)
            u_rec, v_rec = np.empty(rec_shape, np.int64), np.empty(rec_shape, np.int64)
            self.jit.lif_block(a, u, v, self.du, self.dv, self.vth_eff.astype(np.int64),
                               self.bias_eff.astype(np.int64), self.reset == "subtract", s,
                               u_rec, v_rec, record_states, self.u_wrap, self.v_clip)
            self.u, self.v = u.astype(np.float64), v.astype(np.float64)
        return s, (u_rec if record_states else None), (v_rec if record_states else None)

    def _current(self, act: np.ndarray, amax: float) -> np.ndarray | None:
        """``u`` after each step (float64 ``[Tb, B, N]``), or None if int32 could overflow."""
        if self.du == fp.DECAY_UNITY - fp.DS_OFFSET:  # decay factor 0: u holds one step's input
            if amax < _M:
                return act
            hi, lo = act > _M, act <= -_M
            self.u_wrap += hi.sum(0) + lo.sum(0)
            return act - (2 * _M) * hi + (2 * _M) * lo
        u0 = float(np.abs(self.u).max(initial=0.0))
        # invariant: |u| <= max(u0, 2**23, amax / (1 - r)) at every step (decay shrinks |u| by r,
        # the conditional wrap never grows it beyond max(2**23, |u|))
        if max(u0, _M, amax / (1.0 - self.r_u)) >= _I32:
            return None
        out = np.empty_like(act)
        prev, bound = self.u, u0
        hi = np.empty(act.shape[1:], bool)
        lo = np.empty(act.shape[1:], bool)
        for t in range(len(act)):
            cur = out[t]
            np.multiply(prev, self.r_u, out=cur)
            np.trunc(cur, out=cur)
            np.add(cur, act[t], out=cur)
            bound = bound * self.r_u + amax
            if bound >= _M:
                top, bot = float(cur.max(initial=0.0)), float(cur.min(initial=0.0))
                if top > _M or bot <= -_M:
                    np.greater(cur, _M, out=hi)
                    np.less_equal(cur, -_M, out=lo)
                    cur -= (2 * _M) * hi
                    cur += (2 * _M) * lo
                    self.u_wrap += hi
                    self.u_wrap += lo
                    bound = float(np.abs(cur).max(initial=0.0))
                else:
                    bound = max(top, -bot)
            prev = cur
        return out

    def _voltage(self, w: np.ndarray, wmax: float, v0: float, record_states: bool):
        tb = len(w)
        pre = np.empty_like(w)  # v before saturation, per step
        s = np.empty(w.shape, bool)
        rec = np.empty_like(w) if record_states else None
        tmp = np.empty(w.shape[1:])
        keep = np.empty(w.shape[1:], bool)
        vbuf = np.empty(w.shape[1:])
        clipped = []
        v, bound = self.v, v0
        r = self.r_v
        vth = self.vth_scalar if self.vth_scalar is not None else self.vth_eff
        zero = self.reset == "zero"
        for t in range(tb):
            p = pre[t]
            if r != 1.0:
                np.multiply(v, r, out=p)
                np.trunc(p, out=p)
                np.add(p, w[t], out=p)
                bound = bound * r + wmax
            else:
                np.add(v, w[t], out=p)
                bound = bound + wmax
            v = p
            if bound > _VMAX:
                bound = max(float(p.max()), -float(p.min()))
                if bound > _VMAX:
                    _clip(p, _VMIN, _VMAX, out=vbuf)
                    clipped.append(t)
                    v, bound = vbuf, _VMAX
            st = s[t]
            np.greater(v, vth, out=st)
            if zero:
                np.logical_not(st, out=keep)
                np.multiply(v, keep, out=v)
            else:
                np.multiply(st, vth, out=tmp)
                np.subtract(v, tmp, out=v)
                bound += self.neg_vth
            if rec is not None:
                rec[t] = v
        if clipped:
            pc = pre[clipped]
            self.v_clip += ((pc > _VMAX) | (pc < _VMIN)).sum(0)
        self.v = v.copy()
        return s, rec

    def _run_exact(self, a: np.ndarray, record_states: bool):
        """The block, one :func:`fixedpoint.lif_step` call per step (int32 overflow possible)."""
        u, v = self.u.astype(np.int64), self.v.astype(np.int64)
        s_out = np.empty(a.shape, bool)
        u_rec = np.empty(a.shape) if record_states else None
        v_rec = np.empty(a.shape) if record_states else None
        stats: dict = {}
        for t in range(len(a)):
            u, v, s = fp.lif_step(u, v, a[t].astype(np.int64), du=self.du, dv=self.dv,
                                  vth=self.vth, bias_mant=self.bias_mant,
                                  bias_exp=self.bias_exp, reset=self.reset, stats=stats)
            s_out[t] = s != 0
            if record_states:
                u_rec[t], v_rec[t] = u, v
        if len(a):
            self.u_wrap += stats[fp.STAT_U_WRAP]
            self.v_clip += stats[fp.STAT_V_CLIP]
        self.u, self.v = u.astype(np.float64), v.astype(np.float64)
        return s_out, u_rec, v_rec
