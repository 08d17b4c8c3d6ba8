"""Single-time-step training (after Yao et al., ACML 2023; details of the paper unverified).

The network (:func:`neurodeploy.zoo.single_step.single_step_sequencer`) sees the image for one
time step (T = 1): every hidden neuron fires at most once, and spatial recurrence along the
image axes (unrolled into feed-forward layers) replaces temporal integration. Training is plain
surrogate-gradient BPTT with T = 1 (ATan surrogate), Adam, cross-entropy on the current into the
readout neuron, followed by ``qat_epochs`` (default 20) of quantization-aware fine-tuning on the
Loihi weight grid (:func:`finetune_on_grid`; ``--set qat_epochs=0`` skips it).

Deployed, the image is presented on the first step of a ``readout_steps`` window (input mode
``"first"``) and the readout IF turns its membrane into a spike count (see the architecture's
docstring); :func:`calibrate_readout` sets its threshold to the 99th percentile of the top logit
divided by the window.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import zoo
from ..quantize.qat import quantized_weights, snap_
from ..zoo.dsr import IdentityConv
from . import register
from .common import (
    TrainConfig,
    TrainResult,
    accuracy,
    adam_cosine,
    calibrate_readout,
    load_data,
    readout_logits,
    seed_everything,
    to_steps,
    train_loop,
    update,
)


def kaiming_init(model, gain: float = 1.0) -> None:
    """He-normal weights (times ``gain``) for every trained conv/linear layer (no biases here).

    With a single time step nothing integrates over time: layers initialised too small stay
    silent, and the surrogate gradient through a silent chain vanishes."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, IdentityConv):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            with torch.no_grad():
                m.weight.mul_(gain)
                if hasattr(m, "axis_mask"):
                    m.weight.mul_(m.axis_mask)


@register("single-step")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = 1
    if cfg.time_steps not in (None, 1):
        raise ValueError("the single-step method trains with T = 1")
    epochs = cfg.epochs or 40
    batch = cfg.batch or 64
    lr = cfg.lr or 1e-2
    window = cfg.get("readout_steps", 16)
    split = load_data(cfg, T)
    if split.kind != "direct":
        raise ValueError("the single-step method takes static images; use --data digits")
    mode = "first"
    c, h, _ = split.input_shape
    arch = "single-step-sequencer"
    kw = dict(in_channels=c, size=h, classes=split.classes, width=cfg.get("width", 32),
              depths=list(cfg.get("depths", (3, 2))), mlp_ratio=cfg.get("mlp_ratio", 2),
              threshold=1.0)
    model = zoo.build(arch, **kw)
    kaiming_init(model, cfg.get("init_gain", 1.0))
    with torch.no_grad():
        model.stem.module.weight /= cfg.get("input_scale", 16.0)
    opt, sched = adam_cosine(model.parameters(), lr,
                             epochs * math.ceil(len(split.x_train) / batch))

    def step(xb, yb, it):
        model.train()
        loss = F.cross_entropy(readout_logits(model, to_steps(xb, T, mode)), yb)
        return update(opt, loss, sched)

    def evaluate():
        return accuracy(lambda x: readout_logits(model, x), model, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method="single-step")
    acc = evaluate()
    kw["readout_threshold"] = calibrate_readout(model, split, T, mode, window=window)
    extra = {"readout_steps": window}
    qat_epochs = int(cfg.get("qat_epochs", 20))
    if qat_epochs > 0:
        extra.update(float_accuracy_before_qat=acc, qat_epochs=qat_epochs)
        history += finetune_on_grid(model, split, cfg, qat_epochs, float(cfg.get("qat_lr", 3e-4)),
                                    batch, evaluate)
        acc = evaluate()
    return TrainResult("single-step", model.eval(), arch, kw, split.input_shape, T, acc, mode,
                       eval_steps=window, history=history, extra=extra,
                       seconds=time.time() - t_start)


def finetune_on_grid(model, split, cfg: TrainConfig, epochs: int, lr: float, batch: int,
                     evaluate) -> list[dict]:
    """Quantization-aware fine-tuning (:mod:`neurodeploy.quantize.qat`), then snap the weights.

    With T = 1 every hidden neuron makes one binary decision per image, so rounding the weights
    to 8 bits flips the decisions that sit within a rounding step of the threshold, and a few
    test images change class. Training through the grid that ``compile`` will use and snapping
    to it makes the float model one that min/max per-channel quantization maps exactly. The
    readout threshold is calibrated before, since it sets the readout layer's grid.
    """
    groups = model.grid_groups()
    opt, sched = adam_cosine(model.parameters(), lr, epochs * math.ceil(len(split.x_train) / batch))

    def step(xb, yb, it):
        model.train()
        with quantized_weights(groups):
            loss = F.cross_entropy(readout_logits(model, to_steps(xb, 1, "first")), yb)
            opt.zero_grad()
            loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         method="single-step QAT")
    snap_(groups)
    for rec in history:
        rec["phase"] = "qat"
    return history
