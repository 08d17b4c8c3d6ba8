"""Transforms: vectorised results against straightforward per-event loops (tonic's algorithms,
with the documented treatment of pixels that have not fired yet)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodeploy.events import (
    center_crop,
    crop,
    denoise,
    downsample,
    downsample_size,
    make_events,
    merge_polarities,
    refractory_filter,
    to_frames,
    validate_events,
)


def _random_events(seed: int, n: int, w: int = 12, h: int = 9, dt_max: int = 400):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, dt_max, n))
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n))


def _denoise_loop(ev, filter_time):
    last = {}
    keep = []
    for e in ev:
        x, y, t = int(e["x"]), int(e["y"]), int(e["t"])
        ok = any(
            (x + dx, y + dy) in last and t - last[(x + dx, y + dy)] < filter_time
            for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1))
        )
        last[(x, y)] = t
        keep.append(ok)
    return ev[np.array(keep, dtype=bool)]


def _refractory_loop(ev, period):
    last = {}
    keep = []
    for e in ev:
        key, t = (int(e["x"]), int(e["y"])), int(e["t"])
        keep.append(key not in last or t - last[key] > period)
        last[key] = t
    return ev[np.array(keep, dtype=bool)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 400), ft=st.integers(1, 3000))
def test_denoise_matches_loop(seed, n, ft):
    ev = _random_events(seed, n)
    np.testing.assert_array_equal(denoise(ev, filter_time=ft), _denoise_loop(ev, ft))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 400), period=st.integers(0, 3000))
def test_refractory_matches_loop(seed, n, period):
    ev = _random_events(seed, n, w=4, h=3)
    np.testing.assert_array_equal(
        refractory_filter(ev, refractory_period=period), _refractory_loop(ev, period)
    )


def test_denoise_keeps_supported_events_only():
    ev = make_events([5, 6, 20, 5], [5, 5, 20, 6], [0, 100, 150, 50_000], [1, 1, 0, 1])
    out = denoise(ev, filter_time=1000)
    # (6, 5) has a neighbour 100 us before; (20, 20) is isolated; the last one is too late
    assert out.tolist() == [(6, 5, 100, 1)]


def test_crop_and_center_crop():
    ev = make_events([0, 5, 9, 3], [0, 4, 9, 7], [1, 2, 3, 4], [0, 1, 0, 1])
    out = crop(ev, 2, 3, 5, 5)
    assert out.tolist() == [(3, 1, 2, 1), (1, 4, 4, 1)]
    cc = center_crop(ev, (10, 10), (6, 6))  # box [2, 8) x [2, 8)
    assert cc.tolist() == [(3, 2, 2, 1), (1, 5, 4, 1)]
    assert ev.tolist()[1] == (5, 4, 2, 1)  # input untouched


def test_downsample_and_merge():
    ev = make_events([0, 5, 33], [1, 7, 33], [10, 21, 35], [0, 1, 1])
    out = downsample(ev, spatial_factor=0.5, time_factor=0.1)
    assert out["x"].tolist() == [0, 2, 16]
    assert out["y"].tolist() == [0, 3, 16]
    assert out["t"].tolist() == [1, 2, 3]
    assert downsample_size((34, 34, 2), 0.5) == (17, 17, 2)
    assert downsample(ev, (0.25, 1.0))["y"].tolist() == [1, 7, 33]
    assert merge_polarities(ev)["p"].tolist() == [0, 0, 0]


def test_to_frames_n_time_bins():
    ev = make_events([0, 1, 1, 2, 3], [0, 0, 1, 1, 2], [100, 150, 199, 250, 299], [0, 1, 1, 0, 1])
    fr = to_frames(ev, (4, 3, 2), n_time_bins=2)
    assert fr.shape == (2, 2, 3, 4)
    assert fr.dtype == np.int32
    assert fr.sum() == 5
    # bin width 100 us from t = 100: [100, 200) and [200, 300)
    assert fr[0, 0, 0, 0] == 1 and fr[0, 1, 0, 1] == 1 and fr[0, 1, 1, 1] == 1
    assert fr[1, 0, 1, 2] == 1 and fr[1, 1, 2, 3] == 1
    merged = to_frames(ev, (4, 3, 1), n_time_bins=1)
    assert merged.shape == (1, 1, 3, 4) and merged.sum() == 5


def test_to_frames_time_window_and_event_count():
    ev = make_events(np.zeros(7), np.zeros(7), [0, 10, 20, 30, 40, 50, 60], np.ones(7))
    full = to_frames(ev, (1, 1, 2), time_window=25)  # windows [0,25), [25,50); 60 is incomplete
    assert full[:, 1, 0, 0].tolist() == [3, 2]
    inc = to_frames(ev, (1, 1, 2), time_window=25, include_incomplete=True)
    assert inc[:, 1, 0, 0].tolist() == [3, 2, 2]
    cnt = to_frames(ev, (1, 1, 2), event_count=3)
    assert cnt[:, 1, 0, 0].tolist() == [3, 3]
    cnt_inc = to_frames(ev, (1, 1, 2), event_count=3, include_incomplete=True)
    assert cnt_inc[:, 1, 0, 0].tolist() == [3, 3, 1]
    empty = to_frames(ev[:0], (5, 4, 2), n_time_bins=3)
    assert empty.shape == (3, 2, 4, 5) and empty.sum() == 0
    with pytest.raises(ValueError, match="exactly one"):
        to_frames(ev, (1, 1, 2), n_time_bins=2, event_count=3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 500), bins=st.integers(1, 12))
def test_to_frames_counts_every_event_once(seed, n, bins):
    ev = _random_events(seed, n)
    fr = to_frames(ev, (12, 9, 2), n_time_bins=bins)
    assert fr.shape == (bins, 2, 9, 12)
    assert fr.sum() == n
    per_pixel = np.zeros((2, 9, 12), dtype=np.int64)
    np.add.at(per_pixel, (ev["p"].astype(int), ev["y"], ev["x"]), 1)
    np.testing.assert_array_equal(fr.sum(axis=0), per_pixel)
    # bins are ordered in time: cumulative counts follow the events' order
    t0, span = int(ev["t"][0]), int(ev["t"][-1] - ev["t"][0]) + 1
    b = (ev["t"] - t0) * bins // span
    np.testing.assert_array_equal(fr.sum(axis=(1, 2, 3)), np.bincount(b, minlength=bins))


def test_validate_events_helper_drops_and_counts():
    ev = make_events([0, 50, 1, 2], [0, 0, 0, 0], [5, 6, 4, 7], [1, 0, 3, 1])
    kept, rep = validate_events(ev, (10, 10, 2))
    assert kept.tolist() == [(0, 0, 5, 1), (2, 0, 7, 1)]
    assert rep.dropped == {"bad_polarity": 1, "out_of_sensor": 1}
    assert rep.n_read == 4 and rep.n_used == 2
    kept, rep = validate_events(make_events([1, 1], [1, 1], [9, 3], [0, 0]), (4, 4))
    assert kept.tolist() == [(1, 1, 9, 0)] and rep.dropped == {"time_backwards": 1}
