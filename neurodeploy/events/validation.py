"""Counting validation of event arrays: drop what is invalid, never silently.

:class:`Validator` is stateful so that a stream read in chunks is judged exactly as if it had been
read whole (the running maximum timestamp carries over from chunk to chunk). Each dropped event is
counted once, under the first reason that applies, in this order:

1. ``bad_polarity``: ``p`` not 0 or 1;
2. ``out_of_sensor``: ``x >= width`` or ``y >= height`` (or, for formats stored with a bottom-left
   origin, a stored row that does not fit the sensor height);
3. ``time_backwards``: ``t`` smaller than the largest earlier timestamp (only with
   ``time_order="drop"``).

``time_order`` decides what happens to timestamps that go backwards:

* ``"keep"`` (readers' default): keep them as decoded, count them as the anomaly
  ``time_backwards_kept``. This keeps a file's literal content (e.g. the README's EVT 3.0
  reference values).
* ``"drop"``: drop them (reason ``time_backwards``); the output is then non-decreasing.
* ``"clamp"``: raise them to the running maximum (anomaly ``time_clamped``), like faery.
"""

from __future__ import annotations

import numpy as np

from .types import (
    BAD_POLARITY,
    EVENT_DTYPE,
    OUT_OF_SENSOR,
    TIME_BACKWARDS,
    TIME_BACKWARDS_KEPT,
    TIME_CLAMPED,
    DropReport,
    SensorSize,
)

TIME_ORDERS = ("keep", "drop", "clamp")


class Validator:
    """Validate consecutive chunks of one stream.

    ``sensor_size`` may be None (unknown geometry): then no ``out_of_sensor`` check is made.
    ``flip_height``: the stored rows have a bottom-left origin and are converted to top-left with
    ``y = flip_height - 1 - y`` (a stored row ``>= flip_height`` is out of sensor).
    ``check_polarity=False`` skips the polarity test for formats whose polarity is a single bit.
    """

    def __init__(
        self,
        sensor_size: SensorSize | None,
        report: DropReport,
        *,
        time_order: str = "keep",
        flip_height: int | None = None,
        check_polarity: bool = True,
    ):
        if time_order not in TIME_ORDERS:
            raise ValueError(f"time_order must be one of {TIME_ORDERS}, got {time_order!r}")
        self.sensor_size = sensor_size
        self.report = report
        self.time_order = time_order
        self.flip_height = flip_height
        self.check_polarity = check_polarity
        self.last_t: int | None = None

    def __call__(self, ev: np.ndarray) -> np.ndarray:
        n = len(ev)
        rep = self.report
        rep.n_read += n
        if n == 0:
            return ev
        keep = None
        if self.check_polarity:
            bad = ev["p"].view(np.uint8) > 1
            nbad = int(np.count_nonzero(bad))
            if nbad:
                rep.drop(BAD_POLARITY, nbad)
                keep = ~bad
        if self.flip_height is not None:
            y_stored = ev["y"]
            outside = y_stored >= self.flip_height
            if self.sensor_size is not None:
                outside |= ev["x"] >= self.sensor_size[0]
            ev = ev.copy()
            ev["y"] = np.where(outside, 0, self.flip_height - 1 - y_stored.astype(np.int32))
            keep = _count_and_combine(rep, keep, outside)
        elif self.sensor_size is not None:
            w, h = self.sensor_size[0], self.sensor_size[1]
            outside = (ev["x"] >= w) | (ev["y"] >= h)
            keep = _count_and_combine(rep, keep, outside)
        if keep is not None:
            ev = ev[keep]
        if len(ev):
            ev = self._time(ev)
        rep.n_used += len(ev)
        return ev

    def _time(self, ev: np.ndarray) -> np.ndarray:
        t = ev["t"]
        prev = self.last_t
        if (prev is None or t[0] >= prev) and not (t[1:] < t[:-1]).any():
            self.last_t = int(t[-1])  # already non-decreasing: the common case, one pass
            return ev
        run = np.maximum.accumulate(t)
        if prev is not None and run[0] < prev:
            np.maximum(run, prev, out=run)
        # exclusive running maximum: the largest timestamp before each event
        before = np.empty_like(run)
        before[1:] = run[:-1]
        before[0] = prev if prev is not None else t[0]
        back = t < before
        nback = int(np.count_nonzero(back))
        self.last_t = int(run[-1])
        if not nback:
            return ev
        if self.time_order == "keep":
            self.report.note(TIME_BACKWARDS_KEPT, nback)
            return ev
        if self.time_order == "drop":
            self.report.drop(TIME_BACKWARDS, nback)
            return ev[~back]
        self.report.note(TIME_CLAMPED, nback)
        ev = ev.copy()
        ev["t"] = run
        return ev


def _count_and_combine(rep: DropReport, keep, outside) -> np.ndarray | None:
    if keep is not None:
        outside = outside & keep
    nout = int(np.count_nonzero(outside))
    if not nout:
        return keep
    rep.drop(OUT_OF_SENSOR, nout)
    return ~outside if keep is None else keep & ~outside


def validate_events(
    events: np.ndarray,
    sensor_size: SensorSize | None,
    *,
    time_order: str = "drop",
    report: DropReport | None = None,
) -> tuple[np.ndarray, DropReport]:
    """Validate one in-memory array; returns ``(kept_events, report)``.

    Unlike the readers (which keep a file's literal timestamps by default), this helper drops
    timestamps that go backwards unless told otherwise, so its output is ready for code that
    needs non-decreasing time.
    """
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"validate_events expects EVENT_DTYPE, got {events.dtype}")
    report = report if report is not None else DropReport()
    kept = Validator(sensor_size, report, time_order=time_order)(events)
    return kept, report
