"""Read event files: format detection, whole-file reads and bounded-memory streaming.

Entry points:

* :func:`read_events` -- a whole file as a :class:`~neurodeploy.events.types.Recording`;
* :func:`iter_chunks` -- the same events as consecutive arrays of exactly ``chunk_events`` events
  (the last one shorter), holding at most a few chunks in memory whatever the file size;
* :func:`open_events` -- an :class:`EventReader` (iterable of chunks) whose ``report``,
  ``sensor_size`` and ``meta`` can be inspected during and after iteration;
* :func:`detect_format`.

Formats (name: module with the bit-level details):

==========  ====================================================  ==============================
name        files                                                 origin conversion
==========  ====================================================  ==============================
``aedat4``  iniVation AEDAT 4.0 (``aedat`` package)               none (top-left)
``aedat3``  iniVation AEDAT 3.1 / 3.0                             3.1 none; 3.0 ``y = H-1-y``
``aedat2``  jAER AEDAT 2.0 / 1.0                                  ``y = H-1-y`` (bottom-left)
``evt2``    Prophesee EVT 2.0 ``.raw``                            none (top-left)
``evt3``    Prophesee EVT 3.0 ``.raw``                            none (top-left)
``dat``     Prophesee DAT ``.dat``                                none (top-left)
``nmnist``  N-MNIST / N-Caltech101 ``.bin``                       none (top-left)
``es``      Event Stream 2.x ``.es`` (DVS)                        ``y = H-1-y`` (bottom-left)
``npy``     numpy structured array                                none
``npz``     numpy archive (``events`` or ``x, y, t, p``)          none
``hdf5``    HDF5 (``events`` dataset/group, root ``x, y, t, p``)  none
==========  ====================================================  ==============================

Detection looks at the file's first bytes (``#!AER-DAT``, ``Event Stream``, numpy, zip and HDF5
magics, then the Prophesee ``%`` header: ``evt 2.0``/``evt 3.0``/``format EVT3`` for RAW, ``Data
file containing``/``Version`` for DAT), then at the extension (``.bin`` has no magic: N-MNIST).

Sensor size, in order: the ``sensor_size`` argument; the file's header; a hint (Prophesee plugin
name, jAER chip class, AEDAT 3 source device, N-MNIST's 34x34); else the largest coordinate + 1
after reading (reported as ``size_source == "max_coordinate"``). Events outside the sensor, with a
polarity other than 0/1, or (with ``time_order="drop"``) going back in time are dropped and
counted in the report; see :mod:`neurodeploy.events.validation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .formats import aedat2, aedat3, aedat4, arrays, dat, eventstream, evt2, evt3, hdf5, nmnist
from .formats._base import FormatStream, read_text_header
from .formats.prophesee_header import parse_prophesee_header
from .types import DropReport, EventFileError, Recording, SensorSize, concat_events
from .validation import Validator

FORMATS = ("aedat4", "aedat3", "aedat2", "evt2", "evt3", "dat", "nmnist", "es", "npy", "npz",
           "hdf5")
DEFAULT_CHUNK_EVENTS = 1 << 20
_WHOLE_READ_BLOCK = 1 << 20  # records per block in whole-file reads (cache-friendly)

_EXTENSIONS = {
    ".bin": "nmnist",
    ".dat": "dat",
    ".es": "es",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".aedat4": "aedat4",
}


def normalize_sensor_size(size) -> SensorSize | None:
    if size is None:
        return None
    vals = [int(v) for v in size]
    if len(vals) not in (2, 3) or vals[0] <= 0 or vals[1] <= 0:
        raise ValueError(f"sensor_size must be (width, height[, 2]) with positive sizes: {size}")
    return vals[0], vals[1], 2


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path`` (see the module docstring); raises EventFileError."""
    path = Path(path)
    if not path.is_file():
        raise EventFileError(path, "no such file")
    with open(path, "rb") as f:
        head = f.read(64)
    ext = path.suffix.lower()
    if not head:
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
        raise EventFileError(path, "empty file of unknown format")
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"#!AER-DAT3"):
        return "aedat3"
    if head.startswith((b"#!AER-DAT2", b"#!AER-DAT1")):
        return "aedat2"
    if head.startswith(eventstream.MAGIC):
        return "es"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head.startswith(hdf5.H5_MAGIC):
        return "hdf5"
    if ext == ".bin":
        return "nmnist"
    if head.startswith(b"%"):
        return _prophesee_kind(path, ext)
    if ext == ".aedat":
        return "aedat2"  # AEDAT 1.0/2.0 written without a header
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise EventFileError(path, f"unknown event file format (first bytes {head[:16]!r})")


