"""AEDAT 3.1 (and 3.0) files (cAER), from iniVation's specification.

Header: ``#``-lines ending with CRLF; 3.1 requires ``#!AER-DAT3.1``, ``#Format: RAW``,
``#Source <id>: <device>``, ``#Start-Time: ...`` and ends with ``#!END-HEADER``. 3.0 has no end
line (the header ends at the first line not starting with ``#``).

Then event packets, little-endian: a 28-byte header (int16 eventType, int16 eventSource, int32
eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber, eventValid) followed by
``eventCapacity * eventSize`` bytes. Polarity events (type 1, 8 bytes) are read: uint32 data
(bit 0 valid mark, bit 1 polarity, y = bits 16..2, x = bits 31..17) and int32 timestamp;
t = (eventTSOverflow << 31) | timestamp. Events whose valid mark is 0 are dropped as
``invalid_mark``; packets of other types are skipped (their events counted as ``other_records``).

Origin: 3.1 is top-left (as stored); 3.0 is **bottom-left**, converted with
``y = height - 1 - y_stored``.

Geometry: a ``#Sensor-Size: WxH`` line (written by our writer: the specification lets a header
carry further ``#`` lines), ``dvsSizeX``/``dvsSizeY`` values in the header, the device named by the
``#Source`` line (see :data:`DEVICES`), else a user-given size, else the largest coordinate + 1.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import numpy as np

from ..types import INVALID_MARK, OTHER_RECORDS, DropReport
from ._base import FormatStream, count_tail, drop_decoded, new_events
from .aedat2 import parse_size_line

PACKET_HEADER = struct.Struct("<hhiiiiii")
POLARITY_EVENT = 1
POLARITY_DTYPE = np.dtype([("data", "<u4"), ("ts", "<i4")])
# (upper-case substring of the #Source description, (width, height)); first match wins
DEVICES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("DVXPLORER_LITE", (320, 240)),
    ("DVXPLORER", (640, 480)),
    ("DAVIS346", (346, 260)),
    ("DAVIS240", (240, 180)),
    ("DAVIS640", (640, 480)),
    ("DAVIS208", (208, 192)),
    ("DAVIS128", (128, 128)),
    ("DVS128", (128, 128)),
)
PACKET_EVENTS = 8192


class Aedat3Stream(FormatStream):
    name = "aedat3"

    def __init__(self, path, chunk_events: int, lines: list[str], offset: int, version: str):
        super().__init__(path, chunk_events)
        self.offset = offset
        self.version = version
        self.flip_y = version == "3.0"
        self.meta = {"header": lines, "version": version}
        sources = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Source")]
        self.meta["sources"] = sources
        size = parse_size_line(lines)
        source = "header"
        if size is None:
            text = "\n".join(lines)
            mx = re.search(r"dvsSizeX\D{0,40}?(\d+)", text)
            my = re.search(r"dvsSizeY\D{0,40}?(\d+)", text)
            if mx and my:
                size = (int(mx.group(1)), int(my.group(1)))
        if size is None and sources:
            name = sources[0].upper()
            for key, dev_size in DEVICES:
                if key in name:
                    size, source = dev_size, f"chip:{sources[0]}"
                    break
        if size:
            self.sensor_size, self.size_source = (size[0], size[1], 2), source

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        piece = max(1, self.chunk_events) * 8
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while True:
                head = f.read(PACKET_HEADER.size)
                if not head:
                    return
                if len(head) < PACKET_HEADER.size:
                    count_tail(report, len(head))
                    return
                typ, _src, size, _tsoff, overflow, capacity, number, _valid = (
                    PACKET_HEADER.unpack(head)
                )
                if size <= 0 or capacity < 0:
                    raise self.error(
                        f"corrupt packet header at byte {f.tell() - PACKET_HEADER.size}"
                        f" (eventSize {size}, eventCapacity {capacity})"
                    )
                body = capacity * size
                if typ != POLARITY_EVENT:
                    report.note(OTHER_RECORDS, number)
                    got = len(f.read(body))
                    if got < body:
                        count_tail(report, got)
                        return
                    continue
                if size != 8:
                    raise self.error(f"polarity events of {size} bytes (expected 8)")
                remaining = body
                while remaining:
                    buf = f.read(min(piece, remaining))
                    remaining -= len(buf)
                    whole = len(buf) - len(buf) % 8
                    if whole:
                        yield self._decode(np.frombuffer(buf[:whole], POLARITY_DTYPE), overflow,
                                           report)
                    if whole < len(buf) or (remaining and not buf):
                        count_tail(report, len(buf) - whole)
                        return

    @staticmethod
    def _decode(rec: np.ndarray, overflow: int, report: DropReport) -> np.ndarray:
        d = rec["data"]
        valid = (d & 1) == 1
        n_bad = len(d) - int(np.count_nonzero(valid))
        if n_bad:
            drop_decoded(report, INVALID_MARK, n_bad)
            rec, d = rec[valid], d[valid]
        ev = new_events(len(rec))
        ev["t"] = (np.int64(overflow) << 31) | rec["ts"].astype(np.int64)
        ev["x"] = d >> 17
        ev["y"] = (d >> 2) & 0x7FFF
        ev["p"] = (d >> 1) & 1
        return ev


def encode(ev: np.ndarray, sensor_size, source: str | None = None) -> bytes:
    """AEDAT 3.1 file of polarity-event packets (source id 1)."""
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if w > 0x7FFF or h > 0x7FFF:
        raise ValueError("AEDAT 3.1 coordinates must fit 15 bits")
    if len(ev) and (int(ev["x"].max()) >= w or int(ev["y"].max()) >= h):
        raise ValueError("events outside the sensor cannot be written to AEDAT 3.1")
    t = ev["t"].astype(np.int64)
    if len(t) and t.min() < 0:
        raise ValueError("AEDAT 3.1 timestamps must be non-negative")
    if source is None:
        source = next((k for k, s in DEVICES if s == (w, h)), "neurodeploy")
    lines = [
        "#!AER-DAT3.1",
        "#Format: RAW",
        f"#Source 1: {source}",
        "#Start-Time: 1970-01-01 00:00:00 (TZ+0000)",
        f"#Sensor-Size: {w}x{h}",
        "#!END-HEADER",
    ]
    out = ["".join(line + "\r\n" for line in lines).encode("latin-1")]
    data = (
        (ev["x"].astype(np.uint32) << 17)
        | (ev["y"].astype(np.uint32) << 2)
        | (ev["p"].astype(np.uint32) << 1)
        | np.uint32(1)
    )
    rec = np.empty(len(ev), dtype=POLARITY_DTYPE)
    rec["data"] = data
    rec["ts"] = (t & 0x7FFFFFFF).astype(np.int32)
    ovf = t >> 31
    # packets: at most PACKET_EVENTS events sharing one eventTSOverflow
    cut = np.flatnonzero(np.diff(ovf)) + 1 if len(ovf) else np.zeros(0, dtype=np.int64)
    bounds = [0, *cut.tolist(), len(ev)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        for s in range(a, b, PACKET_EVENTS):
            e = min(b, s + PACKET_EVENTS)
            n = e - s
            out.append(PACKET_HEADER.pack(POLARITY_EVENT, 1, 8, 4, int(ovf[s]), n, n, n))
            out.append(rec[s:e].tobytes())
    return b"".join(out)
