"""Compiled kernels of the native fixed-point engine (numba; optional).

Imported by :mod:`neurodeploy.engine.fixed_kernels` when numba is installed; without it the
engine uses its numpy kernels, which compute the same values. Compiled once and cached on disk
(``__pycache__``), so only the first use on a machine pays the compilation (seconds).

* :func:`lif_block` is :func:`neurodeploy.fixedpoint.lif_step` written out per element in int64
  with every int32 wrap, over a block of steps. Being a literal port it needs no range analysis.
  :func:`lif_block_float` and :func:`lif_block_if` (IF/LIF with small inputs) are the same in
  float64 for blocks where the caller has proved that no wrap can occur; they vectorise (SIMD)
  and are about 3x faster.
* :func:`dense_events` and :func:`conv_events` are event driven: they visit only non-zero inputs
  (spikes, input events), so their cost scales with activity, not layer size. They accumulate in
  the weights' dtype (float32 or float64), exact while every partial sum stays below ``2**24``
  or ``2**53`` (the caller picks the dtype from its bound), and leave the wrap of the result to
  the caller.
"""

from __future__ import annotations

import numba
import numpy as np

_HALF32 = 1 << 31
_MASK32 = (1 << 32) - 1
_M = 1 << 23  # fixedpoint.STATE_MAX
_VMAX = (1 << 23) - 1
_VMAX_F = float(_VMAX)


@numba.njit(cache=True, nogil=True, inline="always")
def _wrap32(x):
    return ((x + _HALF32) & _MASK32) - _HALF32


@numba.njit(cache=True, nogil=True, inline="always")
def _decay(x, d):
    """``fixedpoint.decay``: ``x * (4096 - d) / 4096`` rounded toward zero."""
    p = x * (4096 - d)
    return (p + ((p >> 63) & 4095)) >> 12  # floor((p + 4095) / 4096) = trunc(p / 4096) if p < 0


@numba.njit(cache=True, nogil=True)
def lif_block(a, u, v, du, dv, vth_eff, bias_eff, subtract, spikes, u_rec, v_rec, record,
              u_wrap, v_clip):
    """Run ``fixedpoint.lif_step`` for every step of ``a`` (``[T, B, N]``, integer values).

    ``u``, ``v`` (int64 ``[B, N]``), ``u_wrap``, ``v_clip`` (int64 ``[B, N]``) are updated in
    place; ``spikes`` (bool ``[T, B, N]``) and, if ``record``, ``u_rec``/``v_rec`` (int64
    ``[T, B, N]``) are written. ``vth_eff = vth << 6`` and ``bias_eff`` (from
    ``fixedpoint.effective_bias``) are int64 ``[N]``.
    """
    steps, batch, n = a.shape
    for t in range(steps):
        for b in range(batch):
            for i in range(n):
                # 1. current: decay, add MSB-aligned input, one conditional 24-bit wrap
                cur = _wrap32(_decay(u[b, i], du + 1))
                cur = _wrap32(cur + _wrap32(_wrap32(np.int64(a[t, b, i])) << 6))
                if cur > _M:
                    cur -= 2 * _M
                    u_wrap[b, i] += 1
                elif cur <= -_M:
                    cur += 2 * _M
                    u_wrap[b, i] += 1
                u[b, i] = cur
                # 2. voltage: decay, add current and bias, saturate
                volt = _wrap32(_decay(v[b, i], dv))
                volt = _wrap32(volt + cur + bias_eff[i])
                if volt > _VMAX:
                    volt = _VMAX
                    v_clip[b, i] += 1
                elif volt < -_VMAX:
                    volt = -_VMAX
                    v_clip[b, i] += 1
                # 3. spike, 4. reset
                fired = volt > vth_eff[i]
                spikes[t, b, i] = fired
                if fired:
                    volt = _wrap32(volt - vth_eff[i]) if subtract else 0
                v[b, i] = volt
                if record:
                    u_rec[t, b, i] = cur
                    v_rec[t, b, i] = volt


@numba.njit(cache=True, nogil=True)
def lif_block_float(a, u, v, r_u, r_v, vth_eff, bias_eff, subtract, spikes, u_rec, v_rec,
                    record, u_wrap, v_clip):
    """:func:`lif_block` in float64 for blocks where no int32 wrap can occur.

    The caller proves that first (``NeuronKernel``: every intermediate value stays below
    ``2**31`` in magnitude); then the int32 casts of ``lif_step`` are no-ops and every float64
    operation here is exact: ``trunc(x * r)`` with ``r = (4096 - d) / 4096`` is the decay
    (``r_u = 0`` when ``du = 4095``), the rest are additions, comparisons and selections.
    ``u``, ``v`` and ``u_rec``, ``v_rec`` are float64; the loops vectorise (SIMD).
    """
    steps, batch, n = a.shape
    for t in range(steps):
        for b in range(batch):
            at = a[t, b]
            ub = u[b]
            vb = v[b]
            st = spikes[t, b]
            uw = u_wrap[b]
            vc = v_clip[b]
            for i in range(n):
                cur = np.trunc(ub[i] * r_u) + at[i] * 64.0
                hi = cur > _M
                lo = cur <= -_M
                cur = cur - (2.0 * _M if hi else 0.0) + (2.0 * _M if lo else 0.0)
                uw[i] += hi + lo
                ub[i] = cur
                pre = np.trunc(vb[i] * r_v) + cur + bias_eff[i]
                volt = min(max(pre, -_VMAX_F), _VMAX_F)
                vc[i] += pre != volt
                th = vth_eff[i]
                fired = volt > th
                st[i] = fired
                if subtract:
                    vb[i] = volt - (th if fired else 0.0)
                else:
                    vb[i] = 0.0 if fired else volt
            if record:
                u_rec[t, b] = ub
                v_rec[t, b] = vb


