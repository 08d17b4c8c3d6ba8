"""Official checkpoints (DSR, LTL) load into our architectures and compute what the methods'
equations say. State dicts are written in each official layout from scratch (key names of the
official code), and the reference forward passes below use those keys directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurodeploy.checkpoint import load_checkpoint
from neurodeploy.compiler import compile_graph
from neurodeploy.errors import InputFileError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.nn.dsr import weighted_rate
from neurodeploy.train.common import readout_logits
from neurodeploy.train.dsr import dsr_logits
from neurodeploy.zoo.loaders import load_foreign, load_foreign_checkpoint

G = torch.Generator().manual_seed(0)


def _r(*shape, scale=0.3):
    return torch.randn(*shape, generator=G) * scale


def _bn(sd, prefix, c):
    sd[f"{prefix}.weight"] = 1 + _r(c, scale=0.1)
    sd[f"{prefix}.bias"] = 0.1 + _r(c, scale=0.1)
    sd[f"{prefix}.running_mean"] = _r(c, scale=0.2)
    sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=G)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(100)


def _vth(sd, key):
    sd[key] = torch.tensor(0.3 + 0.2 * float(torch.rand(1, generator=G)))  # shape ()


def official_dsr_resnet(in_ch=1, width=4, blocks=(1, 1), classes=5) -> dict:
    """Keys of DSR's ``preresnet.PreActResNet`` (cifar/modules/preresnet.py)."""
    sd = {"conv1.weight": _r(width, in_ch, 3, 3, scale=0.5)}
    cin = width
    for i, n in enumerate(blocks, 1):
        cout = width * 2 ** (i - 1)
        for j in range(n):
            p = f"layer{i}.{j}"
            c_in = cin if j == 0 else cout
            _bn(sd, f"{p}.bn1", c_in)
            sd[f"{p}.conv1.weight"], sd[f"{p}.conv1.bias"] = _r(cout, c_in, 3, 3), _r(cout)
            _bn(sd, f"{p}.bn2", cout)
            sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"] = _r(cout, cout, 3, 3), _r(cout)
            if (i > 1 and j == 0) or c_in != cout:
                sd[f"{p}.shortcut.weight"] = _r(cout, c_in, 1, 1)
                sd[f"{p}.shortcut.bias"] = _r(cout)
            _vth(sd, f"{p}.relu1.Vth")
            _vth(sd, f"{p}.relu2.Vth")
        cin = cout
    _bn(sd, "bn1", cin)
    sd["linear.weight"], sd["linear.bias"] = _r(classes, cin, scale=1.0), _r(classes)
    _bn(sd, "bn2", classes)
    for k in ("relu1", "relu2", "relu3"):
        _vth(sd, f"{k}.Vth")
    return sd


def dsr_neuron(x, vth, alpha, lif=False, tau=1.0, dt=0.05):
    """DSR's IFFunction / LIFFunction forward on ``[T, ...]``."""
    u, out = torch.zeros_like(x[0]), []
    beta = math.exp(-dt / tau)
    for t in range(x.shape[0]):
        u = beta * u + (1 - beta) * x[t] if lif else u + x[t]
        s = (u >= alpha * vth).to(x.dtype) * vth
        u = u - s
        out.append(s / dt if lif else s)
    return torch.stack(out)


def _steps(fn, x):
    y = fn(x.flatten(0, 1))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _bn_apply(sd, p, x):
    return _steps(lambda z: F.batch_norm(z, sd[f"{p}.running_mean"], sd[f"{p}.running_var"],
                                         sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5),
                  x)


def _conv(sd, p, x, stride=1, padding=1, bias=True):
    return _steps(lambda z: F.conv2d(z, sd[f"{p}.weight"], sd.get(f"{p}.bias") if bias else None,
                                     stride, padding), x)


def reference_dsr_resnet(sd, x, blocks, alpha, lif=False):
    """Official PreActResNet forward from the state dict alone; returns DSR's logits."""

    def nrn(key, z):
        return dsr_neuron(z, sd[f"{key}.Vth"].double(), alpha, lif)

    out = _conv(sd, "conv1", x, bias=False)
    for i, n in enumerate(blocks, 1):
        for j in range(n):
            p = f"layer{i}.{j}"
            stride = 2 if (i > 1 and j == 0) else 1
            s = nrn(f"{p}.relu1", _bn_apply(sd, f"{p}.bn1", out))
            h = _conv(sd, f"{p}.conv1", s, stride)
            h = _conv(sd, f"{p}.conv2", nrn(f"{p}.relu2", _bn_apply(sd, f"{p}.bn2", h)))
            sc = _conv(sd, f"{p}.shortcut", s, stride, 0) if f"{p}.shortcut.weight" in sd else s
            out = h + sc
    s = nrn("relu1", _bn_apply(sd, "bn1", out))
    s = nrn("relu2", _steps(lambda z: F.avg_pool2d(z, z.shape[-1]), s))
    lin = _steps(lambda z: F.linear(z.flatten(1), sd["linear.weight"], sd["linear.bias"]), s)
    s = nrn("relu3", _bn_apply(sd, "bn2", lin))
    return weighted_rate(s, 1.0, 0.05) if lif else s.mean(0)


