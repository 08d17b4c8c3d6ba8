"""Energy model (closed-form totals from the TOML figures) and report files."""

from __future__ import annotations

import json
import re

import nir
import numpy as np
import pytest

from neurodeploy.energy import analyze, write_report
from neurodeploy.energy import report as report_mod
from neurodeploy.targets import load_target

W = np.array([[1.0, 0, 2, 0], [0, 0, 3, 0], [4, 5, 6, 0]])  # non-zero fan-out [2, 1, 3, 0]


def lif(shape):
    shape = tuple(np.atleast_1d(shape))
    return nir.LIF(tau=np.full(shape, 10.0), r=np.ones(shape), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape))


def dense_case():
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4])), "fc": nir.Affine(W, np.zeros(3)), "lif": lif(3),
               "out": nir.Output(np.array([3]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")],
    )
    x = np.zeros((3, 2, 4), np.int8)
    x[0, 0] = [1, 0, 0, 1]
    x[0, 1] = [0, 1, 1, 0]
    x[1, 1] = [1, 1, 1, 1]
    x[2, 0] = [0, 0, 1, 0]
    s = np.zeros((3, 2, 3), np.int8)
    s[0, 0, 0] = s[0, 1, 2] = s[2, 0, 1] = 1
    return g, {"in": x, "lif": s}


def conv_case():
    rng = np.random.default_rng(3)
    w = (rng.normal(size=(4, 2, 3, 3)) * (rng.random((4, 2, 3, 3)) < 0.8)).astype(np.float32)
    g = nir.NIRGraph(
        nodes={
            "in": nir.Input(np.array([2, 8, 8])),
            "conv": nir.Conv2d(input_shape=(8, 8), weight=w, stride=1, padding=1, dilation=1,
                               groups=1, bias=np.zeros(4, np.float32)),
            "l1": lif((4, 8, 8)),
            "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])),
            "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0),
            "fc": nir.Affine(rng.normal(size=(3, 64)).astype(np.float32), np.zeros(3, np.float32)),
            "l2": lif(3),
            "out": nir.Output(np.array([3])),
        },
        edges=[("in", "conv"), ("conv", "l1"), ("l1", "pool"), ("pool", "flat"), ("flat", "fc"),
               ("fc", "l2"), ("l2", "out")],
        metadata={"dt": 1e-3},
    )
    act = {"in": (rng.random((6, 2, 2, 8, 8)) < 0.2).astype(np.int8),
           "l1": (rng.random((6, 2, 4, 8, 8)) < 0.1).astype(np.int8),
           "l2": (rng.random((6, 2, 3)) < 0.3).astype(np.int8)}
    return g, act


# ---------------------------------------------------------------------------------------- model


def test_loihi_energy_closed_form():
    g, act = dense_case()
    r = analyze(g, act, "loihi", dt_s=1e-3)
    e = load_target("loihi").energy
    synops = 15 / 2  # see tests/test_energy_counts.py::test_dense_counts_closed_form
    active, updates = 11 / 2, 9
    # input neurons 0..2 each reach the lif core (neuron 3 has no synapse); spikes per sample
    # 1, 1, 1.5 -> 3.5 messages, no hops (the input enters at the core's tile)
    messages = 3.5
    expected = (synops * e.synop_pj + active * e.neuron_update_active_pj
                + (updates - active) * e.neuron_update_inactive_pj + messages * e.spike_in_tile_pj)
    assert r.total_pj == pytest.approx(expected)
    rows = {x.name: x for x in r.layers}
    assert rows["fc"].synop_pj == pytest.approx(synops * 23.6)
    assert rows["in"].routing_pj == pytest.approx(messages * 1.7)
    assert rows["lif"].routing_pj == 0  # its spikes only leave through the Output
    assert sum(x.share for x in r.layers) == pytest.approx(1.0)
    ann = load_target("ann-45nm").ann
    assert r.ann_fp32_pj == pytest.approx(12 * 3 * ann.mac_fp32_pj)  # 12 connections, T = 3
    assert r.ann_int8_pj == pytest.approx(12 * 3 * ann.mac_int8_pj)
    assert r.ann_fp32_ratio == pytest.approx(12 * 3 * 4.6 / expected)
    assert r.snn_45nm_pj == pytest.approx(synops * ann.ac_fp32_pj)
    assert r.mean_power_w == pytest.approx(expected * 1e-12 / 3e-3)
    assert r.mapping is not None and r.mapping.n_cores == 1


def test_static_ann_and_no_mapping_options():
    g, act = dense_case()
    r = analyze(g, act, "loihi", ann_steps=1, map_cores=False)
    assert r.ann_fp32_pj == pytest.approx(12 * 4.6) and r.mapping is None
    rows = {x.name: x for x in r.layers}
    assert rows["in"].messages_per_sample == 9 / 2  # one message per input event
    assert rows["lif"].messages_per_sample == 3 / 2
    assert any("no core mapping" in n for n in r.notes)


def test_ann_45nm_as_target_is_the_ac_mac_estimate():
    g, act = dense_case()
    x = act["in"].astype(float)
    x[2, 0, 0] = 0.5  # step 2 becomes analog: its 2 + 3 pairs are MACs
    act = {**act, "in": x}
    r = analyze(g, act, "ann-45nm")
    assert r.estimate == "45nm-ac-mac" and r.mapping is None
    assert r.total_pj == pytest.approx(r.snn_45nm_pj)
    assert r.snn_45nm_pj == pytest.approx((12 / 2) * 0.9 + (5 / 2) * 4.6)


def test_numbers_used_are_cited():
    g, act = conv_case()
    r = analyze(g, act, "loihi2")
    used = {(n.target, n.key): n for n in r.numbers_used()}
    assert used[("loihi2", "energy.synop_pj")].assumption
    assert used[("ann-45nm", "ann.mac_fp32_pj")].value == 4.6
    assert all(n.citation for n in used.values())
    assert r.dt_s == 1e-3  # from graph.metadata["dt"]


# -------------------------------------------------------------------------------------- reports

_EXTERNAL = re.compile(r"(?:src|href)\s*=\s*[\"'](?!data:)|https?://|url\(|@import|<link|<script",
                       re.IGNORECASE)


def test_reports_md_html_json(tmp_path):
    g, act = conv_case()
    r = analyze(g, act, "loihi")
    figures = report_mod.render_figures(r)
    md = write_report(r, tmp_path / "rep.md", figures=figures)
    figs = tmp_path / "rep_figs"
    assert md[0] == tmp_path / "rep.md" and figs.is_dir()
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["energy_per_layer.png", "firing_rate.png", "raster.png",
                     "synops_over_time.png"]
    assert all((figs / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    text = (tmp_path / "rep.md").read_text()
    assert "](rep_figs/raster.png)" in text and "Davies" in text and "| conv | Conv2d |" in text

    write_report(r, tmp_path / "rep.html", figures=figures)
    page = (tmp_path / "rep.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert not _EXTERNAL.search(page), _EXTERNAL.search(page)
    assert "<style>" in page and "energy.synop_pj" in page

    write_report(r, tmp_path / "rep.json")
    data = json.loads((tmp_path / "rep.json").read_text())
    c = r.counts
    assert data["totals"]["synops_per_sample"] == c.synops_per_sample
    assert data["totals"]["neuron_updates_per_sample"] == c.neuron_updates_per_sample
    assert data["neurobench"] == c.neurobench()
    assert data["totals"]["energy_pj_per_inference"] == pytest.approx(
        sum(x["total_pj"] for x in data["layers"]))
    layers = {x["name"]: x for x in data["layers"]}
    assert layers["conv"]["synops_per_sample"] == c.layer("conv").synops_per_sample
    assert data["totals"]["cores"] == r.mapping.n_cores
    assert {(n["target"], n["key"]) for n in data["numbers_used"]} >= {("loihi", "energy.synop_pj")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep.html", "rep.json", "rep.md",
                                                          "rep_figs"]


def test_report_format_from_argument(tmp_path):
    g, act = dense_case()
    r = analyze(g, act, "loihi")
    write_report(r, tmp_path / "report.txt", fmt="json")
    assert json.loads((tmp_path / "report.txt").read_text())["target"]["name"] == "loihi"
    with pytest.raises(ValueError, match="unknown report format"):
        write_report(r, tmp_path / "r.md", fmt="pdf")


def test_failed_report_leaves_no_partial_output(tmp_path, monkeypatch):
    g, act = dense_case()
    r = analyze(g, act, "loihi")
    # figures are not under test here: cheap stand-ins keep the test fast
    monkeypatch.setattr(report_mod, "render_figures",
                        lambda result: {name: b"png" for name, _ in report_mod._FIGURES})
    write_report(r, tmp_path / "rep.md")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def broken_markdown(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report_mod, "render_markdown", broken_markdown)
    with pytest.raises(RuntimeError, match="render failed"):
        write_report(r, tmp_path / "rep.md")
    with pytest.raises(RuntimeError, match="render failed"):
        write_report(r, tmp_path / "new" / "other.md")
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # old report intact, nothing new, no temporary files left
    assert not list((tmp_path / "new").iterdir())

    monkeypatch.setattr(report_mod, "render_html", broken_markdown)
    with pytest.raises(RuntimeError):
        write_report(r, tmp_path / "rep.html")
    assert not (tmp_path / "rep.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "rep.md", "rep_figs"]
