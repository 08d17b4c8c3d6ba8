"""SPIDE: Spiking Implicit Differentiation on the Equilibrium (Xiao et al.; pkuxmq/SPIDE-FSNN).

Forward: a feedback SNN (:class:`neurodeploy.nn.feedback.FeedbackSNN`) of IF neurons with
``u_rest = -vth`` runs ``T`` steps; the classifier reads the last layer's average rate.
Backward: implicit differentiation at the rate equilibrium ``a = clamp((M a + F x)/theta, 0, 1)``
(``theta = vth - u_rest``), whose linear system ``beta = g + M^T D beta`` is solved **by spikes**
(:class:`SpikingSolver`): one ternary backward neuron per forward neuron receives the constant
current ``g`` and the transposed, masked synapses ``M^T D`` of the other backward neurons' +/-
spikes; its average output ``A * rate`` converges to ``beta``. Parameter gradients are then
``D beta a^T`` -- the product of the two stages' average rates (forward ``a``, backward
``beta``). The feedback weight is re-parametrised by a Frobenius-norm bound (radius 2).

Backward neurons (float mode, the paper's): fire ``+1`` at ``u >= vth_b``, ``-1`` at
``u <= -vth_b`` (``vth_b = 0.5``), subtract ``A s`` with ``A = vth_b - u_rest_b`` (default
``u_rest_b = -vth_b``, so ``A = 1``); every backward synapse carries the previous step's spikes.
``fixed_point=True`` runs the same system in Loihi integer arithmetic with
:func:`neurodeploy.fixedpoint.lif_step` in ternary mode (``vth_lo = -vth``, reset by
subtraction), i.e. what a chip's ``TernaryLIFSubtract`` neurons would compute: the masked
transposed weights are quantized to 8-bit mantissas per backward layer, ``g`` enters as the
neuron bias (mantissa and exponent), ``du = 4095`` (no current memory) and ``dv = 0`` (IF). On
that neuron the subtracted amount equals the threshold, so fixed mode fires at ``|v| > A``
rather than at ``A/2``; the average rate solves the same system with twice the dead zone.

The loss scale. The paper multiplies the loss by a fixed ``scale_factor`` (100-500) so that the
backward neurons' input is neither lost below one spike nor saturated. Here each sample's
``g`` is normalised to ``max |g| = g_scale * A`` before the spiking solve and the solution is
scaled back (``g_scale = 0.5`` by default): the same idea, chosen per sample.

Training (digits, ``tools/train.py --method spide``): ``spide-mlp`` (64 -> 128 -> 64 with dense
feedback 64 -> 128, rates -> Linear), T = 30, 100 backward steps (the paper uses 100 on MNIST
and 250 on CIFAR), Adam (the paper uses SGD with momentum; Adam converges in the 2-minute
budget). Deployment: :meth:`FeedbackSNN.calibrate_readout` turns the rate readout into an
integrating IF whose spike count ranks the classes; the feedback is a NIR back edge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import fixedpoint as fp
from .. import zoo
from ..nn.feedback import BackwardSystem
from ..quantize.loihi import quantize_weights
from . import register
from .common import (
    TrainConfig,
    TrainResult,
    accuracy,
    input_mode,
    load_data,
    seed_everything,
    to_steps,
    train_loop,
    update,
)

VTH_BITS = 17
BIAS_MANT_BITS = 13


def _normalise(g: list[torch.Tensor], target: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale each sample's ``g`` so its largest entry is ``target``; returns (g', kappa[B])."""
    gmax = torch.stack([x.reshape(x.shape[0], -1).abs().amax(1) for x in g]).amax(0)
    kappa = torch.where(gmax > 0, target / gmax.clamp_min(1e-300), torch.ones_like(gmax))
    shp = lambda x: kappa.reshape(-1, *([1] * (x.dim() - 1)))  # noqa: E731
    return [x * shp(x) for x in g], kappa


def _unscale(beta: list[torch.Tensor], kappa: torch.Tensor) -> list[torch.Tensor]:
    return [b / kappa.reshape(-1, *([1] * (b.dim() - 1))) for b in beta]


def bias_mant_exp(b: np.ndarray, mant_bits: int = BIAS_MANT_BITS) -> tuple[np.ndarray, int]:
    """Split integer biases ``b`` (in ``v`` units) into a shared exponent and mantissas."""
    top = (1 << (mant_bits - 1)) - 1
    e = 0
    while np.abs(b).max(initial=0) > top << e:
        e += 1
    return np.round(b / (1 << e)).astype(np.int64), e


