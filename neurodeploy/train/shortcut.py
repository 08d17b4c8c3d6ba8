"""Shortcut back-propagation ("Take A Shortcut Back", Guo et al., NeurIPS 2024).

During training, auxiliary branches lead from intermediate stages of the spiking network
straight to the loss, so the gradient reaches early layers in one hop instead of through every
later layer's surrogate. A balance coefficient moves the weight from the branches to the main
output as training proceeds; at inference the branches are removed, so the deployed graph is the
plain backbone (:attr:`TrainResult.model` is the backbone alone).

The paper's code is not public; these choices are **ours** (documented in ``docs/methods.md``):

* one branch after every stage but the last: global average pooling of the stage's spikes
  (over space and time) followed by a Linear layer to the classes;
* loss ``lam * CE(main) + (1 - lam) * mean_k CE(branch_k)`` with ``lam`` rising linearly from
  ``lam0 = 0.5`` at the first epoch to 1 at the last;
* backbone: the spiking ResNet (LIF, hard reset, ATan surrogate) of
  :func:`neurodeploy.zoo.dsr.spiking_resnet`; logits = mean current into the integrating IF
  readout; T = 4 (one of the paper's ablation settings).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import zoo
from . import register
from .common import (
    CurrentProbe,
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


class AuxiliaryBranches(nn.Module):
    """Training wrapper: ``backbone`` plus one classifier branch per intermediate stage.

    ``forward(x)`` returns ``(main_logits, [branch_logits, ...])``. The branches read the stage
    outputs through forward hooks, so the backbone's own forward (and export) is untouched.
    """

    def __init__(self, backbone: nn.Module, classes: int):
        super().__init__()
        self.backbone = backbone
        n = backbone.n_stages
        self.heads = nn.ModuleList(nn.Linear(c, classes) for c in backbone.channels[:n - 1])
        self._feats: dict[int, torch.Tensor] = {}
        self._hooks = [getattr(backbone, f"layer{i + 1}").register_forward_hook(self._grab(i))
                       for i in range(n - 1)]

    def _grab(self, i: int):
        def hook(_m, _args, out):
            self._feats[i] = out
        return hook

    def forward(self, x):
        probe = CurrentProbe(self.backbone.readout)
        try:
            self.backbone(x)
        finally:
            probe.remove()
        main = probe.current.mean(0)
        aux = [head(self._feats[i].mean(dim=(0, 3, 4))) for i, head in enumerate(self.heads)]
        self._feats.clear()
        return main, aux

    def remove_hooks(self) -> nn.Module:
        """Detach the branches; returns the backbone (what is deployed)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.backbone


def balance(epoch: int, epochs: int, lam0: float = 0.5) -> float:
    """Weight of the main output at ``epoch`` (0-based): ``lam0`` rising linearly to 1."""
    if epochs <= 1:
        return 1.0
    return lam0 + (1.0 - lam0) * epoch / (epochs - 1)


def shortcut_loss(main, aux, y, lam: float) -> torch.Tensor:
    loss = lam * F.cross_entropy(main, y)
    if aux:
        loss = loss + (1 - lam) * sum(F.cross_entropy(a, y) for a in aux) / len(aux)
    return loss


@register("shortcut")
def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.time()
    seed_everything(cfg.seed)
    T = cfg.time_steps or 4
    epochs = cfg.epochs or 10
    batch = cfg.batch or 64
    lr = cfg.lr or 3e-3
    split = load_data(cfg, T)
    mode = input_mode(split)
    c, h, _ = split.input_shape
    blocks = cfg.get("blocks", (1, 1, 1))
    arch = "spiking-resnet"
    kw = dict(in_channels=c, classes=split.classes, width=cfg.get("width", 8),
              blocks=list(blocks), pool=h // 2 ** (len(blocks) - 1), beta=cfg.get("beta", 0.5),
              threshold=1.0, reset="zero", surrogate="atan")
    net = AuxiliaryBranches(zoo.build(arch, **kw), split.classes)
    lam0 = cfg.get("lam0", 0.5)
    opt, sched = adam_cosine(net.parameters(), lr,
                             epochs * math.ceil(len(split.x_train) / batch))
    state = {"lam": balance(0, epochs, lam0)}

    def step(xb, yb, it):
        net.train()
        main, aux = net(to_steps(xb, T, mode))
        loss = shortcut_loss(main, aux, yb, state["lam"])
        return update(opt, loss, sched)

    def end_epoch(e):
        state["lam"] = balance(e + 1, epochs, lam0)

    backbone = net.backbone

    def evaluate():
        return accuracy(lambda x: readout_logits(backbone, x), backbone, split, T, mode)

    history = train_loop(split, cfg, epochs=epochs, batch=batch, step=step, evaluate=evaluate,
                         end_epoch=end_epoch, method="shortcut")
    backbone = net.remove_hooks().eval()
    acc = evaluate()
    kw["readout_threshold"] = calibrate_readout(backbone, split, T, mode)
    return TrainResult("shortcut", backbone, arch, kw, split.input_shape, T, acc, mode,
                       history=history, extra={"branches": len(net.heads), "lam0": lam0},
                       seconds=time.time() - t_start)
