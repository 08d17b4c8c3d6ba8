"""Event representation shared by every reader, writer and transform.

Events are a 1-D numpy structured array of :data:`EVENT_DTYPE`, fields in this order:

* ``x`` (``<u2``) column, 0 = left;
* ``y`` (``<u2``) row, 0 = **top** (every reader converts to a top-left origin, see
  :mod:`neurodeploy.events.readers` for each format's conversion);
* ``t`` (``<i8``) timestamp in microseconds;
* ``p`` (``i1``) polarity, 1 = ON (brightness increase), 0 = OFF.

This is tonic's convention, so arrays can be handed to tonic-style code unchanged.

A :class:`Recording` bundles the events with the sensor size ``(width, height, 2)`` and a
:class:`DropReport` that says how many events were read, kept, and dropped for which reason.
Nothing is ever dropped silently: every drop is counted under a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodeploy.errors import InputFileError

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "i1")])

SensorSize = tuple[int, int, int]

# Drop reasons (keys of DropReport.dropped).
OUT_OF_SENSOR = "out_of_sensor"
TIME_BACKWARDS = "time_backwards"
BAD_POLARITY = "bad_polarity"
CORRUPT_TAIL = "corrupt_tail"
MISSING_STATE = "missing_state"
INVALID_MARK = "invalid_mark"

# Anomalies: counted, but the events concerned are kept (or were never events).
TIME_BACKWARDS_KEPT = "time_backwards_kept"
TIME_CLAMPED = "time_clamped"
EVT3_TIME_LOW_BACKSTEPS = "evt3_time_low_backsteps"
TIME_WRAPS = "time_wraps"
OVERFLOW_MARKERS = "overflow_markers"
CORRUPT_TAIL_BYTES = "corrupt_tail_bytes"
TRIGGERS = "triggers"
OTHER_RECORDS = "other_records"


class EventFileError(InputFileError, ValueError):
    """An event file cannot be read: wrong magic, truncated header, unsupported variant...

    The message always names the file and the problem.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class DropReport:
    """Counts of what happened to the events of one file (or one in-memory array).

    ``n_read`` events were decoded, ``n_used`` were kept, and ``dropped[reason]`` were dropped
    for each reason, so ``n_read == n_used + total_dropped`` always holds. ``anomalies`` counts
    things that did not cost an event (timestamps kept although they go backwards, EVT 3.0
    TIME_LOW back-steps, N-MNIST overflow markers, trigger records skipped, ...).
    """

    n_read: int = 0
    n_used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def note(self, key: str, count: int = 1) -> None:
        if count:
            self.anomalies[key] = self.anomalies.get(key, 0) + int(count)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_read": self.n_read,
            "n_used": self.n_used,
            "dropped": dict(self.dropped),
            "anomalies": dict(self.anomalies),
        }

    def __str__(self) -> str:
        parts = [f"read {self.n_read}", f"used {self.n_used}"]
        parts += [f"dropped {n} ({reason})" for reason, n in sorted(self.dropped.items())]
        parts += [f"{key}: {n}" for key, n in sorted(self.anomalies.items())]
        return ", ".join(parts)


@dataclass(frozen=True, eq=False)
class Recording:
    """Events of one recording with their sensor size and drop report.

    ``sensor_size`` is ``(width, height, 2)``; ``size_source`` says where it came from
    (``"header"``, ``"user"``, ``"plugin:<name>"``, ``"chip:<name>"``, ``"format"``,
    ``"max_coordinate"``). ``format`` is the reader's format name and ``meta`` holds header
    fields worth keeping (header lines, plugin name, ...).
    """

    events: np.ndarray
    sensor_size: SensorSize
    report: DropReport = field(default_factory=DropReport)
    format: str = "array"
    size_source: str = "user"
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def width(self) -> int:
        return self.sensor_size[0]

    @property
    def height(self) -> int:
        return self.sensor_size[1]

    @property
    def duration_us(self) -> int:
        if len(self.events) == 0:
            return 0
        return int(self.events["t"].max() - self.events["t"].min())


def make_events(x, y, t, p) -> np.ndarray:
    """Build an :data:`EVENT_DTYPE` array from four equally long sequences."""
    x = np.asarray(x)
    n = len(x)
    for name, arr in (("y", y), ("t", t), ("p", p)):
        if len(arr) != n:
            raise ValueError(f"make_events: {name} has {len(arr)} entries, x has {n}")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = x
    ev["y"] = y
    ev["t"] = t
    ev["p"] = p
    return ev


_FIELD_ALIASES = {
    "x": ("x",),
    "y": ("y",),
    "t": ("t", "ts", "timestamp"),
    "p": ("p", "polarity", "on"),
}


def field_map(names) -> dict[str, str] | None:
    """Map our field names to those of a foreign structured dtype, or None if one is missing."""
    out = {}
    for ours, aliases in _FIELD_ALIASES.items():
        for alias in aliases:
            if alias in names:
                out[ours] = alias
                break
        else:
            return None
    return out


def as_events(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` as an :data:`EVENT_DTYPE` array (no copy when it already is one).

    Accepts any structured array with fields ``x, y, t, p`` (``ts``/``timestamp`` and
    ``polarity``/``on`` are accepted as aliases) in any order and integer/bool types.
    """
    arr = np.asarray(arr)
    if arr.dtype == EVENT_DTYPE:
        return arr
    names = arr.dtype.names
    mapping = field_map(names) if names else None
    if mapping is None:
        raise ValueError(
            f"expected a structured array with fields x, y, t, p; got dtype {arr.dtype}"
        )
    out = np.empty(arr.shape[0] if arr.ndim else 1, dtype=EVENT_DTYPE)
    for ours, theirs in mapping.items():
        out[ours] = arr[theirs]
    return out


def empty_events() -> np.ndarray:
    return np.empty(0, dtype=EVENT_DTYPE)


def concat_events(parts) -> np.ndarray:
    """Concatenate :data:`EVENT_DTYPE` arrays (through byte views: the packed structured dtype
    makes numpy's field-by-field copy slow)."""
    parts = [np.ascontiguousarray(p) for p in parts]
    if not parts:
        return empty_events()
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p.view(np.uint8) for p in parts]).view(EVENT_DTYPE)
