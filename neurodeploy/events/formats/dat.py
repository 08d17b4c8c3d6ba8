"""Prophesee DAT (``.dat``): ``%`` ASCII header, 2 bytes (event type, event size), 8-byte events.

Each event is two little-endian 32-bit words: the timestamp (us), then
``x = bits 13..0``, ``y = bits 27..14``, ``p = bits 31..28``. Event types 0 (Event2d, e.g. the
N-CARS files) and 12 (EventCD) are read; a polarity above 1 is dropped as ``bad_polarity``.
Version-0/1 files (no ``% Version 2`` line) have no type/size bytes.

The 32-bit timestamp wraps after 71.6 min: a decrease by more than 2^31 us is read as a wrap.
Geometry comes from ``% Width`` / ``% Height`` when present; older files (N-CARS) have none and
fall back to a user-given size, else to the largest coordinate + 1. Origin: top-left, as stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..types import DropReport
from ._base import (
    FormatStream,
    check_sorted_time,
    check_wrapping_time,
    iter_records,
    new_events,
    unwrap_counter,
)
from .prophesee_header import PropheseeHeader, format_header_lines

EVENT2D, EVENT_CD = 0, 12
RECORD = np.dtype([("ts", "<u4"), ("data", "<u4")])


class DatStream(FormatStream):
    name = "dat"
    check_polarity = True

    def __init__(self, path, chunk_events: int, header: PropheseeHeader):
        super().__init__(path, chunk_events)
        self.header = header
        self.sensor_size, self.size_source = header.geometry()
        self.meta = {"header": header.lines}
        version = header.fields.get("Version", "0")
        self.offset = header.data_offset
        self.meta["version"] = version
        if version.isdigit() and int(version) >= 2:
            with open(path, "rb") as f:
                f.seek(self.offset)
                ts = f.read(2)
            if len(ts) < 2:
                raise self.error("truncated: no event type/size bytes after the header")
            ev_type, ev_size = ts[0], ts[1]
            if ev_size != 8:
                raise self.error(f"unsupported DAT event size {ev_size} (expected 8)")
            if ev_type not in (EVENT2D, EVENT_CD):
                raise self.error(f"unsupported DAT event type {ev_type} (expected 0 or 12)")
            self.meta["event_type"] = ev_type
            self.offset += 2

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        prev_raw, wraps = None, 0
        for rec in iter_records(self.path, self.offset, 8, self.chunk_events, report, RECORD):
            t, wraps, prev_raw = unwrap_counter(rec["ts"], prev_raw, 1 << 32, wraps)
            data = rec["data"]
            ev = new_events(len(rec))
            ev["t"] = t
            ev["x"] = data & 0x3FFF
            ev["y"] = (data >> 14) & 0x3FFF
            ev["p"] = (data >> 28).astype(np.int8)
            yield ev


def encode(ev: np.ndarray, sensor_size) -> bytes:
    """Header (with Width/Height) + type/size bytes + 8-byte records."""
    if len(ev) and (int(ev["x"].max()) > 0x3FFF or int(ev["y"].max()) > 0x3FFF):
        raise ValueError("DAT coordinates must be < 16384")
    check_sorted_time(ev, "DAT")
    check_wrapping_time(ev, "DAT")
    head = format_header_lines(
        [
            ("Data file containing", "CD events"),
            ("Version", "2"),
            ("Width", str(sensor_size[0])),
            ("Height", str(sensor_size[1])),
        ]
    )
    rec = np.empty(len(ev), dtype=RECORD)
    rec["ts"] = (ev["t"].astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    rec["data"] = (
        ev["x"].astype(np.uint32)
        | (ev["y"].astype(np.uint32) << 14)
        | (ev["p"].astype(np.uint32) << 28)
    )
    return head + bytes([EVENT_CD, 8]) + rec.tobytes()
