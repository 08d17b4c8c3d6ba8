"""Event-driven inference on event-camera recordings, window by window, in bounded memory.

A recording is read in chunks (``events.iter_chunks``; ``-`` reads a raw EVT 3.0 stream from
stdin so a live camera can be piped in). Events are cut into windows of ``window_us`` starting
every ``stride_us`` from the first event; each window becomes ``window_us / bin_us`` time steps
of event counts (the binning the model was trained with, recorded in the artifact) and is
classified by the compiled model. With the Lava backend only the events that occurred are
injected (``EventSource``), never dense frames. Memory holds one window of events plus one chunk.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .artifact import CompiledModel
from .errors import InputFileError, NeurodeployError
from .events import DropReport
from .events.types import empty_events


@dataclass
class Window:
    t_start_us: int
    n_events: int
    frames: np.ndarray  # [T, C, H, W] counts


@dataclass
class Decision:
    t_start_us: int
    t_end_us: int
    n_events: int
    prediction: int
    counts: list[int]


@dataclass
class StreamSummary:
    decisions: list[Decision] = field(default_factory=list)
    events_read: int = 0
    events_used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    span_us: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events_read / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def real_time_factor(self) -> float:
        """Recording time / processing time (> 1: faster than real time)."""
        return self.span_us * 1e-6 / self.wall_s if self.wall_s > 0 else 0.0


def bin_events(ev: np.ndarray, t0: int, n_bins: int, bin_us: int, shape) -> np.ndarray:
    c, h, w = shape
    b = (ev["t"].astype(np.int64) - t0) // bin_us
    x, y = ev["x"].astype(np.int64), ev["y"].astype(np.int64)
    p = ev["p"].astype(np.int64) if c == 2 else np.zeros(len(ev), np.int64)
    ok = (b >= 0) & (b < n_bins) & (x < w) & (y < h)
    flat = ((b[ok] * c + p[ok]) * h + y[ok]) * w + x[ok]
    return np.bincount(flat, minlength=n_bins * c * h * w).reshape(n_bins, c, h, w)


def windows(chunks: Iterable[np.ndarray], shape, window_us: int, stride_us: int,
            bin_us: int) -> Iterator[Window]:
    """Cut a chunked, time-ordered event stream into windows of binned counts."""
    if window_us % bin_us:
        raise NeurodeployError(f"window {window_us} us is not a multiple of the model's time bin "
                               f"{bin_us} us")
    n_bins = window_us // bin_us
    buf = empty_events()
    start = None
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if start is None:
            start = int(chunk["t"][0])
        buf = np.concatenate([buf, chunk]) if len(buf) else chunk
        while int(buf["t"][-1]) >= start + window_us:
            yield _emit(buf, start, n_bins, bin_us, shape, window_us)
            start += stride_us
            buf = buf[buf["t"] >= start]
    if start is not None and len(buf):
        yield _emit(buf, start, n_bins, bin_us, shape, window_us)


def _emit(buf, start, n_bins, bin_us, shape, window_us) -> Window:
    sel = buf[(buf["t"] >= start) & (buf["t"] < start + window_us)]
    return Window(start, len(sel), bin_events(sel, start, n_bins, bin_us, shape))


def evt3_stdin_chunks(stream=None, chunk_bytes: int = 1 << 20,
                      report: DropReport | None = None) -> Iterator[np.ndarray]:
    """Decode a raw EVT 3.0 byte stream (``%`` header lines, then 16-bit words) incrementally."""
    from .events.formats.evt3 import Evt3State, decode_words

    f = stream if stream is not None else sys.stdin.buffer
    report = report if report is not None else DropReport()
    pending = b""
    while True:  # header: lines starting with '%'
        line = f.readline()
        if not line:
            return
        if not line.startswith(b"%"):
            pending = line
            break
        if line.strip() == b"% end":
            break
    st = Evt3State()
    while True:
        data = pending + f.read(chunk_bytes)
        pending = b""
        if not data:
            break
        if len(data) % 2:
            data, pending = data[:-1], data[-1:]
        words = np.frombuffer(data, dtype="<u2")
        ev = decode_words(words, st, report)
        report.n_read += len(ev)
        report.n_used += len(ev)
        yield ev


def stream_file(model: CompiledModel, source: str, window_us: int, stride_us: int | None = None,
                backend: str = "native", batch: int = 32, progress=None,
                chunk_events: int = 1 << 16) -> StreamSummary:
    """Classify every window of ``source`` (a path or ``-``); returns decisions and counts."""
    from .runtime import run

    enc = model.meta.get("input_encoding") or {}
    bin_us = int(enc.get("bin_us", 0))
    if bin_us <= 0:
        raise NeurodeployError("the model records no input time bin (input_encoding.bin_us); "
                               "recompile from a checkpoint that stores it")
    stride_us = int(stride_us or window_us)
    shape = model.input_shape
    summary = StreamSummary()
    report = DropReport()
    if source == "-":
        chunks = evt3_stdin_chunks(chunk_bytes=2 * chunk_events, report=report)
        reader_report = report
    else:
        from .events import open_events

        try:
            reader = open_events(source, sensor_size=(shape[2], shape[1], 2),
                                 chunk_events=chunk_events)
        except FileNotFoundError as e:
            raise InputFileError(f"{source}: no such file") from e
        chunks = iter(reader)
        reader_report = None
    t_first = t_last = None
    pending: list[Window] = []
    t0 = time.perf_counter()

    def flush():
        if not pending:
            return
        x = np.stack([w.frames for w in pending], axis=1)  # [T, B, C, H, W]
        res = run(model, x, backend)
        for w, c, p in zip(pending, res.counts, res.predictions, strict=True):
            summary.decisions.append(Decision(w.t_start_us, w.t_start_us + window_us, w.n_events,
                                              int(p), [int(v) for v in c]))
            if progress is not None:
                progress(w)
        pending.clear()

    def tracked(it):
        nonlocal t_first, t_last
        for ch in it:
            if len(ch):
                t_first = int(ch["t"][0]) if t_first is None else t_first
                t_last = int(ch["t"][-1])
            yield ch

    for w in windows(tracked(chunks), shape, window_us, stride_us, bin_us):
        pending.append(w)
        if len(pending) >= (batch if backend == "native" else 1):
            flush()
    flush()
    summary.wall_s = time.perf_counter() - t0
    rep = reader_report if reader_report is not None else reader.report
    summary.events_read, summary.events_used = rep.n_read, rep.n_used
    summary.dropped, summary.anomalies = dict(rep.dropped), dict(rep.anomalies)
    summary.span_us = (t_last - t_first) if t_first is not None else 0
    return summary


EVENT_SUFFIXES = (".bin", ".raw", ".dat", ".aedat4", ".aedat", ".es", ".npy", ".npz", ".h5",
                  ".hdf5")


def collect_recordings(path) -> list[tuple[str, int | None]]:
    """A recording, or every recording under a folder; labels from ``<label>/`` folder names."""
    from pathlib import Path

    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in EVENT_SUFFIXES)
    else:
        raise InputFileError(f"{p}: no such file or folder")
    if not files:
        raise InputFileError(f"{p}: no event recordings ({', '.join(EVENT_SUFFIXES)}) found")
    return [(str(f), int(f.parent.name) if f.parent.name.isdigit() else None) for f in files]


def recording_frames(model: CompiledModel, path: str) -> tuple[np.ndarray, dict]:
    """The first ``T x bin`` window of a recording as ``[T, C, H, W]`` counts, and its report."""
    from .events import read_events

    enc = model.meta.get("input_encoding") or {}
    bin_us = int(enc.get("bin_us", 0))
    if bin_us <= 0:
        raise NeurodeployError("the model records no input time bin (input_encoding.bin_us)")
    c, h, w = model.input_shape
    rec = read_events(path, sensor_size=(w, h, 2))
    ev = rec.events
    t0 = int(ev["t"].min()) if len(ev) else 0
    return bin_events(ev, t0, model.time_steps, bin_us, (c, h, w)), rec.report.as_dict()
