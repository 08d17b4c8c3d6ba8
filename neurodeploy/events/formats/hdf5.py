"""Events in HDF5 files (h5py).

Layouts read, first match wins:

1. a compound dataset ``events`` (fields ``x, y, t, p`` or their aliases);
2. a group ``events`` holding 1-D datasets ``x, y, t, p`` (the DSEC / event-camera-dataset style);
3. 1-D datasets ``x, y, t, p`` at the root;
4. a compound dataset ``CD/events`` (Prophesee's HDF5 layout, when not ECF-compressed).

Sensor size: the attribute ``sensor_size`` ``(width, height[, 2])`` or the attributes ``width`` and
``height``, looked up on the dataset/group, then on the file root; else a user-given size, else the
largest coordinate + 1. Reading is chunked (``chunk_events`` rows per slice). Origin: as stored.
The writer stores a compound ``events`` dataset (chunked, optionally gzip-compressed) with
``sensor_size`` attributes on it and on the root.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..types import DropReport, EventFileError, field_map
from ._base import FormatStream
from .arrays import columns_to_events

H5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _size_from_attrs(*objs) -> tuple[int, int, int] | None:
    for obj in objs:
        attrs = obj.attrs
        if "sensor_size" in attrs:
            size = np.asarray(attrs["sensor_size"]).ravel().tolist()
            if len(size) >= 2:
                return int(size[0]), int(size[1]), 2
        if "width" in attrs and "height" in attrs:
            return int(attrs["width"]), int(attrs["height"]), 2
    return None


class Hdf5Stream(FormatStream):
    name = "hdf5"
    check_polarity = True

    def __init__(self, path, chunk_events: int):
        super().__init__(path, chunk_events)
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise EventFileError(path, f"cannot open as HDF5: {exc}") from exc
        with f:
            layout = self._find(f)
            if layout is None:
                raise EventFileError(
                    path,
                    "no events found (looked for dataset 'events', group 'events' with x/y/t/p, "
                    "root x/y/t/p, 'CD/events')",
                )
            self.layout, self.node, self.mapping, self.n = layout
            size = _size_from_attrs(f[self.node], f)
            if size:
                self.sensor_size, self.size_source = size, "header"
        self.meta = {"layout": self.layout, "node": self.node}

    def _find(self, f):
        import h5py

        for name in ("events", "CD/events"):
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset) and obj.dtype.names:
                mapping = field_map(obj.dtype.names)
                if mapping and obj.ndim == 1:
                    return "compound", name, mapping, obj.shape[0]
        for name in ("events", "/"):
            grp = f.get(name)
            if isinstance(grp, h5py.Group):
                mapping = field_map([k for k, v in grp.items() if isinstance(v, h5py.Dataset)])
                if mapping:
                    lengths = {grp[v].shape for v in mapping.values()}
                    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
                        raise EventFileError(self.path, f"x, y, t, p in {name} differ in shape")
                    for v in mapping.values():
                        if grp[v].dtype.kind not in "iub":
                            raise EventFileError(
                                self.path, f"{name}/{v} must be integer, got {grp[v].dtype}"
                            )
                    return "columns", name, mapping, next(iter(lengths))[0]
        return None

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        import h5py

        with h5py.File(self.path, "r") as f:
            node = f[self.node]
            for s in range(0, self.n, self.chunk_events):
                e = min(self.n, s + self.chunk_events)
                if self.layout == "compound":
                    rec = node[s:e]
                    cols = {k: rec[v] for k, v in self.mapping.items()}
                else:
                    cols = {k: node[v][s:e] for k, v in self.mapping.items()}
                yield columns_to_events(cols, report)


def encode(path, ev: np.ndarray, sensor_size, compression: str | None = None) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "events",
            data=ev,
            chunks=(min(max(len(ev), 1), 1 << 16),),
            compression=compression,
            maxshape=(None,),
        )
        size = np.asarray(sensor_size, dtype=np.int64)
        ds.attrs["sensor_size"] = size
        f.attrs["sensor_size"] = size
        f.attrs["origin"] = "top-left"
        f.attrs["time_unit"] = "us"
