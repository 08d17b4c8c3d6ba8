"""Per-output-channel scales: ``lambda_k = lambda m_k`` in weights, threshold, bias and v_init.

Exact in float (spikes are binary), so only rounding changes; every synapse layer into channel
``k`` uses ``lambda_k``; the target decides the default; Lava runs the per-neuron thresholds
(reset to zero and by subtraction) exactly like the native engine, spikes and ``u``/``v``.
"""

from __future__ import annotations

import functools

import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neurodeploy.cli import main
from neurodeploy.compiler import compile_graph
from neurodeploy.engine import fixed_engine, simulate_fixed
from neurodeploy.errors import QuantizationError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.passes import lower_for_hardware
from neurodeploy.quantize import LoihiFormat, PercentileObserver, calibrate, quantize_graph
from neurodeploy.quantize.loihi import layer_inputs, max_scale
from neurodeploy.quantize.observers import channel_fit_scales, channel_multipliers
from neurodeploy.targets import TargetError, load_target
from tests.models_for_tests import conv3, residual, spikes

FMT = LoihiFormat()
TOP, VTH_MAX = 254, 2**17 - 1


def affine_if(w: np.ndarray, theta: float, bias=None) -> nir.NIRGraph:
    """input -> Affine(w) -> IF (r = 1, dt = 1: input gain 1) -> output."""
    n_out, n_in = w.shape
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc": nir.Affine(weight=w, bias=np.zeros(n_out) if bias is None else bias),
             "n": nir.IF(r=np.ones(n_out), v_threshold=np.full(n_out, theta),
                         v_reset=np.zeros(n_out)),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc"), ("fc", "n"), ("n", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6, 9), elements=st.floats(-3, 3, allow_nan=False, width=64)),
       st.floats(0.2, 2.0))
def test_weights_within_half_lsb_of_their_channel_scale(w, theta):
    q, rep = quantize_graph(affine_if(w, theta), FMT, per_channel=True)
    qs, qn = q.nodes["fc"].metadata["loihi"], q.nodes["n"].metadata["loihi"]
    lam, lam_k = qn["scale"], np.asarray(qn["channel_scale"])
    assert lam == max_scale([w], np.full(6, theta), FMT)  # the layer scale is min/max's
    assert np.all(lam_k >= lam) and np.array_equal(qs["channel_scale"], lam_k)
    mant = qs["weight_mant"]
    mixed = w.min() < 0 < w.max()
    step = 2 if mixed else 1  # Lava drops the LSB of mixed-sign weights
    assert np.all(np.abs(mant / lam_k[:, None] - w) <= step / 2 / lam_k[:, None] + 1e-12)
    assert qs["n_saturated"] == 0 and mant.min() >= -256 and mant.max() <= 255
    np.testing.assert_array_equal(qn["vth"], np.round(theta * lam_k))
    # each channel uses its 8 bits, unless its threshold bounds its scale first
    with np.errstate(divide="ignore", over="ignore"):  # zero rows: threshold-bound only
        fit = np.minimum(TOP / np.abs(w).max(1), VTH_MAX / theta)
    np.testing.assert_allclose(lam_k, fit, rtol=1e-12)
    ly = rep.layers[0]
    assert rep.per_channel and ly.per_channel
    assert (ly.channel_scale_min, ly.channel_scale_max) == (lam_k.min(), lam_k.max())


def test_outlier_only_coarsens_its_own_channel_and_float_behaviour_is_kept():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.2, (5, 30))
    w[2, 7] = -3.0  # the outlier
    g = affine_if(w, 1.0, bias=rng.normal(0, 0.02, 5))
    per_layer, _ = quantize_graph(g, FMT)
    per_ch, _ = quantize_graph(g, FMT, per_channel=True)
    err = {}
    for tag, q in (("layer", per_layer), ("channel", per_ch)):
        qn, qs = q.nodes["n"].metadata["loihi"], q.nodes["fc"].metadata["loihi"]
        lam_k = np.asarray(qn["channel_scale"])
        err[tag] = np.abs(qs["weight_mant"] / lam_k[:, None] - w).max(1)
        # threshold and bias in the same units as the weights: float model unchanged
        np.testing.assert_allclose(qn["vth"] / lam_k, 1.0, atol=0.5 / lam_k.min())
        bias = qn["bias_mant"] * 2.0 ** qn["bias_exp"] / 64 / lam_k
        np.testing.assert_allclose(bias, g.nodes["fc"].bias, atol=2.0 ** qn["bias_exp"] / 64
                                   / lam_k.min())
    assert np.all(np.asarray(per_layer.nodes["n"].metadata["loihi"]["channel_scale"])
                  == per_layer.nodes["n"].metadata["loihi"]["scale"])
    assert err["channel"][2] == pytest.approx(err["layer"][2])  # outlier channel: same scale
    others = [0, 1, 3, 4]
    assert np.all(err["channel"][others] < err["layer"][others] / 3)


