"""Event Stream ``.es`` (neuromorphic-paris), version 2.x, DVS type.

Header: ``"Event Stream"`` (12 bytes), version major/minor/patch (3 bytes), stream type
(1 byte, 1 = DVS), then width and height (little-endian uint16 each) -- 20 bytes in all.

Each DVS event is 5 bytes: ``(dt << 1) | is_increase`` with ``dt`` in 0..126 us since the previous
event, then x and y as little-endian uint16. Between events (never inside one) a byte 0xFF is an
overflow (adds 127 us) and 0xFE a reset (no-op). Only the other types (ATIS, color, generic...)
and versions 0/1 are refused with :class:`EventFileError`.

Origin: Event Stream puts (0, 0) at the **bottom-left** (the neuromorphic-paris tools convert DAT
with ``y_es = height - 1 - y_dat``); the reader converts to top-left with
``y = height - 1 - y_stored`` and the writer back.

Decoding: overflow/reset bytes shift the 5-byte event grid by one byte each, so the event starts
are found run by run: inside a run events sit every 5 bytes, and the run ends at the next 0xFE/0xFF
byte on that grid (located with ``searchsorted``). The Python loop runs once per run of
overflow/reset bytes, never per event; fields and timestamps are then gathered vectorised.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..types import DropReport
from ._base import DEFAULT_BLOCK_BYTES, FormatStream, check_sorted_time, count_tail, new_events

MAGIC = b"Event Stream"
HEADER_BYTES = 20
TYPE_DVS = 1
_TYPE_NAMES = {0: "generic", 1: "dvs", 2: "atis", 3: "amd", 4: "color", 5: "liquid"}


class EventStreamFile(FormatStream):
    name = "es"
    flip_y = True

    def __init__(self, path, chunk_events: int):
        super().__init__(path, chunk_events)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
        if head[:12] != MAGIC:
            raise self.error("not an Event Stream file (bad magic)")
        if len(head) < 16:
            raise self.error("truncated Event Stream header")
        major, minor, patch, typ = head[12], head[13], head[14], head[15]
        self.meta = {"version": f"{major}.{minor}.{patch}", "type": _TYPE_NAMES.get(typ, typ)}
        if major != 2:
            raise self.error(f"Event Stream version {major}.{minor}.{patch} is not supported (2.x)")
        if typ != TYPE_DVS:
            raise self.error(
                f"Event Stream type {_TYPE_NAMES.get(typ, typ)!r} is not supported (only dvs)"
            )
        if len(head) < HEADER_BYTES:
            raise self.error("truncated Event Stream header (no width/height)")
        w = int.from_bytes(head[16:18], "little")
        h = int.from_bytes(head[18:20], "little")
        self.sensor_size, self.size_source = (w, h, 2), "header"

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        block = max(DEFAULT_BLOCK_BYTES, 5 * self.chunk_events)
        t = 0
        carry = b""
        with open(self.path, "rb") as f:
            f.seek(HEADER_BYTES)
            while True:
                buf = f.read(block)
                if not buf:
                    break
                data = np.frombuffer(carry + buf, dtype=np.uint8)
                ev, used, t = decode_block(data, t)
                carry = bytes(data[used:])
                yield ev
        count_tail(report, len(carry))


def decode_block(b: np.ndarray, t0: int) -> tuple[np.ndarray, int, int]:
    """Decode complete events of ``b`` (starting in the idle state at ``t0``).

    Returns ``(events, bytes consumed, time after the consumed bytes)``; an incomplete event at
    the end is left unconsumed.
    """
    n = len(b)
    sp = np.flatnonzero(b >= 0xFE)
    by_phase = [sp[sp % 5 == r] for r in range(5)]
    # end (exclusive) of the run of consecutive special bytes that each special byte belongs to
    if len(sp):
        last_of_run = np.ones(len(sp), dtype=bool)
        last_of_run[:-1] = sp[1:] != sp[:-1] + 1
        run_id = np.cumsum(np.concatenate(([False], last_of_run[:-1])))
        run_end = (sp[last_of_run] + 1)[run_id]
    else:
        run_end = sp
    is_ff = (b == 0xFF).astype(np.int64)
    ff_cum = np.concatenate(([0], np.cumsum(is_ff)))

    starts, counts, ff_before = [], [], []
    pos = 0
    pending_ff = 0
    while pos < n:
        arr = by_phase[pos % 5]
        j = int(np.searchsorted(arr, pos))
        if j < len(arr):
            q = int(arr[j])
            k = (q - pos) // 5
        else:
            q = -1
            k = (n - pos) // 5
        if k:
            starts.append(pos)
            counts.append(k)
            ff_before.append(pending_ff)
            pending_ff = 0
        if q < 0:
            pos += 5 * k
            break
        end = int(run_end[np.searchsorted(sp, q)])
        pending_ff += int(ff_cum[end] - ff_cum[q])
        pos = end
    used = pos

    if not counts:
        return new_events(0), used, t0 + 127 * pending_ff
    counts_a = np.asarray(counts, dtype=np.int64)
    total = int(counts_a.sum())
    first = np.cumsum(counts_a) - counts_a
    within = np.arange(total) - np.repeat(first, counts_a)
    p0 = np.repeat(np.asarray(starts, dtype=np.int64), counts_a) + 5 * within
    b0 = b[p0].astype(np.int64)
    add = b0 >> 1
    add[first] += 127 * np.asarray(ff_before, dtype=np.int64)
    t = t0 + np.cumsum(add)
    ev = new_events(total)
    ev["t"] = t
    ev["p"] = b0 & 1
    ev["x"] = b[p0 + 1].astype(np.uint16) | (b[p0 + 2].astype(np.uint16) << 8)
    ev["y"] = b[p0 + 3].astype(np.uint16) | (b[p0 + 4].astype(np.uint16) << 8)
    return ev, used, int(t[-1]) + 127 * pending_ff


def encode(ev: np.ndarray, sensor_size) -> bytes:
    """Header + events (non-decreasing t >= 0; rows converted to the bottom-left origin)."""
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if w > 0xFFFF or h > 0xFFFF:
        raise ValueError("Event Stream sensor size must fit 16 bits")
    check_sorted_time(ev, "Event Stream")
    head = MAGIC + bytes([2, 0, 0, TYPE_DVS]) + w.to_bytes(2, "little") + h.to_bytes(2, "little")
    n = len(ev)
    if n == 0:
        return head
    if int(ev["y"].max()) >= h or int(ev["x"].max()) >= w:
        raise ValueError("events outside the sensor cannot be written to Event Stream")
    t = ev["t"].astype(np.int64)
    dt = np.diff(np.concatenate(([0], t)))
    n_over = dt // 127
    if int(n_over.sum()) > 64 * n + (1 << 20):
        raise ValueError(
            "Event Stream stores times relative to 0: these timestamps would need "
            f"{int(n_over.sum())} overflow bytes; subtract an offset first"
        )
    rem = dt % 127
    size = n_over + 5
    end = np.cumsum(size)
    start = end - 5
    out = np.full(int(end[-1]), 0xFF, dtype=np.uint8)
    out[start] = (rem << 1) | ev["p"].astype(np.int64)
    x = ev["x"].astype(np.int64)
    y = (h - 1) - ev["y"].astype(np.int64)
    out[start + 1] = x & 0xFF
    out[start + 2] = x >> 8
    out[start + 3] = y & 0xFF
    out[start + 4] = y >> 8
    return head + out.tobytes()

