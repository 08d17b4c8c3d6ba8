"""Pure, vectorised transforms of :data:`EVENT_DTYPE` arrays, with tonic's semantics.

Every function returns a new array and leaves its input alone. Where our result differs from
tonic's on an edge case, the docstring says so (tonic initialises its per-pixel memories as if
every pixel had fired at t = 0, which makes the first events of a recording pass or fail by
accident; we treat a pixel that has not fired as silent).
"""

from __future__ import annotations

import numpy as np

from .types import EVENT_DTYPE


def _check(events: np.ndarray) -> np.ndarray:
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"expected EVENT_DTYPE events, got {events.dtype}")
    return events


def crop(events: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Keep events inside the box ``[x0, x0+width) x [y0, y0+height)``, shifted to its origin."""
    ev = _check(events)
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    keep = (x >= x0) & (x < x0 + width) & (y >= y0) & (y < y0 + height)
    out = ev[keep]
    out["x"] = x[keep] - x0
    out["y"] = y[keep] - y0
    return out


def center_crop(events: np.ndarray, sensor_size, size) -> np.ndarray:
    """tonic's ``CenterCrop``: a ``size = (width, height)`` box centred on the sensor."""
    w, h = int(size[0]), int(size[1])
    x0 = (int(sensor_size[0]) - w) // 2
    y0 = (int(sensor_size[1]) - h) // 2
    return crop(events, x0, y0, w, h)


def downsample(
    events: np.ndarray, spatial_factor: float | tuple[float, float] = 0.5, time_factor: float = 1.0
) -> np.ndarray:
    """tonic's ``Downsample``: ``x, y`` multiplied by ``spatial_factor`` and floored, ``t`` by
    ``time_factor`` (floored). The new sensor size is ``floor(old * spatial_factor)``, at least
    1 -- :func:`downsample_size` computes it."""
    ev = _check(events)
    fx, fy = (spatial_factor, spatial_factor) if np.isscalar(spatial_factor) else spatial_factor
    out = ev.copy()
    out["x"] = np.floor(ev["x"] * float(fx)).astype(np.int64)
    out["y"] = np.floor(ev["y"] * float(fy)).astype(np.int64)
    if time_factor != 1.0:
        out["t"] = np.floor(ev["t"] * float(time_factor)).astype(np.int64)
    return out


def downsample_size(sensor_size, spatial_factor: float | tuple[float, float] = 0.5):
    fx, fy = (spatial_factor, spatial_factor) if np.isscalar(spatial_factor) else spatial_factor
    return (
        max(1, int(np.floor(sensor_size[0] * fx))),
        max(1, int(np.floor(sensor_size[1] * fy))),
        sensor_size[2] if len(sensor_size) > 2 else 2,
    )


def merge_polarities(events: np.ndarray) -> np.ndarray:
    """tonic's ``MergePolarities``: every polarity set to 0 (use one channel in frames)."""
    out = _check(events).copy()
    out["p"] = 0
    return out


def _pixel_keys(ev: np.ndarray) -> tuple[np.ndarray, int]:
    width = int(ev["x"].max()) + 3  # room for the x + 1 neighbour without wrapping rows
    return (ev["y"].astype(np.int64) + 1) * width + ev["x"].astype(np.int64) + 1, width


def refractory_filter(events: np.ndarray, refractory_period: int = 1000) -> np.ndarray:
    """tonic's ``RefractoryPeriod``: drop an event if the previous event *at the same pixel*
    (kept or not, in stream order) is at most ``refractory_period`` us older.

    Difference from tonic: a pixel's first event is always kept (tonic drops it when t == 0).
    """
    ev = _check(events)
    n = len(ev)
    if n == 0:
        return ev.copy()
    key, _ = _pixel_keys(ev)
    order = np.argsort(key, kind="stable")
    k = key[order]
    t = ev["t"][order]
    drop_sorted = np.zeros(n, dtype=bool)
    drop_sorted[1:] = (k[1:] == k[:-1]) & (t[1:] - t[:-1] <= refractory_period)
    drop = np.empty(n, dtype=bool)
    drop[order] = drop_sorted
    return ev[~drop]


def denoise(events: np.ndarray, filter_time: int = 10_000) -> np.ndarray:
    """tonic's ``Denoise`` (background-activity filter): keep an event only if one of its four
    neighbours (left, right, up, down) had an event, earlier in the stream, less than
    ``filter_time`` us before it.

    Difference from tonic: a neighbour that has not fired yet does not count as recent (tonic
    treats it as having fired at t = 0, so everything in the first ``filter_time`` us passes).
    """
    ev = _check(events)
    n = len(ev)
    if n == 0:
        return ev.copy()
    key, width = _pixel_keys(ev)
    uniq, dense = np.unique(key, return_inverse=True)
    idx = np.arange(n, dtype=np.int64)
    combined = dense.astype(np.int64) * n + idx
    order = np.argsort(combined, kind="stable")
    comb_sorted = combined[order]
    dense_sorted = dense[order]
    t = ev["t"]
    t_sorted = t[order]
    keep = np.zeros(n, dtype=bool)
    for off in (-1, 1, -width, width):
        nk = key + off
        pos_u = np.searchsorted(uniq, nk)
        exists = (pos_u < len(uniq)) & (uniq[np.minimum(pos_u, len(uniq) - 1)] == nk)
        nd = np.where(exists, pos_u, 0)
        # last event at that neighbour before this one in stream order
        pos = np.searchsorted(comb_sorted, nd * n + idx) - 1
        found = exists & (pos >= 0)
        found &= dense_sorted[np.maximum(pos, 0)] == nd
        recent = found & (t - t_sorted[np.maximum(pos, 0)] < filter_time)
        keep |= recent
    return ev[keep]


def to_frames(
    events: np.ndarray,
    sensor_size,
    *,
    n_time_bins: int | None = None,
    time_window: int | None = None,
    event_count: int | None = None,
    include_incomplete: bool = False,
    dtype=np.int32,
) -> np.ndarray:
    """Count events per pixel and polarity into frames shaped ``[T, C, H, W]``.

    Exactly one of:

    * ``n_time_bins``: ``T`` equal time bins spanning the first to the last timestamp (every
      event lands in a bin; tonic floors the bin width and may lose the last microseconds);
    * ``time_window``: bins of ``time_window`` us from the first timestamp; only full windows
      unless ``include_incomplete`` (then the last, partial window too);
    * ``event_count``: bins of ``event_count`` consecutive events; only full bins unless
      ``include_incomplete``.

    ``C = sensor_size[2]``: 2 (OFF in channel 0, ON in 1) or 1 (polarities merged). Events
    outside the sensor are ignored. Timestamps should be non-decreasing (as tonic assumes).
    """
    ev = _check(events)
    if sum(v is not None for v in (n_time_bins, time_window, event_count)) != 1:
        raise ValueError("give exactly one of n_time_bins, time_window, event_count")
    w, h = int(sensor_size[0]), int(sensor_size[1])
    c = int(sensor_size[2]) if len(sensor_size) > 2 else 2
    if c not in (1, 2):
        raise ValueError(f"sensor_size[2] must be 1 or 2 channels, got {c}")
    n = len(ev)
    t = ev["t"].astype(np.int64)
    if n_time_bins is not None:
        if n_time_bins <= 0:
            raise ValueError("n_time_bins must be positive")
        n_bins = int(n_time_bins)
        if n:
            t0 = int(t.min())
            span = int(t.max()) - t0 + 1
            b = ((t - t0) * n_bins) // span
        else:
            b = t
    elif time_window is not None:
        if time_window <= 0:
            raise ValueError("time_window must be positive")
        if n:
            t0 = int(t.min())
            d = int(t.max()) - t0
            n_bins = d // time_window + (1 if include_incomplete else 0)
            b = (t - t0) // time_window
        else:
            n_bins, b = 0, t
    else:
        if event_count <= 0:
            raise ValueError("event_count must be positive")
        n_bins = -(-n // event_count) if include_incomplete else n // event_count
        b = np.arange(n, dtype=np.int64) // event_count
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    p = ev["p"].astype(np.int64) if c == 2 else np.zeros(n, dtype=np.int64)
    ok = (b >= 0) & (b < n_bins) & (x < w) & (y < h) & (p >= 0) & (p < c)
    flat = ((b[ok] * c + p[ok]) * h + y[ok]) * w + x[ok]
    counts = np.bincount(flat, minlength=n_bins * c * h * w)
    return counts.astype(dtype, copy=False).reshape(n_bins, c, h, w)
