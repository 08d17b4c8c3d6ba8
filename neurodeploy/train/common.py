"""What every training method shares: data, the training loop, readouts, export and deployment.

Data. ``"digits"`` is scikit-learn's bundled 8x8 digits (1797 images, no download), split 80/20
stratified. Pixels are the data set's own integers 0..16 and are used *unnormalised*: direct
input repeats that integer image every time step, so the deployed fixed-point engine (which
takes integer event counts) receives exactly what the network was trained on. ``"dvs"`` is the
synthetic N-MNIST-like set of :mod:`neurodeploy.datasets.synthetic_nmnist` (event-count frames,
one per step), used when that module is installed.

Readouts. A method whose output layer is an integrating IF (``model.readout``) trains on the
mean over time of that neuron's input current (LTL's "mean of the Linear over T") and deploys
with the IF's spike count, which tracks the summed current; :func:`calibrate_readout` sets its
threshold so the count does not saturate at one spike per step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..passes.align_pipeline import (  # noqa: F401  (re-exported: moved to passes)
    CLOCK_SCALE,
    align_for_pipeline,
    clock_scales,
    data_depth,
)

INPUT_MODES = ("repeat", "first", "frames", "signed_poisson")

#: Mean and standard deviation of sklearn digits' pixels / 16 (all 1797 images): the
#: normalisation of :func:`signed_poisson` (Lee et al. normalise their images the same way).
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3760


@dataclass
class TrainConfig:
    """Options shared by all methods; ``None`` means the method's own default."""

    data: str = "digits"
    data_dir: Path | None = None
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    time_steps: int | None = None
    seed: int = 0
    max_iters: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    train_limit: int | None = None  # use only this many training samples
    test_limit: int | None = None  # and this many test samples (smoke runs)
    verbose: bool = True
    eval_every: int = 0  # test accuracy every N epochs during training (0: only at the end)
    options: dict = field(default_factory=dict)  # method-specific, e.g. {"width": 8}

    def get(self, name: str, default):
        """Method option ``name`` from ``options`` (cast to the default's type) or ``default``."""
        if name not in self.options:
            return default
        v = self.options[name]
        if isinstance(default, bool) and isinstance(v, str):
            return v.lower() in ("1", "true", "yes", "on")
        if isinstance(default, tuple) and isinstance(v, str):
            return tuple(int(s) for s in v.split(",") if s)
        if default is not None and not isinstance(default, (tuple, list)) and isinstance(v, str):
            return type(default)(v)
        return v


@dataclass
class TrainResult:
    """A trained deployable model and how to rebuild, feed and judge it."""

    method: str
    model: nn.Module
    arch: str
    arch_kwargs: dict
    input_shape: tuple[int, ...]
    time_steps: int  # steps the network is trained with
    float_accuracy: float
    input_mode: str = "repeat"  # how a sample becomes [T, B, ...]: INPUT_MODES
    eval_steps: int | None = None  # steps to run when deployed (default time_steps)
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def deploy_steps(self) -> int:
        return int(self.eval_steps or self.time_steps)


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    kind: str  # "direct" (a static image) or "frames" ([N, T, ...] event counts)
    classes: int = 10


