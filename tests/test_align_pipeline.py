"""Pipeline alignment as a compiler pass: relays, bias pre-charge and clocks (docs/timing.md)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy.nn as snn
from neurodeploy import artifact, zoo
from neurodeploy.checkpoint import save
from neurodeploy.cli import main
from neurodeploy.compiler import compile_graph, pad_for_pipeline
from neurodeploy.energy import analyze
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.graph import is_neuron
from neurodeploy.passes import (
    align_for_pipeline,
    data_depth,
    lower_for_hardware,
    training_timing,
)
from neurodeploy.passes.align_pipeline import added_by_alignment, node_depths
from neurodeploy.runtime import run
from neurodeploy.zoo.dsr import IdentityConv
from tests.models_for_tests import spikes

TD = snn.TimeDistributed
T = 12


class _Res(nn.Module):
    """LIF stem, then a two-conv branch with an identity shortcut one layer shorter."""

    def __init__(self, size: int = 6):
        super().__init__()
        self.c1, self.n1 = TD(nn.Conv2d(2, 4, 3, padding=1)), snn.LIF(beta=0.75, threshold=1.0)
        self.c2, self.n2 = TD(nn.Conv2d(4, 4, 3, padding=1)), snn.IF(threshold=1.0)
        self.c3, self.sc = TD(nn.Conv2d(4, 4, 3, padding=1)), TD(IdentityConv(4))
        self.n3 = snn.IF(threshold=1.0, reset="zero")
        self.flat, self.fc = TD(nn.Flatten()), TD(nn.Linear(4 * size * size, 3))
        self.n4 = snn.IF(threshold=1.0)

    def forward(self, x):
        a = self.n1(self.c1(x))
        b = self.n3(self.c3(self.n2(self.c2(a))) + self.sc(a))
        return self.n4(self.fc(self.flat(b)))


def res_graph(seed: int = 0, size: int = 6):
    """The graph of :class:`_Res` with mixed-sign biases; channel 0 of ``c3`` and output 0 of
    ``fc`` are so negative that pre-charging would start above the threshold (clocks)."""
    torch.manual_seed(seed)
    m = _Res(size).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
        m.c3.module.bias[0] = -0.75
        m.fc.module.bias[0] = -0.5
    return torch_to_nir(m.eval(), (2, size, size))


def pipelined(graph, x):
    """Fixed-point activity with Lava's synapse delays, ``D`` empty steps appended."""
    return simulate_fixed(graph, pad_for_pipeline(x, data_depth(graph)).astype(np.int64)).activity


def _snapshot(graph):
    return copy.deepcopy(({k: vars(n) for k, n in graph.nodes.items()}, list(graph.edges),
                          dict(graph.metadata)))


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_pass_is_pure_and_idempotent():
    lowered = lower_for_hardware(res_graph())
    before = _snapshot(lowered)
    aligned = align_for_pipeline(lowered)
    assert _same(_snapshot(lowered), before)
    roles = {added_by_alignment(n) for n in aligned.nodes.values()}
    assert {"relay", "clock", "clock bias"} <= roles
    assert any("v_init_train" in n.metadata for n in aligned.nodes.values())
    again = align_for_pipeline(aligned)
    assert _same(_snapshot(again), _snapshot(aligned))
    view = training_timing(aligned)
    assert _same(_snapshot(aligned), _snapshot(align_for_pipeline(lowered)))
    assert all(np.array_equal(view.nodes[k].metadata["v_init"], n.metadata["v_init_train"])
               for k, n in aligned.nodes.items() if "v_init_train" in n.metadata)


def test_training_view_of_aligned_float_graph_is_the_trained_model():
    """Without synapse delays relays are transparent and clocks fire from step 0."""
    graph = res_graph(seed=1)
    lowered = lower_for_hardware(graph)
    x = spikes(T, 3, (2, 6, 6), p=0.4, seed=1).numpy()
    ref = simulate_float(lowered, x).activity
    got = simulate_float(training_timing(align_for_pipeline(graph)), x).activity
    for n, node in lowered.nodes.items():
        if is_neuron(node):
            assert np.array_equal(got[n], ref[n]), n
    assert ref["n4"].sum() > 0 and ref["n3"].sum() > 0