@dataclass
class SpikingSolver:
    """Solve ``beta = g + M^T D beta`` with ternary spiking neurons (SPIDE's backward pass).

    ``steps``: backward time steps (SPIDE's ``time_step_back``); ``vth``/``u_rest``: backward
    neuron threshold and resting potential (amplitude ``A = vth - u_rest``); ``g_scale``:
    per-sample normalisation of ``g`` (see the module docstring); ``fixed_point``: integer
    dynamics through :func:`neurodeploy.fixedpoint.lif_step` with ``weight_bits``-bit weights.
    After a call, ``last_stats`` holds the spike count and (fixed mode) the integer parameters.
    """

    steps: int = 250
    vth: float = 0.5
    u_rest: float = -0.5
    g_scale: float = 0.5
    fixed_point: bool = False
    weight_bits: int = 8

    def __post_init__(self):
        if self.vth <= 0 or self.vth - self.u_rest <= 0:
            raise ValueError("backward neurons need vth > 0 and vth - u_rest > 0")
        self.last_stats: dict = {}

    @property
    def amplitude(self) -> float:
        return self.vth - self.u_rest

    def __call__(self, system: BackwardSystem, g: list[torch.Tensor]) -> list[torch.Tensor]:
        gs, kappa = _normalise(g, self.g_scale * self.amplitude)
        beta = self._fixed(system, gs) if self.fixed_point else self._float(system, gs)
        return _unscale(beta, kappa)

    def _float(self, system: BackwardSystem, gs: list[torch.Tensor]) -> list[torch.Tensor]:
        A = self.amplitude
        u = [torch.zeros_like(x) for x in gs]
        s = [torch.zeros_like(x) for x in gs]
        cnt = [torch.zeros_like(x) for x in gs]
        spikes = 0
        for _ in range(self.steps):
            rec = system.mt([d * (A * si) for d, si in zip(system.D, s, strict=True)])
            for l in range(len(u)):
                u[l] = u[l] + gs[l] + rec[l]
                s[l] = (u[l] >= self.vth).to(u[l].dtype) - (u[l] <= -self.vth).to(u[l].dtype)
                u[l] = u[l] - A * s[l]
                cnt[l] = cnt[l] + s[l]
                spikes += int(s[l].abs().sum())
        self.last_stats = {"spikes": spikes}
        return [A * c / self.steps for c in cnt]

    def quantize(self, system: BackwardSystem) -> dict:
        """Integer backward network: per backward layer a scale, 8-bit weights and threshold.

        Backward layer ``src`` receives block ``k = (src, dst, op)`` as ``op^T`` applied to the
        masked spikes of backward layer ``dst``; its float weight is ``op.weight * A / theta``
        (the ``1/theta`` of ``D`` and the spike amplitude folded in, the mask gating spikes).
        """
        A = self.amplitude
        n = len(system.shapes)
        wmax = [0.0] * n
        for src, _dst, op in system.blocks:
            wmax[src] = max(wmax[src], float(op.weight.abs().max()) * A / system.theta)
        top = (1 << self.weight_bits) - 2
        lam = [top / w if w > 0 else 1.0 for w in wmax]
        lam = [min(x, ((1 << VTH_BITS) - 1) / A) for x in lam]
        weights = {}
        for k, (src, _dst, op) in enumerate(system.blocks):
            q, _ = quantize_weights(op.weight.detach().double().numpy() * A / system.theta,
                                    lam[src], self.weight_bits)
            weights[k] = torch.as_tensor(q, dtype=torch.float64)
        vth = [int(round(A * x)) for x in lam]
        return {"scale": lam, "weights": weights, "vth": vth}

    def _fixed(self, system: BackwardSystem, gs: list[torch.Tensor]) -> list[torch.Tensor]:
        q = self.quantize(system)
        lam, vth = q["scale"], q["vth"]
        mask = [m.double() for m in system.mask]
        u, v, bm, be, cnt = [], [], [], [], []
        for l, g in enumerate(gs):
            b = np.round(g.detach().double().numpy() * lam[l] * (1 << fp.ACT_SHIFT))
            mant, exp = bias_mant_exp(b)
            bm.append(mant)
            be.append(exp)
            u.append(np.zeros(g.shape, np.int64))
            v.append(np.zeros(g.shape, np.int64))
            cnt.append(np.zeros(g.shape, np.int64))
        s = [np.zeros(g.shape, np.int64) for g in gs]
        for _ in range(self.steps):
            msgs = [torch.as_tensor(si, dtype=torch.float64) * m for si, m in
                    zip(s, mask, strict=True)]
            a_in = [np.rint(x.numpy()).astype(np.int64) for x in
                    system.mt(msgs, weights=q["weights"])]
            for l in range(len(u)):
                u[l], v[l], s[l] = fp.lif_step(
                    u[l], v[l], a_in[l], du=(1 << fp.DECAY_SHIFT) - 1, dv=0, vth=vth[l],
                    bias_mant=bm[l], bias_exp=be[l], reset="subtract", vth_lo=-vth[l])
                cnt[l] += s[l]
        self.last_stats = {"spikes": int(sum(np.abs(c).sum() for c in cnt)), "vth": vth,
                           "scale": lam, "bias_exp": be}
        dtype = system.dtype
        return [torch.as_tensor(c / self.steps * (vth[l] / lam[l]), dtype=dtype)
                for l, c in enumerate(cnt)]


def limit_test(split, n: int) -> None:
    """Keep only the first ``n`` test samples (``--set test_limit=n``; smoke runs, tests)."""
    if n:
        split.x_test, split.y_test = split.x_test[:n], split.y_test[:n]