def load_digits_split(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """sklearn digits as integer images ``[N, 1, 8, 8]`` in 0..16 (float32), stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_fraction,
                                          random_state=seed, stratify=d.target)
    return Split(torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte),
                 torch.from_numpy(yte).long(), (1, 8, 8), "direct")


def dvs_available() -> bool:
    return (Path(__file__).resolve().parents[1] / "datasets" / "synthetic_nmnist.py").is_file()


def load_dvs_split(data_dir: Path | None, n_bins: int, seed: int = 0) -> Split:
    """Synthetic DVS digits as event-count frames ``[N, T, 2, 34, 34]`` (generated if absent)."""
    if not dvs_available():
        raise RuntimeError("neurodeploy.datasets.synthetic_nmnist is not installed; use "
                           "--data digits")
    from ..datasets import synthetic_nmnist as ds

    root = Path(data_dir or "build/synthetic-nmnist")
    if not (root / "meta.json").exists():
        ds.make_dataset(root, seed=seed)
    xtr, ytr = ds.frames_dataset(root, "train", n_bins=n_bins)
    xte, yte = ds.frames_dataset(root, "test", n_bins=n_bins)
    return Split(torch.as_tensor(np.asarray(xtr), dtype=torch.float32),
                 torch.as_tensor(np.asarray(ytr)).long(),
                 torch.as_tensor(np.asarray(xte), dtype=torch.float32),
                 torch.as_tensor(np.asarray(yte)).long(), tuple(np.asarray(xtr).shape[2:]),
                 "frames")


def load_data(cfg: TrainConfig, time_steps: int) -> Split:
    if cfg.data == "digits":
        split = load_digits_split(cfg.seed)
    elif cfg.data == "dvs":
        split = load_dvs_split(cfg.data_dir, time_steps, cfg.seed)
    else:
        raise ValueError(f"unknown data {cfg.data!r}; choose digits or dvs")
    if cfg.train_limit:
        split.x_train, split.y_train = (split.x_train[:cfg.train_limit],
                                        split.y_train[:cfg.train_limit])
    if cfg.test_limit:
        split.x_test, split.y_test = split.x_test[:cfg.test_limit], split.y_test[:cfg.test_limit]
    return split


def signed_poisson(x: torch.Tensor, T: int, seed: int | None = 0, mean: float = DIGITS_MEAN,
                   std: float = DIGITS_STD, full_scale: float = 16.0) -> torch.Tensor:
    """Signed Poisson input (Lee et al. 2020): integer images ``[B, ...]`` -> ``[T, B, ...]``.

    Pixels are normalised, ``xn = (x / full_scale - mean) / std``; on every step a pixel emits
    ``sign(xn)`` with probability ``min(|xn|, 1)``, else 0. ``seed=None`` draws from torch's
    global generator (training); an integer seed gives the same trains every time.
    """
    xn = (x / full_scale - mean) / std
    p = xn.abs().clamp(max=1.0)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    u = torch.rand((T, *x.shape), generator=g, dtype=x.dtype)
    return (u < p).to(x.dtype) * torch.sign(xn)


def to_steps(x: torch.Tensor, T: int, mode: str, seed: int | None = 0) -> torch.Tensor:
    """Batch ``x`` -> ``[T, B, ...]``: ``repeat`` the image, show it only ``first``, transpose
    ``frames`` ``[B, T, ...]``, or draw ``signed_poisson`` spikes (from ``seed``)."""
    if mode == "repeat":
        return x.unsqueeze(0).expand(T, *x.shape).contiguous()
    if mode == "first":
        out = torch.zeros((T, *x.shape), dtype=x.dtype)
        out[0] = x
        return out
    if mode == "frames":
        if x.shape[1] != T:
            raise ValueError(f"frames have {x.shape[1]} steps, expected {T}")
        return x.transpose(0, 1).contiguous()
    if mode == "signed_poisson":
        return signed_poisson(x, T, seed)
    raise ValueError(f"input mode must be one of {INPUT_MODES}, got {mode!r}")


def input_mode(split: Split, static: str = "repeat") -> str:
    return "frames" if split.kind == "frames" else static


# -- readouts -------------------------------------------------------------------------------------

class CurrentProbe:
    """Records the input current of ``module`` (a neuron) during forward passes."""

    def __init__(self, module: nn.Module):
        self.current: torch.Tensor | None = None
        self._h = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.current = args[0]

    def remove(self) -> None:
        self._h.remove()


def readout_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over time of the current into ``model.readout`` (logits of integrating readouts)."""
    probe = CurrentProbe(model.readout)
    try:
        model(x)
    finally:
        probe.remove()
    return probe.current.mean(0)


@torch.no_grad()
def accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, split: Split,
             T: int, mode: str, train: bool = False, batch: int = 256) -> float:
    """Float accuracy on the test (or train) set with ``logits_fn(x_steps)``."""
    was = model.training
    model.eval()
    xs, ys = (split.x_train, split.y_train) if train else (split.x_test, split.y_test)
    correct = 0
    for i in range(0, len(xs), batch):
        logits = logits_fn(to_steps(xs[i:i + batch], T, mode))
        correct += int((logits.argmax(1) == ys[i:i + batch]).sum())
    model.train(was)
    return correct / len(xs)


@torch.no_grad()
def calibrate_readout(model: nn.Module, split: Split, T: int, mode: str, window: int | None = None,
                      quantile: float = 0.99, batch: int = 256) -> float:
    """Set ``model.readout``'s threshold so its spike count over ``window`` steps measures the
    summed current without saturating: ``theta = q-quantile(max_class sum_t I) / window``.

    An IF with reset by subtraction emits at most one spike per step, so a too-low threshold
    would clip the largest logits to the same count. Returns the threshold.
    """
    was = model.training
    model.eval()
    tops = []
    for i in range(0, len(split.x_train), batch):
        x = to_steps(split.x_train[i:i + batch], T, mode)
        probe = CurrentProbe(model.readout)
        try:
            model(x)
        finally:
            probe.remove()
        tops.append(probe.current.sum(0).max(1).values)
    top = torch.cat(tops)
    theta = float(torch.quantile(top.clamp(min=0).double(), quantile)) / float(window or T)
    theta = max(theta, 1e-3)
    model.readout.threshold.fill_(theta)
    model.train(was)
    return theta


