"""The synthetic N-MNIST-like data set: determinism, realism checks, layout, loaders, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurodeploy.datasets import GeneratorParams, frames_dataset, generate, load_split, make_dataset
from neurodeploy.datasets.synthetic_nmnist import (
    generate_indices,
    load_digit_images,
    motion_path,
    stratified_split,
)
from neurodeploy.events import EVENT_DTYPE, read_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_set():
    return generate(20, seed=3)


def test_generate_is_deterministic_and_realistic(small_set):
    again = generate(20, seed=3)
    for (a, la), (b, lb) in zip(small_set, again, strict=True):
        assert la == lb
        np.testing.assert_array_equal(a, b)
    other = generate(20, seed=4)
    assert any(len(a) != len(b) for (a, _), (b, _) in zip(small_set, other, strict=True))
    labels = [lab for _, lab in small_set]
    assert sorted(labels) == sorted(list(range(10)) * 2)  # class-balanced draw
    for ev, _ in small_set:
        assert ev.dtype == EVENT_DTYPE
        assert 1_500 < len(ev) < 9_000  # real N-MNIST: ~4k events per recording
        assert np.all(np.diff(ev["t"]) >= 0)
        assert 0 <= ev["t"].min() and ev["t"].max() < 315_000
        assert ev["x"].max() < 34 and ev["y"].max() < 34
        assert 0.3 < ev["p"].mean() < 0.7  # ON and OFF both present


def test_events_follow_the_three_saccades(small_set):
    ev, _ = small_set[0]
    # activity in each 105 ms saccade, and the motion reverses: mean x of ON events moves
    counts = np.histogram(ev["t"], bins=[0, 105_000, 210_000, 315_000])[0]
    assert np.all(counts > 300)
    path = motion_path(GeneratorParams())
    assert path.shape == (316, 2)
    np.testing.assert_allclose(path[0], path[-1])  # the triangle closes
    np.testing.assert_allclose(path[105] - path[0], (3.5, 7.0))
    np.testing.assert_allclose(path[210] - path[105], (3.5, -7.0))


def test_sample_independent_of_batching():
    p1 = GeneratorParams(batch_size=1)
    p8 = GeneratorParams(batch_size=8)
    a = generate_indices([5, 17, 900], seed=1, params=p1)
    b = generate_indices([900, 5, 17], seed=1, params=p8)
    by_index = {s.index: s.events for s in b}
    for s in a:
        np.testing.assert_array_equal(s.events, by_index[s.index])


def test_multiple_crossings_and_refractory():
    # a big contrast and a long refractory period: several events per step, spaced >= r
    params = GeneratorParams(background=0.02, refractory_us=300.0, noise_rate_hz=0.0)
    (ev, _), = generate(1, seed=0, params=params)
    key = ev["y"].astype(np.int64) * 34 + ev["x"]
    order = np.lexsort((ev["t"], key))
    same = key[order][1:] == key[order][:-1]
    gaps = np.diff(ev["t"][order])[same]
    assert gaps.min() >= 299  # rounding to whole microseconds
    assert len(ev) > 8_000


def test_digit_images_and_split():
    images, labels = load_digit_images()
    assert images.shape == (1797, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    train, test = stratified_split(labels, 1497, 300, seed=0)
    assert len(train) == 1497 and len(test) == 300
    assert not set(train) & set(test)
    assert np.bincount(labels[test], minlength=10).tolist() == [30] * 10
    with pytest.raises(ValueError):
        stratified_split(labels, 1500, 300, seed=0)


def test_make_dataset_layout_and_loaders(tmp_path):
    meta = make_dataset(tmp_path / "ds", n_train=20, n_test=10, seed=7, workers=1)
    root = tmp_path / "ds"
    on_disk = json.loads((root / "meta.json").read_text())
    assert on_disk == meta
    assert meta["seed"] == 7 and meta["n_train"] == 20 and meta["n_test"] == 10
    assert meta["sensor_size"] == [34, 34, 2]
    assert meta["generator"]["threshold_on"] == 0.2
    train = load_split(root, "train")
    test = load_split(root, "test")
    assert len(train) == 20 and len(test) == 10
    assert sorted(lab for _, lab in test) == list(range(10))
    path, label = train[0]
    assert path.parent.name == str(label) and path.suffix == ".bin"
    rec = read_events(path)
    assert rec.format == "nmnist" and rec.sensor_size == (34, 34, 2)
    # the file holds exactly what the generator makes for that digit
    idx = int(path.stem)
    (sample,) = generate_indices([idx], seed=7)
    np.testing.assert_array_equal(rec.events, sample.events)

    x, y = frames_dataset(root, "test", n_bins=5)
    assert x.shape == (10, 5, 2, 34, 34) and x.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [lab for _, lab in test]
    assert x[0].sum() == len(read_events(test[0][0]).events)
    cached = list((root / "cache").glob("*.npz"))
    assert len(cached) == 1  # cache stays inside the data set directory
    x2, y2 = frames_dataset(root, "test", n_bins=5)
    np.testing.assert_array_equal(x, x2)
    xm, _ = frames_dataset(root, "test", n_bins=2, merge_polarity=True, cache=False)
    assert xm.shape == (10, 2, 1, 34, 34)
    with pytest.raises(ValueError):
        load_split(root, "val")


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_dataset.py"), "--out", str(out),
         "--n-train", "10", "--n-test", "10", "--seed", "2", "--workers", "1"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert "wrote 10 train + 10 test" in res.stdout
    assert len(load_split(out, "train")) == 10
    assert json.loads((out / "meta.json").read_text())["seed"] == 2

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_dataset as cli
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(out), "--n-train", "1797", "--n-test", "1"])
    assert exc.value.code == 2
    assert "between 0 and 1797" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a data set")
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path / "other"), "--n-train", "1", "--n-test", "1"])
    assert (tmp_path / "other" / "keep.txt").exists()
