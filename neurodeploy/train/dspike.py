"""Dspike (Li, Guo et al., NeurIPS 2021): Heaviside spikes, Dspike surrogate whose temperature
``b`` is adapted during training with the finite-difference gradient (FDG).

The surrogate is :class:`neurodeploy.nn.Dspike` (``b / (2 tanh(b/2)) sech^2(b x)`` on
``|x| <= 0.5``). The paper's abstract says the Dspike family "adaptively evolves" guided by the
FDG; its exact schedule was not available to us, so the procedure below is **our choice**:

* every ``fdg_every`` iterations, on the current mini-batch (model in eval mode, so BatchNorm
  uses running statistics and the loss is a deterministic function of the weights), draw
  ``fdg_dirs`` random unit directions ``d_k`` in the space of all conv/linear weights;
* the finite-difference directional derivatives
  ``D_k = (L(w + eps d_k) - L(w - eps d_k)) / (2 eps)`` are the FDG projected on the ``d_k``;
* for each candidate ``b`` in ``{b / step, b, b * step}`` (clipped to ``[b_min, b_max]``) one
  backward pass with that temperature gives the surrogate gradient ``g_b``; its projections
  ``g_b . d_k`` are compared with ``D_k`` by cosine similarity (random projections preserve
  angles, Johnson-Lindenstrauss);
* the most similar candidate becomes the temperature of every LIF layer (all share one
  surrogate object).

The forward pass is the same for every ``b``, so the candidates cost one backward each.
Network: the spiking ResNet of :func:`neurodeploy.zoo.dsr.spiking_resnet` (LIF, hard reset,
BN folded at export), logits = mean current into the integrating IF readout; T = 6 (the paper's
CIFAR setting).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import zoo
from ..nn.surrogate import Dspike
from . import register
from .common import (
    TrainConfig,
    TrainResult,
    accuracy,
    adam_cosine,
    calibrate_readout,
    input_mode,
    load_data,
    readout_logits,
    seed_everything,
    to_steps,
    train_loop,
    update,
)


def weight_params(model: nn.Module) -> list[nn.Parameter]:
    """Trainable conv/linear weights upstream of a spiking neuron: where the FDG is measured.

    The last one (the synapse of the integrating readout) is left out: the loss depends on it
    smoothly and without any surrogate, so it would only dilute the comparison.
    """
    ws = [m.weight for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(m.weight, nn.Parameter)
          and m.weight.requires_grad]
    return ws[:-1]


def shared_surrogate(model: nn.Module) -> Dspike:
    surs = {id(m.surrogate): m.surrogate for m in model.modules() if hasattr(m, "surrogate")
            and isinstance(m.surrogate, Dspike)}
    if len(surs) != 1:
        raise ValueError(f"expected one shared Dspike surrogate, found {len(surs)}")
    return next(iter(surs.values()))


def fdg_select_temperature(model: nn.Module, loss_fn, candidates, n_dirs: int = 8,
                           eps: float = 1e-2, generator: torch.Generator | None = None
                           ) -> tuple[float, dict[float, float]]:
    """Pick the Dspike temperature whose surrogate gradient best matches the FDG.

    ``loss_fn()`` evaluates the loss on a fixed mini-batch; the step is ``eps`` times the norm
    of the weights (large enough to flip spikes). Returns the chosen ``b`` and the cosine
    similarity of every candidate. The weights are restored exactly.
    """
    sur = shared_surrogate(model)
    params = weight_params(model)
    was_training = model.training
    model.eval()
    eps = eps * math.sqrt(sum(float((p.detach() ** 2).sum()) for p in params))
    dirs = []
    for _ in range(n_dirs):
        d = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        norm = math.sqrt(sum(float((x * x).sum()) for x in d))
        dirs.append([x / norm for x in d])
    fd = torch.zeros(n_dirs, dtype=torch.float64)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for k, d in enumerate(dirs):
            vals = []
            for sign in (1.0, -1.0):
                for p, w, x in zip(params, saved, d, strict=True):
                    p.copy_(w + sign * eps * x)
                vals.append(float(loss_fn()))
            fd[k] = (vals[0] - vals[1]) / (2 * eps)
        for p, w in zip(params, saved, strict=True):
            p.copy_(w)
    old_b = sur.b
    sims: dict[float, float] = {}
    loss = loss_fn()
    for j, b in enumerate(candidates):
        sur.b = float(b)
        grads = torch.autograd.grad(loss, params, retain_graph=j < len(candidates) - 1,
                                    allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads,
                                                                          strict=True)]
        proj = torch.tensor([sum(float((g * x).sum()) for g, x in zip(grads, d, strict=True))
                             for d in dirs], dtype=torch.float64)
        sims[float(b)] = float(F.cosine_similarity(proj, fd, dim=0, eps=1e-12))
    sur.b = old_b
    model.train(was_training)
    best = max(sims, key=lambda b: (sims[b], -abs(b - old_b)))
    return best, sims


@register("dspike")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 6
    epochs = cfg.epochs or 8
    batch = cfg.batch or 64
    lr = cfg.lr or 3e-3
    split = load_data(cfg, T)
    mode = input_mode(split)
    c, h, _ = split.input_shape
    blocks = cfg.get("blocks", (1, 1, 1))
    b0 = cfg.get("b", 3.0)
    arch = "spiking-resnet"
    kw = dict(in_channels=c, classes=split.classes, width=cfg.get("width", 8),
              blocks=list(blocks), pool=h // 2 ** (len(blocks) - 1), beta=cfg.get("beta", 0.5),
              threshold=1.0, reset="zero", surrogate="dspike", surrogate_kwargs={"b": b0})
    model = zoo.build(arch, **kw)
    sur = shared_surrogate(model)
    every, step_mult = cfg.get("fdg_every", 50), cfg.get("fdg_step", 1.5)
    b_min, b_max = cfg.get("b_min", 0.5), cfg.get("b_max", 10.0)
    n_dirs, eps = cfg.get("fdg_dirs", 4), cfg.get("fdg_eps", 1e-2)
    opt, sched = adam_cosine(model.parameters(), lr,
                             epochs * math.ceil(len(split.x_train) / batch))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    b_trace: list[dict] = []

    def step(xb, yb, it):
        x = to_steps(xb, T, mode)
        if every and it % every == 0:
            cands = sorted({min(b_max, max(b_min, v)) for v in
                            (sur.b / step_mult, sur.b, sur.b * step_mult)})
            best, sims = fdg_select_temperature(
                model, lambda: F.cross_entropy(readout_logits(model, x), yb), cands, n_dirs,
                eps, gen)
            sur.b = best
            b_trace.append({"iteration": it, "b": best, "cosine": sims})
        model.train()
        loss = F.cross_entropy(readout_logits(model, x), yb)
        return update(opt, loss, sched)

    def evaluate():
        return accuracy(lambda x: readout_logits(model, x), model, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method="dspike")
    acc = evaluate()
    kw["readout_threshold"] = calibrate_readout(model, split, T, mode)
    kw["surrogate_kwargs"] = {"b": float(sur.b)}
    return TrainResult("dspike", model.eval(), arch, kw, split.input_shape, T, acc, mode,
                       history=history, extra={"b_trace": b_trace, "b_final": float(sur.b)},
                       seconds=time.time() - t_start)
