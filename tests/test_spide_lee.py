"""SPIDE, IDE and Lee et al. 2020: neurons, implicit gradients, export and official layouts."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neurodeploy.nn as snn
from neurodeploy import runtime, zoo
from neurodeploy.compiler import compile_graph
from neurodeploy.engine import simulate_fixed, simulate_float
from neurodeploy.frontends.torch import torch_to_nir
from neurodeploy.graph import evaluation_order
from neurodeploy.nn.feedback import BackwardSystem, FeedbackSNN, FeedbackSynapse
from neurodeploy.train import METHODS
from neurodeploy.train.common import TrainConfig
from neurodeploy.train.ide import ImplicitSolver
from neurodeploy.train.lee import lee_logits, signed_poisson
from neurodeploy.train.spide import SpikingSolver
from neurodeploy.zoo.lee import LeeLIF, LeePoolIF, leak_correction
from neurodeploy.zoo.loaders import load_foreign
from neurodeploy.zoo.loaders_spide_lee import load_ide, load_lee, load_spide

D = torch.float64


# -- reference equations (written out independently of the modules under test) -------------------

def spide_neuron_ref(cur: torch.Tensor, vth: float, u_rest: float, leak: float = 1.0):
    """SPIDE/IDE: u += I; s = [u >= vth]; u -= (vth - u_rest) s; u *= leak; u starts at 0."""
    u, out = torch.zeros_like(cur[0]), []
    for t in range(cur.shape[0]):
        u = u + cur[t]
        s = (u >= vth).to(cur.dtype)
        u = (u - (vth - u_rest) * s) * leak
        out.append(s)
    return torch.stack(out)


def lee_neuron_ref(cur: torch.Tensor, vth: float, leak: float):
    """Lee et al.: u += I; s = [u > Vth]; u -= u*s (reset to 0); u *= leak."""
    u, out = torch.zeros_like(cur[0]), []
    for t in range(cur.shape[0]):
        u = u + cur[t]
        s = (u > vth).to(cur.dtype)
        u = (u - u * s) * leak
        out.append(s)
    return torch.stack(out)


def feedback_ref(x, syn_in, syns, fb, vth, u_rest, leak=1.0):
    """Multi-layer feedback SNN with zero-delay chain and one-step feedback; returns spikes."""
    T = x.shape[0]
    u = [None] * (len(syns) + 1)
    trains = [[] for _ in u]
    s_last = None
    for t in range(T):
        cur = syn_in(x[t]) + (fb(s_last) if s_last is not None else 0)
        for l in range(len(u)):
            u[l] = cur if u[l] is None else u[l] + cur
            s = (u[l] >= vth).to(x.dtype)
            u[l] = (u[l] - (vth - u_rest) * s) * leak
            trains[l].append(s)
            if l < len(syns):
                cur = syns[l](s)
        s_last = s
    return [torch.stack(tr) for tr in trains]


def small_mlp(seed=0, u_rest=-1.0, radius=2.0, gain=1.5) -> FeedbackSNN:
    torch.manual_seed(seed)
    net = FeedbackSNN(nn.Linear(6, 8), [nn.Linear(8, 5)],
                      FeedbackSynapse("linear", 5, 8, radius=radius), nn.Linear(5, 3),
                      vth=1.0, u_rest=u_rest).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net


# -- SPIDE / IDE neurons ---------------------------------------------------------------------------

@pytest.mark.parametrize("vth,u_rest", [(1.0, -1.0), (0.7, -0.7), (2.0, 0.0), (1.0, -0.3)])
def test_spide_neuron_is_our_if_with_shifted_threshold_and_v_init(vth, u_rest):
    g = torch.Generator().manual_seed(1)
    cur = torch.randn((60, 4, 7), generator=g, dtype=D) * vth
    ours = snn.IF(threshold=vth - u_rest, v_init=-u_rest, reset="subtract")(cur)
    assert torch.equal(ours, spide_neuron_ref(cur, vth, u_rest))


def test_ide_lif_neuron_is_our_lif():
    g = torch.Generator().manual_seed(2)
    cur = torch.rand((50, 3, 5), generator=g, dtype=D) * 1.5
    ours = snn.LIF(beta=0.99, threshold=2.0, reset="subtract")(cur)
    assert torch.equal(ours, spide_neuron_ref(cur, 2.0, 0.0, leak=0.99))


@pytest.mark.parametrize("leak,u_rest", [(1.0, -1.0), (0.95, -1.0), (0.99, 0.0)])
def test_feedback_simulation_and_nir_export_follow_the_equations(leak, u_rest):
    net = small_mlp(u_rest=u_rest)
    net.leak = leak
    x = torch.rand((25, 4, 6), dtype=D) * 2
    _, trains = net.simulate(x, record=True)
    ops = [net.chain[0]]
    ref = feedback_ref(x, net.input_syn, ops, net.feedback, 1.0, u_rest, leak)
    for a, b in zip(trains, ref, strict=True):
        assert torch.equal(a, b)
    graph = net.to_nir((6,))
    _, back = evaluation_order(graph)
    assert back == {("feedback", "layer1")}
    act = simulate_float(graph, x.numpy()).activity
    assert np.array_equal(act["layer1"], ref[0].numpy())
    assert np.array_equal(act["layer2"], ref[1].numpy())


def test_rate_equilibrium_matches_spiking_rates():
    net = small_mlp()
    x = torch.rand((1, 5, 6), dtype=D) * 2
    fixed = net.rate_fixed_point(x.mean(0))
    spiking = net.simulate(x.expand(400, -1, -1))
    for a, b in zip(fixed, spiking, strict=True):
        assert (a - b).abs().max() < 0.03


def test_frobenius_reparametrisation():
    fb = FeedbackSynapse("linear", 4, 6, norm="frobenius", radius=0.5).double()
    w = fb.weight_w.detach()
    assert torch.allclose(fb.weight(), w * min(1.0, 0.5 / float(w.norm())))
    fb.radius = 100.0
    assert torch.equal(fb.weight(), fb.weight_w)


@pytest.mark.parametrize("kind,sigma_of", [("linear", "operator"), ("conv2d", "operator"),
                                           ("conv_transpose2d", "operator"),
                                           ("conv_transpose2d", "matrix")])
def test_spectral_reparametrisation_power_iteration(kind, sigma_of):
    torch.manual_seed(0)
    shape = (5,) if kind == "linear" else (3, 4, 4)
    fb = FeedbackSynapse(kind, shape[0], 2 if kind != "linear" else 7, 3, stride=1, padding=1,
                         norm="spectral", radius=1.0, in_shape=shape, sigma_of=sigma_of).double()
    for _ in range(100):
        fb.sigma(update=True)
    if sigma_of == "matrix":
        true = torch.linalg.matrix_norm(fb._matrix(fb.weight_w.detach()), 2)
    else:
        n = int(np.prod(shape))
        basis = torch.eye(n, dtype=D).reshape(n, *shape)
        mat = fb._raw_op(fb.weight_w.detach())(basis, bias=False).reshape(n, -1)
        true = torch.linalg.matrix_norm(mat, 2)
    assert float(fb.sigma().detach()) == pytest.approx(float(true), rel=1e-3)
    with torch.no_grad():
        fb.weight_g.fill_(3.0)  # clamped to the radius
    fb.eval()
    assert torch.allclose(fb.weight(), fb.weight_w / fb.sigma())


# -- implicit differentiation ----------------------------------------------------------------------

def closed_form_grads(net: FeedbackSNN, x_mean, rates, g_last):
    """dL/d(params) = D beta a^T with beta = (I - M^T D)^-1 g, from explicit matrices."""
    a1, a2 = rates
    W2 = net.chain[0].weight.detach()
    Wf = net.feedback.weight().detach()
    n1, n2 = W2.shape[1], W2.shape[0]
    M = torch.zeros(n1 + n2, n1 + n2, dtype=D)
    M[:n1, n1:] = Wf
    M[n1:, :n1] = W2
    grads = {k: 0 for k in ("input_syn.weight", "input_syn.bias", "chain.0.weight",
                            "chain.0.bias", "Wf")}
    for b in range(a1.shape[0]):
        a = torch.cat([a1[b], a2[b]])
        d = ((a > 0) & (a < 1)).to(D) / net.theta
        g = torch.cat([torch.zeros(n1, dtype=D), g_last[b]])
        beta = torch.linalg.solve(torch.eye(n1 + n2, dtype=D) - M.T * d[None, :], g)
        delta = d * beta
        grads["input_syn.weight"] = grads["input_syn.weight"] + torch.outer(delta[:n1], x_mean[b])
        grads["input_syn.bias"] = grads["input_syn.bias"] + delta[:n1]
        grads["chain.0.weight"] = grads["chain.0.weight"] + torch.outer(delta[n1:], a1[b])
        grads["chain.0.bias"] = grads["chain.0.bias"] + delta[n1:]
        grads["Wf"] = grads["Wf"] + torch.outer(delta[:n1], a2[b])
    return grads


@pytest.mark.parametrize("solver", [None, ImplicitSolver("broyden", max_iter=60, tol=1e-12)])
def test_implicit_backward_equals_closed_form(solver):
    net = small_mlp(radius=100.0)  # radius large: effective feedback weight == weight_w
    net.solver = solver
    net.train()
    x = torch.rand((30, 6, 6), dtype=D) * 2
    logits = net(x)
    g_logits = torch.randn_like(logits)
    (logits * g_logits).sum().backward()
    rates = net.simulate(x)
    g_last = g_logits @ net.classifier.weight.detach()
    ref = closed_form_grads(net, x.mean(0), rates, g_last)
    assert torch.allclose(net.input_syn.weight.grad, ref["input_syn.weight"], atol=1e-9)
    assert torch.allclose(net.input_syn.bias.grad, ref["input_syn.bias"], atol=1e-9)
    assert torch.allclose(net.chain[0].weight.grad, ref["chain.0.weight"], atol=1e-9)
    assert torch.allclose(net.chain[0].bias.grad, ref["chain.0.bias"], atol=1e-9)
    assert torch.allclose(net.feedback.weight_w.grad, ref["Wf"], atol=1e-9)


def test_ide_gradcheck_in_rate_mode():
    """Finite differences of the smooth rate equilibrium vs IDE's Broyden implicit gradient."""
    net = small_mlp(seed=3, radius=0.8)
    net.forward_mode = "rates"
    net.solver = ImplicitSolver("broyden", max_iter=80, tol=1e-13)
    net.train()
    x = torch.rand((1, 3, 6), dtype=D) * 2
    rates = net.rate_fixed_point(x.mean(0))
    inside = [((a > 0.01) & (a < 0.99)).double().mean() for a in rates]
    assert min(inside) > 0  # some neurons on the linear part, so the gradient is not trivial
    assert torch.autograd.gradcheck(lambda xx: net(xx), (x.clone().requires_grad_(),),
                                    eps=1e-7, atol=1e-5)


