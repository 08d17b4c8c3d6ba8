"""Prophesee EVT 3.0 ``.raw``: 16-bit little-endian words after a ``%`` ASCII header.

Word type = bits 15..12:

====  =============  =====================================================================
0x0   EVT_ADDR_Y     y = bits 10..0 (bit 11: master/slave system type)
0x2   EVT_ADDR_X     one event: x = bits 10..0, polarity = bit 11
0x3   VECT_BASE_X    base x = bits 10..0 and polarity = bit 11 for the vectors that follow
0x4   VECT_12        12-bit validity mask: event at base_x + i for each set bit i; base_x += 12
0x5   VECT_8         8-bit validity mask (bits 7..0); base_x += 8
0x6   EVT_TIME_LOW   bits 11..0 of the 24-bit time base
0x8   EVT_TIME_HIGH  bits 23..12 of the 24-bit time base
0xA   EXT_TRIGGER    trigger (counted in the report as ``triggers``, not an event)
0x7, 0xE, 0xF      CONTINUED_4 / OTHERS / CONTINUED_12: skipped
====  =============  =====================================================================

t = (TIME_HIGH << 12) | TIME_LOW, each part keeping its last value. The 24-bit time base wraps
every 16.8 s: a TIME_HIGH that decreases by more than half its range (2048) is read as a wrap and
adds 2^24 us. Origin: top-left, as stored (no conversion).

**TIME_LOW stepping backwards.** Real files (e.g. the reference ``expelliarmus_evt3_sample.raw``)
contain TIME_LOW words that step backwards (811 -> 800) without a TIME_HIGH in between. Readers
disagree: a literal decoder (and the ``evt3`` package) keeps the small step back, expelliarmus
adds 4096 us at each decrease (the recording then spans 53.9 ms instead of 8.8 ms), faery clamps
to non-decreasing time. We decode **literally** -- it is what the file says, the steps are a few
microseconds, and adding 4096 us would invent a TIME_HIGH the sensor never sent -- and count each
such step as the anomaly ``evt3_time_low_backsteps``. The events concerned then go backwards in
time; the reader's ``time_order`` option keeps (default, counted as ``time_backwards_kept``),
drops or clamps them.

Events met before the decoder knows their row, time base or vector base (a stream cut in the
middle) are dropped as ``missing_state``.

Decoding: by default a compiled (numba) state machine, one pass over the words
(:mod:`.decode_jit`); without numba (or with ``NEURODEPLOY_JIT=0``) a vectorised numpy decoder
with the same output and counts, no per-word Python loop: the state words (Y, TIME_LOW,
TIME_HIGH, VECT_BASE_X) are forward-filled along the stream by indexing their values with
cumulative counts (``np.cumsum`` of each word type), each event word finds the last state word
before it from its position (every earlier word is an event, state or other word), and vectors
are expanded with popcount / bit-position lookup tables. Either way the state carries over from
one block of words to the next, so streaming in blocks gives exactly the whole-file result.
"""

from __future__ import annotations

import numpy as np

from ..types import EVT3_TIME_LOW_BACKSTEPS, MISSING_STATE, OTHER_RECORDS, TRIGGERS, DropReport
from ._base import (
    check_sorted_time,
    drop_decoded,
    expand_slots,
    jit_decoders,
    new_events,
    unwrap_counter,
)
from .prophesee_header import PropheseeRawStream

T_ADDR_Y, T_ADDR_X, T_BASE_X, T_V12, T_V8, T_TLOW, T_THIGH, T_TRIG = 0, 2, 3, 4, 5, 6, 8, 10

_BITS12 = (np.arange(4096)[:, None] >> np.arange(12)) & 1
POPCOUNT = _BITS12.sum(axis=1).astype(np.int64)
# NTH_BIT[m, r]: position of the r-th set bit of the 12-bit mask m
NTH_BIT = np.argsort(1 - _BITS12, axis=1, kind="stable").astype(np.int16)


