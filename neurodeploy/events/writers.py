"""Write event arrays to files; every writer round-trips exactly with its reader.

:func:`write_events` picks the format from ``format=`` or the extension (``.raw`` = EVT 3.0,
``.aedat`` = AEDAT 2.0, ``.aedat4``, ``.dat``, ``.bin`` = N-MNIST, ``.es``, ``.npy``, ``.npz``,
``.h5``/``.hdf5``). Events use our top-left origin; writers of bottom-up formats (AEDAT 2.0,
Event Stream) convert rows. Streaming formats with relative or wrapped time (EVT 2.0/3.0, DAT,
N-MNIST, AEDAT 2.0, Event Stream) need non-decreasing timestamps and say so otherwise.

What each format can hold (a ValueError says when the events do not fit):

==========  ======================================================  ==========================
format      coordinates                                             timestamps
==========  ======================================================  ==========================
evt3/evt2   x, y < 2048                                             >= 0, non-decreasing
dat         x, y < 16384                                            32-bit, wrap unwrapped
nmnist      x, y < 256, y != 240                                    overflow markers past 2^23
aedat2      DVS128: < 128; DAVIS: x < 1024, y < 512                 32-bit, wrap unwrapped
aedat3      x, y < 32768                                            63-bit (overflow field)
aedat4      x, y < 32768                                            int64
es          x, y < 65536                                            >= 0, non-decreasing
npy/npz/h5  any                                                     any
==========  ======================================================  ==========================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .formats import aedat2, aedat3, aedat4, arrays, dat, eventstream, evt2, evt3, hdf5, nmnist
from .formats.prophesee_header import format_header_lines
from .readers import normalize_sensor_size
from .types import as_events

_EXTENSIONS = {
    ".raw": "evt3",
    ".dat": "dat",
    ".bin": "nmnist",
    ".es": "es",
    ".aedat": "aedat2",
    ".aedat4": "aedat4",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
WRITE_FORMATS = ("evt3", "evt2", "dat", "nmnist", "es", "aedat2", "aedat3", "aedat4", "npy",
                 "npz", "hdf5")


def _prepare(events, sensor_size) -> tuple[np.ndarray, tuple[int, int, int]]:
    ev = as_events(events)
    if len(ev) and ev["p"].view(np.uint8).max() > 1:
        raise ValueError("polarity must be 0 or 1")
    size = normalize_sensor_size(sensor_size)
    if size is None:
        if len(ev) == 0:
            raise ValueError("sensor_size is needed to write an empty event array")
        size = (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1, 2)
    return ev, size


def _write(path, data: bytes) -> Path:
    path = Path(path)
    path.write_bytes(data)
    return path


def _raw_header(evt: str, size) -> bytes:
    w, h = size[0], size[1]
    fmt = "EVT3" if evt == "3.0" else "EVT2"
    return format_header_lines(
        [
            ("evt", evt),
            ("format", f"{fmt};height={h};width={w}"),
            ("geometry", f"{w}x{h}"),
            ("integrator_name", "neurodeploy"),
            ("end", ""),
        ]
    ).replace(b"% end \n", b"% end\n")


def write_evt3(path, events, sensor_size=None) -> Path:
    """Prophesee EVT 3.0 ``.raw`` (header with geometry, vectorised words)."""
    ev, size = _prepare(events, sensor_size)
    words = evt3.encode_words(ev)
    return _write(path, _raw_header("3.0", size) + words.tobytes())


def write_evt2(path, events, sensor_size=None) -> Path:
    """Prophesee EVT 2.0 ``.raw``."""
    ev, size = _prepare(events, sensor_size)
    words = evt2.encode_words(ev)
    return _write(path, _raw_header("2.0", size) + words.tobytes())


def write_dat(path, events, sensor_size=None) -> Path:
    """Prophesee DAT (Version 2, Width/Height in the header, EventCD records)."""
    ev, size = _prepare(events, sensor_size)
    return _write(path, dat.encode(ev, size))


def write_nmnist(path, events, sensor_size=None) -> Path:
    """N-MNIST ``.bin`` (the sensor size is not stored)."""
    ev, _ = _prepare(events, sensor_size)
    return _write(path, nmnist.encode(ev))


def write_es(path, events, sensor_size=None) -> Path:
    """Event Stream 2.0.0, DVS type (rows stored bottom-up)."""
    ev, size = _prepare(events, sensor_size)
    return _write(path, eventstream.encode(ev, size))


def write_aedat2(path, events, sensor_size=None, layout: str | None = None) -> Path:
    """jAER AEDAT 2.0 (DVS128 layout for 128x128 sensors, DAVIS otherwise; rows bottom-up)."""
    ev, size = _prepare(events, sensor_size)
    return _write(path, aedat2.encode(ev, size, layout=layout))


def write_aedat3(path, events, sensor_size=None) -> Path:
    """AEDAT 3.1 polarity-event packets."""
    ev, size = _prepare(events, sensor_size)
    return _write(path, aedat3.encode(ev, size))


def write_aedat4(path, events, sensor_size=None) -> Path:
    """AEDAT 4.0, one uncompressed event stream (readable with the ``aedat`` package)."""
    ev, size = _prepare(events, sensor_size)
    return _write(path, aedat4.encode(ev, size))


def write_npy(path, events, sensor_size=None) -> Path:
    """Structured ``.npy`` of :data:`EVENT_DTYPE` (no sensor size stored)."""
    ev, _ = _prepare(events, sensor_size)
    path = Path(path)
    arrays.encode_npy(path, ev)
    return path


def write_npz(path, events, sensor_size=None, compressed: bool = False) -> Path:
    """``.npz`` with ``events`` and ``sensor_size`` members."""
    ev, size = _prepare(events, sensor_size)
    path = Path(path)
    arrays.encode_npz(path, ev, size, compressed=compressed)
    return path


def write_hdf5(path, events, sensor_size=None, compression: str | None = None) -> Path:
    """HDF5 with a compound ``events`` dataset and ``sensor_size`` attributes."""
    ev, size = _prepare(events, sensor_size)
    path = Path(path)
    hdf5.encode(path, ev, size, compression=compression)
    return path


_WRITERS = {
    "evt3": write_evt3,
    "evt2": write_evt2,
    "dat": write_dat,
    "nmnist": write_nmnist,
    "es": write_es,
    "aedat2": write_aedat2,
    "aedat3": write_aedat3,
    "aedat4": write_aedat4,
    "npy": write_npy,
    "npz": write_npz,
    "hdf5": write_hdf5,
}


def write_events(path, events, sensor_size=None, *, format: str | None = None, **options) -> Path:
    """Write ``events`` to ``path`` in ``format`` (default: from the extension).

    ``sensor_size`` defaults to the largest coordinate + 1. ``options`` go to the format's
    writer (``compressed`` for npz, ``compression`` for HDF5, ``layout`` for AEDAT 2.0).
    """
    path = Path(path)
    fmt = format or _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format from {path.name!r}: pass format=")
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(WRITE_FORMATS)}")
    return _WRITERS[fmt](path, events, sensor_size, **options)