def test_deterministic_and_per_layer_mode_unchanged():
    g = lower_for_hardware(torch_to_nir(conv3(), (2, 9, 9)))
    a, rep_a = quantize_graph(g, FMT, per_channel=True)
    b, rep_b = quantize_graph(g, FMT, per_channel=True)
    for k, node in a.nodes.items():
        for key, val in node.metadata.get("loihi", {}).items():
            assert np.array_equal(val, b.nodes[k].metadata["loihi"][key]), (k, key)
    assert rep_a.as_dict() == rep_b.as_dict()
    flat, rep = quantize_graph(g, FMT)
    assert not rep.per_channel
    for ly in rep.layers:
        assert ly.channel_scale_min == ly.channel_scale_max == ly.scale
        assert ly.scale == next(x.scale for x in rep_a.layers if x.neuron == ly.neuron)


def test_residual_sum_keeps_one_scale_per_channel_across_both_branches():
    g = lower_for_hardware(torch_to_nir(residual(), (2, 8, 8)))
    q, _ = quantize_graph(g, FMT, per_channel=True)
    layer = next(ly for ly in layer_inputs(g, FMT) if ly.neuron == "n2")
    assert sorted(layer.synapses) == ["c2", "sc"]
    lam_k = np.asarray(q.nodes["n2"].metadata["loihi"]["channel_scale"])
    assert lam_k.max() > 1.5 * lam_k.min()  # the channels do differ
    top = np.zeros(len(lam_k))
    for s, w_eff in zip(layer.synapses, layer.w_eff, strict=True):
        qs = q.nodes[s].metadata["loihi"]
        np.testing.assert_array_equal(qs["channel_scale"], lam_k)
        mant = qs["weight_mant"]
        lam_rows = lam_k[:, None, None, None]
        assert np.all(np.abs(mant / lam_rows - w_eff) <= 1.0 / lam_rows + 1e-12)  # half a step
        top = np.maximum(top, np.abs(mant).reshape(len(lam_k), -1).max(1))
    # the largest weight of channel k over both branches sets lambda_k: it reaches the top
    assert np.all(top >= TOP - 2)
    np.testing.assert_allclose(lam_k, channel_fit_scales(layer.w_eff, layer.theta, FMT))


def test_multipliers_apply_on_top_of_percentile_and_search():
    g = lower_for_hardware(torch_to_nir(conv3(reset="zero"), (2, 9, 9)))
    fit = {ly.neuron: channel_fit_scales(ly.w_eff, ly.theta, FMT) for ly in layer_inputs(g, FMT)}
    obs = functools.partial(PercentileObserver, percentile=99.0)
    q, rep = quantize_graph(g, FMT, observer=obs, per_channel=True)
    _, rep_layer = quantize_graph(g, FMT, observer=obs)
    x = spikes(10, 12, (2, 9, 9), p=0.3, seed=2).numpy().astype(np.int64)
    cal = calibrate(g, x, FMT, per_channel=True)
    qc, rep_c = cal.quantize(g, FMT)
    assert cal.per_channel and rep_c.per_channel
    for graph, report in ((q, rep), (qc, rep_c)):
        for ly in report.layers:
            lam_k = graph.nodes[ly.neuron].metadata["loihi"]["channel_scale"]
            # lambda_k = lambda m_k, m_k = max(1, s_k / lambda): the finer of the two
            np.testing.assert_allclose(lam_k, np.maximum(ly.scale, fit[ly.neuron]))
            np.testing.assert_allclose(
                lam_k, ly.scale * channel_multipliers(*_inputs(g, ly.neuron), FMT, ly.scale))
    # the percentile clips the same weights per channel as per layer, and clips some
    sat = {ly.neuron: ly.n_saturated for ly in rep.layers}
    assert sat == {ly.neuron: ly.n_saturated for ly in rep_layer.layers} and sum(sat.values())
    assert any(ly.channel_scale_max > ly.scale for ly in rep.layers)
    assert cal.objective <= cal.objective_minmax


