"""Observers and calibration: deterministic, aligned scales, never worse than min/max."""

from __future__ import annotations

import functools
import json

import nir
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neurodeploy import artifact, zoo
from neurodeploy.checkpoint import save
from neurodeploy.cli import main
from neurodeploy.compiler import compile_graph
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.errors import QuantizationError
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.passes import lower_for_hardware
from neurodeploy.passes.align_pipeline import added_by_alignment
from neurodeploy.quantize import (
    LoihiFormat,
    MinMaxObserver,
    PercentileObserver,
    SearchObserver,
    calibrate,
    make_observer,
    quantize_graph,
    simulate_layerwise,
)
from neurodeploy.quantize.calibrate import rate_error, subsample, units
from neurodeploy.quantize.loihi import quantize_weights
from tests.models_for_tests import conv3, residual

FMT = LoihiFormat()


def counts(shape, p=0.3, seed=0, hi=2):
    """``[T, B, *shape]`` integer event counts in 0..hi."""
    rng = np.random.default_rng(seed)
    return ((rng.random(shape) < p) * rng.integers(1, hi + 1, shape)).astype(np.int64)


def recurrent_graph(two_layer_loop: bool = False, seed: int = 0) -> nir.NIRGraph:
    """in -> LIF h (self-recurrent) -> IF o, or with the loop h -> g -> h through a second LIF."""
    rng = np.random.default_rng(seed)

    def lif(n, thr):
        return nir.LIF(tau=np.full(n, 5.0), r=np.full(n, 5.0), v_leak=np.zeros(n),
                       v_threshold=np.full(n, thr), v_reset=np.zeros(n),
                       metadata={"reset": "subtract"})

    def aff(n_out, n_in, sd):
        return nir.Affine(rng.normal(0, sd, (n_out, n_in)), np.zeros(n_out))

    nodes = {"in": nir.Input(np.array([6])), "w_in": aff(5, 6, 0.9), "h": lif(5, 1.0),
             "w_out": aff(3, 5, 0.8),
             "o": nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3),
                         metadata={"reset": "subtract"}),
             "out": nir.Output(np.array([3]))}
    edges = [("in", "w_in"), ("w_in", "h"), ("h", "w_out"), ("w_out", "o"), ("o", "out")]
    if two_layer_loop:
        nodes.update(w_hg=aff(4, 5, 0.7), g=lif(4, 0.8), w_gh=aff(5, 4, 0.5))
        edges += [("h", "w_hg"), ("w_hg", "g"), ("g", "w_gh"), ("w_gh", "h")]
    else:
        nodes["w_rec"] = aff(5, 5, 0.4)
        edges += [("h", "w_rec"), ("w_rec", "h")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


@pytest.fixture(scope="module")
def conv_graph():
    return lower_for_hardware(torch_to_nir(conv3(), (2, 9, 9)))


@pytest.fixture(scope="module")
def conv_calibration(conv_graph):
    x = counts((8, 32, 2, 9, 9))
    return x, calibrate(conv_graph, x, FMT)


def _assert_aligned(q: nir.NIRGraph) -> None:
    """Every synapse into a neuron layer carries that layer's scale."""
    for a, b in q.edges:
        if "weight_mant" in q.nodes[a].metadata.get("loihi", {}) and "vth" in q.nodes[b].metadata[
                "loihi"]:
            assert q.nodes[a].metadata["loihi"]["scale"] == q.nodes[b].metadata["loihi"]["scale"]


# ------------------------------------------------------------------------------ observers


def test_minmax_observer_formula():
    obs = MinMaxObserver(FMT)
    obs.observe([np.array([[0.5, -2.0]]), np.array([[1.0]])], np.array([1.5]))
    assert obs.calculate_scale() == pytest.approx(254 / 2.0)
    obs = MinMaxObserver(FMT)
    obs.observe([np.array([[1e-6]])], np.array([1.0]))  # threshold bound: vth < 2**17
    assert obs.calculate_scale() == pytest.approx((2 ** 17 - 1) / 1.0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (4, 6), elements=st.floats(-3, 3, allow_nan=False)).filter(
    lambda w: np.abs(w).max() > 1e-3))
