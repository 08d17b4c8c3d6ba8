"""Data-driven weight rounding (GPTQ-style): lower output error, on the grid, deterministic."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodeploy import artifact
from neurodeploy.compiler import DEFAULT_ROUNDING, compile_graph
from neurodeploy.errors import QuantizationError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.quantize.loihi import max_scale, quantize_weights
from neurodeploy.quantize.rounding import (
    LayerGram,
    WeightRounding,
    accumulate_gram,
    accumulate_layer_gram,
    gptq_round,
    output_error,
    round_nearest,
    unstackable,
    weight_grid,
)
from tests.models_for_tests import conv3, residual, spikes
from tests.test_calibration import FMT, counts, recurrent_graph
from tests.test_lava_equivalence import check_lava_equals_native


def correlated_spikes(n: int, k: int, rng: np.random.Generator, dist_seed: int = 0
                      ) -> np.ndarray:
    """``[n, k]`` binary spikes with per-input rates and shared drive (correlated inputs);
    ``dist_seed`` fixes the distribution, ``rng`` draws the samples."""
    d = np.random.default_rng(dist_seed)
    rate, mix = d.uniform(0.05, 0.5, k), d.normal(0, 1, (4, k))
    drive = rng.normal(0, 1, (n, 4)) @ mix
    return (rng.random((n, k)) < rate * (1 + 0.5 * np.tanh(drive))).astype(float)


def _layer(rng, shape, sign):
    w = rng.normal(0, 1, shape)
    return np.abs(w) if sign == "positive" else -np.abs(w) if sign == "negative" else w


@pytest.mark.parametrize("sign", ["mixed", "positive", "negative"])
@pytest.mark.parametrize("per_row", [False, True])
def test_gptq_lowers_heldout_output_error_and_stays_on_grid(sign, per_row):
    rng = np.random.default_rng(7)
    w = _layer(rng, (12, 40), sign)
    if per_row:
        s = (254 / np.abs(w).max(axis=1, keepdims=True)) * rng.uniform(0.3, 1.0, (12, 1))
    else:
        s = max_scale([w], np.array([1.0]), FMT) * 0.4
    x_cal = correlated_spikes(2000, 40, np.random.default_rng(3))
    x_test = correlated_spikes(2000, 40, np.random.default_rng(4))  # held out, same law
    h = accumulate_gram(nir.Affine(w, np.zeros(12)), x_cal)
    qn, sat_n = quantize_weights(w, s)
    qg, sat_g = gptq_round(w, s, h)

    def err(q):
        return np.linalg.norm((w - q / s) @ x_test.T)

    assert err(qg) < 0.9 * err(qn)
    step, lo, hi = weight_grid(w * s)
    assert sat_g == sat_n == 0
    assert qg.min() >= lo and qg.max() <= hi and np.all(qg % step == 0)
    assert np.all(np.abs(qg - w * s) < step)  # the grid point below or above, never further
    assert np.array_equal(qg, gptq_round(w, s, h)[0])  # deterministic


def test_saturated_weights_stay_at_the_bound_as_with_nearest():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (6, 20))
    w[0, 3], w[2, 5] = 9.0, -9.0
    s = 254 / 3.0
    h = accumulate_gram(nir.Affine(w, np.zeros(6)), correlated_spikes(500, 20, rng))
    qn, sat_n = quantize_weights(w, s)
    qg, sat_g = gptq_round(w, s, h)
    assert sat_n == sat_g == 2
    assert qg[0, 3] == qn[0, 3] == 254 and qg[2, 5] == qn[2, 5] == -256
    assert np.count_nonzero((qg == 254) | (qg == -256)) <= np.count_nonzero(
        (qn == 254) | (qn == -256))


def test_silent_inputs_keep_nearest_and_nearest_is_unchanged():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (5, 8))
    x = correlated_spikes(300, 8, rng)
    x[:, [1, 6]] = 0
    s = 30.0
    h = accumulate_gram(nir.Affine(w, np.zeros(5)), x)
    qn, _ = quantize_weights(w, s)
    qg, _ = gptq_round(w, s, h)
    assert np.array_equal(qg[:, [1, 6]], qn[:, [1, 6]])
    assert np.array_equal(round_nearest(w * s)[0], qn)


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, 1), (2, 2, 0)])
def test_conv_gram_gives_the_output_error_of_the_convolution(groups, stride, padding):
    rng = np.random.default_rng(4)
    w = rng.normal(0, 1, (4, 4 // groups, 3, 3))
    node = nir.Conv2d(input_shape=(7, 7), weight=w, stride=stride, padding=padding,
                      dilation=1, groups=groups, bias=np.zeros(4))
    x = (rng.random((10, 4, 7, 7)) < 0.3).astype(float)
    h = accumulate_gram(node, x)
    s = 20.0
    q, _ = gptq_round(w, s, h)
    err, sig = output_error(w, q, s, h)

    def conv(k):
        return F.conv2d(torch.as_tensor(x), torch.as_tensor(k), stride=stride, padding=padding,
                        groups=groups).pow(2).sum().item()

    assert err == pytest.approx(conv(w - q / s), rel=1e-9)
    assert sig == pytest.approx(conv(w), rel=1e-9)
    assert err < output_error(w, quantize_weights(w, s)[0], s, h)[0]


def test_rounding_record_falls_back_to_nearest_without_inputs():
    w = np.random.default_rng(0).normal(0, 1, (3, 4))
    (q,), _, rec = WeightRounding("gptq").round_layer("n", [w], [50.0])
    assert rec["rounding"] == "nearest" and "no calibration inputs" in rec["rounding_note"]
    assert np.array_equal(q, quantize_weights(w, 50.0)[0])
    with pytest.raises(ValueError):
        WeightRounding("stochastic")


def test_compile_records_rounding_and_is_deterministic(tmp_path):
    g = torch_to_nir(conv3(seed=2), (2, 9, 9))
    x = counts((8, 24, 2, 9, 9))
    a = compile_graph(g, calibration=x, observer="minmax", rounding="gptq")
    b = compile_graph(g, calibration=x, observer="minmax", rounding="gptq")
    n = compile_graph(g, calibration=x, observer="minmax", rounding="nearest")
    q = a.meta["quantization"]
    assert q["rounding"] == "gptq" and q["rounding_samples"] == 18
    used = [ly for ly in q["layers"] if ly["output_error"] is not None]
    assert any("gptq" in ly["rounding"].split(",") for ly in used)
    for ly in used:
        assert ly["output_error"] <= ly["output_error_nearest"]
    for k, node in a.graph.nodes.items():
        m = node.metadata.get("loihi", {})
        if "weight_mant" in m:
            assert np.array_equal(m["weight_mant"], b.graph.nodes[k].metadata["loihi"][
                "weight_mant"])
            assert m["rounding"] in ("gptq", "nearest")
            assert m["rounding_inputs"] in ("float", "quantized")
            qn = n.graph.nodes[k].metadata["loihi"]["weight_mant"]
            step = 2 if m["weight_mant"].min() < 0 < m["weight_mant"].max() else 1
            assert np.abs(m["weight_mant"] - qn).max() <= step
    artifact.save(a, tmp_path / "m.ndp")
    back = artifact.load(tmp_path / "m.ndp").meta["quantization"]
    assert back["layers"][0]["rounding"] == q["layers"][0]["rounding"]
    assert back["rounding_choice"]["held_out_samples"] == 6  # every 4th of 24
    assert set(back["rounding_choice"]["chosen"].values()) <= {"gptq-float", "gptq-quantized"}
    with pytest.raises(QuantizationError, match="needs calibration"):
        compile_graph(g, rounding="gptq")


def test_default_rounding_with_and_without_calibration_data():
    g = torch_to_nir(conv3(seed=2), (2, 9, 9))
    assert compile_graph(g).meta["quantization"]["rounding"] == "nearest"
    cm = compile_graph(g, calibration=counts((6, 8, 2, 9, 9)), observer="minmax")
    assert cm.meta["quantization"]["rounding"] == DEFAULT_ROUNDING


@pytest.mark.parametrize("two_layer_loop", [False, True])
def test_recurrent_synapses_are_rounded_from_their_recorded_inputs(two_layer_loop):
    g = recurrent_graph(two_layer_loop)
    x = counts((12, 40, 6), p=0.5)
    cm = compile_graph(g, calibration=x, rounding="gptq")
    rec = "w_gh" if two_layer_loop else "w_rec"
    m = cm.graph.nodes[rec].metadata["loihi"]
    assert m["rounding"] in ("gptq", "nearest") and m["output_error"] <= m[
        "output_error_nearest"]
    assert "rounding_note" not in m or "no calibration" not in m["rounding_note"]


@pytest.mark.lava
@pytest.mark.parametrize("model,shape", [(conv3(seed=3), (2, 9, 9)), (residual(seed=1),
                                                                         (2, 8, 8))])
def test_gptq_rounded_model_runs_bit_exactly_on_lava(model, shape):
    cal = spikes(10, 16, shape, p=0.35, seed=9).numpy().astype(np.int64)
    cm, _ = check_lava_equals_native(model, shape, T=20, B=1, calibration=cal,
                                     observer="minmax", rounding="gptq")
    assert any("gptq" in ly["rounding"] for ly in cm.meta["quantization"]["layers"])


def _two_branch(rng, n=6, k=24, skip=8):
    """Two dense synapses into one layer, as a residual add: the skip branch reads the spikes
    of ``skip`` of the main branch's inputs, a few of them with extra spikes of its own."""
    ws = [rng.normal(0, 1, (n, k)), rng.normal(0, 1, (n, skip))]
    nodes = [nir.Affine(w, np.zeros(n)) for w in ws]

    def draw(seed):
        r = np.random.default_rng(seed)
        x = correlated_spikes(3000, k, r)
        extra = (r.random((3000, skip)) < 0.05) * (np.arange(skip) % 2 == 0)
        return [x, np.maximum(x[:, :skip], extra)]

    return ws, nodes, draw