def _official_file(tmp_path, sd, prefix: bool, key="state_dict", **extra):
    sd = {("module." if prefix else "") + k: v for k, v in sd.items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, key: sd, "acc": 81.5, "best_acc": 82.0,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, **extra}, path)
    return path


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_dsr_resnet_checkpoint_computes_dsr(tmp_path, prefix, neuron):
    sd = official_dsr_resnet()
    path = _official_file(tmp_path, sd, prefix)
    model, info = load_foreign_checkpoint(path, "dsr-preact-resnet18", size=8, neuron=neuron,
                                          alpha=0.5)
    assert info["arch"] == "dsr-preact-resnet18" and info["input_shape"] == [1, 8, 8]
    assert info["time_steps"] == 20 and info["extra"]["best_acc"] == 82.0
    assert info["arch_kwargs"]["blocks"] == [1, 1] and info["arch_kwargs"]["pool"] == 4
    x = (torch.rand(6, 3, 1, 8, 8, generator=G) * (16 if neuron == "if" else 160)).round()
    model = model.double()
    with torch.no_grad():
        got = dsr_logits(model, x.double())
        want = reference_dsr_resnet({k: v.double() if v.is_floating_point() else v
                                     for k, v in sd.items()}, x.double(), (1, 1), 0.5,
                                    neuron == "lif")
    assert want.abs().sum() > 0
    assert torch.allclose(got, want, atol=1e-9)


def official_dsr_vgg(in_ch=2, width=8, classes=4) -> dict:
    """Keys of DSR's ``vgg.VGG`` (VGG-11): ``layer{i}.{k}`` Sequentials and ``classifier``."""
    cfg = [[64], [128], [256, 256], [512, 512], [512, 512]]
    sd, cin = {}, in_ch
    for i, stage in enumerate(cfg, 1):
        for k, c in enumerate(stage):
            c = c * width // 64
            sd[f"layer{i}.{4 * k}.weight"] = _r(c, cin, 3, 3, scale=0.4)
            sd[f"layer{i}.{4 * k}.bias"] = _r(c)
            _bn(sd, f"layer{i}.{4 * k + 1}", c)
            _vth(sd, f"layer{i}.{4 * k + 2}.Vth")
            cin = c
    sd["classifier.1.weight"] = _r(classes, cin * 49, scale=0.2)
    sd["classifier.1.bias"] = _r(classes)
    _bn(sd, "classifier.2", classes)
    _vth(sd, "classifier.3.Vth")
    return sd


def reference_dsr_vgg(sd, x, alpha):
    cfg_len = [1, 1, 2, 2, 2]
    out = x
    for i, n in enumerate(cfg_len, 1):
        for k in range(n):
            out = _conv(sd, f"layer{i}.{4 * k}", out)
            out = dsr_neuron(_bn_apply(sd, f"layer{i}.{4 * k + 1}", out),
                             sd[f"layer{i}.{4 * k + 2}.Vth"], alpha)
        out = _steps(lambda z: F.avg_pool2d(z, 2, 2), out)
    out = _steps(lambda z: F.adaptive_avg_pool2d(z, (7, 7)), out)  # the official replication
    lin = _steps(lambda z: F.linear(z.flatten(1), sd["classifier.1.weight"],
                                    sd["classifier.1.bias"]), out)
    s = dsr_neuron(_bn_apply(sd, "classifier.2", lin), sd["classifier.3.Vth"], alpha)
    return s.mean(0)


def test_dsr_vgg_checkpoint_folds_the_7x7_replication(tmp_path):
    sd = official_dsr_vgg()
    path = _official_file(tmp_path, sd, prefix=True, arch="vgg11_if")
    model, info = load_foreign_checkpoint(path, "dsr-vgg11", size=32, time_steps=10)
    assert info["time_steps"] == 10 and info["input_shape"] == [2, 32, 32]
    assert model.classifier[1].module.in_features == 64  # 64 x 49 columns summed
    x = (torch.rand(5, 2, 2, 32, 32, generator=G) * 3).round().double()
    sdd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        got = dsr_logits(model.double(), x)
        want = reference_dsr_vgg(sdd, x, 0.3)
    assert torch.allclose(got, want, atol=1e-9)


