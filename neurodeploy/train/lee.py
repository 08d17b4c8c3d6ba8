"""Lee et al. 2020, "Enabling Spike-Based Backpropagation for Training Deep Neural Network
Architectures" (chan8972/Enabling_Spikebased_Backpropagation; notes §4).

Neurons, leak-corrected straight-through gradient, pooling neurons and architectures are in
:mod:`neurodeploy.zoo.lee`. This module adds the input encoding, the leaky readout and the loss:

* **Signed Poisson input**: pixels are normalised (``(x/16 - mean)/std`` over the digits) and at
  every step ``s = sign(x) [|x| > U(0, 1)]``: +1/-1/0 spikes. On the chip these are signed
  integer input events: the compiled first layer is an ordinary synapse fed by the Input node,
  and both fixed-point backends deliver input with graded (integer) messages -- the native
  engine multiplies the integer input by the weight mantissas, Lava's input ``Dense`` is built
  with ``num_message_bits=16`` -- so -1 arrives as -1 (a binary message would turn it into +1).
* **Readout**: the leaky accumulator ``u_out = leak u_out + fc1(s)``; logits ``u_out/Vth/T``.
* **Loss**: squared error against one-hot targets (summed over classes, averaged over the batch).
* Recipe: T = 100, batch 16, SGD lr 0.0033, wd 5e-4, 150 epochs in the paper; here T = 20,
  batch 32, Adam (lr 5e-3, cosine) for 10 epochs, so that the small nets train on digits in
  under two minutes of CPU. Default ``arch=resnet`` (``lee-resnet11``: pre-conv 16, blocks
  16/32, fc 64; 95.6% float, 95.0% loihi-sim); ``arch=vgg`` (``lee-vgg9``, widths 16/32, two
  convs per stage) reaches 89.7% in the same budget.

Deployment: ``fc1`` feeds the integrating IF ``readout``; :func:`calibrate_lee_readout` sets its
threshold from the summed training currents. The loihi-sim run receives the same sampled
+/-1 spike trains as the float model (``signed_poisson`` with a fixed seed).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from .. import zoo
from . import register
from .common import (  # noqa: F401  (DIGITS_MEAN/STD, signed_poisson: re-exported)
    DIGITS_MEAN,
    DIGITS_STD,
    CurrentProbe,
    Split,
    TrainConfig,
    TrainResult,
    load_data,
    seed_everything,
    signed_poisson,
    to_steps,
    train_loop,
    update,
)
from .spide import limit_test

INPUT_MODE = "signed_poisson"  # :func:`neurodeploy.train.common.signed_poisson`


def encode(x: torch.Tensor, T: int, mode: str, seed: int | None = 0) -> torch.Tensor:
    """:func:`neurodeploy.train.common.to_steps` (``signed_poisson`` for direct images)."""
    return to_steps(x, T, mode, seed)


def lee_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Lee's leaky accumulator readout ``u_out(T) / Vth / T`` of the current into ``readout``."""
    probe = CurrentProbe(model.readout)
    try:
        model(x)
    finally:
        probe.remove()
    cur = probe.current
    T = cur.shape[0]
    w = torch.tensor([model.leak ** (T - 1 - t) for t in range(T)], dtype=cur.dtype)
    return (cur * w.reshape(-1, 1, 1)).sum(0) / model.vth / T


@torch.no_grad()
def calibrate_lee_readout(model: nn.Module, x: torch.Tensor, T: int, mode: str,
                          quantile: float = 0.99, batch: int = 256) -> float:
    """Threshold of the deployed IF readout: ``q``-quantile of the winning summed current / T."""
    model.eval()
    tops = []
    for i in range(0, len(x), batch):
        probe = CurrentProbe(model.readout)
        try:
            model(encode(x[i:i + batch], T, mode, seed=1000 + i))
        finally:
            probe.remove()
        tops.append(probe.current.sum(0).max(1).values)
    theta = max(float(torch.quantile(torch.cat(tops).clamp(min=0).double(), quantile)) / T, 1e-3)
    model.readout.threshold.fill_(theta)
    return theta