@numba.njit(cache=True, nogil=True)
def lif_block_if(a, v, r_v, vth_eff, bias_eff, subtract, spikes, v_rec, record, v_clip):
    """:func:`lif_block_float` for ``du = 4095`` when ``|a_in << 6| < 2**23``: then ``u`` is
    just ``a_in << 6`` each step (IF/LIF: no synaptic memory, no wrap), computed by the caller.
    """
    steps, batch, n = a.shape
    for t in range(steps):
        for b in range(batch):
            at = a[t, b]
            vb = v[b]
            st = spikes[t, b]
            vc = v_clip[b]
            for i in range(n):
                pre = np.trunc(vb[i] * r_v) + at[i] * 64.0 + bias_eff[i]
                volt = min(max(pre, -_VMAX_F), _VMAX_F)
                vc[i] += pre != volt
                th = vth_eff[i]
                fired = volt > th
                st[i] = fired
                if subtract:
                    vb[i] = volt - (th if fired else 0.0)
                else:
                    vb[i] = 0.0 if fired else volt
            if record:
                v_rec[t, b] = vb


@numba.njit(cache=True, nogil=True)
def dense_events(x, wt, binary, y):
    """``y[m] = sum_i x[m, i] * wt[i]`` over non-zero ``x[m, i]`` (``1`` each if ``binary``).

    ``wt``: ``[n_in, n_out]``; ``y``: ``[M, n_out]`` float64, overwritten. Unsigned indices
    (no negative-index handling) let the innermost loop vectorise.
    """
    rows, n_in = x.shape
    n_out = np.uint64(wt.shape[1])
    acc = np.empty(wt.shape[1], wt.dtype)
    wf = wt.reshape(wt.size)
    for m in range(rows):
        acc[:] = 0
        for i in range(n_in):
            xv = x[m, i]
            if xv == 0:
                continue
            base = np.uint64(i) * n_out
            if binary:
                for o in range(n_out):
                    acc[o] += wf[base + o]
            else:
                for o in range(n_out):
                    acc[o] += xv * wf[base + o]
        for o in range(n_out):
            y[m, o] = acc[o]


@numba.njit(cache=True, nogil=True)
def conv_events(x, ptr, acc_off, w_off, wk, cout_g, binary, y):
    """Convolution by scattering non-zero inputs (``torch.nn.functional.conv2d`` semantics).

    ``x``: ``[M, n_in]`` (inputs in C-order); ``ptr``, ``acc_off``, ``w_off`` (uint64): input
    ``i`` reaches one output pixel per ``p`` in ``ptr[i]:ptr[i + 1]``, at offset ``acc_off[p]``
    of a channels-last accumulator, with the weights at ``w_off[p]`` of ``wk`` (``[C_in / groups,
    KH, KW, C_out]``, flattened), ``cout_g`` channels each
    (:func:`neurodeploy.engine.fixed_kernels.conv_taps`); ``y``: ``[M, C_out, Ho * Wo]``
    float64. Each sample accumulates channels-last (one tap adds ``cout_g`` contiguous
    weights) in a buffer that stays in cache, then is transposed into ``y``.
    """
    rows, n_in = x.shape
    n_out, plane = y.shape[1], y.shape[2]
    acc = np.empty(plane * n_out, wk.dtype)
    cg = np.uint64(cout_g)
    for m in range(rows):
        acc[:] = 0
        for i in range(n_in):
            xv = x[m, i]
            if xv == 0:
                continue
            if binary:
                for p in range(ptr[i], ptr[i + 1]):
                    a0 = acc_off[p]
                    w0 = w_off[p]
                    for o in range(cg):
                        acc[a0 + o] += wk[w0 + o]
            else:
                for p in range(ptr[i], ptr[i + 1]):
                    a0 = acc_off[p]
                    w0 = w_off[p]
                    for o in range(cg):
                        acc[a0 + o] += xv * wk[w0 + o]
        ym = y[m]
        for o in range(n_out):
            yo = ym[o]
            for pix in range(plane):
                yo[pix] = acc[np.uint64(pix) * np.uint64(n_out) + np.uint64(o)]