def train_feedback(cfg: TrainConfig, method: str, arch_prefix: str, solver, *, lr: float,
                   vth: float, u_rest: float, leak: float, norm: str, radius: float
                   ) -> TrainResult:
    """Training loop shared by SPIDE and IDE (they differ in the backward solver and neuron)."""
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 30
    epochs = cfg.epochs or 20
    batch = cfg.batch or 64
    lr = cfg.lr or lr
    split = load_data(cfg, T)
    limit_test(split, cfg.get("test_limit", 0))
    mode = input_mode(split)
    arch_kind = cfg.get("arch", "mlp" if split.kind == "direct" else "conv")
    common = dict(classes=split.classes, vth=cfg.get("vth", vth), leak=cfg.get("leak", leak),
                  radius=cfg.get("radius", radius), norm=norm)
    if u_rest is not None:
        common["u_rest"] = cfg.get("u_rest", u_rest)
    if arch_kind == "mlp":
        kw = dict(in_shape=list(split.input_shape), hidden=list(cfg.get("hidden", (128, 64))),
                  **common)
    elif arch_kind == "conv":
        kw = dict(in_channels=split.input_shape[0], size=split.input_shape[1],
                  channels=list(cfg.get("channels", (8, 8))), kernel=cfg.get("kernel", 3),
                  stride=cfg.get("stride", 2 if split.input_shape[1] > 16 else 1), **common)
    else:
        raise ValueError(f"arch must be mlp or conv, got {arch_kind!r}")
    arch = f"{arch_prefix}-{arch_kind}"
    model = zoo.build(arch, **kw)
    model.solver = solver
    model.dropout = cfg.get("dropout", 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    iters = epochs * math.ceil(len(split.x_train) / batch)
    if cfg.max_iters:
        iters = min(iters, cfg.max_iters)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))

    def step(xb, yb, it):
        model.train()
        loss = F.cross_entropy(model(to_steps(xb, T, mode)), yb)
        return update(opt, loss, sched)

    def evaluate():
        return accuracy(lambda x: model(x), model, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method=method)
    model.eval()
    model.solver = None
    acc = evaluate()
    shift, thr = model.calibrate_readout(to_steps(split.x_train, T, mode))
    extra = {"readout_shift": shift, "readout_threshold": thr,
             "float_spiking_readout_accuracy": accuracy(
                 lambda x: feedback_readout_counts(model, x), model, split, T, mode),
             "solver": repr(solver)}
    if cfg.get("deploy", True):
        extra.update(feedback_loihi_accuracy(model, split, T, mode))
    return TrainResult(method, model, arch, kw, split.input_shape, T, acc, mode, history=history,
                       extra=extra, seconds=time.time() - t_start)


@torch.no_grad()
def feedback_loihi_accuracy(model, split, T: int, mode: str, batch: int = 256) -> dict:
    """Export with the back edge (:meth:`FeedbackSNN.to_nir`), compile for loihi-sim and run
    the test set on the native fixed-point engine (inputs: the integer pixels, every step)."""
    import copy

    from .. import runtime
    from ..compiler import compile_graph

    graph = copy.deepcopy(model).double().eval().to_nir(tuple(split.input_shape))
    cm = compile_graph(graph, time_steps=T)
    correct = 0
    for i in range(0, len(split.x_test), batch):
        x = to_steps(split.x_test[i:i + batch], T, mode).numpy()
        res = runtime.run(cm, np.rint(x).astype(np.int64), "native")
        correct += int((res.predictions == split.y_test[i:i + batch].numpy()).sum())
    return {"loihi_accuracy": correct / len(split.x_test),
            "pipeline_depth": int(cm.meta["pipeline_depth"]),
            "saturated_weights": int(cm.meta["saturated_weights"])}


@torch.no_grad()
def feedback_readout_counts(model, x: torch.Tensor) -> torch.Tensor:
    """Float spike counts of the deployed readout ``IF(classifier(s_L) + shift)``."""
    _, trains = model.simulate(x, record=True)
    cur = model.classifier(trains[-1].flatten(2)) + model.readout_shift
    v = torch.zeros_like(cur[0])
    count = torch.zeros_like(cur[0])
    thr = model.readout_threshold
    for t in range(cur.shape[0]):
        v = v + cur[t]
        s = (v > thr).to(v.dtype)
        v = v - thr * s
        count = count + s
    return count


@register("spide")
def train(cfg: TrainConfig) -> TrainResult:
    solver = SpikingSolver(steps=cfg.get("back_steps", 100), vth=cfg.get("vth_back", 0.5),
                           u_rest=cfg.get("u_rest_back", -0.5),
                           g_scale=cfg.get("g_scale", 0.5),
                           fixed_point=cfg.get("fixed_point", False))
    return train_feedback(cfg, "spide", "spide", solver, lr=2e-3, vth=1.0, u_rest=-1.0,
                          leak=1.0, norm="frobenius", radius=2.0)