@torch.no_grad()
def lee_accuracy(model: nn.Module, split: Split, T: int, mode: str, counts: bool = False,
                 batch: int = 256) -> float:
    """Test accuracy with the leaky readout (or, ``counts=True``, the deployed IF's counts)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split.x_test), batch):
        x = encode(split.x_test[i:i + batch], T, mode, seed=i)
        out = model(x).sum(0) if counts else lee_logits(model, x)
        correct += int((out.argmax(1) == split.y_test[i:i + batch]).sum())
    model.train(was)
    return correct / len(split.x_test)


@torch.no_grad()
def lee_loihi_accuracy(model: nn.Module, split: Split, T: int, mode: str,
                       batch: int = 256) -> dict:
    """Compile for loihi-sim and run the encoded test set (same spikes as ``lee_accuracy``)."""
    import copy

    from .. import runtime
    from ..compiler import compile_graph
    from ..frontends.torch import torch_to_nir

    graph = torch_to_nir(copy.deepcopy(model).double().eval(), tuple(split.input_shape))
    cm = compile_graph(graph, time_steps=T)
    correct = 0
    for i in range(0, len(split.x_test), batch):
        x = encode(split.x_test[i:i + batch], T, mode, seed=i).numpy()
        res = runtime.run(cm, np.rint(x).astype(np.int64), "native")
        correct += int((res.predictions == split.y_test[i:i + batch].numpy()).sum())
    return {"loihi_accuracy": correct / len(split.x_test),
            "pipeline_depth": int(cm.meta["pipeline_depth"]),
            "saturated_weights": int(cm.meta["saturated_weights"])}


@register("lee")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 20
    epochs = cfg.epochs or 10
    batch = cfg.batch or 32
    lr = cfg.lr or 5e-3
    split = load_data(cfg, T)
    limit_test(split, cfg.get("test_limit", 0))
    mode = INPUT_MODE if split.kind == "direct" else "frames"
    c, h, _ = split.input_shape
    common = dict(in_channels=c, size=h, classes=split.classes, vth=cfg.get("vth", 1.0),
                  leak=cfg.get("leak", 0.99), pool_vth=cfg.get("pool_vth", 0.75),
                  fc=cfg.get("fc", 64), init_gain=cfg.get("init_gain", 2.0))
    if cfg.get("arch", "resnet") == "vgg":
        arch = "lee-vgg9"
        kw = dict(widths=list(cfg.get("widths", (16, 32))), convs=list(cfg.get("convs", (2, 2))),
                  **common)
    else:
        arch = "lee-resnet11"
        kw = dict(pre=cfg.get("pre", 16), widths=list(cfg.get("widths", (16, 32))), **common)
    model = zoo.build(arch, **kw)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    iters = epochs * math.ceil(len(split.x_train) / batch)
    if cfg.max_iters:
        iters = min(iters, cfg.max_iters)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))
    eye = torch.eye(split.classes)

    def step(xb, yb, it):
        model.train()
        out = lee_logits(model, encode(xb, T, mode, seed=None))
        loss = ((out - eye[yb]) ** 2).sum(1).mean()
        return update(opt, loss, sched)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step,
                         evaluate=lambda: lee_accuracy(model, split, T, mode), method="lee")
    acc = lee_accuracy(model, split, T, mode)
    kw["readout_threshold"] = calibrate_lee_readout(model, split.x_train, T, mode)
    extra = {"float_spiking_readout_accuracy": lee_accuracy(model, split, T, mode, counts=True),
             "input_encoding": "signed Poisson +/-1 spikes (seeded per test batch)"}
    if cfg.get("deploy", True) and mode == INPUT_MODE:
        extra.update(lee_loihi_accuracy(model, split, T, mode))
    return TrainResult("lee", model.eval(), arch, kw, split.input_shape, T, acc, mode,
                       history=history, extra=extra, seconds=time.time() - t_start)
