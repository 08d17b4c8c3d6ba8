"""DSR: Differentiation on Spike Representation (Meng et al., CVPR 2022).

Neurons: :class:`neurodeploy.nn.dsr.DSRIF` / ``DSRLIF`` (spiking forward, gradient of the
firing-rate mapping, one trainable lower-bounded Vth per layer). Recipe of the official
``main_single_gpu.py``: T = 20, Vth = 0.3, alpha = 0.3, Vth bound 5e-4, tau = 1, dt = 0.05;
SGD (lr 0.1, momentum 0.9, weight decay 5e-4), linear warm-up then cosine decay; cross-entropy
on the output layer's (time-weighted for LIF) spike rate in DSR units (spikes of value Vth or
Vth/dt). Only the number of epochs and the widths are reduced here.

Architectures: ``dsr-preact-resnet18`` (tiny: width 8, one block in each of two stages) by
default, ``dsr-vgg11`` with ``arch=vgg`` (its average pools fuse into the next convolution only
when every pooled feature map has an even side, e.g. 8x8 digits or 32/48-pixel frames, not the
34x34 synthetic DVS frames).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import zoo
from ..nn.dsr import rate, weighted_rate
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


def output_neuron(model: nn.Module):
    """The spiking readout layer of a DSR architecture."""
    return model.relu3 if hasattr(model, "relu3") else model.classifier[-1]


def dsr_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DSR's logits: the (time-weighted, LIF) rate of the output spikes, in DSR's units."""
    out = model(x)
    neuron = output_neuron(model)
    value = neuron.spike_value().detach()
    if getattr(model, "neuron_type", "if") == "lif":
        return weighted_rate(out, model.tau, model.dt) * value
    return rate(out) * value


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 0 at ``total``."""

    def f(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (it - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


@register("dsr")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 20
    epochs = cfg.epochs or 12
    batch = cfg.batch or 64
    lr = cfg.lr or 0.1
    split = load_data(cfg, T)
    mode = input_mode(split)
    common = dict(neuron=cfg.get("neuron", "if"), vth=cfg.get("vth", 0.3),
                  alpha=cfg.get("alpha", 0.3), vth_bound=cfg.get("vth_bound", 5e-4),
                  tau=cfg.get("tau", 1.0), dt=cfg.get("dt", 0.05))
    c, h, w = split.input_shape
    if cfg.get("arch", "resnet") == "resnet":
        blocks = cfg.get("blocks", (1, 1))
        arch = "dsr-preact-resnet18"
        kw = dict(in_channels=c, classes=split.classes, width=cfg.get("width", 8),
                  blocks=list(blocks), pool=h // 2 ** (len(blocks) - 1), **common)
    else:
        arch = "dsr-vgg11"
        kw = dict(in_channels=c, size=h, classes=split.classes, width=cfg.get("width", 8),
                  n_stages=cfg.get("n_stages", 3), dropout=cfg.get("dropout", 0.1), **common)
    model = zoo.build(arch, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                          weight_decay=cfg.get("weight_decay", 5e-4))
    iters = epochs * math.ceil(len(split.x_train) / batch)
    if cfg.max_iters:
        iters = min(iters, cfg.max_iters)
    sched = warmup_cosine(opt, min(cfg.get("warmup", 50), max(1, iters // 10)), iters)

    def step(xb, yb, it):
        model.train()
        loss = F.cross_entropy(dsr_logits(model, to_steps(xb, T, mode)), yb)
        return update(opt, loss, sched)

    def evaluate():
        return accuracy(lambda x: dsr_logits(model, x), model, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method="dsr")
    model.eval()
    thresholds = {n: float(m.threshold.detach()) for n, m in model.named_modules()
                  if hasattr(m, "alpha")}
    return TrainResult("dsr", model, arch, kw, split.input_shape, T, evaluate(), mode,
                       history=history, extra={"thresholds": thresholds},
                       seconds=time.time() - t_start)