# -- the training loop ----------------------------------------------------------------------------

def train_loop(split: Split, cfg: TrainConfig, *, epochs: int, batch: int,
               step: Callable[[torch.Tensor, torch.Tensor, int], float],
               evaluate: Callable[[], float] | None = None,
               end_epoch: Callable[[int], None] | None = None,
               method: str = "") -> list[dict]:
    """Shuffle, batch and call ``step(x_batch, y_batch, iteration) -> loss`` (``x_batch`` is the
    raw batch; the method turns it into time steps). Stops early at ``cfg.max_iters``."""
    g = torch.Generator().manual_seed(cfg.seed)
    history, it = [], 0
    for epoch in range(epochs):
        perm = torch.randperm(len(split.x_train), generator=g)
        t0, losses = time.time(), []
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            losses.append(step(split.x_train[idx], split.y_train[idx], it))
            it += 1
            if cfg.max_iters is not None and it >= cfg.max_iters:
                break
        if end_epoch is not None:
            end_epoch(epoch)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else math.nan,
               "seconds": time.time() - t0}
        if evaluate is not None and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            rec["test_accuracy"] = evaluate()
        history.append(rec)
        if cfg.verbose:
            acc = f", test accuracy {rec['test_accuracy']:.2%}" if "test_accuracy" in rec else ""
            print(f"[{method}] epoch {epoch + 1}/{epochs}: loss {rec['loss']:.4f}{acc} "
                  f"({rec['seconds']:.1f}s)", flush=True)
        if cfg.max_iters is not None and it >= cfg.max_iters:
            break
    return history


def adam_cosine(params, lr: float, iters: int):
    """Adam with a cosine learning-rate decay over ``iters`` optimiser steps."""
    opt = torch.optim.Adam(params, lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))


def update(opt, loss: torch.Tensor, sched=None) -> float:
    """One optimiser step on ``loss`` (then one scheduler step); returns the loss value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return float(loss.detach())


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# -- export and deployment ------------------------------------------------------------------------

def export_nir(model: nn.Module, input_shape):
    """``torch_to_nir`` of a float64 copy of ``model`` (the training model is left as it is)."""
    from ..frontends.torch import torch_to_nir

    return torch_to_nir(copy.deepcopy(model).double().eval(), tuple(input_shape))


def spike_count(activity: dict, graph, network_only: bool = False) -> np.ndarray:
    """Total spikes per sample over all neuron layers of a run's recorded activity.

    ``network_only`` leaves out the relays and clocks added by :func:`align_for_pipeline`.
    """
    from ..graph import is_neuron

    total = None
    for name, node in graph.nodes.items():
        if network_only and (node.metadata.get("relay") or node.metadata.get("clock")):
            continue
        if is_neuron(node) and name in activity:
            a = np.asarray(activity[name])
            c = a.reshape(a.shape[0], a.shape[1], -1).sum(axis=(0, 2))
            total = c if total is None else total + c
    return total


def deploy(result: TrainResult, split: Split, limit: int | None = None, batch: int = 128,
           backend: str = "native", align: bool = True) -> dict:
    """Compile ``result.model`` for loihi-sim and run the test set on the fixed-point engine.

    ``align``: compile with pipeline alignment (``compile_graph(align=True)``). Returns
    loihi-sim accuracy, mean spikes per inference (all neuron layers over the whole run; and
    without the relays and clocks of the alignment), pipeline depth and saturated weights.
    """
    from .. import runtime
    from ..compiler import compile_graph

    graph = export_nir(result.model, result.input_shape)
    cm = compile_graph(graph, time_steps=result.deploy_steps, align=align,
                       source={"input_shape": list(result.input_shape), "arch": result.arch})
    xs, ys = split.x_test, split.y_test
    if limit:
        xs, ys = xs[:limit], ys[:limit]
    correct, spikes, net = 0, [], []
    for i in range(0, len(xs), batch):
        x = to_steps(xs[i:i + batch], result.deploy_steps, result.input_mode).numpy()
        if not np.all(x == np.round(x)):
            raise ValueError("deployed input must be integer event counts")
        res = runtime.run(cm, x.astype(np.int64), backend)
        correct += int((res.predictions == ys[i:i + batch].numpy()).sum())
        spikes.append(spike_count(res.activity, cm.graph))
        net.append(spike_count(res.activity, cm.graph, network_only=True))
    return {"loihi_accuracy": correct / len(xs),
            "spikes_per_inference": float(np.concatenate(spikes).mean()),
            "network_spikes_per_inference": float(np.concatenate(net).mean()),
            "pipeline_depth": int(cm.meta["pipeline_depth"]),
            "saturated_weights": int(cm.meta["saturated_weights"]),
            "compiled": cm}
