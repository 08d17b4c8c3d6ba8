"""Training methods of the seed papers: custom backward passes, neuron equations, short training
runs, export and deployment (few iterations each)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neurodeploy.nn as snn
from neurodeploy import zoo
from neurodeploy.checkpoint import load_checkpoint
from neurodeploy.compiler import compile_file, compile_graph
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.nn.dsr import DSRIF, DSRLIF, DSRIFFunction, DSRLIFFunction, lif_time_weights
from neurodeploy.quantize.qat import on_grid
from neurodeploy.train import METHODS, TrainConfig
from neurodeploy.train.common import (
    align_for_pipeline,
    clock_scales,
    data_depth,
    deploy,
    export_nir,
    load_digits_split,
    to_steps,
)
from neurodeploy.train.dspike import fdg_select_temperature, weight_params
from neurodeploy.train.ltl import local_forward, teacher_targets
from neurodeploy.train.shortcut import AuxiliaryBranches, balance
from neurodeploy.zoo.dsr import IdentityConv
from neurodeploy.zoo.ltl import LTLBoxcar

REPO = Path(__file__).resolve().parents[1]
TD = snn.TimeDistributed


def tiny(**options) -> TrainConfig:
    """A few optimiser steps on a small slice of the digits: for smoke tests."""
    return TrainConfig(max_iters=2, epochs=1, batch=16, train_limit=64, test_limit=32,
                       verbose=False, options=options)


# -- DSR: rate-mapping gradients ------------------------------------------------------------------

def _away_from_edges(r, vth, margin=0.02):
    return ((r - 0).abs() > margin) & ((r - vth).abs() > margin)


def test_dsr_if_backward_is_the_gradient_of_the_clamped_rate():
    torch.manual_seed(0)
    T = 7
    x = (torch.rand(T, 40, dtype=torch.float64) * 0.8 - 0.2).requires_grad_()
    vth = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(T, 40, dtype=torch.float64)
    (DSRIFFunction.apply(x, vth, 0.3) * g).sum().backward()
    # closed form: every output step behaves like clamp(mean_t x, 0, Vth)
    x2, v2 = x.detach().clone().requires_grad_(), vth.detach().clone().requires_grad_()
    r = x2.mean(0)
    proxy = torch.minimum(torch.relu(r), v2).expand(T, -1)
    (proxy * g).sum().backward()
    keep = _away_from_edges(r.detach(), 0.3)
    assert keep.sum() > 20
    assert torch.allclose(x.grad[:, keep], x2.grad[:, keep])
    assert torch.allclose(vth.grad, v2.grad)
    # the mask: no gradient where the rate leaves [0, Vth]
    out = (r.detach() < 0) | (r.detach() > 0.3)
    assert torch.all(x.grad[:, out] == 0)


def test_dsr_if_forward_is_our_if_with_initial_membrane():
    torch.manual_seed(1)
    x = torch.rand(20, 3, 50, dtype=torch.float64) * 0.6
    n = DSRIF(threshold=0.3, alpha=0.3).double()
    out = n(x)
    vth = float(n.threshold.detach())
    ref = snn.IF(threshold=vth, reset="subtract", v_init=0.7 * vth).double()(x)
    assert torch.equal(out != 0, ref != 0) and ref.sum() > 100
    assert torch.all(out[out != 0] == vth)  # DSR spikes carry the value Vth
    assert n.v_init == pytest.approx(0.21)
    n.v_init = 0.15  # setting v_init moves alpha
    assert n.alpha == pytest.approx(0.5)


def test_dsr_lif_backward_closed_form():
    torch.manual_seed(2)
    T, tau, dt = 6, 1.0, 0.05
    x = (torch.rand(T, 30, dtype=torch.float64) * 8 - 1).requires_grad_()
    vth = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(T, 30, dtype=torch.float64)
    out = DSRLIFFunction.apply(x, vth, 0.3, tau, dt)
    assert set(out.unique().tolist()) <= {0.0, 0.3 / dt}
    (out * g).sum().backward()
    w = lif_time_weights(T, tau, dt, torch.float64)[:, None]
    r = (w * x.detach()).sum(0) / w.sum()
    G = T * (w * g).sum(0) / w.sum()
    inside = (r > 0) & (r < 0.3 * tau / dt)
    want = (G * inside / tau / T).expand(T, -1)
    assert torch.allclose(x.grad, want)
    assert torch.allclose(vth.grad, dt * G[r > 0.3 / dt].sum())


def test_dsr_lif_forward_matches_its_documented_dynamics():
    torch.manual_seed(3)
    n = DSRLIF(threshold=0.3, alpha=0.3, tau=1.0, dt=0.05).double()
    x = torch.rand(20, 2, 16, dtype=torch.float64) * 12
    out = n(x)
    vth = float(n.threshold.detach())
    beta, u, ref = math.exp(-0.05), torch.zeros(2, 16, dtype=torch.float64), []
    for t in range(20):
        u = beta * u + (1 - beta) * x[t]
        s = (u >= 0.3 * vth).double() * vth
        u = u - s
        ref.append(s / 0.05)
    assert torch.equal(out, torch.stack(ref))
    # our own neuron loop with charge() (v = u + v_leak) fires identically
    via_charge = snn.neurons.SpikingNeuron.forward(n, x)
    assert torch.equal(via_charge != 0, out != 0)


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_dsr_preact_resnet_export_reproduces_torch(neuron):
    torch.manual_seed(4)
    m = zoo.build("dsr-preact-resnet18", in_channels=1, width=4, blocks=(1, 1), pool=4,
                  neuron=neuron)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.normal_(0, 0.3)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0.2, 0.3)
    m = m.double().eval()
    x = torch.randint(0, 17, (1, 3, 1, 8, 8)).double().repeat(20, 1, 1, 1, 1)
    with torch.no_grad():
        ref = m(x).numpy()
    g = export_nir(m, (1, 8, 8))
    assert "BatchNorm2d" not in {type(n).__name__ for n in g.nodes.values()}
    assert np.array_equal(simulate_float(g, x.numpy()).output, ref)
    assert ref.sum() > 0
    if neuron == "lif":  # the resting potential is what keeps alpha's offset
        assert all(float(np.max(g.nodes[k].v_leak)) > 0 for k, n in g.nodes.items()
                   if isinstance(n, nir.LIF))


# -- pipeline alignment (residual branches, clocked biases) ---------------------------------------

class _ResBias(nn.Module):
    """Residual net whose weights, biases and thresholds quantize exactly."""

    def __init__(self):
        super().__init__()
        self.c1 = TD(nn.Conv2d(2, 4, 3, padding=1))
        self.n1 = snn.IF(threshold=2.0)
        self.c2 = TD(nn.Conv2d(4, 4, 3, padding=1))
        self.n2 = snn.IF(threshold=2.0)
        self.c3 = TD(nn.Conv2d(4, 4, 3, padding=1))
        self.sc = TD(IdentityConv(4))
        self.n3 = snn.IF(threshold=2.0)
        self.flat = TD(nn.Flatten())
        self.fc = TD(nn.Linear(4 * 6 * 6, 3))
        self.n4 = snn.IF(threshold=2.0)

    def forward(self, x):
        a = self.n1(self.c1(x))
        b = self.n3(self.c3(self.n2(self.c2(a))) + self.sc(a))
        return self.n4(self.fc(self.flat(b)))


def test_align_for_pipeline_reproduces_training_timing_exactly():
    g = torch.Generator().manual_seed(5)
    m = _ResBias().double()
    with torch.no_grad():
        for mod in (m.c1, m.c2, m.c3, m.fc):
            w = mod.module.weight
            w.copy_(torch.randint(-1, 2, w.shape, generator=g).double())
            w.view(-1)[0] = 1.0
            b = mod.module.bias
            b.copy_(torch.randint(-2, 3, b.shape, generator=g).double() * 32 / 127)
    x = torch.randint(0, 3, (12, 5, 2, 6, 6), generator=g).numpy()
    graph = torch_to_nir(m, (2, 6, 6))
    plain = compile_graph(graph, align=False)
    ref = simulate_fixed(plain.graph, x, pipeline=False).output  # training-time timing
    aligned = align_for_pipeline(graph)
    names = set(aligned.nodes)
    assert any(".align" in k for k in names) and any(k.startswith("clock") for k in names)
    cm = compile_graph(aligned, scales=clock_scales(aligned))
    D = data_depth(cm.graph)
    assert D == plain.meta["pipeline_depth"]
    xp = np.concatenate([x, np.zeros((D, *x.shape[1:]), x.dtype)])
    got = simulate_fixed(cm.graph, xp, pipeline=True).output[D:D + 12]
    assert ref.sum() > 0
    assert np.array_equal(got, ref)
    naive = simulate_fixed(plain.graph, xp, pipeline=True).output[D:D + 12]
    assert not np.array_equal(naive, ref)  # without the rewrite the transient differs


# -- Dspike ---------------------------------------------------------------------------------------

def test_dspike_fdg_picks_a_candidate_and_restores_weights():
    torch.manual_seed(6)
    m = zoo.build("spiking-resnet", in_channels=1, width=4, blocks=(1,), pool=8,
                  surrogate="dspike", surrogate_kwargs={"b": 3.0})
    split = load_digits_split()
    x, y = to_steps(split.x_train[:16], 3, "repeat"), split.y_train[:16]
    before = [p.detach().clone() for p in m.parameters()]
    from neurodeploy.train.common import readout_logits

    best, sims = fdg_select_temperature(m, lambda: F.cross_entropy(readout_logits(m, x), y),
                                        [2.0, 3.0, 4.5], n_dirs=3)
    assert best in (2.0, 3.0, 4.5) and set(sims) == {2.0, 3.0, 4.5}
    assert all(-1.0 <= s <= 1.0 for s in sims.values())
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    assert len(weight_params(m)) == 3  # stem, two block convs, not the readout fc


def test_dspike_training_adapts_temperature_and_deploys():
    res = METHODS["dspike"](TrainConfig(max_iters=3, epochs=1, batch=16, train_limit=48,
                                        test_limit=32, time_steps=3, verbose=False,
                                        options={"width": 4, "fdg_every": 2, "fdg_dirs": 2}))
    assert [t["iteration"] for t in res.extra["b_trace"]] == [0, 2]
    assert res.arch_kwargs["surrogate_kwargs"]["b"] == res.extra["b_final"]
    d = deploy(res, load_digits_split(), limit=16)
    assert 0.0 <= d["loihi_accuracy"] <= 1.0 and d["spikes_per_inference"] > 0


# -- Shortcut back-propagation --------------------------------------------------------------------

def test_shortcut_balance_moves_weight_to_main_output():
    assert balance(0, 5) == 0.5 and balance(4, 5) == 1.0
    assert balance(0, 5) < balance(2, 5) < balance(4, 5)


def test_shortcut_branches_reach_early_layers_and_are_not_exported():
    torch.manual_seed(7)
    backbone = zoo.build("spiking-resnet", in_channels=1, width=4, blocks=(1, 1), pool=4)
    net = AuxiliaryBranches(backbone, 10)
    x = to_steps(load_digits_split().x_train[:8], 2, "repeat")
    main, aux = net(x)
    assert main.shape == (8, 10) and len(aux) == 1
    aux[0].sum().backward()
    assert backbone.conv1.module.weight.grad.abs().sum() > 0
    assert backbone.fc.module.weight.grad is None  # the branch bypasses the head
    res = METHODS["shortcut"](tiny(width=4, blocks="1,1"))
    assert not any(isinstance(m, AuxiliaryBranches) for m in res.model.modules())
    g = export_nir(res.model, res.input_shape)
    assert not [k for k in g.nodes if "head" in k or "aux" in k]
    affines = [k for k, n in g.nodes.items() if isinstance(n, nir.Affine)]
    assert affines == ["fc"]
    assert 0.0 <= deploy(res, load_digits_split(), limit=16)["loihi_accuracy"] <= 1.0


# -- LTL ------------------------------------------------------------------------------------------

def test_ltl_neuron_is_the_official_gated_lif():
    torch.manual_seed(8)
    m = zoo.build("ltl-vgg11", in_channels=1, size=8, channels=[3], strides=[2], hidden=[])
    x = torch.rand(10, 2, 3, 4, 4, dtype=torch.float64) * 1.2
    n = m.sn1.double()
    out = n(x)
    decay, mem, spk, ref = math.exp(-0.1), torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for t in range(10):
        mem = mem * decay * (1 - spk) + x[t]
        spk = (mem > 0.6).double()
        ref.append(spk)
    assert torch.equal(out, torch.stack(ref))
    v = torch.tensor([0.39, 0.41, 0.6, 0.79, 0.81], dtype=torch.float64) - 0.6
    assert LTLBoxcar(0.4).grad(v).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_ltl_learning_is_layer_local():
    torch.manual_seed(9)
    m = zoo.build("ltl-vgg11", in_channels=1, size=8, channels=[4, 4], strides=[1, 2],
                  hidden=[8])
    with torch.no_grad():
        m.conv1.module.weight.mul_(3)
    x = to_steps(load_digits_split().x_train[:4] / 8, 4, "repeat")
    rates, logits = local_forward(m, x)
    assert len(rates) == 3 and logits.shape == (4, 10)
    rates[1].sum().backward()  # the second layer's local loss
    assert m.conv1.module.weight.grad is None
    assert m.conv2.module.weight.grad is not None
    acts = [torch.rand(50, 7) * 2]
    t = teacher_targets(acts)[0]
    assert t.min() >= 0 and t.max() == 1.0
    assert (t == 1.0).float().mean() < 0.01


def test_ltl_training_runs_and_deploys():
    res = METHODS["ltl"](TrainConfig(max_iters=2, epochs=1, batch=16, train_limit=48,
                                     test_limit=32, time_steps=4, verbose=False,
                                     options={"channels": "4,8", "strides": "1,2",
                                              "hidden": "8", "teacher_epochs": 1}))
    assert 0.0 <= res.extra["teacher_accuracy"] <= 1.0
    assert res.model.readout.threshold.item() == pytest.approx(
        res.arch_kwargs["readout_threshold"])
    assert 0.0 <= deploy(res, load_digits_split(), limit=16)["loihi_accuracy"] <= 1.0


# -- single time step -----------------------------------------------------------------------------

def test_single_step_unrolled_recurrence_exports_and_reads_out_a_burst():
    torch.manual_seed(10)
    m = zoo.build("single-step-sequencer", in_channels=1, size=8, width=4, depths=(3, 2),
                  readout_threshold=0.05).double().eval()
    x = load_digits_split().x_test[:6].double()
    with torch.no_grad():
        from neurodeploy.train.common import readout_logits

        logits = readout_logits(m, x[None])
    g = export_nir(m, (1, 8, 8))
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert kinds <= {"Input", "Output", "Conv2d", "IF", "SumPool2d", "Scale", "Flatten",
                     "Affine"}
    window = 16
    xs = to_steps(x, window, "first").numpy()
    counts = simulate_float(g, xs).output.sum(0)
    want = np.clip(np.floor(logits.numpy() / 0.05 + 1e-9), 0, window)
    assert np.array_equal(counts, want)
    # shared projection and recurrence weights appear once per unrolled iteration
    assert sum(1 for k in g.nodes if k.startswith("blocks.0.mixer.rec")) == 2
    w = m.blocks[0].mixer.rec.module.weight
    assert torch.all(w[..., [0, 0, 2, 2], [0, 2, 0, 2]] == 0)  # plus-shaped: corners stay 0
    m.train()
    readout_logits(m, x[None]).sum().backward()
    assert torch.all(w.grad[..., [0, 0, 2, 2], [0, 2, 0, 2]] == 0)


def test_single_step_training_deploys_with_one_input_step():
    res = METHODS["single-step"](tiny(width=4, depths="2,1", readout_steps=8))
    assert res.time_steps == 1 and res.deploy_steps == 8 and res.input_mode == "first"
    assert res.extra["qat_epochs"] == 20 and on_grid(res.model.grid_groups())  # QAT snapped
    d = deploy(res, load_digits_split(), limit=16)
    assert 0.0 <= d["loihi_accuracy"] <= 1.0


# -- DSR training, the registry and the command line ----------------------------------------------

def test_registry_has_the_methods():
    assert {"dsr", "dspike", "shortcut", "ltl", "single-step"} <= set(METHODS)


def test_dsr_training_checkpoint_compiles(tmp_path):
    spec = importlib.util.spec_from_file_location("train_tool", REPO / "tools" / "train.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main(["--method", "dsr", "--max-iters", "2", "--epochs", "1", "--batch", "16",
                    "--time-steps", "4", "--set", "width=4", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    model, info = load_checkpoint(tmp_path / "model.pt")
    assert info["arch"] == "dsr-preact-resnet18"
    thresholds = [float(n.threshold) for n in model.modules() if isinstance(n, DSRIF)]
    assert len(thresholds) == 7 and min(thresholds) >= 5e-4
    cm = compile_file(tmp_path / "model.pt")
    assert cm.meta["input_shape"] == [1, 8, 8]
