"""``neurodeploy compile ckpt --arch NAME``: official checkpoints compile without user code."""

from __future__ import annotations

import argparse
import sys
import types

import nir
import numpy as np
import pytest
import torch

from neurodeploy import artifact, zoo
from neurodeploy.checkpoint import load_checkpoint
from neurodeploy.cli import main, parse_arch_kwargs
from neurodeploy.compiler import compile_graph
from neurodeploy.frontends.torch import torch_to_nir
from tests.test_checkpoint_loaders import official_dsr_resnet, official_ltl


def _official_dsr(path, **extra):
    """An official DSR file: ``module.`` keys, optimizer state, scalars; optional extras."""
    sd = {f"module.{k}": v for k, v in official_dsr_resnet().items()}
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    params[0].grad = torch.ones(3)
    opt.step()
    torch.save({"epoch": 7, "state_dict": sd, "acc": 81.5, "best_acc": 82.0,
                "optimizer": opt.state_dict(), **extra}, path)
    return path


def _weights(g: nir.NIRGraph) -> dict:
    return {k: np.asarray(n.metadata["loihi"]["weight_mant"]) for k, n in g.nodes.items()
            if "weight_mant" in n.metadata.get("loihi", {})}


def test_official_dsr_checkpoint_compiles_through_the_cli(tmp_path, capsys):
    path = _official_dsr(tmp_path / "ckpt.pth")
    out = tmp_path / "m.ndp"
    assert main(["compile", str(path), "--arch", "dsr-preact-resnet18", "--input-shape", "1,8,8",
                 "-o", str(out)]) == 0
    cm = artifact.load(out)
    assert cm.meta["input_shape"] == [1, 8, 8] and cm.meta["time_steps"] == 20
    assert cm.meta["source"]["arch"] == "dsr-preact-resnet18"
    model, info = load_checkpoint(path, arch="dsr-preact-resnet18", arch_kwargs={"size": 8})
    ref = compile_graph(torch_to_nir(model.double(), (1, 8, 8)), time_steps=20)
    got, want = _weights(cm.graph), _weights(ref.graph)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    # --input-shape defaults to the arch's (DSR: CIFAR's 32x32), and says so
    assert main(["compile", str(path), "--arch", "dsr-preact-resnet18", "-o", str(out)]) == 0
    assert "input shape 1,32,32 from dsr-preact-resnet18's defaults" in capsys.readouterr().out
    assert artifact.load(out).meta["input_shape"] == [1, 32, 32]


@pytest.mark.parametrize("kwargs", [["neuron=lif,alpha=0.5", "time_steps=6"],
                                    ['{"neuron": "lif", "alpha": 0.5, "time_steps": 6}']])
def test_arch_kwargs_as_pairs_or_json(tmp_path, kwargs):
    path = _official_dsr(tmp_path / "ckpt.pth")
    out = tmp_path / "m.ndp"
    args = [a for k in kwargs for a in ("--arch-kwargs", k)]
    assert main(["compile", str(path), "--arch", "dsr-preact-resnet18", "--input-shape", "1,8,8",
                 *args, "-o", str(out)]) == 0
    cm = artifact.load(out)
    assert cm.meta["time_steps"] == 6
    lif = [n for n in cm.graph.nodes.values() if isinstance(n, nir.LIF)]
    assert len(lif) == 7 and all(np.any(np.asarray(n.v_leak) != 0) for n in lif)


def test_parse_arch_kwargs():
    assert parse_arch_kwargs(["neuron=lif,size=48", "blocks=[1, 1],alpha=0.5"]) == {
        "neuron": "lif", "size": 48, "blocks": [1, 1], "alpha": 0.5}
    assert parse_arch_kwargs(['{"strides": [1, 2]}', "readout=true"]) == {
        "strides": [1, 2], "readout": True}


def test_pickled_extras_need_trust_pickle(tmp_path, capsys):
    path = _official_dsr(tmp_path / "ckpt.pth", args=argparse.Namespace(lr=0.1),
                         best_acc=np.float64(82.0))
    out = tmp_path / "m.ndp"
    cmd = ["compile", str(path), "--arch", "dsr-preact-resnet18", "--input-shape", "1,8,8",
           "-o", str(out)]
    assert main(cmd) == 2
    msg = capsys.readouterr().err
    assert "--trust-pickle" in msg and "argparse.Namespace" in msg and len(msg.splitlines()) == 1
    assert not out.exists()
    assert main([*cmd, "--trust-pickle"]) == 0 and out.exists()