@pytest.mark.parametrize("per_channel", [False, True])
def test_compiled_aligned_net_equals_its_fake_quant_from_step_d(per_channel):
    graph = res_graph(seed=2)
    cm = compile_graph(graph, time_steps=T, per_channel=per_channel)
    a = cm.meta["alignment"]
    assert cm.meta["aligned"] and a["relay_layers"] == 1 and a["relay_neurons"] == 144
    assert a["clocked_bias_layers"] >= 2 and a["precharged_neurons"] > 0
    plain = compile_graph(graph, time_steps=T, align=False, per_channel=per_channel)
    assert cm.meta["pipeline_depth"] == plain.meta["pipeline_depth"] == 4
    x = spikes(T, 4, (2, 6, 6), p=0.4, seed=2).numpy().astype(np.int64)
    ref = simulate_fixed(training_timing(cm.graph), x, pipeline=False).activity
    got = pipelined(cm.graph, x)
    depth = node_depths(cm.graph)
    for n in ("n1", "n2", "n3", "n4"):
        assert np.array_equal(got[n][depth[n]:depth[n] + T], ref[n]), n
    assert ref["n4"].sum() > 0
    assert np.array_equal(run(cm, x, "native").counts, ref["n4"].sum(0))
    # without the rewrite, biases act before the data arrives and the shortcut is early
    naive = pipelined(plain.graph, x)
    fq = simulate_fixed(plain.graph, x, pipeline=False).activity
    assert not np.array_equal(naive["n3"][3:3 + T], fq["n3"])
    # the float reference of an aligned model is the trained model
    assert np.array_equal(run(cm, x, "float").counts, run(plain, x, "float").counts)


def test_artifact_round_trip_inspect_and_energy(tmp_path, capsys):
    cm = compile_graph(res_graph(seed=3), time_steps=T)
    path = tmp_path / "m.ndp"
    artifact.save(cm, path)
    back = artifact.load(path)
    assert back.meta["aligned"] and back.meta["alignment"] == cm.meta["alignment"]
    for k, n in cm.graph.nodes.items():
        q, qb = n.metadata.get("loihi", {}), back.graph.nodes[k].metadata.get("loihi", {})
        for key in ("v_init", "v_init_train"):
            assert np.array_equal(q.get(key, 0), qb.get(key, 0)), (k, key)
        assert added_by_alignment(n) == added_by_alignment(back.graph.nodes[k])
    x = spikes(T, 2, (2, 6, 6), p=0.4, seed=3).numpy().astype(np.int64)
    assert np.array_equal(run(cm, x).counts, run(back, x).counts)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "pipeline alignment: on; added 144 relay neurons" in text
    assert "(relay, alignment)" in text and "(clock, alignment)" in text
    act = pipelined(back.graph, x)
    act["input"] = pad_for_pipeline(x, back.meta["pipeline_depth"])
    res = analyze(back.graph, act, "loihi2", map_cores=False)
    added = {r.name: r.added_by for r in res.layers if r.added_by}
    assert {"relay", "clock", "clock bias"} <= set(added.values())
    assert any(r.synops_per_sample > 0 for r in res.layers if r.added_by == "relay")


def test_cli_compile_align_switch(tmp_path, capsys):
    torch.manual_seed(0)
    model = zoo.build("dvs-cnn", size=8, c1=2, c2=3)
    for p in model.parameters():
        p.data.normal_(0, 0.4)
    ckpt = tmp_path / "m.pt"
    save(model, ckpt, arch="dvs-cnn", arch_kwargs={"size": 8, "c1": 2, "c2": 3},
         input_shape=(2, 8, 8), time_steps=4)
    for flag, aligned in (([], True), (["--no-align"], False)):
        out = tmp_path / f"m{len(flag)}.ndp"
        assert main(["compile", str(ckpt), "-o", str(out), *flag]) == 0
        text = capsys.readouterr().out
        assert f"pipeline alignment: {'on' if aligned else 'off'}" in text
        assert artifact.load(out).meta["aligned"] is aligned


@pytest.mark.lava
def test_lava_runs_aligned_graph_spike_for_spike():
    from neurodeploy.backends.lava.network import simulate_lava

    cm = compile_graph(res_graph(seed=4, size=4), time_steps=24)
    assert cm.meta["alignment"]["clock_layers"] and cm.meta["alignment"]["relay_layers"]
    x = spikes(24, 1, (2, 4, 4), p=0.4, seed=4).numpy().astype(np.int64)
    xp = pad_for_pipeline(x, cm.meta["pipeline_depth"])
    lava = simulate_lava(cm.graph, xp)
    native = simulate_fixed(cm.graph, xp).activity
    for k, v in lava.items():
        assert np.array_equal(v, native[k]), f"layer {k} differs"
    assert lava["n4"].sum() > 0


def test_netx_refuses_relays_and_clocks(tmp_path):
    from neurodeploy.exporters.netx import NetxExportError, export_netx

    cm = compile_graph(res_graph(seed=5), per_channel=False)
    with pytest.raises(NetxExportError, match="compile with --no-align"):
        export_netx(cm, tmp_path / "m.net", allow_reset_change=True)
