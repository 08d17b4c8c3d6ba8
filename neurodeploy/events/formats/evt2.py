"""Prophesee EVT 2.0 ``.raw``: 32-bit little-endian words after a ``%`` ASCII header.

Word type = bits 31..28:

====  =============  ======================================================================
0x0   CD_OFF         event, polarity 0: t low = bits 27..22, x = bits 21..11, y = bits 10..0
0x1   CD_ON          same, polarity 1
0x8   EVT_TIME_HIGH  bits 27..0 = t >> 6
0xA   EXT_TRIGGER    counted as ``triggers``, not an event
0xE, 0xF           OTHERS / CONTINUED: skipped
====  =============  ======================================================================

t = (TIME_HIGH << 6) | t_low (34 bits, ~4.8 h; a TIME_HIGH decreasing by more than half its range
is read as a wrap). Events before the first TIME_HIGH are dropped as ``missing_state``.
Origin: top-left, as stored. Decoding: a compiled (numba) state machine (:mod:`.decode_jit`), or
without numba (``NEURODEPLOY_JIT=0``) vectorised numpy (TIME_HIGH forward-filled by index lookup),
same output.
"""

from __future__ import annotations

import numpy as np

from ..types import MISSING_STATE, OTHER_RECORDS, TRIGGERS, DropReport
from ._base import (
    check_sorted_time,
    drop_decoded,
    expand_slots,
    jit_decoders,
    new_events,
    unwrap_counter,
)
from .prophesee_header import PropheseeRawStream

T_CD_OFF, T_CD_ON, T_TIME_HIGH, T_TRIG = 0, 1, 8, 10
TH_MOD = 1 << 28


class Evt2State:
    def __init__(self):
        self.th_raw: int | None = None
        self.th_full = -1
        self.wraps = 0


def decode_words(w: np.ndarray, st: Evt2State, report: DropReport) -> np.ndarray:
    """Decode one block of EVT 2.0 words (``<u4``) into events, updating ``st`` (compiled decoder
    when available, else :func:`decode_words_numpy`)."""
    jit = jit_decoders()
    if jit is None or len(w) == 0:
        return decode_words_numpy(w, st, report)
    ev = new_events(len(w))
    s = np.array([-1 if st.th_raw is None else st.th_raw, st.th_full, st.wraps], dtype=np.int64)
    c = np.zeros(jit.N_COUNTERS, dtype=np.int64)
    n = jit.evt2_decode(w, s, c, ev["x"], ev["y"], ev["t"], ev["p"])
    th_raw, st.th_full, st.wraps = s.tolist()
    st.th_raw = None if th_raw < 0 else th_raw
    report.note(TRIGGERS, int(c[jit.C_TRIGGERS]))
    report.note(OTHER_RECORDS, int(c[jit.C_OTHER]))
    drop_decoded(report, MISSING_STATE, int(c[jit.C_MISSING]))
    return ev if n == len(ev) else ev[:n]


def decode_words_numpy(w: np.ndarray, st: Evt2State, report: DropReport) -> np.ndarray:
    """Decode one block of EVT 2.0 words (``<u4``) into events, updating ``st``: vectorised."""
    n = len(w)
    if n == 0:
        return new_events(0)
    is_cd = w < (2 << 28)  # types 0 (CD_OFF) and 1 (CD_ON)
    wc = w[is_cd]
    pth = np.flatnonzero((w & 0xF0000000) == (T_TIME_HIGH << 28))
    n_other = n - len(wc) - len(pth)
    if n_other:
        ntrig = int(np.count_nonzero((w >> 28) == T_TRIG))
        report.note(TRIGGERS, ntrig)
        report.note(OTHER_RECORDS, n_other - ntrig)
    # TIME_HIGH in force for each CD word: the carried one, then each TIME_HIGH word's value
    # repeated over the CD words that follow it
    if len(pth):
        th_full, st.wraps, st.th_raw = unwrap_counter(
            (w[pth] & 0x0FFFFFFF).astype(np.int64), st.th_raw, TH_MOD, st.wraps
        )
        th_ext = np.concatenate(([st.th_full], th_full))
        if n_other:
            bounds = np.searchsorted(np.flatnonzero(is_cd), pth)
        else:  # every word before a TIME_HIGH word is a CD word or an earlier TIME_HIGH word
            bounds = pth - np.arange(len(pth))
        counts = np.diff(np.concatenate(([0], bounds, [len(wc)])))
        th_e = np.repeat(th_ext, counts)
        st.th_full = int(th_full[-1])
    else:
        th_e = np.full(len(wc), st.th_full, dtype=np.int64)
    if len(th_e) and th_e[0] < 0:
        ok = th_e >= 0
        drop_decoded(report, MISSING_STATE, int(np.count_nonzero(~ok)))
        wc, th_e = wc[ok], th_e[ok]
    ev = new_events(len(wc))
    th_e <<= 6
    th_e |= (wc >> 22) & 0x3F
    ev["t"] = th_e
    ev["x"] = (wc >> 11) & 0x7FF
    ev["y"] = wc & 0x7FF
    ev["p"] = wc >> 28
    return ev


class Evt2Stream(PropheseeRawStream):
    name = "evt2"
    word_dtype = "<u4"
    new_state = Evt2State
    decode = staticmethod(decode_words)


def encode_words(ev: np.ndarray) -> np.ndarray:
    """Encode events (non-decreasing ``t >= 0``, x and y < 2048) as EVT 2.0 words."""
    n = len(ev)
    if n == 0:
        return np.zeros(0, dtype="<u4")
    if int(ev["x"].max()) > 2047 or int(ev["y"].max()) > 2047:
        raise ValueError("EVT 2.0 coordinates must be < 2048")
    check_sorted_time(ev, "EVT 2.0")
    t = ev["t"].astype(np.int64)
    th = t >> 6
    # the time base starts at 0; extra TIME_HIGH words make consecutive ones differ by less than
    # half the 28-bit range, so that wraps (and absolute timestamps) can be unwrapped
    prev = np.concatenate(([0], th[:-1]))
    emit_th = th != prev
    emit_th[0] = True
    step = TH_MOD // 2 - 1
    n_keep = np.maximum(0, (th - prev - 1) // step)
    counts = np.stack([n_keep, emit_th, np.ones(n, dtype=np.int64)], axis=1)
    grp, slot, within = expand_slots(counts)
    out = np.empty(len(grp), dtype=np.int64)
    s = slot == 0
    out[s] = (T_TIME_HIGH << 28) | ((prev[grp[s]] + step * (within[s] + 1)) % TH_MOD)
    s = slot == 1
    out[s] = (T_TIME_HIGH << 28) | (th[grp[s]] % TH_MOD)
    s = slot == 2
    gs = grp[s]
    out[s] = (
        (ev["p"][gs].astype(np.int64) << 28)
        | ((t[gs] & 0x3F) << 22)
        | (ev["x"][gs].astype(np.int64) << 11)
        | ev["y"][gs].astype(np.int64)
    )
    return out.astype("<u4")