def test_joint_rounding_of_two_synapses_lowers_the_summed_current_error():
    rng = np.random.default_rng(5)
    ws, nodes, draw = _two_branch(rng)
    s = [max_scale([w], np.array([1.0]), FMT) * 0.3 for w in ws]
    cal, test = draw(11), draw(12)  # held-out inputs of the same law
    assert unstackable(nodes) is None
    joint = LayerGram(["a", "b"], [accumulate_layer_gram(nodes, cal)], joint=True)
    apart = LayerGram(["a", "b"], [accumulate_gram(nd, x)
                                   for nd, x in zip(nodes, cal, strict=True)], joint=False)
    qj = joint.round(ws, s, 8, 0.01)
    qa = apart.round(ws, s, 8, 0.01)
    qn = [quantize_weights(w, sc)[0] for w, sc in zip(ws, s, strict=True)]

    def err(qs):  # summed current error on held-out inputs
        return np.linalg.norm(sum((w - q / sc) @ x.T
                                  for w, q, sc, x in zip(ws, qs, s, test, strict=True)))

    assert err(qj) < 0.9 * err(qa) < err(qn)
    for w, sc, q in zip(ws, s, qj, strict=True):  # each synapse on its own grid, below or above
        step, lo, hi = weight_grid(w * sc)
        assert np.all(q % step == 0) and np.all(np.abs(q - w * sc) < step)
    held = LayerGram(["a", "b"], [accumulate_layer_gram(nodes, test)], joint=True)
    assert held.error(ws, qj, s)[0] < held.error(ws, qa, s)[0]