def _prophesee_kind(path: Path, ext: str) -> str:
    hdr = parse_prophesee_header(path)
    if hdr.evt == "3.0":
        return "evt3"
    if hdr.evt == "2.0":
        return "evt2"
    if hdr.evt is not None:
        raise EventFileError(path, f"Prophesee EVT {hdr.evt} is not supported (EVT 2.0 and 3.0)")
    if any(k.startswith("Data") for k in hdr.fields) or "Version" in hdr.fields or ext == ".dat":
        return "dat"
    name = (hdr.plugin or "").lower()
    if "gen3" in name:
        return "evt2"  # Gen3 cameras record EVT 2.0
    if any(key in name for key in ("gen4", "imx636", "evk4")):
        return "evt3"
    raise EventFileError(
        path, "Prophesee RAW header names no EVT version; pass format='evt2' or format='evt3'"
    )


def _aedat_header(path: Path, version: str) -> tuple[list[str], int]:
    """Header lines of AEDAT 1/2/3 files (without '#') and the data offset."""
    if version != "3.1":
        # no end-of-header line in the specification; jAER (and our writer) end with this one
        return read_text_header(path, b"#", end_line="End Of ASCII Header")
    lines = []
    with open(path, "rb") as f:
        while True:
            line = f.readline(1 << 16)
            if not line.endswith(b"\n"):
                raise EventFileError(path, "truncated AEDAT 3.1 header (no #!END-HEADER)")
            if not line.startswith(b"#"):
                raise EventFileError(path, "AEDAT 3.1 header line does not start with '#'")
            text = line[1:].rstrip(b"\r\n").decode("latin-1")
            if text == "!END-HEADER":
                return lines, f.tell()
            lines.append(text)


def open_stream(
    path: Path, fmt: str, chunk_events: int, stream: int | None = None
) -> FormatStream:
    """The format module's stream object for ``path`` (header parsed, nothing decoded yet)."""
    if fmt in ("evt2", "evt3", "dat"):
        hdr = parse_prophesee_header(path)
        cls = {"evt2": evt2.Evt2Stream, "evt3": evt3.Evt3Stream, "dat": dat.DatStream}[fmt]
        return cls(path, chunk_events, hdr)
    if fmt == "nmnist":
        return nmnist.NmnistStream(path, chunk_events)
    if fmt == "es":
        return eventstream.EventStreamFile(path, chunk_events)
    if fmt == "aedat4":
        return aedat4.Aedat4Stream(path, chunk_events, stream=stream)
    if fmt in ("aedat2", "aedat3"):
        with open(path, "rb") as f:
            first = f.readline(64)
        version = first[len(b"#!AER-DAT") :].strip().decode("latin-1") if first.startswith(
            b"#!AER-DAT"
        ) else "1.0"
        if fmt == "aedat2" and version not in ("1.0", "2.0"):
            raise EventFileError(path, f"not an AEDAT 1.0/2.0 file (version line {first!r})")
        if fmt == "aedat3" and version not in ("3.0", "3.1"):
            raise EventFileError(path, f"unsupported AEDAT version {version!r} (3.0 or 3.1)")
        lines, offset = _aedat_header(path, version)
        cls = aedat2.Aedat2Stream if fmt == "aedat2" else aedat3.Aedat3Stream
        return cls(path, chunk_events, lines, offset, version)
    if fmt == "npy":
        return arrays.NpyStream(path, chunk_events)
    if fmt == "npz":
        return arrays.NpzStream(path, chunk_events)
    if fmt == "hdf5":
        return hdf5.Hdf5Stream(path, chunk_events)
    raise ValueError(f"unknown event format {fmt!r}; known: {', '.join(FORMATS)}")


