"""The stand-in N-MNIST set: MNIST-style digits, smooth saccades, polarity as in real N-MNIST."""

from __future__ import annotations

import numpy as np
import pytest

from neurodeploy.datasets.nmnist_standin import (
    MNIST_BOX,
    STANDIN_PARAMS,
    bin_events,
    load_mnist_style_digits,
    nmnist_standin,
    smooth_motion_path,
    standin_events,
)
from neurodeploy.events import EVENT_DTYPE, read_events

# MNIST's pixel statistics (0..1), as used by every MNIST normalisation (torchvision et al.)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@pytest.fixture
def real_nmnist(shared_reference):
    path = shared_reference / "events" / "tonic_sample_nmnist.bin"
    return read_events(path, sensor_size=(34, 34, 2)).events


@pytest.fixture(scope="module")
def recordings():
    return standin_events(20, seed=3)


def test_digits_look_like_mnist():
    images, labels = load_mnist_style_digits()
    assert images.shape == (1797, 28, 28) and labels.shape == (1797,)
    assert abs(images.mean() - MNIST_MEAN) < 0.015 and abs(images.std() - MNIST_STD) < 0.015
    ink = images > 0
    rows, cols = ink.any(2), ink.any(1)
    height = 28 - rows[:, ::-1].argmax(1) - rows.argmax(1)
    width = 28 - cols[:, ::-1].argmax(1) - cols.argmax(1)
    assert np.all(np.maximum(height, width) <= MNIST_BOX + 1)  # +1: anti-aliased edge pixel
    yy, xx = np.indices((28, 28))
    mass = images.sum((1, 2))
    cy, cx = (images * yy).sum((1, 2)) / mass, (images * xx).sum((1, 2)) / mass
    assert np.all(np.abs(cy - 13.5) <= 1.0) and np.all(np.abs(cx - 13.5) <= 1.0)


def test_saccades_are_smooth_and_close():
    p = STANDIN_PARAMS
    path = smooth_motion_path(p)
    k = p.saccade_us // p.dt_us
    np.testing.assert_allclose(path[k] - path[0], p.saccades[0])
    np.testing.assert_allclose(path[2 * k] - path[k], p.saccades[1])
    np.testing.assert_allclose(path[-1], path[0])
    speed = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert speed[0] < 0.01 * speed.max() and speed[k - 1] < 0.01 * speed.max()
    assert speed[k // 2] == pytest.approx(speed.max(), rel=0.01)


def test_recordings_are_deterministic_and_like_real_nmnist(recordings, real_nmnist):
    events, labels, idx = recordings
    again, labels2, idx2 = standin_events(20, seed=3)
    np.testing.assert_array_equal(idx, idx2)
    for a, b in zip(events, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)
    hist = lambda ev: np.histogram(ev["t"], bins=np.arange(0, 315_001, 10_000))[0]  # noqa: E731
    real = hist(real_nmnist)
    for ev in events:
        assert ev.dtype == EVENT_DTYPE
        assert 2_000 < len(ev) < 6_000  # the real recording: 4,325
        assert 0.4 < ev["p"].mean() < 0.6  # real: 0.50
        # event rate rises and falls within each saccade, as in the real recording
        assert np.corrcoef(hist(ev), real)[0, 1] > 0.6


def _on_minus_off_along_motion(ev: np.ndarray) -> float:
    """ON minus OFF event centroid projected on the first saccade's direction (pixels)."""
    first = ev[ev["t"] < 105_000]
    on, off = first[first["p"] == 1], first[first["p"] == 0]
    d = np.array([on["x"].mean() - off["x"].mean(), on["y"].mean() - off["y"].mean()])
    v = np.asarray(STANDIN_PARAMS.saccades[0])
    return float(d @ v / np.linalg.norm(v))


def test_on_events_trail_the_motion_as_in_real_nmnist(recordings, real_nmnist):
    assert _on_minus_off_along_motion(real_nmnist) < -2
    for ev in recordings[0]:
        assert _on_minus_off_along_motion(ev) < 0


def test_frames_are_1ms_event_counts_by_polarity(recordings):
    events = recordings[0][:3]
    x = bin_events(events, 315)
    assert x.shape == (315, 3, 2, 34, 34) and x.dtype == np.int64
    for i, ev in enumerate(events):
        assert x[:, i].sum() == len(ev)
        assert x[:, i, 1].sum() == ev["p"].sum()
        first = ev[ev["t"] < 1000]
        assert x[0, i].sum() == len(first)
    assert bin_events(events, 100)[:, 0].sum() == (events[0]["t"] < 100_000).sum()
    x2, y2 = nmnist_standin(3, seed=3, steps=315)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, recordings[1][:3])