def _system(seed=0):
    net = small_mlp(seed=seed)
    x = torch.rand((40, 16, 6), dtype=D) * 2
    rates = net.simulate(x)
    system = BackwardSystem(net.blocks(), rates, net.theta)
    g = [torch.zeros_like(rates[0]), torch.randn(rates[1].shape, dtype=D,
                                                 generator=torch.Generator().manual_seed(seed))]
    return system, g


@pytest.mark.parametrize("solver", [
    SpikingSolver(steps=250),
    SpikingSolver(steps=250, fixed_point=True),
    SpikingSolver(steps=100, u_rest=0.0),
])
def test_spiking_backward_approximates_the_linear_solve(solver):
    system, g = _system()
    exact = system.flatten(system.solve_exact(g))
    approx = system.flatten(solver(system, g))
    cos = F.cosine_similarity(approx, exact, dim=1)
    assert float(cos.min()) > 0.9
    assert float((approx - exact).norm() / exact.norm()) < 0.1


def test_broyden_and_fixed_point_match_explicit_solve():
    system, g = _system(seed=1)
    exact = system.flatten(system.solve_exact(g))
    for s in (ImplicitSolver("broyden"), ImplicitSolver("fixed_point", max_iter=200)):
        got = system.flatten(s(system, g))
        assert torch.allclose(got, exact, atol=1e-7)


