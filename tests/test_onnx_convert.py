"""ANN -> SNN conversion from ONNX, torch.export and TorchScript, on scikit-learn digits.

A small ReLU CNN is trained here on the 8x8 digits (no download), exported with
``torch.onnx.export`` (the TorchScript-based exporter: ``dynamo=True`` needs onnxscript), and
converted to an IF SNN with reset by subtraction and 99.9th-percentile threshold balancing.
``python -m tests.test_onnx_convert`` prints the accuracy table of docs/interop.md.
"""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from neurodeploy import artifact
from neurodeploy.cli import main
from neurodeploy.compiler import compile_graph, load_source
from neurodeploy.engine import simulate_float
from neurodeploy.errors import InputFileError, UnsupportedLayerError
from neurodeploy.frontends.onnx import ann_forward, encode_rates, onnx_to_nir
from neurodeploy.runtime import run


def digits_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:1400]], d.target[perm[:1400]], x[perm[1400:]], d.target[perm[1400:]]


def train_digits_cnn(epochs: int = 8, seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU-AvgPool-Conv-ReLU-Flatten-Linear, trained with Adam."""
    torch.manual_seed(seed)
    xtr, ytr, _, _ = digits_split()
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(256, 10))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    xt, yt = torch.as_tensor(xtr), torch.as_tensor(ytr)
    for _ in range(epochs):
        for i in range(0, len(xt), 50):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xt[i:i + 50]), yt[i:i + 50]).backward()
            opt.step()
    return m.eval()


def export_onnx(m: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    m = train_digits_cnn()
    export_onnx(m, tmp / "cnn.onnx")
    xtr, ytr, xte, yte = digits_split()
    with torch.no_grad():
        logits = m(torch.as_tensor(xte)).numpy()
    return {"model": m, "onnx": tmp / "cnn.onnx", "dir": tmp, "xtr": xtr, "xte": xte,
            "yte": yte, "logits": logits, "ann_acc": float((logits.argmax(1) == yte).mean())}


def test_onnx_graph_parses_to_the_same_function(digits):
    ops = [n.op_type for n in onnx.load(str(digits["onnx"])).graph.node]
    assert {"Conv", "Relu", "AveragePool", "Flatten", "Gemm"} <= set(ops)
    got = ann_forward(digits["onnx"], digits["xte"])
    np.testing.assert_allclose(got, digits["logits"], atol=1e-4)
    assert digits["ann_acc"] > 0.93


def test_converted_snn_keeps_ann_accuracy_on_float_and_loihi_sim(digits):
    g = onnx_to_nir(digits["onnx"], digits["xtr"][:300], time_steps=32)
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert kinds == {"Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output"}
    assert {n.metadata["reset"] for n in g.nodes.values() if type(n).__name__ == "IF"} == {
        "subtract"}
    assert g.metadata["input_scale"] == pytest.approx(1.0)
    cm = compile_graph(g, time_steps=32)
    xte, yte = digits["xte"][:150], digits["yte"][:150]
    x = encode_rates(xte, 32, g.metadata["input_scale"])
    fl, nat = run(cm, x, "float"), run(cm, x, "native")
    ann = float((digits["logits"][:150].argmax(1) == yte).mean())
    assert (fl.predictions == yte).mean() >= ann - 0.04
    assert (nat.predictions == yte).mean() >= ann - 0.05
    assert (fl.predictions == nat.predictions).mean() >= 0.95


def test_firing_rates_follow_ann_activations(digits):
    """A spike of layer l stands for lambda_l of activation: rates x lambda ~ ReLU outputs."""
    g = onnx_to_nir(digits["onnx"], digits["xtr"][:300], time_steps=100)
    x = digits["xte"][:20]
    res = simulate_float(g, encode_rates(x, 100))
    name = next(k for k in g.nodes if k.endswith("Relu"))  # first hidden layer
    rate = res.activity[name].mean(0) * g.metadata["ann_scales"][name]
    m = digits["model"]
    with torch.no_grad():
        act = torch.relu(m[1](m[0](torch.as_tensor(x)))).numpy()
    err = np.abs(rate - act).mean() / g.metadata["ann_scales"][name]
    assert err < 0.02, err


def test_cli_compile_onnx_with_calibration(digits, tmp_path):
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=digits["xtr"][:200])
    out = tmp_path / "cnn.ndp"
    assert main(["compile", str(digits["onnx"]), "--convert", "--calibrate", str(cal),
                 "--time-steps", "32", "-o", str(out)]) == 0
    cm = artifact.load(out)
    assert cm.meta["source"]["kind"] == "onnx" and cm.input_shape == (1, 8, 8)
    assert cm.meta["time_steps"] == 32
    assert main(["compile", str(digits["onnx"]), "--no-convert", "-o", str(out)]) == 2
    with pytest.raises(InputFileError, match="--convert"):
        load_source(digits["onnx"], convert=False)
    # without calibration data the thresholds are weight bounds: safe, but fire more slowly
    g, info = load_source(digits["onnx"])
    assert g.metadata["ann_percentile"] == "bound" and info["time_steps"] == 64


def test_torch_export_and_torchscript_convert_like_onnx(digits, tmp_path):
    m, x = digits["model"], torch.zeros(1, 1, 8, 8)
    ep_path, ts_path = tmp_path / "cnn.pt2", tmp_path / "cnn.pt"
    torch.export.save(torch.export.export(m, (x,)), str(ep_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(m, (x,)), str(ts_path))
    xte = digits["xte"][:30]
    for path in (ep_path, ts_path):
        np.testing.assert_allclose(ann_forward(path, xte, trust_pickle=True),
                                   digits["logits"][:30], atol=1e-4)
    with pytest.raises(InputFileError, match="--trust-pickle"):
        load_source(ts_path)
    ref, _ = load_source(digits["onnx"], calibration=digits["xtr"][:100], time_steps=16)
    for path in (ep_path, ts_path):
        g, info = load_source(path, trust_pickle=True, calibration=digits["xtr"][:100],
                              time_steps=16)
        assert info["input_shape"] == [1, 8, 8]
        a = simulate_float(g, encode_rates(xte, 16)).output
        b = simulate_float(ref, encode_rates(xte, 16)).output
        assert (a.sum(0).argmax(1) == b.sum(0).argmax(1)).mean() >= 0.95


def _onnx_model(tmp_path, nodes, inits, name="m.onnx", shape=(1, 1, 6, 6), out=(1, 3)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    path = tmp_path / name
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_handmade_onnx_bn_residual_matmul_global_pool(tmp_path):
    r = np.random.default_rng(0)
    inits = {"w1": r.normal(0, 0.5, (4, 1, 3, 3)), "g": r.uniform(0.5, 1.5, 4),
             "b": r.normal(0, 0.1, 4), "mu": r.normal(0, 0.1, 4), "var": r.uniform(0.5, 1, 4),
             "w2": r.normal(0, 0.3, (4, 4, 3, 3)), "b2": r.normal(0, 0.1, 4),
             "wm": r.normal(0, 0.5, (4, 3)), "bm": r.uniform(0.3, 0.6, 3), "shape": [1, -1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "mu", "var"], ["n1"],
                         epsilon=1e-5, name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "bm"], ["y"], name="fc_bias"),
    ]
    path = _onnx_model(tmp_path, nodes, inits)
    x = r.uniform(0, 1, (30, 1, 6, 6))
    t = {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in inits.items() if k != "shape"}
    xt = torch.as_tensor(x)
    bn = (torch.nn.functional.conv2d(xt, t["w1"], padding=1) - t["mu"][:, None, None]) / \
        torch.sqrt(t["var"] + 1e-5)[:, None, None] * t["g"][:, None, None] + t["b"][:, None, None]
    r1 = torch.relu(bn)
    r2 = torch.relu(torch.nn.functional.conv2d(r1, t["w2"], t["b2"], padding=1) + r1)
    ref = (r2.mean((2, 3)) @ t["wm"] + t["bm"]).numpy()
    np.testing.assert_allclose(ann_forward(path, x), ref, atol=1e-5)
    g = onnx_to_nir(path, x, time_steps=150)
    assert "relu2.from.relu1" in g.nodes  # the identity shortcut became a scaled synapse
    spikes = simulate_float(g, encode_rates(x, 150)).output
    rate = spikes.mean(0) * g.metadata["ann_scales"]["readout"]
    assert np.abs(rate - np.maximum(ref, 0)).mean() < 0.03 * np.maximum(ref, 0).max()
    compile_graph(g)  # lowers: shortcut, global pooling and flatten all fuse into synapses


def test_unsupported_operator_names_the_node(tmp_path, capsys):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    path = _onnx_model(tmp_path, nodes, {"w": np.ones((3, 1, 3, 3))}, out=(1, 12))
    with pytest.raises(UnsupportedLayerError, match="'pool' of type ONNX MaxPool.*average"):
        onnx_to_nir(path, None, time_steps=8)
    assert main(["compile", str(path), "-o", str(tmp_path / "m.ndp")]) == 2
    assert "MaxPool" in capsys.readouterr().err


def accuracy_table(steps=(8, 16, 32, 64, 128), n_test: int | None = None) -> list[dict]:
    """ANN vs SNN (float and loihi-sim) test accuracy against the number of time steps."""
    import tempfile
    from pathlib import Path

    m = train_digits_cnn()
    xtr, _, xte, yte = digits_split()
    if n_test:
        xte, yte = xte[:n_test], yte[:n_test]
    with torch.no_grad():
        ann = float((m(torch.as_tensor(xte)).argmax(1).numpy() == yte).mean())
    rows = []
    with tempfile.TemporaryDirectory() as d:
        export_onnx(m, Path(d) / "cnn.onnx")
        g = onnx_to_nir(Path(d) / "cnn.onnx", xtr[:300], time_steps=max(steps))
    cm = compile_graph(g, time_steps=max(steps))
    for t in steps:
        x = encode_rates(xte, t, g.metadata["input_scale"])
        fl, nat = run(cm, x, "float"), run(cm, x, "native")
        rows.append({"T": t, "ann": ann, "snn_float": float((fl.predictions == yte).mean()),
                     "snn_loihi_sim": float((nat.predictions == yte).mean()),
                     "agreement": float((fl.predictions == nat.predictions).mean())})
    return rows


if __name__ == "__main__":
    print("| T | ANN | SNN float | SNN loihi-sim | float/loihi-sim agreement |")
    print("|---|---|---|---|---|")
    for row in accuracy_table():
        print(f"| {row['T']} | {row['ann']:.1%} | {row['snn_float']:.1%} | "
              f"{row['snn_loihi_sim']:.1%} | {row['agreement']:.1%} |")
