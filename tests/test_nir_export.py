"""NIR export of a compiled model: the dequantized fixed-point network as a plain NIR graph.

Norse (installed in the dev venv) imports the exported file and must produce the same spikes as
our float simulation of it; for IF layers that float simulation equals the Loihi fixed-point run
bit for bit (LIF decays are rounded in fixed point, so there the two differ in a few spikes).
"""

import nir
import numpy as np
import torch

from neurodeploy.compiler import compile_graph
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.exporters import dequantize, export_nir
from neurodeploy.frontends.nir_file import read_nir
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.passes import training_timing
from tests.models_for_tests import spikes

R = np.random.default_rng(0)


def _ones(shape):
    return np.ones(shape)


def conv_net(reset="zero"):
    s1, s2 = (4, 8, 8), (4, 4, 4)
    meta = {"reset": reset}
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "c1": nir.Conv2d(input_shape=(8, 8), weight=R.normal(0.1, 0.5, (4, 2, 3, 3)), stride=1,
                         padding=1, dilation=1, groups=1, bias=np.full(4, 0.05)),
        "n1": nir.IF(r=_ones(s1), v_threshold=_ones(s1), v_reset=0 * _ones(s1), metadata=meta),
        "c2": nir.Conv2d(input_shape=(8, 8), weight=R.normal(0.1, 0.5, (4, 4, 3, 3)), stride=2,
                         padding=1, dilation=1, groups=1, bias=np.zeros(4)),
        "n2": nir.LIF(tau=5 * _ones(s2), r=5 * _ones(s2), v_leak=0 * _ones(s2),
                      v_threshold=_ones(s2), v_reset=0 * _ones(s2), metadata=meta),
        "output": nir.Output(output_type={"output": np.array(s2)}),
    }
    edges = [("input", "c1"), ("c1", "n1"), ("n1", "c2"), ("c2", "n2"), ("n2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


def dense_net():
    nodes = {
        "input": nir.Input(input_type={"input": np.array([12])}),
        "a1": nir.Affine(weight=R.normal(0.1, 0.5, (8, 12)), bias=np.full(8, 0.03)),
        "n1": nir.IF(r=_ones(8) * 1e3, v_threshold=_ones(8), v_reset=0 * _ones(8)),
        "a2": nir.Affine(weight=R.normal(0.2, 0.6, (5, 8)), bias=np.zeros(5)),
        "n2": nir.LIF(tau=_ones(5) * 4e-3, r=_ones(5), v_leak=0 * _ones(5),
                      v_threshold=_ones(5) * 0.5, v_reset=0 * _ones(5)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "a1"), ("a1", "n1"), ("n1", "a2"), ("a2", "n2"), ("n2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3}, type_check=False)


def _norse_run(path, x, dt):
    import norse.torch as nt

    module = nt.from_nir(nir.read(path), dt=dt)
    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = module(torch.as_tensor(x[t], dtype=torch.float32), state)
            out.append(y.numpy())
    return np.stack(out)


def test_norse_runs_the_exported_conv_network_like_our_float_engine(tmp_path):
    cm = compile_graph(conv_net())
    export_nir(cm, tmp_path / "deployed.nir")
    g = nir.read(tmp_path / "deployed.nir")  # a plain NIR graph: strict type check passes
    assert not any("loihi" in n.metadata for n in g.nodes.values())
    x = (R.random((40, 4, 2, 8, 8)) < 0.3).astype(np.float32)
    ours = simulate_float(read_nir(tmp_path / "deployed.nir"), x, dt=1.0).output
    assert np.array_equal(_norse_run(tmp_path / "deployed.nir", x, 1.0), ours)
    assert ours.sum() > 100
    fixed = simulate_fixed(training_timing(cm.graph), x.astype(np.int64), pipeline=False).output
    assert np.mean(fixed == ours) > 0.995  # only LIF decay rounding differs


def test_norse_runs_the_exported_dense_network(tmp_path):
    cm = compile_graph(dense_net())
    g = export_nir(cm, tmp_path / "dense.nir")
    assert g.metadata["dt"] == 1e-3 and isinstance(g.nodes["n2"], nir.LIF)
    x = (R.random((50, 6, 12)) < 0.4).astype(np.float32)
    ours = simulate_float(read_nir(tmp_path / "dense.nir"), x, dt=1e-3).output
    assert np.array_equal(_norse_run(tmp_path / "dense.nir", x, 1e-3), ours) and ours.sum() > 0


def test_dequantized_parameters_are_the_fixed_point_values():
    cm = compile_graph(conv_net())
    dq = dequantize(cm)
    for syn, neuron in (("c1", "n1"), ("c2", "n2")):
        q, qn = cm.graph.nodes[syn].metadata["loihi"], cm.graph.nodes[neuron].metadata["loihi"]
        lam = np.asarray(qn["channel_scale"])  # per output channel (per-channel default)
        assert lam.min() < lam.max() and np.array_equal(lam, q["channel_scale"])
        gain = 1.0 if neuron == "n1" else 1.0 / dq.nodes[neuron].tau.flat[0]
        np.testing.assert_allclose(dq.nodes[syn].weight * lam[:, None, None, None] * gain,
                                   q["weight_mant"])
        np.testing.assert_allclose(dq.nodes[neuron].v_threshold,
                                   (np.asarray(qn["vth"]) + 1 / 128) / lam[:, None, None])
        assert dq.nodes[neuron].metadata["reset"] == "zero"
    assert dq.nodes["n2"].tau.flat[0] == 4096 / cm.graph.nodes["n2"].metadata["loihi"]["dv"]
    b = cm.graph.nodes["n1"].metadata["loihi"]
    np.testing.assert_allclose(dq.nodes["c1"].bias * b["channel_scale"] * 64,
                               (b["bias_mant"] * 2 ** b["bias_exp"]).reshape(4, -1)[:, 0])


def if_net(seed: int = 0) -> torch.nn.Module:
    """IF layers only (reset by subtraction, BN, avg-pool, amplitude, bias) from torch."""
    import neurodeploy.nn as snn

    torch.manual_seed(seed)
    m = snn.multistep(torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
        snn.IF(threshold=0.7, spike_amplitude="threshold"), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), snn.IF(threshold=1.0), torch.nn.Flatten(),
        torch.nn.Linear(64, 5), snn.IF(threshold=1.0, reset="zero")))
    for p in m.parameters():
        p.data.normal_(0.1, 0.5)
    m[1].module.running_var.uniform_(0.5, 2.0)
    return m.double().eval()


def test_if_networks_export_to_the_exact_fixed_point_behaviour(tmp_path):
    """IF networks (reset by subtraction, biases, pooling) in float equal the fixed-point engine
    once exported, bit for bit: only decays are rounded in fixed point."""
    cm = compile_graph(torch_to_nir(if_net(), (2, 8, 8)))
    g = export_nir(cm, tmp_path / "m.nir")
    assert {n.metadata["reset"] for n in g.nodes.values() if isinstance(n, nir.IF)} == {
        "subtract", "zero"}
    x = spikes(40, 6, (2, 8, 8), seed=3).numpy().astype(np.int64)
    fixed = simulate_fixed(training_timing(cm.graph), x, pipeline=False).activity
    res = simulate_float(read_nir(tmp_path / "m.nir"), x, dt=1.0).activity
    for k, n in g.nodes.items():
        if isinstance(n, nir.IF):
            assert np.array_equal(res[k], fixed[k]) and fixed[k].sum() > 0, k