def test_spide_parameter_gradients_close_to_exact():
    net = small_mlp(seed=4)
    x = torch.rand((30, 8, 6), dtype=D) * 2
    y = torch.randint(0, 3, (8,))
    grads = {}
    for name, solver in (("exact", None), ("spikes", SpikingSolver(steps=250))):
        net.zero_grad()
        net.solver = solver
        F.cross_entropy(net(x), y).backward()
        grads[name] = torch.cat([p.grad.flatten() for n, p in net.named_parameters()
                                 if not n.startswith("classifier")])
    assert float(F.cosine_similarity(grads["exact"], grads["spikes"], dim=0)) > 0.9


# -- deployment of feedback networks ---------------------------------------------------------------

def test_feedback_network_compiles_with_back_edge_and_runs_native():
    net = small_mlp(seed=5)
    x = (torch.rand((20, 16, 6), dtype=D) * 4).round()
    net.calibrate_readout(x)
    graph = net.to_nir((6,))
    cm = compile_graph(graph, time_steps=20)
    assert ("feedback", "layer1") in evaluation_order(cm.graph)[1]
    res = runtime.run(cm, x.numpy().astype(np.int64), "native")
    flt = runtime.run(cm, x.numpy(), "float")
    assert res.counts.shape == (16, 3)
    agree = float((res.predictions == flt.predictions).mean())
    assert agree >= 0.75


