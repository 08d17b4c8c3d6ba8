"""Compiled (numba) decoders of the record streams: EVT 3.0, EVT 2.0 and N-MNIST.

Imported on first use by :func:`neurodeploy.events.formats._base.jit_decoders`; without numba (or
with ``NEURODEPLOY_JIT=0``) the vectorised numpy decoders of ``evt3.py``, ``evt2.py`` and
``nmnist.py`` run instead, with the same events and the same counts (checked by
``tests/test_events_decoders.py``). Each decoder is one pass over the records, a state machine
whose state (an int64 array, slots below) carries from one block to the next; EVT 3.0 first
sizes its output with a table lookup per word (:func:`evt3_max_events`). Compiled once per
machine and cached on disk (``__pycache__``): the first use in a process imports numba and
loads them (about a second), the very first use on a machine compiles them (a few seconds).

The events are written into the fields of an ``EVENT_DTYPE`` array (its ``x, y, t, p`` views);
the counters array ``c`` receives the counts of :data:`C_TRIGGERS` ... :data:`C_MARKERS`.
"""

from __future__ import annotations

import numba
import numpy as np

# EVT 3.0 state slots (-1: not known yet)
E3_Y, E3_TLOW, E3_THIGH_RAW, E3_THIGH, E3_WRAPS, E3_BASE_X, E3_BASE_P, E3_T_LAST_TL = range(8)
# EVT 2.0 state slots
E2_TH_RAW, E2_TH, E2_WRAPS = range(3)
# counters: trigger words, other skipped words, EVT 3.0 TIME_LOW back-steps, events dropped for
# missing state, N-MNIST overflow markers
C_TRIGGERS, C_OTHER, C_BACKSTEPS, C_MISSING, C_MARKERS = range(5)
N_COUNTERS = 5

_POPCOUNT = np.array([bin(m).count("1") for m in range(4096)], dtype=np.int64)
_LOWEST_BIT = np.array([(m & -m).bit_length() - 1 for m in range(4096)], dtype=np.int64)
# events an EVT 3.0 word can hold: 1 for EVT_ADDR_X, the set bits of a VECT_12 / VECT_8 mask
_EVT3_EVENTS = np.zeros(1 << 16, dtype=np.uint8)
_EVT3_EVENTS[2 << 12 : 3 << 12] = 1
_EVT3_EVENTS[4 << 12 : 5 << 12] = _POPCOUNT
_EVT3_EVENTS[5 << 12 : 6 << 12] = _POPCOUNT[np.arange(4096) & 0xFF]


@numba.njit(cache=True, nogil=True)
def evt3_max_events(w):
    """Events that the EVT 3.0 words ``w`` hold (the output size :func:`evt3_decode` needs)."""
    n = 0
    for i in range(len(w)):
        n += _EVT3_EVENTS[w[i]]
    return n