def _inputs(g, neuron):
    ly = next(x for x in layer_inputs(g, FMT) if x.neuron == neuron)
    return ly.w_eff, ly.theta


def test_target_decides_the_default(tmp_path):
    g = torch_to_nir(conv3(), (2, 9, 9))
    assert load_target("loihi-sim").numerics.per_neuron_vth == 1
    assert load_target("loihi").numerics.per_neuron_vth == 0
    assert compile_graph(g).meta["quantization"]["per_channel"] is True  # loihi-sim
    assert compile_graph(g, "loihi").meta["quantization"]["per_channel"] is False
    assert compile_graph(g, per_channel=False).meta["quantization"]["per_channel"] is False
    with pytest.raises(QuantizationError, match="per_neuron_vth = 0"):
        compile_graph(g, "loihi", per_channel=True)
    # explicit scales are applied as given, per layer, unless per-channel is asked for
    scales = {ly["neuron"]: ly["scale"] for ly in
              compile_graph(g).meta["quantization"]["layers"]}
    assert compile_graph(g, scales=scales).meta["quantization"]["per_channel"] is False
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\ninherits = "loihi-sim"\n[numerics]\n'
                   'per_neuron_vth = { value = 2, note = "x" }\n')
    with pytest.raises(TargetError, match="0 or 1"):
        load_target(bad)


def test_cli_compile_per_layer_and_inspect(tmp_path, capsys):
    import torch

    from neurodeploy import artifact, zoo
    from neurodeploy.checkpoint import save

    torch.manual_seed(0)
    model = zoo.build("dvs-cnn", size=12, c1=3, c2=4)
    for p in model.parameters():
        p.data.normal_(0, 0.4)
    ckpt = tmp_path / "m.pt"
    save(model, ckpt, arch="dvs-cnn", arch_kwargs={"size": 12, "c1": 3, "c2": 4},
         input_shape=(2, 12, 12), time_steps=8)
    for flag, want in (("--per-layer", False), ("--per-channel", True)):
        out = tmp_path / f"m{flag}.ndp"
        assert main(["compile", str(ckpt), "-o", str(out), flag]) == 0
        meta = artifact.load(out).meta
        assert meta["quantization"]["per_channel"] is want
        capsys.readouterr()
        assert main(["inspect", str(out)]) == 0
        text = capsys.readouterr().out
        assert ("scales per output channel" in text) is want
        assert ("channels " in text) is want  # node rows: "scale L (channels min..max)"


# -- Lava ---------------------------------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_lava_equals_native_with_per_channel_thresholds(reset):
    from neurodeploy.backends.lava.network import LavaNetwork, simulate_lava
    from neurodeploy.backends.lava.processes import LIFSubtract, LIFZero

    g = lower_for_hardware(torch_to_nir(conv3(seed=5, reset=reset), (2, 9, 9)))
    q, _ = quantize_graph(g, FMT, per_channel=True)
    neurons = [k for k in q.nodes if "vth" in q.nodes[k].metadata.get("loihi", {})]
    for k in neurons:
        assert len(np.unique(q.nodes[k].metadata["loihi"]["vth"])) > 1, k
    T = 24
    x = spikes(T, 1, (2, 9, 9), p=0.35, seed=1).numpy().astype(np.int64)
    depth = fixed_engine.pipeline_depth(q)
    xp = np.concatenate([x, np.zeros((depth, *x.shape[1:]), np.int64)])
    net = LavaNetwork(q, xp[:, 0])
    want = LIFZero if reset == "zero" else LIFSubtract
    assert all(type(net.procs[k]) is want for k in neurons)
    lava, states = simulate_lava(q, xp, record_states=True)
    native = simulate_fixed(q, xp, record_states=True)
    for k in neurons:
        assert np.array_equal(lava[k], native.activity[k]), f"spikes of {k}"
        for var in ("u", "v"):
            assert np.array_equal(states[k][var], native.states[k][var]), f"{var} of {k}"
        assert lava[k].sum() > 0, k