def test_conv_feedback_exports_as_conv_and_transposed_conv_densely():
    conv = zoo.build("spide-conv", in_channels=1, size=6, channels=[3, 2], kernel=3).double()
    x = torch.rand((12, 2, 1, 6, 6), dtype=D) * 3
    g = conv.to_nir((1, 6, 6))
    assert isinstance(g.nodes["feedback"], nir.Conv2d)
    _, trains = conv.simulate(x, record=True)
    act = simulate_float(g, x.numpy()).activity
    assert np.array_equal(act["layer2"], trains[-1].numpy())
    f = zoo.build("spide-f", in_channels=1, size=8, channels=[2, 2, 2, 2, 2]).double()
    g2 = f.to_nir((1, 8, 8))
    assert isinstance(g2.nodes["feedback"], nir.Affine)
    _, trains = f.simulate(x.new_ones((10, 2, 1, 8, 8)) * 2, record=True)
    act = simulate_float(g2, np.full((10, 2, 1, 8, 8), 2.0)).activity
    assert np.array_equal(act["layer5"], trains[-1].flatten(2).numpy())


# -- Lee et al. 2020 -------------------------------------------------------------------------------

def test_lee_neuron_equals_our_lif_with_zero_reset():
    g = torch.Generator().manual_seed(3)
    cur = torch.rand((40, 3, 6), generator=g, dtype=D) * 0.8
    ref = lee_neuron_ref(cur, 1.0, 0.99)
    assert torch.equal(LeeLIF(1.0, 0.99)(cur), ref)
    assert torch.equal(snn.LIF(beta=0.99, threshold=1.0, reset="zero")(cur), ref)
    assert torch.equal(LeePoolIF(0.75)(cur), lee_neuron_ref(cur, 0.75, 1.0))


def test_lee_gradient_closed_form():
    """Masked STE x 1/Vth, identity through the leak, cut by the reset, times NG."""
    vth, leak = 0.8, 0.9
    cur = torch.tensor([0.5, 0.5, 0.1, 0.9, 0.2, 0.2], dtype=D).reshape(6, 1, 1)
    cur.requires_grad_(True)
    s = LeeLIF(vth, leak)(cur)
    # v: .5, .95>.8 fire, .1, .99>.8 fire, .2, .38 -> spikes at t = 1 and 3
    assert s.flatten().tolist() == [0, 1, 0, 1, 0, 0]
    a_leak = leak ** 4 + leak ** 2
    ng = 1 + math.log(leak) * a_leak / 2
    go = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=D).reshape(6, 1, 1)
    (s * go).sum().backward()
    # inputs 0,1 feed the spike at 1; inputs 2,3 the spike at 3; 4,5 no later spike
    expect = [2 * ng / vth, 2 * ng / vth, 4 * ng / vth, 4 * ng / vth, 0, 0]
    assert cur.grad.flatten().tolist() == pytest.approx(expect)
    assert float(leak_correction(s.detach(), leak)) == pytest.approx(ng)