def test_percentile_100_is_minmax_and_lower_percentiles_scale_up(w):
    mm, p100, p90 = MinMaxObserver(FMT), PercentileObserver(FMT, 100), PercentileObserver(FMT, 90)
    for o in (mm, p100, p90):
        o.observe([w], np.array([1.0]))
    assert p100.calculate_scale() == pytest.approx(mm.calculate_scale())
    assert p90.calculate_scale() >= mm.calculate_scale() * (1 - 1e-12)


def test_percentile_observer_clips_and_counts():
    w = np.linspace(-0.1, 0.1, 1000).reshape(10, 100)
    w[0, :3] = [1.0, -1.5, 2.0]  # three outliers
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([100])), "fc": nir.Affine(w, np.zeros(10)),
               "n": nir.IF(r=np.ones(10), v_threshold=np.ones(10), v_reset=np.zeros(10)),
               "out": nir.Output(np.array([10]))},
        edges=[("in", "fc"), ("fc", "n"), ("n", "out")], metadata={"dt": 1.0}, type_check=False)
    q_mm, rep_mm = quantize_graph(g, FMT)
    q, rep = quantize_graph(g, FMT, observer=functools.partial(PercentileObserver,
                                                               percentile=99.0))
    ly, meta = rep.layers[0], q.nodes["n"].metadata["loihi"]
    assert rep_mm.layers[0].n_saturated == 0
    clip = np.percentile(np.abs(w[w != 0]), 99.0)
    assert ly.scale == pytest.approx(254 / clip) and ly.scale > 10 * rep_mm.layers[0].scale
    # exactly the weights beyond the clip value saturate, and the report counts them
    mant, sat = quantize_weights(w, ly.scale)
    assert ly.n_saturated == sat == meta["n_saturated"] == rep.saturated_layers["n"]
    beyond = np.abs(w) / clip  # > 1: beyond the percentile; the grid ends at 254 or 256
    assert np.count_nonzero(beyond > 257 / 254) <= sat <= np.count_nonzero(beyond > 1)
    assert 3 <= sat <= 10
    assert meta["observer"] == "percentile" and meta["percentile"] == 99.0
    assert meta["clip_value"] == pytest.approx(clip) and ly.percentile == 99.0
    # the bulk is quantized more finely than with min/max
    inner = np.abs(w) < 0.1
    err_p = np.abs(mant / ly.scale - w)[inner].max()
    err_mm = np.abs(q_mm.nodes["fc"].metadata["loihi"]["weight_mant"] / rep_mm.layers[0].scale
                    - w)[inner].max()
    assert err_p < err_mm / 5


def test_observer_construction_errors():
    with pytest.raises(QuantizationError, match="unknown observer 'histogram'"):
        make_observer("histogram", FMT)
    with pytest.raises(QuantizationError, match="not an instance|got an instance"):
        make_observer(MinMaxObserver(FMT), FMT)
    with pytest.raises(QuantizationError, match="percentile must be in"):
        PercentileObserver(FMT, 0)
    g = lower_for_hardware(torch_to_nir(conv3(), (2, 9, 9)))
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize_graph(g, FMT, observer="search")


def test_synapse_shared_by_two_neuron_layers_is_rejected():
    def if_(n):
        return nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n))

    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "fc": nir.Affine(np.eye(3), np.zeros(3)),
               "a": if_(3), "b": if_(3), "out": nir.Output(np.array([3]))},
        edges=[("in", "fc"), ("fc", "a"), ("fc", "b"), ("a", "out"), ("b", "out")],
        metadata={"dt": 1.0}, type_check=False)
    with pytest.raises(QuantizationError, match="'fc' feeds 2 neuron layers"):
        quantize_graph(g, FMT)


def test_search_observer_prefers_minmax_on_ties():
    obs = SearchObserver(FMT)
    obs.observe([np.array([[0.5, -1.0]])], np.array([1.0]))
    cands = obs.candidates()
    assert cands[0] == (obs.base_scale, 1.0) and len(set(cands)) == len(cands)
    for s, f in cands:
        obs.observe_candidate(s, f, 0.25)
    assert obs.calculate_scale() == obs.base_scale and obs.calculate_vth_factor() == 1.0
    rec = obs.record()
    assert rec["candidates"].shape == (len(cands), 3) and rec["rate_error_minmax"] == 0.25


