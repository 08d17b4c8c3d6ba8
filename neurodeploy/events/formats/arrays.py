"""Event arrays stored as numpy ``.npy`` / ``.npz`` files.

* ``.npy``: one 1-D structured array with fields ``x, y, t, p`` (``ts``/``timestamp`` and
  ``polarity``/``on`` accepted, any order, any integer or bool types). No sensor size is stored:
  a user-given size, else the largest coordinate + 1.
* ``.npz``: either an ``events`` member (structured, as above) or four 1-D members ``x, y, t, p``;
  an optional ``sensor_size`` member ``(width, height[, polarities])``.

Both are streamed: the ``.npy`` header is parsed and the data read ``chunk_events`` rows at a time,
also from inside a (deflated or stored) ``.npz`` member, so memory stays bounded. Coordinates
outside 0..65535 are dropped as ``out_of_sensor`` and polarities other than 0/1 as
``bad_polarity``; non-integer timestamps are refused. Origin: as stored (top-left by convention).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from ..types import OUT_OF_SENSOR, DropReport, EventFileError, field_map
from ._base import FormatStream, drop_decoded, new_events


def _npy_header(fp: IO[bytes], path, member: str = "") -> tuple[tuple[int, ...], np.dtype]:
    where = f" (member {member})" if member else ""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as exc:
        raise EventFileError(path, f"bad .npy header{where}: {exc}") from exc
    if dtype.hasobject:
        raise EventFileError(path, f"object arrays are not event arrays{where}")
    return shape, dtype


def _read_rows(fp: IO[bytes], dtype: np.dtype, rows: int) -> np.ndarray:
    want = rows * dtype.itemsize
    buf = fp.read(want)
    whole = len(buf) - len(buf) % dtype.itemsize
    return np.frombuffer(buf[:whole], dtype=dtype)


def _check_int(path, name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "iub":
        raise EventFileError(path, f"field {name!r} must be integer, got {dtype}")


def columns_to_events(cols: dict[str, np.ndarray], report: DropReport) -> np.ndarray:
    """Convert x/y/t/p columns of any integer types, dropping unrepresentable coordinates."""
    x = cols["x"].astype(np.int64, copy=False)
    y = cols["y"].astype(np.int64, copy=False)
    bad = (x < 0) | (x > 0xFFFF) | (y < 0) | (y > 0xFFFF)
    p = cols["p"]
    if p.dtype.kind != "b":
        p64 = p.astype(np.int64, copy=False)
        p = np.where((p64 == 0) | (p64 == 1), p64, -1)  # -1: dropped later as bad_polarity
    n_bad = int(np.count_nonzero(bad))
    t = cols["t"]
    if n_bad:
        drop_decoded(report, OUT_OF_SENSOR, n_bad)
        keep = ~bad
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    ev = new_events(len(x))
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


class NpyStream(FormatStream):
    name = "npy"
    check_polarity = True

    def __init__(self, path, chunk_events: int):
        super().__init__(path, chunk_events)
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f, path)
            self.offset = f.tell()
        self.mapping = _structured_mapping(path, dtype, shape)
        self.dtype = dtype
        self.n = shape[0]

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.n
            while left > 0:
                rec = _read_rows(f, self.dtype, min(left, self.chunk_events))
                if len(rec) == 0:
                    break
                left -= len(rec)
                yield columns_to_events({k: rec[v] for k, v in self.mapping.items()}, report)
            if left > 0:
                drop_decoded(report, "corrupt_tail", 1)


def _structured_mapping(path, dtype: np.dtype, shape, member: str = "") -> dict[str, str]:
    where = f" (member {member})" if member else ""
    if len(shape) != 1 or dtype.names is None:
        raise EventFileError(
            path, f"expected a 1-D structured array with fields x, y, t, p{where}; "
            f"got shape {shape} dtype {dtype}"
        )
    mapping = field_map(dtype.names)
    if mapping is None:
        raise EventFileError(path, f"missing event fields{where}: has {dtype.names}")
    for theirs in mapping.values():
        _check_int(path, theirs, dtype[theirs])
    return mapping


class NpzStream(FormatStream):
    name = "npz"
    check_polarity = True

    def __init__(self, path, chunk_events: int):
        super().__init__(path, chunk_events)
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise EventFileError(path, f"not a valid .npz (zip) file: {exc}") from exc
        with zf:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            self.members = names
            if "sensor_size" in names:
                size = np.load(zf.open(names["sensor_size"])).ravel().tolist()
                if len(size) >= 2:
                    self.sensor_size = (int(size[0]), int(size[1]), 2)
                    self.size_source = "header"
            if "events" in names:
                with zf.open(names["events"]) as fp:
                    shape, dtype = _npy_header(fp, path, "events")
                self.layout = "events"
                self.mapping = _structured_mapping(path, dtype, shape, "events")
                self.dtype = dtype
                self.n = shape[0]
            else:
                mapping = field_map(list(names))
                if mapping is None:
                    raise EventFileError(
                        path, f"no 'events' member and no x, y, t, p members (has {list(names)})"
                    )
                self.layout = "columns"
                self.mapping = mapping
                lengths = set()
                self.col_dtypes = {}
                for ours, theirs in mapping.items():
                    with zf.open(names[theirs]) as fp:
                        shape, dtype = _npy_header(fp, path, theirs)
                    if len(shape) != 1:
                        raise EventFileError(path, f"member {theirs} is not 1-D: {shape}")
                    _check_int(path, theirs, dtype)
                    lengths.add(shape[0])
                    self.col_dtypes[ours] = dtype
                if len(lengths) != 1:
                    raise EventFileError(path, f"x, y, t, p members differ in length: {lengths}")
                self.n = lengths.pop()

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        with zipfile.ZipFile(self.path) as zf:
            if self.layout == "events":
                with zf.open(self.members["events"]) as fp:
                    _npy_header(fp, self.path)
                    left = self.n
                    while left > 0:
                        rec = _read_rows(fp, self.dtype, min(left, self.chunk_events))
                        if len(rec) == 0:
                            drop_decoded(report, "corrupt_tail", 1)
                            return
                        left -= len(rec)
                        cols = {k: rec[v] for k, v in self.mapping.items()}
                        yield columns_to_events(cols, report)
                return
            fps = {k: zf.open(self.members[v]) for k, v in self.mapping.items()}
            try:
                for fp in fps.values():
                    _npy_header(fp, self.path)
                left = self.n
                while left > 0:
                    rows = min(left, self.chunk_events)
                    cols = {k: _read_rows(fp, self.col_dtypes[k], rows) for k, fp in fps.items()}
                    got = min(len(c) for c in cols.values())
                    if got == 0:
                        drop_decoded(report, "corrupt_tail", 1)
                        return
                    left -= got
                    yield columns_to_events({k: c[:got] for k, c in cols.items()}, report)
            finally:
                for fp in fps.values():
                    fp.close()


def encode_npy(path, ev: np.ndarray) -> None:
    np.save(path, ev, allow_pickle=False)


def encode_npz(path, ev: np.ndarray, sensor_size, compressed: bool = False) -> None:
    save = np.savez_compressed if compressed else np.savez
    with open(path, "wb") as f:
        save(f, events=ev, sensor_size=np.asarray(sensor_size, dtype=np.int64))
