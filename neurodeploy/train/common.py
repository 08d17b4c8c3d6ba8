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

from ..nn.neurons import SpikingNeuron

INPUT_MODES = ("repeat", "first", "frames")


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


def to_steps(x: torch.Tensor, T: int, mode: str) -> torch.Tensor:
    """Batch ``x`` -> ``[T, B, ...]``: ``repeat`` the image, show it only ``first``, or
    transpose ``frames`` ``[B, T, ...]``."""
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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# -- export and deployment ------------------------------------------------------------------------

def export_nir(model: nn.Module, input_shape):
    """``torch_to_nir`` of a float64 copy of ``model``.

    Neurons with a resting potential (``v_leak``, DSR's LIF) get it written into their NIR LIF
    node when the exporter left it at 0.
    """
    from ..frontends.torch import torch_to_nir

    m = copy.deepcopy(model).double().eval()
    graph = torch_to_nir(m, tuple(input_shape))
    for name, mod in m.named_modules():
        leak = getattr(mod, "v_leak", None)
        node = graph.nodes.get(name)
        if isinstance(mod, SpikingNeuron) and leak and node is not None and hasattr(node,
                                                                                     "v_leak"):
            cur = np.asarray(node.v_leak, dtype=np.float64)
            if not np.any(cur):
                node.v_leak = np.full_like(cur, float(leak))
    return graph


def _identity_synapse(shape: tuple[int, ...]):
    import nir

    if len(shape) == 3:
        c = shape[0]
        return nir.Conv2d(input_shape=tuple(shape[1:]),
                          weight=np.eye(c).reshape(c, c, 1, 1), stride=np.array([1, 1]),
                          padding=np.array([0, 0]), dilation=np.array([1, 1]), groups=1,
                          bias=np.zeros(c))
    n = int(np.prod(shape))
    return nir.Affine(weight=np.eye(n), bias=np.zeros(n))


def _relay_neuron(shape: tuple[int, ...]):
    import nir

    ones = np.ones(shape)
    return nir.IF(r=ones, v_threshold=0.5 * ones, v_reset=0 * ones,
                  metadata={"reset": "zero", "v_init": 0.0, "relay": True})