# ------------------------------------------------------------------------------ calibration


def test_layerwise_simulation_equals_fixed_engine(conv_graph):
    for g, x in ((conv_graph, counts((7, 5, 2, 9, 9))),
                 (lower_for_hardware(torch_to_nir(residual(), (2, 8, 8))),
                  counts((6, 4, 2, 8, 8), seed=3)),
                 (recurrent_graph(), counts((10, 6, 6), p=0.5, seed=1)),
                 (recurrent_graph(two_layer_loop=True), counts((10, 6, 6), p=0.5, seed=2))):
        q, _ = quantize_graph(g, FMT)
        stats: dict = {}
        fast = simulate_layerwise(q, x, stats)
        ref = simulate_fixed(q, x, pipeline=False)
        for n, s in fast.items():
            np.testing.assert_array_equal(s, ref.activity[n], err_msg=n)
            for key in ("u_wrap", "v_clip"):
                np.testing.assert_array_equal(stats[n][key], ref.states[n][key])


def test_calibration_is_deterministic(conv_graph, conv_calibration):
    x, cal = conv_calibration
    again = calibrate(conv_graph, x, FMT)
    assert cal.scales == again.scales and cal.vth_factors == again.vth_factors
    for n in cal.records:
        np.testing.assert_array_equal(cal.records[n]["candidates"],
                                      again.records[n]["candidates"])
    # thinning to max_samples picks evenly spaced samples, the same ones every time
    np.testing.assert_array_equal(subsample(x, 12), x[:, np.linspace(0, 31, 12).round()
                                                       .astype(int)])


def test_search_never_worse_than_minmax(conv_graph, conv_calibration):
    x, cal = conv_calibration
    assert cal.objective <= cal.objective_minmax
    assert cal.used in ("search", "minmax")
    # both objectives agree with the reference engines (float engine vs fixed, no delays)
    ref = simulate_float(conv_graph, x).activity

    def objective(q):
        act = simulate_fixed(q, x, pipeline=False).activity
        return sum(rate_error(act[n], ref[n]) for n in cal.scales)

    q_mm, _ = quantize_graph(conv_graph, FMT)
    q_cal, rep = cal.quantize(conv_graph, FMT)
    assert objective(q_mm) == pytest.approx(cal.objective_minmax)
    assert objective(q_cal) == pytest.approx(cal.objective)
    # every candidate's error is recorded, and the chosen one is the best
    for ly in rep.layers:
        c = np.asarray(ly.candidates)
        assert c.shape[1] == 3 and len(c) >= 5
        assert ly.observer == cal.used
        if cal.used == "search":
            assert (ly.scale, ly.vth_factor) == tuple(c[np.argmin(c[:, 2]), :2])
    assert rep.calibration["objective"] == cal.objective


def test_residual_calibration_keeps_branches_aligned():
    g = lower_for_hardware(torch_to_nir(residual(), (2, 8, 8)))
    cal = calibrate(g, counts((6, 16, 2, 8, 8), seed=5), FMT)
    q, _ = cal.quantize(g, FMT)
    _assert_aligned(q)
    assert q.nodes["c2"].metadata["loihi"]["scale"] == q.nodes["sc"].metadata["loihi"]["scale"]
    assert cal.objective <= cal.objective_minmax


