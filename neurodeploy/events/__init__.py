"""Event-camera I/O: one event representation, readers and writers for the common formats,
tonic-style transforms.

>>> from neurodeploy.events import read_events, iter_chunks, write_events, to_frames
>>> rec = read_events("recording.raw")            # doctest: +SKIP
>>> rec.events["t"], rec.sensor_size, rec.report  # doctest: +SKIP
"""

from .readers import (
    DEFAULT_CHUNK_EVENTS,
    FORMATS,
    EventReader,
    detect_format,
    iter_chunks,
    open_events,
    read_events,
)
from .transforms import (
    center_crop,
    crop,
    denoise,
    downsample,
    downsample_size,
    merge_polarities,
    refractory_filter,
    to_frames,
)
from .types import (
    EVENT_DTYPE,
    DropReport,
    EventFileError,
    Recording,
    as_events,
    concat_events,
    empty_events,
    make_events,
)
from .validation import Validator, validate_events
from .writers import (
    WRITE_FORMATS,
    write_aedat2,
    write_aedat3,
    write_aedat4,
    write_dat,
    write_es,
    write_events,
    write_evt2,
    write_evt3,
    write_hdf5,
    write_nmnist,
    write_npy,
    write_npz,
)

__all__ = [
    "DEFAULT_CHUNK_EVENTS",
    "EVENT_DTYPE",
    "FORMATS",
    "WRITE_FORMATS",
    "DropReport",
    "EventFileError",
    "EventReader",
    "Recording",
    "Validator",
    "as_events",
    "center_crop",
    "concat_events",
    "crop",
    "denoise",
    "detect_format",
    "downsample",
    "downsample_size",
    "empty_events",
    "iter_chunks",
    "make_events",
    "merge_polarities",
    "open_events",
    "read_events",
    "refractory_filter",
    "to_frames",
    "validate_events",
    "write_aedat2",
    "write_aedat3",
    "write_aedat4",
    "write_dat",
    "write_es",
    "write_events",
    "write_evt2",
    "write_evt3",
    "write_hdf5",
    "write_nmnist",
    "write_npy",
    "write_npz",
]
