"""jAER AEDAT 2.0 (and 1.0) files, from iniVation's specification.

Header: lines starting with ``#`` (``#!AER-DAT2.0`` first), ending with CRLF; the specification
has no end line, so it ends at the first line not starting with ``#`` or after a
``#End Of ASCII Header`` line (which our writer adds: a first address byte of 0x23 would otherwise
pass for a header line). Then big-endian
records: AEDAT 2.0 = int32 address + int32 timestamp (us); AEDAT 1.0 = int16 address + int32
timestamp. The address is read according to the chip class named by ``# AEChip:``:

* DVS128 (and every AEDAT 1.0 file): bit 15 external event, y = bits 14..8, x = bits 7..1,
  polarity = bit 0 (1 = ON);
* DAVIS family: bit 31 set = APS/IMU sample (not a DVS event), bit 10 set = external event,
  else y = bits 30..22, x = bits 21..12, polarity = bit 11 (1 = ON).

External events are counted as ``triggers``, APS/IMU samples as ``other_records``.

Origin: jAER puts (0, 0) at the **bottom-left**; the reader converts to top-left with
``y = height - 1 - y_stored`` (so it needs the height) and the writer converts back.
Geometry: a ``# Sensor-Size: WxH`` line (written by our writer), else the chip class (see
:data:`CHIPS`), else a user-given size, else the largest coordinate + 1 (whole-file reads only).

Timestamps are 32-bit and wrap (every 71.6 min as unsigned): a decrease by more than 2^31 us is
read as a wrap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from ..types import OTHER_RECORDS, TRIGGERS, DropReport
from ._base import (
    FormatStream,
    check_sorted_time,
    check_wrapping_time,
    iter_records,
    new_events,
    unwrap_counter,
)

# (lower-case substring of the AEChip class, address layout, (width, height)); first match wins
CHIPS: tuple[tuple[str, str, tuple[int, int]], ...] = (
    ("davis346", "davis", (346, 260)),
    ("davis240", "davis", (240, 180)),
    ("davis640", "davis", (640, 480)),
    ("davis208", "davis", (208, 192)),
    ("davis128", "davis", (128, 128)),
    ("dvs128", "dvs128", (128, 128)),
    ("davis", "davis", (0, 0)),
)
CHIP_CLASSES = {
    (128, 128): "ch.unizh.ini.jaer.chip.retina.DVS128",
    (240, 180): "eu.seebetter.ini.chips.davis.DAVIS240C",
    (346, 260): "eu.seebetter.ini.chips.davis.Davis346B",
    (640, 480): "eu.seebetter.ini.chips.davis.Davis640",
}
GENERIC_DAVIS = "eu.seebetter.ini.chips.davis.DavisBaseCamera"
SIZE_LINE = re.compile(r"^\s*Sensor-Size:\s*(\d+)\s*x\s*(\d+)", re.IGNORECASE)

REC2 = np.dtype([("addr", ">u4"), ("ts", ">u4")])
REC1 = np.dtype([("addr", ">u2"), ("ts", ">u4")])


def parse_size_line(lines: list[str]) -> tuple[int, int] | None:
    for line in lines:
        m = SIZE_LINE.match(line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


class Aedat2Stream(FormatStream):
    name = "aedat2"
    flip_y = True

    def __init__(self, path, chunk_events: int, lines: list[str], offset: int, version: str):
        super().__init__(path, chunk_events)
        self.offset = offset
        self.version = version
        self.meta = {"header": lines, "version": version}
        chip = ""
        for line in lines:
            if line.strip().startswith("AEChip:"):
                chip = line.split(":", 1)[1].strip()
        self.meta["chip"] = chip or None
        self.layout = "dvs128" if version == "1.0" else "davis"
        chip_size = None
        low = chip.lower()
        for key, layout, size in CHIPS:
            if key in low:
                self.layout = layout
                chip_size = size if size[0] else None
                break
        size = parse_size_line(lines)
        if size:
            self.sensor_size, self.size_source = (size[0], size[1], 2), "header"
        elif chip_size:
            self.sensor_size, self.size_source = (chip_size[0], chip_size[1], 2), f"chip:{chip}"
        self.meta["layout"] = self.layout

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        rec_dtype = REC1 if self.version == "1.0" else REC2
        prev_raw, wraps = None, 0
        for rec in iter_records(
            self.path, self.offset, rec_dtype.itemsize, self.chunk_events, report, rec_dtype
        ):
            t, wraps, prev_raw = unwrap_counter(rec["ts"], prev_raw, 1 << 32, wraps)
            a = rec["addr"].astype(np.int64)
            if self.layout == "dvs128":
                ext = (a >> 15) & 1 == 1
                keep = ~ext
                x, y, p = (a >> 1) & 0x7F, (a >> 8) & 0x7F, a & 1
            else:
                aps = (a >> 31) & 1 == 1
                ext = ((a >> 10) & 1 == 1) & ~aps
                report.note(OTHER_RECORDS, int(np.count_nonzero(aps)))
                keep = ~(aps | ext)
                x, y, p = (a >> 12) & 0x3FF, (a >> 22) & 0x1FF, (a >> 11) & 1
            report.note(TRIGGERS, int(np.count_nonzero(ext)))
            ev = new_events(int(np.count_nonzero(keep)))
            ev["x"], ev["y"], ev["t"], ev["p"] = x[keep], y[keep], t[keep], p[keep]
            yield ev


def encode(ev: np.ndarray, sensor_size, layout: str | None = None) -> bytes:
    """AEDAT 2.0 file: header (AEChip + Sensor-Size lines) and big-endian records.

    ``layout`` is ``"dvs128"`` or ``"davis"``; by default DVS128 for a 128x128 sensor, DAVIS
    otherwise. Rows are converted to jAER's bottom-left origin.
    """
    w, h = int(sensor_size[0]), int(sensor_size[1])
    layout = layout or ("dvs128" if (w, h) == (128, 128) else "davis")
    limits = {"dvs128": (128, 128), "davis": (1024, 512)}[layout]
    if w > limits[0] or h > limits[1]:
        raise ValueError(f"AEDAT 2.0 {layout} addresses hold at most {limits[0]}x{limits[1]}")
    if len(ev) and (int(ev["x"].max()) >= w or int(ev["y"].max()) >= h):
        raise ValueError("events outside the sensor cannot be written to AEDAT 2.0")
    check_sorted_time(ev, "AEDAT 2.0")
    check_wrapping_time(ev, "AEDAT 2.0")
    if layout == "dvs128":
        chip = CHIP_CLASSES[(128, 128)]
    elif (w, h) == (128, 128):
        chip = "eu.seebetter.ini.chips.davis.DAVIS128"
    else:
        chip = CHIP_CLASSES.get((w, h), GENERIC_DAVIS)
    lines = [
        "#!AER-DAT2.0",
        "# This is a raw AE data file created by neurodeploy",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
        f"# AEChip: {chip}",
        f"# Sensor-Size: {w}x{h}",
        "#End Of ASCII Header",  # else a first address byte of 0x23 ('#') would look like header
    ]
    head = "".join(line + "\r\n" for line in lines).encode("latin-1")
    x = ev["x"].astype(np.int64)
    y = (h - 1) - ev["y"].astype(np.int64)
    p = ev["p"].astype(np.int64)
    rec = np.empty(len(ev), dtype=REC2)
    if layout == "dvs128":
        rec["addr"] = (y << 8) | (x << 1) | p
    else:
        rec["addr"] = (y << 22) | (x << 12) | (p << 11)
    rec["ts"] = (ev["t"].astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    return head + rec.tobytes()