class Evt3State:
    """Decoder state carried from one block of words to the next (-1: not known yet)."""

    def __init__(self):
        self.y = -1
        self.tlow = -1
        self.thigh_raw: int | None = None
        self.thigh_full = -1
        self.wraps = 0
        self.base_x = -1
        self.base_p = 0
        self.t_last_tl = -1  # time base right after the last TIME_LOW word

    @property
    def t(self) -> int:
        if self.tlow < 0 or self.thigh_full < 0:
            return -1
        return (self.thigh_full << 12) | self.tlow

    _SLOTS = ("y", "tlow", "thigh_raw", "thigh_full", "wraps", "base_x", "base_p", "t_last_tl")

    def to_array(self) -> np.ndarray:
        """The state as the compiled decoder's int64 array (``thigh_raw`` None: -1)."""
        vals = [getattr(self, name) for name in self._SLOTS]
        return np.array([-1 if v is None else v for v in vals], dtype=np.int64)

    def set_from(self, arr: np.ndarray) -> None:
        for name, v in zip(self._SLOTS, arr.tolist(), strict=True):
            setattr(self, name, v)
        if self.thigh_raw < 0:
            self.thigh_raw = None


def _ffill_values(mask: np.ndarray, values: np.ndarray, carried: int) -> np.ndarray:
    """Forward fill: at each position, the value of the last True of ``mask`` at or before it
    (``values`` holds one value per True), or ``carried`` before the first True."""
    ext = np.concatenate((np.array([carried], dtype=values.dtype), values))
    return ext[np.cumsum(mask, dtype=np.int32)]


def _gather(values: np.ndarray, idx: np.ndarray, carried: int) -> np.ndarray:
    """``values[idx]`` for a non-decreasing ``idx`` whose leading entries may be -1 (carried)."""
    if len(values) == 0:
        return np.full(len(idx), carried, dtype=values.dtype)
    out = values[idx]
    n_lead = int(np.searchsorted(idx, 0))
    if n_lead:
        out[:n_lead] = carried
    return out


def decode_words(w: np.ndarray, st: Evt3State, report: DropReport) -> np.ndarray:
    """Decode one block of EVT 3.0 words into events, updating ``st`` (compiled decoder when
    available, else :func:`decode_words_numpy`)."""
    jit = jit_decoders()
    if jit is None:
        return decode_words_numpy(w, st, report)
    return decode_words_jit(w, st, report, jit)


def decode_words_jit(w: np.ndarray, st: Evt3State, report: DropReport, jit) -> np.ndarray:
    """:func:`decode_words` with the compiled kernels of :mod:`.decode_jit` (module ``jit``)."""
    if len(w) == 0:
        return new_events(0)
    ev = new_events(jit.evt3_max_events(w))
    s = st.to_array()
    c = np.zeros(jit.N_COUNTERS, dtype=np.int64)
    n = jit.evt3_decode(w, s, c, ev["x"], ev["y"], ev["t"], ev["p"])
    st.set_from(s)
    report.note(TRIGGERS, int(c[jit.C_TRIGGERS]))
    report.note(OTHER_RECORDS, int(c[jit.C_OTHER]))
    report.note(EVT3_TIME_LOW_BACKSTEPS, int(c[jit.C_BACKSTEPS]))
    drop_decoded(report, MISSING_STATE, int(c[jit.C_MISSING]))
    return ev if n == len(ev) else ev[:n]


