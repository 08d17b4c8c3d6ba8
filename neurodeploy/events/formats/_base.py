"""Plumbing shared by the format modules: the stream interface, block reading, counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...jit import OptionalModule
from ..types import CORRUPT_TAIL, CORRUPT_TAIL_BYTES, EVENT_DTYPE, DropReport, EventFileError

# Bytes read per block when a format has no natural record size.
DEFAULT_BLOCK_BYTES = 1 << 22

#: Whether the EVT 3.0, EVT 2.0 and N-MNIST readers use the compiled decoders of
#: :mod:`.decode_jit`: ``None`` (default) uses them when numba is installed, unless the
#: environment sets ``NEURODEPLOY_JIT=0``; ``False`` selects the numpy decoders (same output).
USE_JIT: bool | None = None
DECODERS = OptionalModule("neurodeploy.events.formats.decode_jit")


def jit_decoders() -> ModuleType | None:
    """The compiled decoders module if it is to be used, else None (numpy decoders)."""
    return DECODERS.get(USE_JIT)


class FormatStream:
    """What a format module's ``open_stream`` returns.

    ``events(report)`` yields raw decoded :data:`EVENT_DTYPE` arrays (rows as stored: see
    ``flip_y``) of bounded size and adds format-level counts (corrupt tail, markers, ...) to
    ``report``; validation, origin conversion and re-chunking are done by the reader.
    """

    name = "?"
    #: stored rows have a bottom-left origin and must be flipped with the sensor height
    flip_y = False
    #: polarity may hold values other than 0/1 and must be checked
    check_polarity = False

    def __init__(self, path: Path, chunk_events: int):
        self.path = Path(path)
        self.chunk_events = int(chunk_events)
        self.sensor_size: tuple[int, int, int] | None = None
        self.size_source: str | None = None
        self.meta: dict[str, Any] = {}

    def events(self, report: DropReport) -> Iterator[np.ndarray]:
        raise TypeError(f"{type(self).__name__} does not decode events")

    def default_size(self, max_x: int, max_y: int) -> tuple[tuple[int, int, int], str]:
        """Sensor size when neither header, user nor hints gave one (after reading all)."""
        return (max_x + 1, max_y + 1, 2), "max_coordinate"

    def error(self, problem: str) -> EventFileError:
        return EventFileError(self.path, problem)


def iter_records(
    path: Path,
    offset: int,
    record_size: int,
    records_per_block: int,
    report: DropReport,
    dtype=np.uint8,
) -> Iterator[np.ndarray]:
    """Yield the file's records from ``offset`` on, ``records_per_block`` at a time.

    Each block is a numpy array viewed as ``dtype`` (``uint8`` blocks are shaped
    ``[n, record_size]``). Trailing bytes that do not make a whole record are counted as one
    dropped ``corrupt_tail`` event (and their byte count as the anomaly ``corrupt_tail_bytes``).
    """
    block = max(1, int(records_per_block)) * record_size
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            buf = f.read(block)  # regular files: short only at the end of the file
            whole = len(buf) - len(buf) % record_size
            if whole < len(buf):
                count_tail(report, len(buf) - whole)
                buf = buf[:whole]
            if not buf:
                return
            arr = np.frombuffer(buf, dtype=dtype)
            if dtype == np.uint8:
                arr = arr.reshape(-1, record_size)
            yield arr


def count_tail(report: DropReport, nbytes: int) -> None:
    """Count trailing bytes that do not make a whole record as one dropped event."""
    if nbytes:
        drop_decoded(report, CORRUPT_TAIL, 1)
        report.note(CORRUPT_TAIL_BYTES, nbytes)


def drop_decoded(report: DropReport, reason: str, count: int) -> None:
    """Count events dropped while decoding (before validation): they were read, then dropped."""
    if count:
        report.n_read += int(count)
        report.drop(reason, count)


def new_events(n: int) -> np.ndarray:
    return np.empty(n, dtype=EVENT_DTYPE)


def read_text_header(
    path: Path, marker: bytes, max_bytes: int = 1 << 20, end_line: str | None = None
) -> tuple[list[str], int]:
    """Read the leading lines that start with ``marker``; return (lines, data offset).

    Lines are decoded as latin-1 with the marker and line ending stripped. The header ends at
    the first line not starting with ``marker``, or right after a line equal to ``end_line``
    (compared without spaces and case). Raises :class:`EventFileError` if the header does not
    end within ``max_bytes`` (or the file).
    """
    end_key = end_line.replace(" ", "").lower() if end_line else None
    lines = []
    with open(path, "rb") as f:
        pos = 0
        while True:
            head = f.read(len(marker))
            if head != marker:
                return lines, pos
            rest = f.readline(max_bytes)
            if not rest.endswith(b"\n"):
                raise EventFileError(path, "truncated header (no end of line in the header)")
            line = (head + rest)[len(marker):].rstrip(b"\r\n")
            text = line.decode("latin-1")
            lines.append(text)
            pos = f.tell()
            if end_key is not None and text.replace(" ", "").lower() == end_key:
                return lines, pos
            if pos > max_bytes:
                raise EventFileError(path, f"header longer than {max_bytes} bytes")


def unwrap_counter(
    raw: np.ndarray, prev_raw: int | None, modulus: int, state_wraps: int
) -> tuple[np.ndarray, int, int | None]:
    """Undo the wrap-around of a free-running counter.

    A decrease by more than half the ``modulus`` between consecutive values is read as a wrap.
    Returns ``(full_values, wraps_after, last_raw)`` where ``full_values = raw + modulus *
    wraps``; ``state_wraps``/``prev_raw`` carry the state across chunks.
    """
    if len(raw) == 0:
        return raw.astype(np.int64), state_wraps, prev_raw
    r = raw.astype(np.int64)
    d = np.empty(len(r), dtype=np.int64)
    d[1:] = r[1:] - r[:-1]
    d[0] = r[0] - prev_raw if prev_raw is not None else 0
    wraps = np.cumsum(d < -(modulus // 2)) + state_wraps
    full = r + wraps * modulus
    return full, int(wraps[-1]), int(r[-1])


def expand_slots(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out variable-length output records, vectorised.

    ``counts[g, s]`` is how many output words group ``g`` emits in slot ``s`` (slots are emitted
    in order within a group, groups in order). Returns, for every output word, its group, its
    slot and its index within the slot.
    """
    n_slots = counts.shape[1]
    flat = counts.ravel().astype(np.int64)
    total = int(flat.sum())
    slot_id = np.repeat(np.arange(flat.size), flat)
    within = np.arange(total) - np.repeat(np.cumsum(flat) - flat, flat)
    return slot_id // n_slots, slot_id % n_slots, within


def check_sorted_time(ev: np.ndarray, fmt: str) -> None:
    t = ev["t"]
    if len(t) and (t[0] < 0 or np.any(t[1:] < t[:-1])):
        raise ValueError(f"the {fmt} writer needs non-negative, non-decreasing timestamps")


def check_wrapping_time(ev: np.ndarray, fmt: str, bits: int = 32) -> None:
    """Formats with a free-running ``bits``-bit timestamp: the first one must fit and no gap may
    reach half the range, or the reader could not unwrap them."""
    t = ev["t"]
    if len(t) == 0:
        return
    if int(t[0]) >= 1 << bits:
        raise ValueError(
            f"{fmt} stores {bits}-bit timestamps: the first one ({int(t[0])}) must be < 2^{bits}"
            " (subtract an offset first)"
        )
    if len(t) > 1 and int(np.max(np.diff(t))) >= 1 << (bits - 1):
        raise ValueError(
            f"{fmt}: a gap of 2^{bits - 1} us or more between events cannot be unwrapped"
        )