def _clock_source(in_shape: tuple[int, ...], shape: tuple[int, ...]):
    """Synapse and IF of a clock that fires on every step from step 0.

    The synapse reads the graph input with zero weights (so it has an input on every step) and
    carries the bias 1 that drives the neuron over its threshold 0.5 each step.
    """
    import nir

    ones = np.ones(shape)
    neuron = nir.IF(r=ones, v_threshold=0.5 * ones, v_reset=0 * ones,
                    metadata={"reset": "zero", "v_init": 0.0, "clock": True})
    if len(shape) == 3 and len(in_shape) == 3 and all(
            o <= i for o, i in zip(shape[1:], in_shape[1:], strict=True)):
        stride = [i // o for o, i in zip(shape[1:], in_shape[1:], strict=True)]
        kernel = [i - (o - 1) * st for o, i, st in zip(shape[1:], in_shape[1:], stride,
                                                         strict=True)]
        syn = nir.Conv2d(input_shape=tuple(in_shape[1:]),
                         weight=np.zeros((1, in_shape[0], *kernel)), stride=np.array(stride),
                         padding=np.array([0, 0]), dilation=np.array([1, 1]), groups=1,
                         bias=np.ones(1))
    elif len(shape) == 1:
        syn = nir.Affine(weight=np.zeros((shape[0], int(np.prod(in_shape)))),
                         bias=np.ones(shape[0]))
    else:
        raise ValueError(f"cannot build a clock of shape {shape} from input {in_shape}")
    return syn, neuron


#: Scale (integer units per membrane unit) given to clock sources at quantization: their zero
#: weights leave the min/max observer nothing to bound the scale with.
CLOCK_SCALE = 254.0


def clock_scales(graph) -> dict[str, float]:
    """``compile_graph(scales=...)`` entries for the clock sources of an aligned graph."""
    return {k: CLOCK_SCALE for k, n in graph.nodes.items()
            if n.metadata.get("clock") and not n.metadata.get("relay")}


def align_for_pipeline(graph):
    """Make a graph's transient on pipelined hardware match training-time timing.

    Every synapse layer delays by one step on Loihi/Lava, so a neuron ``d`` synapse layers
    deep first sees the input at step ``d``. Two rewrites of the lowered graph, exact for
    feed-forward graphs (every neuron then sees, from step ``d`` on, what it saw from step 0 in
    training):

    * **Branch alignment.** Where synapses of different depth meet in one neuron (residual
      shortcuts), the shorter branch gets relay stages: an identity synapse and an IF that copies
      binary spikes (threshold 0.5, reset to 0), one per missing step.
    * **Biases.** A bias is integrated on every step, also on the ``d`` steps before the first
      input arrives. Where possible the initial membrane is lowered (raised) so that ``d`` steps
      of bias alone bring it to the trained ``v_init`` (pre-charge, :func:`_clocked_bias`). A
      channel whose pre-charge would have to start at or above the threshold (a negative bias
      that would fire early) instead takes its bias from a *clock*: a chain of neurons that
      fire on every step, the ``k``-th from step ``k`` on (a source driven by a unit bias, then
      relays). A neuron ``d`` deep takes it through a 1x1 (or one-column) synapse from clock
      ``d - 1``, so it starts exactly with the input. Clock neurons: one per spatial position
      per depth.
      Compile with ``scales=clock_scales(graph)`` and read out after :func:`data_depth` steps
      (the clock source reads the input with zero weights, which adds one synapse layer to the
      compiler's depth count on paths through a clock).

    Returns a new lowered graph (``compile_graph`` lowers it again as a no-op).
    """
    import nir

    from ..graph import evaluation_order, is_neuron, predecessors
    from ..passes import lower_for_hardware

    g = lower_for_hardware(graph)
    dt = float(g.metadata.get("dt", 1.0))
    order, back = evaluation_order(g)
    synapse_types = (nir.Affine, nir.Conv2d)
    depth: dict[str, int] = {}
    clocks: dict[tuple, str] = {}

    def clock(level: int, shape: tuple[int, ...]) -> str:
        key = (level, shape)
        if key not in clocks:
            tag = "x".join(str(v) for v in shape)
            name = f"clock{level}_{tag}"
            if level == 0:
                inp = next(k for k, n in g.nodes.items() if isinstance(n, nir.Input))
                in_shape = tuple(int(v) for v in g.nodes[inp].output_type["output"])
                syn, neuron = _clock_source(in_shape, shape)
                g.nodes[f"{name}.syn"], g.nodes[name] = syn, neuron
                g.edges += [(inp, f"{name}.syn"), (f"{name}.syn", name)]
            else:
                prev = clock(level - 1, shape)
                syn = f"{name}.syn"
                g.nodes[syn] = _identity_synapse(shape)
                g.nodes[name] = _relay_neuron(shape)
                g.edges += [(prev, syn), (syn, name)]
            clocks[key] = name
        return clocks[key]

    for name in order:
        node = g.nodes[name]
        preds = [p for p in predecessors(g)[name] if (p, name) not in back]
        if not is_neuron(node):
            base = max((depth[p] for p in preds), default=0)
            depth[name] = base + (1 if isinstance(node, synapse_types) else 0)
            continue
        want = max((depth[p] for p in preds), default=0)
        for syn in preds:
            missing = want - depth[syn]
            src = [p for p in predecessors(g)[syn] if (p, syn) not in back]
            if missing <= 0 or len(src) != 1 or not is_neuron(g.nodes[src[0]]):
                continue
            shape = tuple(int(v) for v in g.nodes[src[0]].output_type["output"])
            prev, d = src[0], depth[src[0]]
            g.edges.remove((src[0], syn))
            for k in range(missing):
                sname, rname = f"{syn}.align{k}", f"{syn}.align{k}.relay"
                g.nodes[sname] = _identity_synapse(shape)
                g.nodes[rname] = _relay_neuron(shape)
                g.edges += [(prev, sname), (sname, rname)]
                depth[sname] = depth[rname] = d + k + 1
                prev = rname
            g.edges.append((prev, syn))
            depth[syn] += missing
        depth[name] = want
        syns = [p for p in preds if isinstance(g.nodes[p], synapse_types)]
        bias = _clocked_bias(g, name, node, syns, want, dt) if want >= 1 else None
        if bias is not None:
            shape = tuple(int(v) for v in node.output_type["output"])
            cshape = (1, *shape[1:]) if len(shape) == 3 else (1,)
            src = clock(want - 1, cshape)
            bname = f"{name}.bias"
            if len(shape) == 3:
                g.nodes[bname] = nir.Conv2d(
                    input_shape=tuple(shape[1:]), weight=bias.reshape(-1, 1, 1, 1),
                    stride=np.array([1, 1]), padding=np.array([0, 0]),
                    dilation=np.array([1, 1]), groups=1, bias=np.zeros(shape[0]))
            else:
                g.nodes[bname] = nir.Affine(weight=bias.reshape(-1, 1), bias=np.zeros(shape[0]))
            g.edges += [(src, bname), (bname, name)]
            depth[bname] = want
    g = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata, type_check=False)
    _set_types(g)
    return lower_for_hardware(g)


