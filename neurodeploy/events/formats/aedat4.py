"""AEDAT 4.0 (iniVation DV): read with the ``aedat`` package, written uncompressed by us.

Layout: ``#!AER-DAT4.0\\r\\n``, a little-endian uint32 length and the IOHeader flatbuffer
(identifier ``IOHE``: compression, data-table position, XML description of the streams with
``sizeX``/``sizeY`` per event stream), then packets: uint32 stream id, uint32 length and a
size-prefixed flatbuffer (``EVTS`` for events: a vector of 16-byte structs ``t: int64, x: int16,
y: int16, on: bool``), LZ4- or zstd-compressed as the IOHeader says.

Reading: the ``aedat`` package (MIT, Rust) decompresses and decodes packet by packet, so memory
stays bounded. We check the magic and the IOHeader before handing the file over (a malformed
header would otherwise panic inside the extension). The first event stream is read (``stream=``
picks another id); packets of other streams (IMU, triggers, frames) are counted as
``other_records``. A truncated last packet is counted as a ``corrupt_tail``. Origin: top-left,
as stored. Sensor size from the stream's ``sizeX``/``sizeY``.

Writing: one event stream (id 0), packets of up to 65,536 events, compression NONE, no file data
table (optional in the format). The size-prefixed EventPacket flatbuffer is laid out by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..types import CORRUPT_TAIL, OTHER_RECORDS, DropReport
from ._base import FormatStream, drop_decoded, new_events

MAGIC = b"#!AER-DAT4.0\r\n"
EVENT_STRUCT = np.dtype(
    {
        "names": ["t", "x", "y", "on"],
        "formats": ["<i8", "<i2", "<i2", "u1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)
PACKET_EVENTS = 1 << 16


class Aedat4Stream(FormatStream):
    name = "aedat4"

    def __init__(self, path, chunk_events: int, stream: int | None = None):
        super().__init__(path, chunk_events)
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if head[: len(MAGIC)] != MAGIC:
                raise self.error("not an AEDAT 4.0 file (bad magic)")
            if len(head) < len(MAGIC) + 4:
                raise self.error("truncated AEDAT 4.0 header")
            n = int.from_bytes(head[len(MAGIC) :], "little")
            ioheader = f.read(n)
        if len(ioheader) < n or n < 8 or ioheader[4:8] != b"IOHE":
            raise self.error("truncated or corrupt AEDAT 4.0 IOHeader")
        import aedat

        try:
            self._decoder = aedat.Decoder(str(path))
        except (RuntimeError, OSError, ValueError) as exc:
            raise self.error(f"AEDAT 4.0 header cannot be parsed: {exc}") from exc
        streams = self._decoder.id_to_stream()
        event_ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
        self.meta = {"streams": streams}
        if stream is None:
            if not event_ids:
                raise self.error("AEDAT 4.0 file has no event stream")
            stream = event_ids[0]
        elif stream not in event_ids:
            raise self.error(f"AEDAT 4.0 stream {stream} is not an event stream ({event_ids})")
        self.stream_id = stream
        info = streams[stream]
        if info.get("width") and info.get("height"):
            self.sensor_size = (int(info["width"]), int(info["height"]), 2)
            self.size_source = "header"

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        it = iter(self._decoder)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:  # truncated or corrupt packet: stop there
                drop_decoded(report, CORRUPT_TAIL, 1)
                self.meta["tail_error"] = str(exc)
                return
            if packet.get("stream_id") != self.stream_id or "events" not in packet:
                for key in ("events", "imus", "triggers"):
                    if key in packet:
                        report.note(OTHER_RECORDS, len(packet[key]))
                if "frame" in packet:
                    report.note(OTHER_RECORDS, 1)
                continue
            src = packet["events"]
            ev = new_events(len(src))
            ev["t"] = src["t"]
            ev["x"] = src["x"]
            ev["y"] = src["y"]
            ev["p"] = src["on"]
            yield ev


def _description(width: int, height: int) -> bytes:
    p = "/mainloop/Recorder/outInfo/"
    xml = (
        '<dv version="2.0">\n'
        f'    <node name="outInfo" path="{p}">\n'
        f'        <node name="0" path="{p}0/">\n'
        '            <attr key="compression" type="string">NONE</attr>\n'
        '            <attr key="originalModuleName" type="string">neurodeploy</attr>\n'
        '            <attr key="originalOutputName" type="string">events</attr>\n'
        '            <attr key="typeDescription" type="string">Array of events (polarity ON/OFF)'
        ".</attr>\n"
        '            <attr key="typeIdentifier" type="string">EVTS</attr>\n'
        f'            <node name="info" path="{p}0/info/">\n'
        f'                <attr key="sizeX" type="int">{width}</attr>\n'
        f'                <attr key="sizeY" type="int">{height}</attr>\n'
        '                <attr key="source" type="string">neurodeploy</attr>\n'
        '                <attr key="tsOffset" type="long">0</attr>\n'
        "            </node>\n"
        "        </node>\n"
        "    </node>\n"
        "</dv>\n"
    )
    return xml.encode("utf-8")


def _ioheader(description: bytes) -> bytes:
    """IOHeader flatbuffer with only the description set (compression NONE, no data table)."""
    # 0: root uoffset -> table at 20; 4: "IOHE"; 8: vtable (3 fields, only #2 present)
    vtable = np.array([10, 8, 0, 0, 4], dtype="<u2").tobytes()
    body = (
        (20).to_bytes(4, "little")
        + b"IOHE"
        + vtable
        + b"\x00\x00"
        + (12).to_bytes(4, "little", signed=True)  # table at 20 - soffset 12 = vtable at 8
        + (4).to_bytes(4, "little")  # string at 24 + 4 = 28
        + len(description).to_bytes(4, "little")
        + description
        + b"\x00"
    )
    return body + b"\x00" * (-len(body) % 4)


def _event_packet(ev: np.ndarray) -> bytes:
    """Size-prefixed EventPacket flatbuffer (identifier EVTS) holding ``ev``."""
    n = len(ev)
    arr = np.zeros(n, dtype=EVENT_STRUCT)
    arr["t"] = ev["t"]
    arr["x"] = ev["x"]
    arr["y"] = ev["y"]
    arr["on"] = ev["p"]
    # 0: size prefix; 4: root uoffset -> table at 20; 8: "EVTS"; 12: vtable; 20: table;
    # 28: vector length; 32: 8-byte aligned elements
    head = (
        (28 + 16 * n).to_bytes(4, "little")
        + (16).to_bytes(4, "little")
        + b"EVTS"
        + np.array([6, 8, 4], dtype="<u2").tobytes()
        + b"\x00\x00"
        + (8).to_bytes(4, "little", signed=True)  # table at 20 - soffset 8 = vtable at 12
        + (4).to_bytes(4, "little")  # vector at 24 + 4 = 28
        + n.to_bytes(4, "little")
    )
    return head + arr.tobytes()


def encode(ev: np.ndarray, sensor_size) -> bytes:
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if w > 0x7FFF or h > 0x7FFF:
        raise ValueError("AEDAT 4.0 coordinates must fit int16")
    ioh = _ioheader(_description(w, h))
    out = [MAGIC, len(ioh).to_bytes(4, "little"), ioh]
    for s in range(0, len(ev), PACKET_EVENTS):
        pkt = _event_packet(ev[s : s + PACKET_EVENTS])
        out += [(0).to_bytes(4, "little"), len(pkt).to_bytes(4, "little"), pkt]
    return b"".join(out)
