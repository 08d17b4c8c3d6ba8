"""N-MNIST / N-Caltech101 ``.bin``: headerless 40-bit (5-byte) events.

Byte 0 = x, byte 1 = y, byte 2 = polarity (bit 7, 1 = ON) and timestamp bits 22..16,
bytes 3-4 = timestamp bits 15..0 (big-endian): a 23-bit microsecond timestamp.

**Overflow markers.** The original MATLAB/Python readers treat a record with y == 240 as a
timestamp-overflow marker: it is not an event, and 2^13 us are added to its own and all later
timestamps. We do the same (N-MNIST's 34x34 and N-Caltech101's 240x180 sensors never produce
y == 240), count the markers as the anomaly ``overflow_markers``, and the writer emits markers
when a timestamp does not fit 23 bits, so longer recordings round-trip.

Origin: top-left, as stored. Geometry: no header; a user-given size, else 34x34 (N-MNIST) when
every coordinate fits, else the largest coordinate + 1 (N-Caltech101 images vary in size).
Decoding: a compiled (numba) loop (:mod:`.decode_jit`), or without numba (``NEURODEPLOY_JIT=0``)
vectorised numpy, same output.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..types import OVERFLOW_MARKERS, DropReport
from ._base import FormatStream, check_sorted_time, iter_records, jit_decoders, new_events

MARKER_Y = 240
OVERFLOW_US = 1 << 13
TS_MAX = (1 << 23) - 1
NMNIST_SIZE = (34, 34, 2)


class NmnistStream(FormatStream):
    name = "nmnist"

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        jit = jit_decoders()
        blocks = iter_records(self.path, 0, 5, self.chunk_events, report)
        if jit is None:
            yield from decode_blocks_numpy(blocks, report)
        else:
            yield from decode_blocks_jit(blocks, report, jit)

    def default_size(self, max_x: int, max_y: int):
        if max_x < NMNIST_SIZE[0] and max_y < NMNIST_SIZE[1]:
            return NMNIST_SIZE, "format"
        return super().default_size(max_x, max_y)


def decode_blocks_jit(
    blocks: Iterator[np.ndarray], report: DropReport, jit
) -> Iterator[np.ndarray]:
    """Decode blocks of 5-byte records with the compiled decoder of :mod:`.decode_jit`."""
    c = np.zeros(jit.N_COUNTERS, dtype=np.int64)
    for rec in blocks:
        ev = new_events(len(rec))
        before = int(c[jit.C_MARKERS])
        n = jit.nmnist_decode(rec, MARKER_Y, OVERFLOW_US, c, ev["x"], ev["y"], ev["t"], ev["p"])
        report.note(OVERFLOW_MARKERS, int(c[jit.C_MARKERS]) - before)
        yield ev if n == len(ev) else ev[:n]


def decode_blocks_numpy(
    blocks: Iterator[np.ndarray], report: DropReport
) -> Iterator[np.ndarray]:
    """Decode blocks of 5-byte records (uint8 ``[n, 5]``), vectorised numpy."""
    n_markers = 0
    for rec in blocks:
        n = len(rec)
        # bytes 1..4 of each record as one big-endian word: y(8) | p(1) | timestamp(23)
        word = np.ndarray((n,), dtype=">u4", buffer=rec, offset=1, strides=(5,))
        word = word.astype(np.uint32)
        t = (word & 0x7FFFFF).astype(np.int64)
        y = word >> 24
        x = rec[:, 0]
        marker = y == MARKER_Y
        if n_markers or marker.any():
            t += (np.cumsum(marker) + n_markers) * OVERFLOW_US
            n_new = int(np.count_nonzero(marker))
            report.note(OVERFLOW_MARKERS, n_new)
            n_markers += n_new
            keep = ~marker
            word, t, y, x = word[keep], t[keep], y[keep], x[keep]
        ev = new_events(len(t))
        ev["x"] = x
        ev["y"] = y
        ev["t"] = t
        ev["p"] = (word >> 23) & 1
        yield ev


def encode(ev: np.ndarray) -> bytes:
    """Encode events (x, y < 256, y != 240, non-decreasing t >= 0) as 5-byte records."""
    n = len(ev)
    if n == 0:
        return b""
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    if x.max() > 255 or y.max() > 255:
        raise ValueError("N-MNIST .bin coordinates must be < 256")
    if np.any(y == MARKER_Y):
        raise ValueError("N-MNIST .bin cannot store y == 240 (reserved for overflow markers)")
    check_sorted_time(ev, "N-MNIST")
    t = ev["t"].astype(np.int64)
    # k overflow markers before an event shift its stored timestamp down by k * 2^13
    k = np.maximum(0, -(-(t - TS_MAX) // OVERFLOW_US))
    k = np.maximum.accumulate(k)
    if int(k[-1]) > 16 * n + (1 << 16):
        raise ValueError(
            f"N-MNIST writer: timestamps up to {int(t[-1])} us would need {int(k[-1])} overflow"
            " markers; subtract an offset first"
        )
    stored = t - k * OVERFLOW_US
    if np.any(stored < 0):
        raise ValueError("N-MNIST writer: timestamps too far apart to encode with markers")
    pos = np.arange(n) + k  # record index of each event, after the markers before it
    out = np.zeros((n + int(k[-1]), 5), dtype=np.uint8)
    out[:, 1] = MARKER_Y  # every row not overwritten below is a marker
    out[pos, 0] = x
    out[pos, 1] = y
    out[pos, 2] = (ev["p"].astype(np.int64) << 7) | (stored >> 16)
    out[pos, 3] = (stored >> 8) & 0xFF
    out[pos, 4] = stored & 0xFF
    return out.tobytes()
