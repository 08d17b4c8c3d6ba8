"""LTL: Local Tandem Learning (Yang et al., NeurIPS 2022; offline mode of the official code).

1. An ANN teacher (conv/linear + BN + ReLU clipped at 2; :class:`neurodeploy.zoo.ltl.LTLTeacher`)
   is trained with cross-entropy and frozen.
2. The SNN (:func:`neurodeploy.zoo.ltl.ltl_vgg11`) is trained *from scratch* and layer-locally:
   every layer receives its input spikes detached, and its firing rate ``sum_t s / T`` is pulled
   by MSE towards the teacher's activation of the same layer divided by that activation's 99.9th
   percentile (over the mini-batch) and clipped to [0, 1]. The output layer adds cross-entropy on
   the mean over T of its current. All losses are summed; because the inputs are detached the
   single backward pass updates every layer from its own loss only.

LIF ``u = u decay (1 - s) + W x``, ``decay = exp(-1/10)``, fire ``u > 0.6``, boxcar surrogate;
no BN and no pooling in the SNN; T = 16; Adam. The official recipe uses lr 1e-4 for 100 epochs on
CIFAR; the few-epoch runs here use 5e-3 (option ``lr``).

Pixels enter as unnormalised integers (0..16 for digits), so the first layer's initial weights
are divided by ``input_scale`` (16) to start in the neurons' operating range.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import zoo
from ..zoo.ltl import LTLTeacher
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


def kaiming_init(model, gain: float = 1.0) -> None:
    """He-normal weights (times ``gain``) and zero biases for every conv/linear layer: with
    PyTorch's default (smaller) initialisation the deeper LIF layers start silent, and the
    boxcar surrogate passes no gradient far below the threshold."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            with torch.no_grad():
                m.weight.mul_(gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def teacher_targets(acts: list[torch.Tensor], q: float = 0.999) -> list[torch.Tensor]:
    """Teacher activations divided by their ``q``-quantile over the batch, clipped to [0, 1]."""
    out = []
    for a in acts:
        flat = a.detach().flatten()
        k = max(1, min(flat.numel(), int(math.ceil(q * flat.numel()))))
        scale = flat.kthvalue(k).values.clamp(min=1e-6)
        out.append((a.detach() / scale).clamp(0.0, 1.0))
    return out


def local_forward(model, x: torch.Tensor):
    """Run the SNN with every layer's input detached.

    Returns the firing rates of the hidden layers and the output logits (mean current of the
    output Linear over time).
    """
    rates = []
    for i, (_, syn, neuron) in enumerate(model.stages()):
        if i == model.n_conv:
            x = model.flat(x)
        s = neuron(syn(x.detach()))
        rates.append(s.mean(0))
        x = s
    if model.n_conv == len(model.names):
        x = model.flat(x)
    logits = getattr(model, model.out_name)(x.detach()).mean(0)
    return rates, logits


def ltl_loss(rates, logits, targets, y) -> tuple[torch.Tensor, torch.Tensor]:
    local = sum(F.mse_loss(r, t) for r, t in zip(rates, targets, strict=True))
    return local + F.cross_entropy(logits, y), local


def train_teacher(teacher: LTLTeacher, split, cfg: TrainConfig, epochs: int, batch: int,
                  lr: float) -> float:
    opt = torch.optim.Adam(teacher.parameters(), lr=lr)

    def step(xb, yb, it):
        teacher.train()
        _, logits = teacher(xb)
        loss = F.cross_entropy(logits, yb)
        return update(opt, loss)

    def evaluate():
        teacher.eval()
        with torch.no_grad():
            return float((teacher(split.x_test)[1].argmax(1) == split.y_test).float().mean())

    train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
               method="ltl teacher")
    teacher.eval()
    return evaluate()


@register("ltl")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 16
    epochs = cfg.epochs or 10
    batch = cfg.batch or 64
    lr = cfg.lr or 5e-3
    split = load_data(cfg, T)
    if split.kind != "direct":
        raise ValueError("LTL trains against an ANN teacher on static images; use --data digits")
    mode = input_mode(split)
    c, h, _ = split.input_shape
    shape = dict(in_channels=c, size=h, classes=split.classes,
                 channels=list(cfg.get("channels", (16, 32, 32, 64))),
                 strides=list(cfg.get("strides", (1, 2, 1, 2))),
                 hidden=list(cfg.get("hidden", (64,))))
    teacher = LTLTeacher(**shape)
    teacher_acc = train_teacher(teacher, split, cfg, cfg.get("teacher_epochs", 6), batch,
                                cfg.get("teacher_lr", 3e-3))
    for p in teacher.parameters():
        p.requires_grad_(False)
    arch = "ltl-vgg11"
    kw = dict(shape, threshold=0.6, tau=10.0)
    model = zoo.build(arch, **kw)
    if cfg.get("kaiming", False):
        kaiming_init(model, cfg.get("init_gain", 1.0))
    with torch.no_grad():
        model.conv1.module.weight /= cfg.get("input_scale", 16.0)
    opt, sched = adam_cosine(model.parameters(), lr,
                             epochs * math.ceil(len(split.x_train) / batch))

    def step(xb, yb, it):
        model.train()
        with torch.no_grad():
            acts, _ = teacher(xb)
        rates, logits = local_forward(model, to_steps(xb, T, mode))
        loss, _ = ltl_loss(rates, logits, teacher_targets(acts), yb)
        return update(opt, loss, sched)

    def evaluate():
        return accuracy(lambda x: readout_logits(model, x), model, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method="ltl")
    acc = evaluate()
    kw["readout_threshold"] = calibrate_readout(model, split, T, mode)
    return TrainResult("ltl", model.eval(), arch, kw, split.input_shape, T, acc, mode,
                       history=history, extra={"teacher_accuracy": teacher_acc},
                       seconds=time.time() - t_start)
