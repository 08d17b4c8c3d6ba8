"""Quantization-aware fine-tuning: snapped weights compile exactly, and loihi-sim then equals
the float model spike for spike."""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy import zoo
from neurodeploy.checkpoint import save
from neurodeploy.compiler import compile_file
from neurodeploy.graph import is_neuron
from neurodeploy.quantize.qat import (
    GridGroup,
    channel_scales,
    on_grid,
    quantize_group,
    quantized_weights,
    snap_,
)
from neurodeploy.runtime import run
from neurodeploy.train.common import load_digits_split, readout_logits, to_steps
from neurodeploy.train.single_step import kaiming_init

KW = dict(in_channels=1, size=8, classes=10, width=8, depths=[2, 1], mlp_ratio=2,
          threshold=1.0, readout_threshold=0.37)


def _model(seed: int):
    torch.manual_seed(seed)
    model = zoo.build("single-step-sequencer", **KW)
    kaiming_init(model, 2.5)  # every layer active (tested below), so every layer is checked
    with torch.no_grad():
        model.stem.module.weight /= 16.0
    return model.eval()


def test_grid_puts_the_max_on_254_and_the_threshold_on_an_odd_integer():
    w = torch.nn.Parameter(torch.tensor([[0.5, -0.25, 0.1], [0.0, 0.03, -0.07]]))
    r = torch.nn.Parameter(torch.tensor([[0.9, 0.2, 0.0], [-0.01, 0.0, 0.02]]))
    g = GridGroup("layer", [w, r], theta=1.3, gains=[0.5, 0.5], ref=1)
    lam = channel_scales(g).numpy()
    n = lam * 1.3
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    assert np.all(np.round(n) % 2 == 1)
    assert np.all(0.5 * np.array([0.5, 0.07]) * lam >= 254)  # the largest weight saturates at 254
    qw, qr = quantize_group(g)
    mant_w = qw.double().numpy() * 0.5 * lam[:, None]
    np.testing.assert_allclose(mant_w, 2 * np.round(mant_w / 2), atol=1e-5)
    assert np.abs(mant_w).max() <= 254 + 1e-5
    # rec (not a reference) is clamped to the reference's range: 0.9 exceeds row 0's max
    assert abs(float(qr[0, 0])) * 0.5 * lam[0] <= 254 + 1e-5
    snap_([g])
    assert on_grid([g])


def test_straight_through_gradients_reach_the_float_weights_which_are_restored():
    model = _model(0)
    groups = model.grid_groups()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = to_steps(load_digits_split().x_train[:16], 1, "first")
    with quantized_weights(groups):
        assert all(torch.equal(w.detach(), q) for grp in groups
                   for w, q in zip(grp.weights, quantize_group(grp), strict=True))
        logits = readout_logits(model, x)
        torch.nn.functional.cross_entropy(logits, torch.arange(16) % 10).backward()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    assert model.fc.module.weight.grad is not None
    assert float(model.fc.module.weight.grad.abs().sum()) > 0


def test_snapped_model_compiles_exactly_and_loihi_sim_equals_float(tmp_path):
    model = _model(1)
    groups = model.grid_groups()
    assert not on_grid(groups)
    snap_(groups)
    assert on_grid(groups)
    save(model, tmp_path / "model.pt", arch="single-step-sequencer", arch_kwargs=KW,
         input_shape=(1, 8, 8), time_steps=16)
    cm = compile_file(tmp_path / "model.pt")
    layers = cm.meta["quantization"]["layers"]
    assert max(lay["max_abs_weight_error"] for lay in layers) < 1e-6
    for node in cm.graph.nodes.values():
        lo = (getattr(node, "metadata", None) or {}).get("loihi", {})
        if "vth" in lo:
            lam = np.asarray(lo["channel_scale"], float)
            exact = (np.asarray(node.v_threshold, float).reshape(lam.size, -1)[:, 0] * lam)
            np.testing.assert_allclose(np.asarray(lo["vth"]).reshape(lam.size, -1)[:, 0], exact,
                                       atol=1e-3)
    x = to_steps(load_digits_split().x_test[:60], 16, "first").numpy().astype(np.int64)
    q = run(cm, x, "native")
    f = run(cm, x, "float")
    for name, act in f.activity.items():  # every hidden layer fires the same spikes, delayed
        if is_neuron(cm.graph.nodes[name]) and name != "readout":
            assert act.sum() > 0, name
            assert act.sum() == q.activity[name].sum(), name
    # The readout (reset by subtraction) fires on over several steps. Lava fires on v > vth, the
    # float model on v >= theta: they differ by one spike exactly where the integer input is a
    # multiple of the threshold; nowhere else.
    assert f.counts.sum() > 0
    diff = np.argwhere(q.counts != f.counts)
    assert len(diff) <= 0.01 * q.counts.size
    vth = np.asarray(cm.graph.nodes["readout"].metadata["loihi"]["vth"]).reshape(-1)
    current = q.activity["fc"].reshape(q.activity["fc"].shape[0], x.shape[1], -1).sum(0)
    for b, k in diff:
        assert f.counts[b, k] == q.counts[b, k] + 1
        assert current[b, k] % vth[k] == 0
