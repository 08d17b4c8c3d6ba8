"""End-to-end CLI: compile -> inspect -> run, and the bad-input contract (exit 2, no output)."""

import json

import numpy as np
import pytest
import torch

from neurodeploy import artifact, zoo
from neurodeploy.checkpoint import save
from neurodeploy.cli import main


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = zoo.build("dvs-cnn", size=12, c1=3, c2=4)
    for p in model.parameters():
        p.data.normal_(0, 0.4)
    path = tmp_path / "m.pt"
    save(model, path, arch="dvs-cnn", arch_kwargs={"size": 12, "c1": 3, "c2": 4},
         input_shape=(2, 12, 12), time_steps=8)
    return path


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((3, 8, 2, 12, 12)) < 0.3).astype(np.uint8) * rng.integers(1, 3, (3, 8, 2, 12,
                                                                                     12))
    path = tmp_path / "x.npz"
    np.savez(path, x=x, y=np.array([1, 2, 3]))
    return path


def test_compile_inspect_run(ckpt, inputs, tmp_path, capsys):
    out = tmp_path / "m.ndp"
    assert main(["compile", str(ckpt), "-o", str(out)]) == 0
    cm = artifact.load(out)
    assert cm.meta["source"]["sha256"] and cm.meta["time_steps"] == 8
    layers = {ly["neuron"] for ly in cm.meta["quantization"]["layers"]}
    assert {n for n in layers if not n.startswith("clock")} == {"1", "3", "6"}
    assert cm.meta["aligned"] and len(layers) == 3 + cm.meta["alignment"]["clock_layers"]
    assert main(["inspect", str(out)]) == 0
    assert "vth" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["numerics"]["weight_bits"] == 8
    assert main(["run", str(out), "--input", str(inputs), "--backend", "native", "--compare",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["lava_equals_native_counts"] is True
    assert set(rep["backends"]) == {"native", "lava", "float"}


def test_ndp_is_a_nir_file(ckpt, tmp_path):
    import nir

    out = tmp_path / "m.ndp"
    assert main(["compile", str(ckpt), "-o", str(out)]) == 0
    g = nir.read(out, type_check=False)
    assert "loihi" in g.nodes["1"].metadata


def test_pickle_refused_without_flag(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(zoo.build("dvs-cnn", size=12), path)
    out = tmp_path / "o.ndp"
    assert main(["compile", str(path), "-o", str(out), "--input-shape", "2,12,12"]) == 2
    msg = capsys.readouterr().err
    assert "refused to unpickle" in msg and "--trust-pickle" in msg
    assert not out.exists() and not list(tmp_path.glob(".o.ndp*"))
    assert main(["compile", str(path), "-o", str(out), "--input-shape", "2,12,12",
                 "--trust-pickle"]) == 0
    assert out.exists()


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
])
def test_missing_or_corrupt_model(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "o.ndp"
    assert main(["compile", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) <= 2
    assert not out.exists()


def test_run_rejects_wrong_input_shape(ckpt, tmp_path, capsys):
    out = tmp_path / "m.ndp"
    main(["compile", str(ckpt), "-o", str(out)])
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((1, 8, 2, 5, 5)))
    assert main(["run", str(out), "--input", str(bad)]) == 2
    assert "model expects (2, 12, 12)" in capsys.readouterr().err


def test_inspect_rejects_non_ndp(tmp_path, capsys):
    p = tmp_path / "x.ndp"
    p.write_bytes(b"junk")
    assert main(["inspect", str(p)]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err