def test_mixed_synapse_kinds_fall_back_to_one_at_a_time_and_say_why():
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 2, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(2))
    dense = nir.Affine(np.ones((32, 8)), np.zeros(32))
    assert "dense and convolutional" in unstackable([conv, dense])
    grouped = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1,
                         dilation=1, groups=2, bias=np.zeros(2))
    assert "grouped" in unstackable([conv, grouped])
    assert unstackable([conv, conv]) is None


def test_residual_layer_is_rounded_jointly_and_the_choice_is_recorded():
    g = torch_to_nir(residual(seed=1), (2, 8, 8))
    x = spikes(10, 24, (2, 8, 8), p=0.35, seed=3).numpy().astype(np.int64)
    cm = compile_graph(g, time_steps=10, calibration=x, observer="minmax", rounding="auto")
    q = cm.meta["quantization"]
    assert q["rounding"] == "auto"
    assert q["rounding_choice"]["fit_samples"] == 18
    multi = [ly for ly in q["layers"] if len(ly["synapses"]) > 1 and ly["output_error"]
             is not None]
    assert multi and all(ly["rounding_joint"] for ly in multi)
    for ly in q["layers"]:
        if ly["rounding_rate_errors"] is not None:
            errs = ly["rounding_rate_errors"]
            chosen = q["rounding_choice"]["chosen"][ly["neuron"]]
            assert errs[chosen] == min(errs.values()) and "nearest" in errs