@pytest.mark.parametrize("two_layer_loop", [False, True])
def test_recurrent_synapse_shares_the_neuron_scale(two_layer_loop):
    g = recurrent_graph(two_layer_loop)
    loop = ["h", "g"] if two_layer_loop else ["h"]
    assert loop in units(g)  # neurons on one cycle are calibrated together
    x = counts((10, 16, 6), p=0.5, seed=4)
    cal = calibrate(g, x, FMT)
    q, rep = cal.quantize(g, FMT)
    _assert_aligned(q)
    rec = "w_gh" if two_layer_loop else "w_rec"
    lam = q.nodes["h"].metadata["loihi"]["scale"]
    assert q.nodes[rec].metadata["loihi"]["scale"] == lam
    gain = 5.0 / 5.0  # dt r / tau
    np.testing.assert_array_equal(q.nodes[rec].metadata["loihi"]["weight_mant"],
                                  quantize_weights(g.nodes[rec].weight * gain, lam)[0])
    assert "w_rec" not in (rep.layers[0].synapses if two_layer_loop else [])
    assert rec in next(ly.synapses for ly in rep.layers if ly.neuron == "h")
    assert cal.objective <= cal.objective_minmax


# ---------------------------------------------------------------------- compiler and CLI


def test_compile_graph_records_calibration(tmp_path):
    g = torch_to_nir(conv3(), (2, 9, 9))
    x = counts((8, 12, 2, 9, 9), seed=6)
    cm = compile_graph(g, calibration=x, calibration_samples=8)
    qm = cm.meta["quantization"]
    assert qm["observer"] == "search" and qm["calibration"]["samples"] == 8
    own = [ly for ly in qm["layers"] if not added_by_alignment(cm.graph.nodes[ly["neuron"]])]
    assert {ly["observer"] for ly in own} == {qm["calibration"]["used"]}
    # the clocks of pipeline alignment (conv3 has negative biases) keep their fixed scale
    assert cm.meta["alignment"]["clock_layers"] > 0
    assert {ly["observer"] for ly in qm["layers"] if ly not in own} == {"override"}
    path = tmp_path / "m.ndp"
    artifact.save(cm, path)
    back = artifact.load(path)
    meta = back.graph.nodes["1"].metadata["loihi"]
    assert meta["observer"] in ("search", "minmax") and meta["candidates"].shape[1] == 3
    assert back.meta["quantization"]["layers"][0]["candidates"]
    # any observer with calibration data reports the layers' rate errors
    cm_p = compile_graph(g, calibration=x, observer="percentile")
    assert all(ly["rate_error"] is not None for ly in cm_p.meta["quantization"]["layers"])
    with pytest.raises(QuantizationError, match="needs calibration data"):
        compile_graph(g, observer="search")
    with pytest.raises(QuantizationError, match="calibration data has shape"):
        compile_graph(g, calibration=x[:, :, :1])


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


def test_cli_compile_calibrate_then_eval(ckpt, tmp_path, capsys):
    data = tmp_path / "d.npz"
    x = np.moveaxis(counts((8, 12, 2, 12, 12), seed=7), 0, 1)
    np.savez(data, x=x.astype(np.uint8), y=np.arange(12) % 10)
    out = tmp_path / "m.ndp"
    assert main(["compile", str(ckpt), "-o", str(out), "--calibrate", str(data)]) == 0
    text = capsys.readouterr()
    assert "calibration on 12 samples" in text.out
    assert "calibration: 1:" in text.err  # per-layer search progress
    assert main(["inspect", str(out)]) == 0
    assert "quantization" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["quantization"]["layers"]
    assert all(ly["rate_error"] is not None for ly in layers)
    assert all(ly["candidates"] for ly in layers if ly["observer"] != "override")
    added = {k for k, n in artifact.load(out).graph.nodes.items() if added_by_alignment(n)}
    assert main(["eval", str(out), "--input", str(data), "--json", "--samples", "4"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["samples"] == 4 and set(rep["top1"]) == {"float", "fake_quant", "loihi_sim"}
    assert rep["agreement_with_float"]["float"] == 1.0
    own = [ly for ly in rep["layers"] if ly["neuron"] not in added]
    assert [ly["neuron"] for ly in own] == ["1", "3", "6"]
    assert [ly["depth"] for ly in own] == [1, 2, 3]
    assert main(["eval", str(out), "--input", str(data), "--samples", "2"]) == 0
    assert "fake-quant" in capsys.readouterr().out
    assert main(["compile", str(ckpt), "-o", str(out), "--observer", "search"]) == 2
    assert "needs calibration data" in capsys.readouterr().err
