"""Event-driven runtime: windows, streaming == whole-file decisions, stdin EVT 3, CLI report."""

import io
import json
import sys

import numpy as np
import pytest

from neurodeploy import artifact
from neurodeploy.cli import main
from neurodeploy.compiler import compile_file
from neurodeploy.datasets import generate
from neurodeploy.events import make_events, write_events
from neurodeploy.streaming import bin_events, stream_file, windows
from tests.conftest import REPO

MODEL = REPO / "models" / "default" / "model.pt"
PERIOD = 320_000


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.ndp"
    artifact.save(compile_file(MODEL), path)
    return path


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """Four synthetic digits back to back, one per 320 ms window, as an EVT 3.0 file."""
    parts, labels = [], []
    for k, (ev, label) in enumerate(generate(4, seed=7)):
        ev = ev.copy()
        ev["t"] = ev["t"] - ev["t"].min() + k * PERIOD
        parts.append(ev[ev["t"] < (k + 1) * PERIOD])
        labels.append(label)
    path = tmp_path_factory.mktemp("s") / "stream.raw"
    write_events(path, np.concatenate(parts), (34, 34, 2))
    return path, labels


def test_windows_cut_and_bin_exactly():
    ev = make_events(x=[1, 2, 3, 4], y=[0, 0, 1, 1], t=[100, 150, 399, 401], p=[1, 0, 1, 1])
    ws = list(windows([ev[:2], ev[2:]], (2, 2, 5), window_us=300, stride_us=300, bin_us=100))
    assert [w.t_start_us for w in ws] == [100, 400]
    assert [w.n_events for w in ws] == [3, 1]
    f = ws[0].frames  # bins of 100 us from t=100: events at 0, 50 -> bin 0; 299 -> bin 2
    assert f.shape == (3, 2, 2, 5) and f[0, 1, 0, 1] == 1 and f[0, 0, 0, 2] == 1
    assert f[2, 1, 1, 3] == 1 and f.sum() == 3
    assert np.array_equal(bin_events(ev, 100, 3, 100, (2, 2, 5)), f)


def test_streaming_equals_whole_file(compiled, stream):
    cm = artifact.load(compiled)
    path, labels = stream
    small = stream_file(cm, str(path), PERIOD, chunk_events=97)
    whole = stream_file(cm, str(path), PERIOD, chunk_events=1 << 22)
    assert [d.prediction for d in small.decisions] == [d.prediction for d in whole.decisions]
    assert [d.counts for d in small.decisions] == [d.counts for d in whole.decisions]
    assert len(small.decisions) == len(labels)
    assert np.mean(np.array([d.prediction for d in whole.decisions]) == labels) >= 0.75
    assert small.events_read == small.events_used + sum(small.dropped.values())


def test_cli_events_json_and_stdin(compiled, stream, capsys, monkeypatch):
    path, _ = stream
    assert main(["run", str(compiled), "--events", str(path), "--window", "320ms",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["events_read"] == rep["events_used"] + sum(rep["events_dropped"].values())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    assert main(["run", str(compiled), "--events", "-", "--window", "320ms", "--json"]) == 0
    rep_stdin = json.loads(capsys.readouterr().out)
    assert [d["prediction"] for d in rep_stdin["decisions"]] == [
        d["prediction"] for d in rep["decisions"]]


def test_bad_window_and_missing_file(compiled, capsys):
    assert main(["run", str(compiled), "--events", "nope.raw"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["run", str(compiled), "--events", "-", "--window", "fast"]) == 2
    assert "cannot read duration" in capsys.readouterr().err