def _clocked_bias(g, name, node, synapses, d: int, dt: float) -> np.ndarray | None:
    """Handle the bias of neuron ``name`` (``d`` synapse layers deep) for pipelined timing.

    Per channel (unit), either *pre-charge*: keep the bias in the neuron and start the membrane
    where ``d`` steps of bias alone bring it to ``v_init`` (IF: ``v0 = v_init - d r B``; LIF:
    ``v0 = v* + (v_init - v*) / a**d``, ``a = 1 - dt/tau``, ``v* = v_leak + r B``), possible when
    ``v0`` stays below the threshold (no early spike) and within 16 thresholds of it; or *clock*
    it: remove it from the synapses and return it (zero elsewhere) as the weights of a synapse
    from the clock. Returns ``None`` when no channel needs the clock.
    """
    import nir

    biases = [np.asarray(g.nodes[s].bias, dtype=np.float64) for s in synapses]
    if not any(np.any(b) for b in biases):
        return None
    B = sum(biases[1:], biases[0])
    if B.ndim != 1:
        raise ValueError(f"node {name!r}: per-position biases cannot be aligned")
    shape = tuple(int(v) for v in node.output_type["output"])

    def per_channel(a):
        a = np.broadcast_to(np.asarray(a, dtype=np.float64), shape)
        return a.reshape(shape[0], -1)

    v_init = per_channel(node.metadata.get("v_init", 0.0))
    theta = per_channel(node.v_threshold) - per_channel(node.v_reset)
    r = per_channel(node.r)
    Bc = B[:, None]
    if isinstance(node, nir.IF):
        v0 = v_init - d * dt * r * Bc
    elif isinstance(node, nir.LIF):
        a = 1.0 - dt / per_channel(node.tau)
        v_star = per_channel(node.v_leak) + r * Bc
        v0 = v_star + (v_init - v_star) / a ** d
    else:
        raise ValueError(f"node {name!r}: {type(node).__name__} cannot be aligned")
    rel = (v0 - per_channel(node.v_reset)) / theta
    ok = np.all((rel < 1.0 - 1e-6) & (rel > -16.0), axis=1)  # per channel; 24-bit v headroom
    node.metadata = dict(node.metadata)
    node.metadata["v_init"] = np.where(ok[:, None], v0, v_init).reshape(shape)
    if np.all(ok):
        return None
    for s, b in zip(synapses, biases, strict=True):
        g.nodes[s].bias = np.where(ok, b, 0.0)
    return np.where(ok, 0.0, B)


def _set_types(g) -> None:
    """Input/output types of the nodes this module creates, from their neighbours."""
    import nir

    from ..graph import predecessors

    pred = predecessors(g)
    for name, node in g.nodes.items():
        if isinstance(node, nir.Affine) and pred[name]:
            src = g.nodes[pred[name][0]]
            node.input_type = {"input": np.asarray(src.output_type["output"])}


def data_depth(graph) -> int:
    """Pipeline depth of the data path (synapse layers from the input to the output), ignoring
    the clock chains of :func:`align_for_pipeline`, whose source fires from step 0 although it
    sits one synapse layer below the input."""
    import nir

    from ..graph import evaluation_order, is_neuron, predecessors

    order, back = evaluation_order(graph)
    pred = predecessors(graph)
    clock = {k for k, n in graph.nodes.items() if n.metadata.get("clock")}
    clock |= {k for k in graph.nodes if any(p in clock for p in pred[k])}
    depth: dict[str, int] = {}
    for n in order:
        ps = [p for p in pred[n] if (p, n) not in back and p not in clock]
        step = 1 if isinstance(graph.nodes[n], (nir.Affine, nir.Conv2d)) and not is_neuron(
            graph.nodes[n]) else 0
        depth[n] = max((depth[p] for p in ps), default=0) + step
    return max(depth[o] for o, node in graph.nodes.items() if isinstance(node, nir.Output))


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

    ``align``: apply :func:`align_for_pipeline` before compiling. Returns loihi-sim accuracy,
    mean spikes per inference (all neuron layers over the whole run; and without the relays and
    clocks of the alignment), pipeline depth and saturated weights.
    """
    from .. import runtime
    from ..compiler import compile_graph

    graph = export_nir(result.model, result.input_shape)
    if align:
        graph = align_for_pipeline(graph)
    cm = compile_graph(graph, time_steps=result.deploy_steps, scales=clock_scales(graph),
                       source={"input_shape": list(result.input_shape), "arch": result.arch})
    if align:
        cm.meta["pipeline_depth"] = data_depth(cm.graph)
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
