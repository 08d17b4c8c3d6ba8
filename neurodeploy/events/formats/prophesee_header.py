"""The ASCII ``%`` header of Prophesee RAW (EVT 2.0 / 3.0) and DAT files.

Header lines look like ``% key value`` and end with ``\\n``; the binary data starts at the first
byte that is not ``%`` (or right after a ``% end`` line, written by newer Metavision versions).

Geometry, in order of preference:

1. ``% geometry WxH`` (Metavision 2), ``% format EVT3;height=H;width=W`` (Metavision 3+), or
   ``% Width W`` / ``% Height H`` (DAT files);
2. a sensor generation recognised in ``% plugin_name`` (e.g. ``hal_plugin_gen3_fx3`` is a Gen3
   640x480 sensor, ``hal_plugin_gen41_evk3`` a Gen4.1 1280x720 one), see :data:`PLUGIN_HINTS`;
3. nothing: the reader falls back to a user-given size, else to the largest coordinate seen + 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..types import DropReport, EventFileError
from ._base import FormatStream, iter_records, read_text_header

# (substring of the plugin name, (width, height)); first match wins, so specific names first.
PLUGIN_HINTS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("genx320", (320, 320)),
    ("gen41", (1280, 720)),
    ("gen4", (1280, 720)),
    ("imx636", (1280, 720)),
    ("evk4", (1280, 720)),
    ("gen31", (640, 480)),
    ("gen3", (640, 480)),
)


@dataclass
class PropheseeHeader:
    lines: list[str]
    data_offset: int
    fields: dict[str, str] = field(default_factory=dict)
    evt: str | None = None  # "2.0", "2.1", "3.0" for RAW files
    width: int | None = None
    height: int | None = None
    plugin: str | None = None

    def geometry(self) -> tuple[tuple[int, int, int] | None, str | None]:
        if self.width and self.height:
            return (self.width, self.height, 2), "header"
        if self.plugin:
            name = self.plugin.lower()
            for key, (w, h) in PLUGIN_HINTS:
                if key in name:
                    return (w, h, 2), f"plugin:{self.plugin}"
        return None, None


def parse_prophesee_header(path: Path) -> PropheseeHeader:
    raw_lines, offset = read_text_header(path, b"%")
    lines = []
    for i, line in enumerate(raw_lines):
        lines.append(line.strip())
        if line.strip() == "end":
            # newer files: the header ends with '% end'; re-locate the offset after that line
            offset = _offset_after_lines(path, i + 1)
            break
    hdr = PropheseeHeader(lines=lines, data_offset=offset)
    for line in lines:
        key, _, value = line.partition(" ")
        key, value = key.strip(), value.strip()
        if not key:
            continue
        hdr.fields.setdefault(key, value)
        low = key.lower()
        if low == "evt":
            hdr.evt = value
        elif low == "format":
            # e.g. "EVT3;height=720;width=1280" or "EVT21"
            parts = value.split(";")
            name = parts[0].strip().upper()
            hdr.evt = {"EVT2": "2.0", "EVT21": "2.1", "EVT3": "3.0"}.get(name, hdr.evt)
            for part in parts[1:]:
                k, _, v = part.partition("=")
                if k.strip() == "width" and v.strip().isdigit():
                    hdr.width = int(v)
                elif k.strip() == "height" and v.strip().isdigit():
                    hdr.height = int(v)
        elif low == "geometry":
            m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", value)
            if m:
                hdr.width, hdr.height = int(m.group(1)), int(m.group(2))
        elif low == "width" and value.isdigit():
            hdr.width = int(value)
        elif low == "height" and value.isdigit():
            hdr.height = int(value)
        elif low == "plugin_name":
            hdr.plugin = value
    return hdr


def _offset_after_lines(path: Path, n_lines: int) -> int:
    with open(path, "rb") as f:
        for _ in range(n_lines):
            if not f.readline().endswith(b"\n"):
                raise EventFileError(path, "truncated header")
        return f.tell()


def format_header_lines(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"% {k} {v}\n".encode("latin-1") for k, v in pairs)


class PropheseeRawStream(FormatStream):
    """A Prophesee ``.raw`` file: a text header, then little-endian words of ``word_dtype``
    decoded chunk by chunk by ``decode(words, state, report)``, the decoder state (``new_state()``)
    carried across chunks so that streaming equals a whole-file read."""

    word_dtype = "<u2"

    def __init__(self, path, chunk_events: int, header: PropheseeHeader):
        super().__init__(path, chunk_events)
        self.header = header
        self.sensor_size, self.size_source = header.geometry()
        self.meta = {"header": header.lines, "plugin": header.plugin}

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        st = self.new_state()
        size = np.dtype(self.word_dtype).itemsize
        for words in iter_records(self.path, self.header.data_offset, size, self.chunk_events,
                                  report, dtype=self.word_dtype):
            yield self.decode(words, st, report)