def decode_words_numpy(w: np.ndarray, st: Evt3State, report: DropReport) -> np.ndarray:
    """Decode one block of EVT 3.0 words into events, updating ``st``: vectorised numpy."""
    n = len(w)
    if n == 0:
        return new_events(0)
    typ = w >> 12
    is_vec = (typ == T_V12) | (typ == T_V8)
    is_ev = (typ == T_ADDR_X) | is_vec
    is_state = (typ == T_ADDR_Y) | (typ == T_TLOW) | (typ == T_THIGH) | (typ == T_BASE_X)
    pe = np.flatnonzero(is_ev)  # event words (EVT_ADDR_X and vectors)
    ps = np.flatnonzero(is_state)  # state words
    m, k = len(pe), len(ps)
    n_other = n - m - k
    if n_other:
        ntrig = int(np.count_nonzero(typ == T_TRIG))
        report.note(TRIGGERS, ntrig)
        report.note(OTHER_RECORDS, n_other - ntrig)

    # ---- state words, in stream order: value of each state variable after each of them ------
    ks = typ[ps]
    vs = (w[ps] & 0xFFF).astype(np.int64)
    m_y, m_tl, m_th, m_bx = ks == T_ADDR_Y, ks == T_TLOW, ks == T_THIGH, ks == T_BASE_X
    th_vals = np.zeros(0, dtype=np.int64)
    if m_th.any():
        th_vals, st.wraps, st.thigh_raw = unwrap_counter(vs[m_th], st.thigh_raw, 4096, st.wraps)
    y_s = _ffill_values(m_y, (vs[m_y] & 0x7FF).astype(np.int32), st.y)
    t_s = _ffill_values(m_th, th_vals, st.thigh_full)
    tl_s = _ffill_values(m_tl, vs[m_tl], st.tlow)
    known = (t_s >= 0) & (tl_s >= 0)
    t_s <<= 12
    t_s |= tl_s
    t_s[~known] = -1

    # TIME_LOW words at which the time steps back from the previous TIME_LOW's (no TIME_HIGH
    # change in between)
    tl_pos = np.flatnonzero(m_tl)
    if len(tl_pos):
        t_tl = t_s[tl_pos]
        before = np.concatenate(([st.t_last_tl], t_tl[:-1]))
        back = (t_tl < before) & (before >= 0) & (t_tl >= 0)
        report.note(EVT3_TIME_LOW_BACKSTEPS, int(np.count_nonzero(back)))
        st.t_last_tl = int(t_tl[-1])

    # ---- event words ------------------------------------------------------------------------
    # index of the last state word before each event word (-1: the carried state applies);
    # the words before an event word are event, state or other words
    sidx = np.arange(1, m + 1)
    np.subtract(pe, sidx, out=sidx)
    if n_other:
        sidx -= np.searchsorted(np.flatnonzero(~(is_ev | is_state)), pe)
    y_e = _gather(y_s, sidx, st.y)
    t_e = _gather(t_s, sidx, st.t)
    we = w[pe]
    x_e = (we & 0x7FF).astype(np.int32)
    p_e = ((we >> 11) & 1).astype(np.int8)
    ok_all = (st.y >= 0 and st.t >= 0) or (len(y_e) and y_e[0] >= 0 and t_e[0] >= 0)

    pv = np.flatnonzero(is_vec)
    vpos = np.searchsorted(pe, pv)  # vectors, as indices into the event words
    v8 = (we[vpos] >> 12) == T_V8
    inc = np.where(v8, 8, 12)
    if len(vpos):
        vm = (we[vpos] & 0xFFF).astype(np.int64)
        vm[v8] &= 0xFF
        # the last VECT_BASE_X before each vector (-1: carried from the previous block)
        bx_pos = np.concatenate(([-1], np.flatnonzero(m_bx)))
        sv = sidx[vpos]
        b_idx = np.full(len(vpos), -1, dtype=np.int64)
        if k:
            n_bx = np.cumsum(m_bx, dtype=np.int32)  # VECT_BASE_X words up to each state word
            has = sv >= 0
            b_idx[has] = bx_pos[n_bx[sv[has]]]
        from_blk = b_idx >= 0
        b0 = np.maximum(b_idx, 0)
        # x of each vector = its base + the increments of the vectors between base and vector
        cum_pref = np.concatenate(([0], np.cumsum(inc)))
        if k:
            n_before_base = np.searchsorted(pv, ps[b0])
            base_val = np.where(from_blk, (vs[b0] & 0x7FF) - cum_pref[n_before_base], st.base_x)
            base_pol = np.where(from_blk, (vs[b0] >> 11) & 1, st.base_p)
        else:
            base_val = np.full(len(vpos), st.base_x)
            base_pol = np.full(len(vpos), st.base_p)
        x_e[vpos] = base_val + cum_pref[:-1]
        p_e[vpos] = base_pol
        vec_ok = from_blk | (st.base_x >= 0)
        cnt_v = POPCOUNT[vm]

    # ---- carry the state to the next block ----------------------------------------------------
    if k:
        st.y, st.tlow = int(y_s[-1]), int(tl_s[-1])
        st.thigh_full = int(th_vals[-1]) if len(th_vals) else st.thigh_full
    bx_last = np.flatnonzero(m_bx)
    if len(bx_last):
        lb = bx_last[-1]
        st.base_x = int(vs[lb] & 0x7FF) + int(inc[pv > ps[lb]].sum())
        st.base_p = int((vs[lb] >> 11) & 1)
    elif st.base_x >= 0:
        st.base_x += int(inc.sum())

    # ---- drop event words that cannot be decoded: before the row / time base / vector base is
    # known (a stream cut in the middle), and vectors with an empty mask (no event) -----------
    keep = None if ok_all else (y_e >= 0) & (t_e >= 0)
    if len(vpos) and (not vec_ok.all() or not cnt_v.all()):
        keep = np.ones(m, dtype=bool) if keep is None else keep
        keep[vpos[~vec_ok | (cnt_v == 0)]] = False
    if keep is not None:
        isv = np.zeros(m, dtype=bool)
        isv[vpos] = True
        lost = ~keep
        drop_decoded(
            report,
            MISSING_STATE,
            int(np.count_nonzero(lost & ~isv)) + int(cnt_v[lost[vpos]].sum() if len(vpos) else 0),
        )
        x_e, y_e, t_e, p_e = x_e[keep], y_e[keep], t_e[keep], p_e[keep]
        if len(vpos):
            kv = keep[vpos]
            vm, cnt_v = vm[kv], cnt_v[kv]
            vpos = np.flatnonzero(isv[keep])
        m = len(x_e)

    if not len(vpos):
        ev = new_events(m)
        ev["x"], ev["y"], ev["t"], ev["p"] = x_e, y_e, t_e, p_e
        return ev

    # ---- expand the vectors: one event per set bit -----------------------------------------
    # output position of each event word = its index + the extra events of earlier vectors
    extra = cnt_v - 1
    cum_extra = np.concatenate(([0], np.cumsum(extra)))
    seg_len = np.diff(np.concatenate(([0], vpos + 1, [m])))
    dst = np.arange(m) + np.repeat(cum_extra, seg_len)
    total = m + int(cum_extra[-1])
    # the further events of each vector (rank 1, 2, ...) come right after its first one
    owner_v = np.repeat(np.arange(len(vpos)), extra)
    rank = np.arange(len(owner_v)) - np.repeat(cum_extra[:-1], extra) + 1
    at = dst[vpos][owner_v] + rank
    # event word of each output event, then one gather per field
    owner = np.empty(total, dtype=np.int64)
    owner[dst] = np.arange(m)
    owner[at] = vpos[owner_v]
    x_e[vpos] += NTH_BIT[vm, 0]  # a vector's first event: its lowest set bit
    xo = x_e[owner]
    vmo = vm[owner_v]
    xo[at] += NTH_BIT[vmo, rank] - NTH_BIT[vmo, 0]
    ev = new_events(total)
    ev["x"], ev["y"], ev["t"], ev["p"] = xo, y_e[owner], t_e[owner], p_e[owner]
    return ev