class EventReader:
    """Iterate over a file's events in chunks of exactly ``chunk_events`` (the last shorter).

    After (or during) iteration, ``report`` holds the counts so far. ``sensor_size`` is known
    from the start unless the file has no geometry and none was given: then it is set when the
    iteration ends (largest coordinate + 1). Formats stored bottom-up (Event Stream, AEDAT 2.0,
    AEDAT 3.0) need the height to stream; without one, iteration raises EventFileError (use
    :func:`read_events`, which can infer it).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sensor_size=None,
        format: str | None = None,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        time_order: str = "keep",
        stream: int | None = None,
    ):
        if chunk_events <= 0:
            raise ValueError("chunk_events must be positive")
        self.path = Path(path)
        self.format = format or detect_format(self.path)
        if self.format not in FORMATS:
            raise ValueError(f"unknown event format {self.format!r}; known: {', '.join(FORMATS)}")
        self.chunk_events = int(chunk_events)
        self.time_order = time_order
        # records decoded per block: bounded whatever chunk_events is (re-chunked on output)
        block = min(max(self.chunk_events, 1 << 16), _WHOLE_READ_BLOCK)
        self._stream = open_stream(self.path, self.format, block, stream)
        user = normalize_sensor_size(sensor_size)
        self.meta = dict(self._stream.meta)
        if user is not None:
            if self._stream.sensor_size and self._stream.sensor_size != user:
                self.meta["file_sensor_size"] = self._stream.sensor_size
            self.sensor_size, self.size_source = user, "user"
        else:
            self.sensor_size = self._stream.sensor_size
            self.size_source = self._stream.size_source
        self.report = DropReport()

    def _validator(self, flip: bool = True) -> Validator:
        st = self._stream
        flip_h = None
        if st.flip_y and flip:
            if self.sensor_size is None:
                raise EventFileError(
                    self.path,
                    f"{self.format} stores rows bottom-up and its height is unknown: "
                    "pass sensor_size (or use read_events, which infers it)",
                )
            flip_h = self.sensor_size[1]
        return Validator(
            self.sensor_size,
            self.report,
            time_order=self.time_order,
            flip_height=flip_h,
            check_polarity=st.check_polarity,
        )

    def _validated(self, flip: bool = True) -> Iterator[np.ndarray]:
        self.report = DropReport()
        validate = self._validator(flip)
        max_x = max_y = -1
        for raw in self._stream.events(self.report):
            ev = validate(raw)
            if len(ev):
                if self.sensor_size is None:
                    max_x = max(max_x, int(ev["x"].max()))
                    max_y = max(max_y, int(ev["y"].max()))
                yield ev
        if self.sensor_size is None:
            self.sensor_size, self.size_source = self._stream.default_size(max_x, max_y)

    def __iter__(self) -> Iterator[np.ndarray]:
        return _rebatch(self._validated(), self.chunk_events)

    def read_all(self) -> Recording:
        """All events as one :class:`Recording`."""
        infer_flip = self._stream.flip_y and self.sensor_size is None
        ev = concat_events(list(self._validated(flip=not infer_flip)))
        if infer_flip:
            h = self.sensor_size[1]
            ev["y"] = (h - 1) - ev["y"].astype(np.int64)
        return Recording(
            events=ev,
            sensor_size=self.sensor_size,
            report=self.report,
            format=self.format,
            size_source=self.size_source,
            path=str(self.path),
            meta=self.meta,
        )


def _rebatch(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    n = 0
    for c in chunks:
        buf.append(c)
        n += len(c)
        if n < size:
            continue
        cat = concat_events(buf)
        start = 0
        while n - start >= size:
            yield cat[start : start + size]
            start += size
        rest = cat[start:]
        buf = [rest] if len(rest) else []
        n = len(rest)
    if n:
        yield concat_events(buf)


def open_events(
    path: str | Path,
    *,
    sensor_size=None,
    format: str | None = None,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    time_order: str = "keep",
    stream: int | None = None,
) -> EventReader:
    """An :class:`EventReader` over ``path`` (header parsed now, events decoded on iteration)."""
    return EventReader(
        path,
        sensor_size=sensor_size,
        format=format,
        chunk_events=chunk_events,
        time_order=time_order,
        stream=stream,
    )


def iter_chunks(
    path: str | Path,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    *,
    sensor_size=None,
    format: str | None = None,
    time_order: str = "keep",
) -> Iterator[np.ndarray]:
    """Yield the file's validated events ``chunk_events`` at a time, in bounded memory."""
    yield from EventReader(
        path,
        sensor_size=sensor_size,
        format=format,
        chunk_events=chunk_events,
        time_order=time_order,
    )


def read_events(
    path: str | Path,
    sensor_size=None,
    *,
    format: str | None = None,
    time_order: str = "keep",
    stream: int | None = None,
) -> Recording:
    """Read a whole event file (any supported format) into a :class:`Recording`.

    ``time_order``: ``"keep"`` (default: timestamps exactly as decoded, steps backwards counted),
    ``"drop"`` or ``"clamp"``; see :mod:`neurodeploy.events.validation`. ``stream`` picks an
    AEDAT 4 event stream id (default: the first).
    """
    reader = EventReader(
        path,
        sensor_size=sensor_size,
        format=format,
        chunk_events=_WHOLE_READ_BLOCK,
        time_order=time_order,
        stream=stream,
    )
    return reader.read_all()