@numba.njit(cache=True, nogil=True)
def evt3_decode(w, s, c, x, y, t, p):
    """Decode EVT 3.0 words into ``x, y, t, p``; return the number of events written.

    ``s``: the ``E3_*`` state slots (updated); ``c``: counters (added to).
    """
    yy, tlow, th_raw, th, wraps = s[E3_Y], s[E3_TLOW], s[E3_THIGH_RAW], s[E3_THIGH], s[E3_WRAPS]
    bx, bp, t_last = s[E3_BASE_X], s[E3_BASE_P], s[E3_T_LAST_TL]
    tt = (th << 12) | tlow if th >= 0 and tlow >= 0 else np.int64(-1)
    trig = other = back = missing = 0
    j = 0
    for i in range(len(w)):
        v = np.int64(w[i])
        k = v >> 12
        if k == 2:  # EVT_ADDR_X
            if yy >= 0 and tt >= 0:
                x[j] = v & 0x7FF
                y[j] = yy
                t[j] = tt
                p[j] = (v >> 11) & 1
                j += 1
            else:
                missing += 1
        elif k == 0:  # EVT_ADDR_Y
            yy = v & 0x7FF
        elif k == 4 or k == 5:  # VECT_12, VECT_8
            m = v & 0xFFF if k == 4 else v & 0xFF
            if bx >= 0 and yy >= 0 and tt >= 0:
                while m:
                    x[j] = bx + _LOWEST_BIT[m]
                    y[j] = yy
                    t[j] = tt
                    p[j] = bp
                    j += 1
                    m &= m - 1
            else:
                missing += _POPCOUNT[m]
            if bx >= 0:
                bx += 12 if k == 4 else 8
        elif k == 6:  # EVT_TIME_LOW
            tlow = v & 0xFFF
            tt = (th << 12) | tlow if th >= 0 else np.int64(-1)
            if tt < t_last and t_last >= 0 and tt >= 0:
                back += 1
            t_last = tt
        elif k == 8:  # EVT_TIME_HIGH: 12-bit counter, a decrease by more than 2048 is a wrap
            r = v & 0xFFF
            if th_raw >= 0 and r - th_raw < -2048:
                wraps += 1
            th_raw = r
            th = r + (wraps << 12)
            tt = (th << 12) | tlow if tlow >= 0 else np.int64(-1)
        elif k == 3:  # VECT_BASE_X
            bx = v & 0x7FF
            bp = (v >> 11) & 1
        elif k == 10:  # EXT_TRIGGER
            trig += 1
        else:
            other += 1
    s[E3_Y], s[E3_TLOW], s[E3_THIGH_RAW], s[E3_THIGH], s[E3_WRAPS] = yy, tlow, th_raw, th, wraps
    s[E3_BASE_X], s[E3_BASE_P], s[E3_T_LAST_TL] = bx, bp, t_last
    c[C_TRIGGERS] += trig
    c[C_OTHER] += other
    c[C_BACKSTEPS] += back
    c[C_MISSING] += missing
    return j


@numba.njit(cache=True, nogil=True)
def evt2_decode(w, s, c, x, y, t, p):
    """Decode EVT 2.0 words into ``x, y, t, p`` (room for one event per word); return the number
    of events written. ``s``: the ``E2_*`` state slots (updated); ``c``: counters (added to)."""
    th_raw, th, wraps = s[E2_TH_RAW], s[E2_TH], s[E2_WRAPS]
    trig = other = missing = 0
    j = 0
    for i in range(len(w)):
        v = np.int64(w[i])
        k = v >> 28
        if k <= 1:  # CD_OFF, CD_ON
            if th >= 0:
                x[j] = (v >> 11) & 0x7FF
                y[j] = v & 0x7FF
                t[j] = (th << 6) | ((v >> 22) & 0x3F)
                p[j] = k
                j += 1
            else:
                missing += 1
        elif k == 8:  # EVT_TIME_HIGH: 28-bit counter, a decrease by more than 2^27 is a wrap
            r = v & 0x0FFFFFFF
            if th_raw >= 0 and r - th_raw < -(1 << 27):
                wraps += 1
            th_raw = r
            th = r + (wraps << 28)
        elif k == 10:  # EXT_TRIGGER
            trig += 1
        else:
            other += 1
    s[E2_TH_RAW], s[E2_TH], s[E2_WRAPS] = th_raw, th, wraps
    c[C_TRIGGERS] += trig
    c[C_OTHER] += other
    c[C_MISSING] += missing
    return j


@numba.njit(cache=True, nogil=True)
def nmnist_decode(rec, marker_y, overflow_us, c, x, y, t, p):
    """Decode N-MNIST 5-byte records (``rec``: uint8 ``[n, 5]``) into ``x, y, t, p``; return the
    number of events written. A record with ``y == marker_y`` is an overflow marker: not an
    event, it adds ``overflow_us`` to every later timestamp; ``c[C_MARKERS]`` holds the markers
    seen so far (state and count)."""
    markers = c[C_MARKERS]
    j = 0
    for i in range(rec.shape[0]):
        yy = rec[i, 1]
        if yy == marker_y:
            markers += 1
            continue
        b2 = np.int64(rec[i, 2])
        x[j] = rec[i, 0]
        y[j] = yy
        t[j] = ((b2 & 0x7F) << 16 | np.int64(rec[i, 3]) << 8 | rec[i, 4]) + markers * overflow_us
        p[j] = b2 >> 7
        j += 1
    c[C_MARKERS] = markers
    return j