class Evt3Stream(PropheseeRawStream):
    name = "evt3"
    word_dtype = "<u2"
    new_state = Evt3State
    decode = staticmethod(decode_words)


# ---------------------------------------------------------------------------------------------
# Encoder


def encode_words(ev: np.ndarray) -> np.ndarray:
    """Encode events (non-decreasing ``t >= 0``) as EVT 3.0 words.

    Runs of events with the same (t, y, p) and increasing x are packed into VECT_12 / VECT_8
    words (one VECT_BASE_X per run of contiguous 12-pixel windows); lone events use EVT_ADDR_X.
    TIME_HIGH words are repeated (from t = 0 on, every <= 2047 steps of 4096 us) so that the
    decoder can unwrap the 24-bit time base after any gap, absolute timestamps included.
    """
    n = len(ev)
    if n == 0:
        return np.zeros(0, dtype="<u2")
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    t = ev["t"].astype(np.int64)
    p = ev["p"].astype(np.int64)
    if x.max() > 2047 or y.max() > 2047:
        raise ValueError("EVT 3.0 coordinates must be < 2048")
    check_sorted_time(ev, "EVT 3.0")

    # segments: consecutive events sharing (t, y, p) with strictly increasing x
    new_seg = np.ones(n, dtype=bool)
    new_seg[1:] = (t[1:] != t[:-1]) | (y[1:] != y[:-1]) | (p[1:] != p[:-1]) | (x[1:] <= x[:-1])
    seg = np.cumsum(new_seg) - 1
    seg_x0 = x[new_seg][seg]
    win = (x - seg_x0) // 12
    # groups: (segment, 12-pixel window)
    new_grp = new_seg.copy()
    new_grp[1:] |= win[1:] != win[:-1]
    gstart = np.flatnonzero(new_grp)
    g = len(gstart)
    gid = np.cumsum(new_grp) - 1
    gcount = np.diff(np.append(gstart, n))
    gbase = seg_x0[gstart] + 12 * win[gstart]
    gmask = np.zeros(g, dtype=np.int64)
    np.add.at(gmask, gid, 1 << (x - gbase[gid]))
    gseg = seg[gstart]
    gwin = win[gstart]
    is_vec = gcount >= 2
    cont = np.zeros(g, dtype=bool)  # continues the previous group's VECT_12 without a new base
    cont[1:] = (gseg[1:] == gseg[:-1]) & (gwin[1:] == gwin[:-1] + 1) & is_vec[1:] & is_vec[:-1]
    next_cont = np.append(cont[1:], False)
    use_v8 = is_vec & (gmask < 256) & ~next_cont
    need_base = is_vec & ~cont

    gt = t[gstart]
    gy = y[gstart]
    gp = p[gstart]
    th_full = gt >> 12
    tl = gt & 0xFFF
    # the time base starts at 0; extra ("keep-alive") TIME_HIGH words make consecutive ones
    # differ by at most 2047 so that every wrap of the 12-bit TIME_HIGH can be unwrapped
    prev_th = np.append(0, th_full[:-1])
    prev_tl = np.append(-1, tl[:-1])
    prev_y = np.append(-1, gy[:-1])
    emit_th = th_full != prev_th
    emit_th[0] = True
    emit_tl = emit_th | (tl != prev_tl)
    emit_y = gy != prev_y
    n_keep = np.maximum(0, (th_full - prev_th - 1) // 2047)

    # slots per group: keep-alive TH (n), TH, TL, Y, BASE, event word
    counts = np.stack(
        [n_keep, emit_th, emit_tl, emit_y, need_base, np.ones(g, dtype=bool)], axis=1
    )
    grp, slot, within = expand_slots(counts)
    total = len(grp)
    out = np.empty(total, dtype=np.int64)
    s0 = slot == 0
    out[s0] = (T_THIGH << 12) | ((prev_th[grp[s0]] + 2047 * (within[s0] + 1)) & 0xFFF)
    s = slot == 1
    out[s] = (T_THIGH << 12) | (th_full[grp[s]] & 0xFFF)
    s = slot == 2
    out[s] = (T_TLOW << 12) | tl[grp[s]]
    s = slot == 3
    out[s] = (T_ADDR_Y << 12) | gy[grp[s]]
    s = slot == 4
    out[s] = (T_BASE_X << 12) | (gp[grp[s]] << 11) | gbase[grp[s]]
    s = slot == 5
    gs = grp[s]
    single = (T_ADDR_X << 12) | (gp[gs] << 11) | x[gstart[gs]]
    vword = np.where(use_v8[gs], (T_V8 << 12) | gmask[gs], (T_V12 << 12) | gmask[gs])
    out[s] = np.where(is_vec[gs], vword, single)
    return out.astype("<u2")