def test_signed_poisson_input_and_first_layer_gets_negative_events():
    x = torch.tensor([[[[0.0, 16.0]]]])  # below / above the mean
    sp = signed_poisson(x, 200, seed=0)
    assert set(sp.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert float(sp[..., 0].mean()) < -0.5 and float(sp[..., 1].mean()) > 0.9
    m = zoo.build("lee-vgg9", in_channels=1, size=4, widths=[2], convs=[1], fc=4, classes=3)
    with torch.no_grad():
        m.cnn11.module.weight.fill_(0.5)
    cm = compile_graph(torch_to_nir(m.double(), (1, 4, 4)), time_steps=2)
    xs = -np.ones((1, 1, 1, 4, 4), dtype=np.int64)
    act = simulate_fixed(cm.graph, np.concatenate([xs, 0 * xs]), pipeline=False).activity
    first = [k for k in act if k.startswith("cnn11")][0]
    assert act[first][0].max() < 0  # the -1 events arrive as negative currents


@pytest.mark.parametrize("arch,kw", [
    ("lee-vgg9", dict(widths=[3, 4], convs=[2, 1], fc=6)),
    ("lee-resnet11", dict(pre=3, widths=[3, 4], fc=6)),
])
def test_lee_export_matches_model(arch, kw):
    torch.manual_seed(0)
    m = zoo.build(arch, in_channels=1, size=8, classes=4, **kw).double().eval()
    x = signed_poisson(torch.randint(0, 17, (3, 1, 8, 8)).double(), 15, seed=1)
    with torch.no_grad():
        ref = m(x)
    act = simulate_float(torch_to_nir(m, (1, 8, 8)), x.numpy()).activity
    assert np.array_equal(act["readout"], ref.numpy())


# -- official checkpoint layouts -------------------------------------------------------------------

def _spide_official(ide: bool, g: torch.Generator, sigma_shape: str = "operator"):
    """State dict in SPIDE/IDE's layout for a 1x8x8 input, channels 2/3/3/3/2, 3x3 kernels."""
    ch = [2, 3, 3, 3, 2]
    r = lambda *s: torch.randn(s, generator=g, dtype=D) * 0.6  # noqa: E731
    sd = {"network_x.conv.weight": r(ch[0], 1, 3, 3)}
    for i in range(1, 5):
        sd[f"network_s{i}.conv.weight"] = r(ch[i], ch[i - 1], 3, 3)
    if not ide:
        sd["network_x.conv.bias"] = r(ch[0])
        for i in range(1, 5):
            sd[f"network_s{i}.conv.bias"] = r(ch[i])
    else:
        for name, c in [("network_x", ch[0])] + [(f"network_s{i}", ch[i]) for i in range(1, 5)]:
            sd[f"{name}.bn.weight"] = 1 + 0.2 * r(c)
            sd[f"{name}.bn.bias"] = 0.3 * r(c)
            sd[f"{name}.bn.running_mean"] = 0.2 * r(c)
            sd[f"{name}.bn.running_var"] = 0.5 + torch.rand(c, generator=g, dtype=D)
            sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(7)
    sd["network_s5.convT.weight_w"] = r(ch[4], ch[0], 3, 3) * 3
    if ide:
        sd["network_s5.convT.weight_g"] = torch.tensor([0.7], dtype=D)
        if sigma_shape == "operator":
            u, v = r(ch[0], 4, 4), r(ch[4], 2, 2)
        else:
            u, v = r(ch[0]), r(ch[4] * 9)
        sd["network_s5.convT.weight_u"] = u / u.norm()
        sd["network_s5.convT.weight_v"] = v / v.norm()
    sd["classifier.weight"] = r(10, ch[4] * 2 * 2)
    sd["classifier.bias"] = r(10)
    full = {}
    for k, v in sd.items():  # the three aliases, DataParallel prefix
        full["module." + k] = v
        if k.startswith("network_s") and not k.startswith("network_s5"):
            i = int(k[len("network_s")])
            rest = k.split(".", 1)[1]
            full[f"module.snn_func.network_s_list.{i - 1}.{rest}"] = v
            full[f"module.snn_spide_conv.snn_func.network_s_list.{i - 1}.{rest}"] = v
    if ide:
        full["module.snn_ide_conv.snn_func_copy.network_s1.conv.weight"] = torch.zeros(1)
    return {"epoch": 3, "state_dict": full, "acc": 50.0, "best_acc": 51.0, "optimizer": {}}, sd


def _spide_equations(sd, x, vth, u_rest, leak, ide, radius, sigma_shape="operator"):
    """Rates and logits of the official -F model written out with raw tensors."""
    def conv(name, s, stride):
        y = F.conv2d(s, sd[f"{name}.conv.weight"], sd.get(f"{name}.conv.bias"), stride, 1)
        if ide:
            y = F.batch_norm(y, sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"],
                             sd[f"{name}.bn.weight"], sd[f"{name}.bn.bias"], False, 0.0, 1e-5)
        return y

    w = sd["network_s5.convT.weight_w"]
    if ide:
        if sigma_shape == "operator":
            sigma = (sd["network_s5.convT.weight_u"] * F.conv_transpose2d(
                sd["network_s5.convT.weight_v"][None], w, None, 2, 1, 1)[0]).sum()
        else:
            mat = w.transpose(0, 1).reshape(w.shape[1], -1)
            sigma = sd["network_s5.convT.weight_u"] @ mat @ sd["network_s5.convT.weight_v"]
        w_eff = sd["network_s5.convT.weight_g"].clamp(-radius, radius) * w / sigma
    else:
        w_eff = w * min(1.0, radius / float(w.norm()))
    strides = [1, 2, 1, 1]
    syns = [lambda s, i=i: conv(f"network_s{i + 1}", s, strides[i]) for i in range(4)]
    trains = feedback_ref(x, lambda s: conv("network_x", s, 2), syns,
                          lambda s: F.conv_transpose2d(s, w_eff, None, 2, 1, 1), vth, u_rest, leak)
    rate = trains[-1].mean(0)
    return rate, rate.flatten(1) @ sd["classifier.weight"].T + sd["classifier.bias"]


@pytest.mark.parametrize("ide,sigma_shape", [(False, ""), (True, "operator"), (True, "matrix")])
def test_spide_ide_official_layouts_load_and_follow_the_equations(ide, sigma_shape):
    g = torch.Generator().manual_seed(7)
    ckpt, sd = _spide_official(ide, g, sigma_shape)
    x = (torch.rand((20, 3, 1, 8, 8), generator=g, dtype=D) * 3)
    if ide:
        model, info = load_ide(ckpt, vth=1.0)
        vth, u_rest, radius = 1.0, 0.0, 1.0
    else:
        model, info = load_spide(ckpt)
        vth, u_rest, radius = 1.0, -1.0, 2.0
    model = model.double()
    assert info["arch"] == ("ide-f" if ide else "spide-f") and info["extra"]["epoch"] == 3
    assert info["input_shape"] == [1, 8, 8]
    rate_ref, logits_ref = _spide_equations(sd, x, vth, u_rest, 1.0, ide, radius, sigma_shape)
    with torch.no_grad():
        rates = model.simulate(x)
        logits = model(x)
    assert torch.allclose(rates[-1], rate_ref, atol=1e-12)
    assert torch.allclose(logits, logits_ref, atol=1e-9)
    rebuilt = zoo.build(info["arch"], **info["arch_kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    via, info2 = load_foreign(ckpt, info["arch"], **({"vth": 1.0} if ide else {}))
    assert info2["time_steps"] == 30
    with torch.no_grad():
        assert torch.allclose(via.double()(x), logits, atol=1e-9)


def test_spide_loader_rejects_disagreeing_aliases():
    ckpt, _ = _spide_official(False, torch.Generator().manual_seed(0))
    ckpt["state_dict"]["module.snn_func.network_s_list.0.conv.weight"] = torch.zeros(3, 2, 3, 3)
    with pytest.raises(Exception, match="differ"):
        load_spide(ckpt)


def _lee_equations(sd, x, vth=1.0, leak=0.99, pool_vth=0.75, resnet=False):
    """Lee et al.'s forward on raw tensors: LIF layers, avgpool + pooling IF, leaky readout."""
    def lif(cur, th=vth, lk=leak):
        return lee_neuron_ref(cur, th, lk)

    def tconv(s, w, stride=1):
        y = F.conv2d(s.flatten(0, 1), w, None, stride, w.shape[-1] // 2)
        return y.reshape(s.shape[0], s.shape[1], *y.shape[1:])

    def pool(s):
        y = F.avg_pool2d(s.flatten(0, 1), 2)
        return lif(y.reshape(s.shape[0], s.shape[1], *y.shape[1:]), pool_vth, 1.0)

    if resnet:
        s = pool(lif(tconv(x, sd["cnn11.weight"])))
        b = 2
        while f"cnn{b}1.weight" in sd:
            stride = 1 if b == 2 else 2
            h = lif(tconv(s, sd[f"cnn{b}1.weight"], stride))
            s = lif(tconv(h, sd[f"cnn{b}2.weight"]) + tconv(s, sd[f"shortcut{b - 1}.0.weight"],
                                                              stride))
            b += 1
    else:
        s = x
        for i in (1, 2):
            j = 1
            while f"cnn{i}{j}.weight" in sd:
                s = lif(tconv(s, sd[f"cnn{i}{j}.weight"]))
                j += 1
            s = pool(s)
    h = lif(s.flatten(2) @ sd["fc0.weight"].T)
    cur = h @ sd["fc1.weight"].T
    T = cur.shape[0]
    w = torch.tensor([leak ** (T - 1 - t) for t in range(T)], dtype=D)
    return (cur * w[:, None, None]).sum(0) / vth / T


@pytest.mark.parametrize("resnet", [False, True])
def test_lee_official_layout_loads_and_follows_the_equations(resnet):
    g = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(s, generator=g, dtype=D) * 3 / math.sqrt(np.prod(s[1:]))  # noqa
    if resnet:
        sd = {"cnn11.weight": r(3, 1, 3, 3), "cnn21.weight": r(4, 3, 3, 3),
              "cnn22.weight": r(4, 4, 3, 3), "shortcut1.0.weight": r(4, 3, 1, 1),
              "cnn31.weight": r(5, 4, 3, 3), "cnn32.weight": r(5, 5, 3, 3),
              "shortcut2.0.weight": r(5, 4, 1, 1), "fc0.weight": r(6, 5 * 2 * 2),
              "fc1.weight": r(4, 6)}
    else:
        sd = {"cnn11.weight": r(3, 1, 3, 3), "cnn12.weight": r(3, 3, 3, 3),
              "cnn21.weight": r(4, 3, 3, 3), "fc0.weight": r(6, 4 * 2 * 2),
              "fc1.weight": r(4, 6)}
    ckpt = {"epoch": 9, "arch": "VGG9" if not resnet else "RESNET11", "state_dict": sd,
            "best_prec1": 12.5, "optimizer": {}}
    model, info = load_lee(ckpt)
    model = model.double()
    assert info["arch"] == ("lee-resnet11" if resnet else "lee-vgg9")
    assert info["input_shape"] == [1, 8, 8] and info["extra"]["arch"] == ckpt["arch"]
    x = signed_poisson(torch.randint(0, 17, (4, 1, 8, 8), generator=g).double(), 20, seed=2)
    with torch.no_grad():
        got = lee_logits(model, x)
    assert torch.allclose(got, _lee_equations(sd, x, resnet=resnet), atol=1e-12)


# -- the registered methods run end to end (tiny budgets) ------------------------------------------

@pytest.mark.parametrize("method", ["spide", "ide", "lee"])
def test_methods_registered_and_train_a_few_steps(method):
    cfg = TrainConfig(epochs=1, max_iters=2, train_limit=64, time_steps=6, verbose=False,
                      options={"deploy": False, "back_steps": 20, "test_limit": 16})
    res = METHODS[method](cfg)
    assert res.method == method and res.time_steps == 6
    assert 0.0 <= res.float_accuracy <= 1.0
    rebuilt = zoo.build(res.arch, **res.arch_kwargs)
    rebuilt.load_state_dict(res.model.state_dict())