def official_ltl(in_ch=1, channels=(4, 8, 8, 16), hidden=(12,), classes=10, side=2) -> dict:
    """Keys of LTL's ``SpikingCNN`` (conv1.. then fc..), inside ``model_state_dict``."""
    sd, cin, k = {}, in_ch, 0
    for c in channels:
        k += 1
        sd[f"conv{k}.weight"], sd[f"conv{k}.bias"] = _r(c, cin, 3, 3, scale=0.5), _r(c, scale=0.1)
        cin = c
    fin = cin * side * side
    for h in (*hidden, classes):
        k += 1
        sd[f"fc{k}.weight"], sd[f"fc{k}.bias"] = _r(h, fin, scale=0.5), _r(h, scale=0.1)
        fin = h
    return sd


def reference_ltl(sd, x, strides, n_conv, n_fc):
    """LTL's ``mem_update`` loop: ``mem = mem decay (1 - spike) + W x``; ``spike = mem > 0.6``;
    prediction = mean over T of the last Linear on the last hidden spikes."""
    decay = math.exp(-1 / 10)
    T = x.shape[0]
    mems, spikes, total = {}, {}, 0
    for t in range(T):
        h = x[t]
        for i in range(1, n_conv + n_fc):
            if i <= n_conv:
                cur = F.conv2d(h, sd[f"conv{i}.weight"], sd[f"conv{i}.bias"], strides[i - 1], 1)
            else:
                cur = F.linear(h.flatten(1), sd[f"fc{i}.weight"], sd[f"fc{i}.bias"])
            mem = mems.get(i, torch.zeros_like(cur)) * decay * (1 - spikes.get(
                i, torch.zeros_like(cur))) + cur
            mems[i], spikes[i] = mem, (mem > 0.6).to(cur.dtype)
            h = spikes[i]
        k = n_conv + n_fc
        total = total + F.linear(h.flatten(1), sd[f"fc{k}.weight"], sd[f"fc{k}.bias"])
    return total / T


def test_ltl_checkpoint_computes_ltl(tmp_path):
    sd = official_ltl()
    path = tmp_path / "ltl.pth"
    torch.save({"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": {"state": {}},
                "loss": 0.5, "acc": 90.1}, path)
    model, info = load_foreign_checkpoint(path, "ltl-vgg11", size=8)
    assert info["time_steps"] == 16 and info["arch_kwargs"]["strides"] == [1, 2, 1, 2]
    x = (torch.rand(16, 3, 1, 8, 8, generator=G) * 2).double()
    sdd = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        got = readout_logits(model.double(), x)
        want = reference_ltl(sdd, x, [1, 2, 1, 2], 4, 2)
    assert torch.allclose(got, want, atol=1e-9)


def test_ltl_teacher_and_wrong_files_are_refused(tmp_path):
    with pytest.raises(InputFileError, match="ANN teacher"):
        load_foreign({"model_state_dict": {"conv1.0.weight": torch.zeros(4, 3, 3, 3),
                                           "conv1.1.weight": torch.zeros(4)}}, "ltl-vgg11")
    with pytest.raises(InputFileError, match="not a DSR checkpoint"):
        load_foreign({"state_dict": official_ltl()}, "dsr-preact-resnet18")
    sd = official_dsr_resnet()
    sd["layer1.0.relu1.Vth"] = torch.tensor([0.3])
    with pytest.raises(InputFileError, match="scalars"):
        load_foreign({"state_dict": sd}, "dsr-preact-resnet18", size=8)
    sd = official_dsr_resnet()
    del sd["layer1.0.bn2.running_var"]
    with pytest.raises(InputFileError, match="lacks"):
        load_foreign({"state_dict": sd}, "dsr-preact-resnet18", size=8)
    with pytest.raises(InputFileError, match="no official-checkpoint loader"):
        load_foreign({"state_dict": sd}, "dvs-cnn")
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(InputFileError, match="refused to unpickle"):
        load_foreign_checkpoint(path, "ltl-vgg11")


def test_official_checkpoint_compiles_through_load_checkpoint(tmp_path):
    path = _official_file(tmp_path, official_dsr_resnet(), prefix=True)
    model, info = load_checkpoint(path, arch="dsr-preact-resnet18", arch_kwargs={"size": 8})
    cm = compile_graph(torch_to_nir(model.double(), tuple(info["input_shape"])),
                       time_steps=info["time_steps"])
    assert cm.meta["input_shape"] == [1, 8, 8]
    assert np.all([ly["n_weights"] > 0 for ly in cm.meta["quantization"]["layers"]])
    with pytest.raises(InputFileError, match="without architecture"):
        load_checkpoint(path)