def test_pickle_of_missing_code_is_one_clear_line(tmp_path, capsys, monkeypatch):
    mod = types.ModuleType("official_models_xyz")

    class Net(torch.nn.Module):
        pass

    Net.__module__, Net.__qualname__, mod.Net = "official_models_xyz", "Net", Net
    monkeypatch.setitem(sys.modules, "official_models_xyz", mod)
    path = tmp_path / "whole.pth"
    torch.save({"net": Net(), "state_dict": official_dsr_resnet()}, path)
    monkeypatch.delitem(sys.modules, "official_models_xyz")
    out = tmp_path / "m.ndp"
    assert main(["compile", str(path), "--arch", "dsr-preact-resnet18", "--trust-pickle",
                 "-o", str(out)]) == 2
    msg = capsys.readouterr().err
    assert "official_models_xyz" in msg and "not installed here" in msg and not out.exists()


def test_state_dict_of_a_registered_arch(tmp_path, capsys):
    torch.manual_seed(0)
    kw = {"in_channels": 1, "classes": 3, "width": 4, "blocks": [1], "pool": 8}
    path = tmp_path / "sd.pt"
    torch.save({"model": zoo.build("spiking-resnet", **kw).state_dict()}, path)
    out = tmp_path / "m.ndp"
    args = ["compile", str(path), "--arch", "spiking-resnet", "--arch-kwargs",
            ",".join(f"{k}={v}".replace(" ", "") for k, v in kw.items()), "-o", str(out)]
    assert main(args) == 2
    msg = capsys.readouterr().err
    assert "arch spiking-resnet has no default" in msg and "--input-shape" in msg
    assert not out.exists()
    assert main([*args, "--input-shape", "1,8,8"]) == 0
    assert artifact.load(out).meta["input_shape"] == [1, 8, 8]
    # an arch whose constructor has in_channels and size takes its defaults from there
    torch.save(zoo.build("dvs-cnn", size=12, c1=3, c2=4).state_dict(), path)
    assert main(["compile", str(path), "--arch", "dvs-cnn", "--arch-kwargs", "size=12,c1=3,c2=4",
                 "-o", str(out)]) == 0
    assert artifact.load(out).meta["input_shape"] == [2, 12, 12]


@pytest.mark.parametrize("extra,needle", [
    (["--arch", "no-such-arch"], "unknown arch 'no-such-arch'"),
    (["--arch", "ltl-vgg11"], "not an LTL checkpoint"),
    (["--arch", "dsr-preact-resnet18", "--arch-kwargs", "nonsense"], "expected key=value"),
    (["--arch", "dsr-preact-resnet18", "--arch-kwargs", "{bad json"], "not valid JSON"),
    (["--arch", "dsr-preact-resnet18", "--arch-kwargs", "foo=1"], "bad arch arguments"),
    (["--arch", "dsr-preact-resnet18", "--input-shape", "1,8,6"], "square images"),
    (["--arch", "dsr-preact-resnet18", "--input-shape", "3,8,8"], "takes input shape 1,8,8"),
    (["--arch", "dsr-preact-resnet18", "--input-shape", "a,b"], "expected integers"),
    (["--arch-kwargs", "neuron=lif"], "--arch-kwargs needs --arch"),
])
def test_arch_errors_exit_2_without_output(tmp_path, capsys, extra, needle):
    path = _official_dsr(tmp_path / "ckpt.pth")
    out = tmp_path / "m.ndp"
    assert main(["compile", str(path), *extra, "-o", str(out)]) == 2
    msg = capsys.readouterr().err
    assert needle in msg and len(msg.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".m.ndp*"))


def test_official_ltl_checkpoint_compiles(tmp_path):
    path = tmp_path / "ltl.pt"
    torch.save({"epoch": 3, "model_state_dict": official_ltl(), "optimizer_state_dict": {},
                "loss": 0.5, "acc": 90.1}, path)
    out = tmp_path / "m.ndp"
    assert main(["compile", str(path), "--arch", "ltl-vgg11", "--input-shape", "1,8,8",
                 "-o", str(out)]) == 0
    cm = artifact.load(out)
    assert cm.meta["input_shape"] == [1, 8, 8] and cm.meta["time_steps"] == 16
