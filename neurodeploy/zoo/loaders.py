"""Load the seed methods' official checkpoints into our architectures, without user code.

``load_foreign_checkpoint(path, arch, **kw) -> (model, info)`` reads a checkpoint written by a
method's official code (``torch.load`` with ``weights_only=True``; whole pickled modules are
refused unless ``trust_pickle=True``) and maps it onto the registered architecture ``arch``.
``info`` holds ``arch``, ``arch_kwargs``, ``input_shape`` and ``time_steps`` as
``neurodeploy.checkpoint.load_checkpoint`` returns them, so the compiler can export the model.

Layouts accepted (``/work/shared/notes/seed-methods.md``):

* **DSR** (qymeng94/DSR): ``{'epoch', 'state_dict', 'acc', 'best_acc', 'optimizer'}`` (ImageNet
  adds ``arch``, ``acc1``); keys with or without DataParallel's ``module.`` prefix; one ``Vth``
  scalar (shape ``()``) per neuron layer, e.g. ``layer1.0.relu1.Vth``. PreAct-ResNet keys
  ``conv1.weight``, ``layer{i}.{j}.{bn1,conv1,bn2,conv2,shortcut}.*``, ``bn1.*``, ``linear.*``,
  ``bn2.*`` -> ``dsr-preact-resnet18``; VGG keys ``layer{i}.{k}.*`` and ``classifier.{1,2,3}.*``
  -> ``dsr-vgg11`` (the official ``AdaptiveAvgPool2d((7, 7))`` on a 1x1 map only replicates it,
  so the 49 column blocks of ``classifier.1.weight`` are summed into our Linear). Not stored, so
  arguments: ``neuron`` (``"if"``/``"lif"``), ``alpha``, ``tau``, ``dt``, ``time_steps`` and the
  input ``size``.
* **LTL** (Aries231/Local_tandem_learning_rule): ``{'epoch', 'model_state_dict',
  'optimizer_state_dict', 'loss', 'acc'}``, SNN keys ``conv1..conv8``, ``fc9..fc11``
  (``{weight, bias}``) -> ``ltl-vgg11``. The ANN teacher (``conv1.0.*``) is recognised and
  refused. Arguments: ``strides`` (VGG-11 pattern 1, 2, 1, 2, ...), ``size``, ``time_steps`` and
  the ``readout_threshold`` of our integrating readout (1 by default; calibrate it on data, see
  ``neurodeploy.train.common.calibrate_readout``).
* SPIDE, IDE and Lee et al.: delegated to :mod:`neurodeploy.zoo.loaders_spide_lee` when present.

Dspike, Shortcut back-propagation and the ACML single-step paper have no public checkpoints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InputFileError
from ..nn.neurons import SpikingNeuron
from . import build
from .dsr import VGG11_STAGES, AvgPoolConv, IdentityConv
from .ltl import VGG11_STRIDES

#: Default time steps of each method's official recipe (used when not given).
DEFAULT_TIME_STEPS = {"dsr": 20, "ltl": 16, "spide": 30, "ide": 30, "lee": 100}


def read_checkpoint(path: str | Path, trust_pickle: bool = False):
    """``torch.load`` an official checkpoint safely; returns the loaded object."""
    from ..checkpoint import torch_load

    return torch_load(path, trust_pickle, official=True)


def unwrap(obj) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, metadata)`` of an official checkpoint; strips ``module.`` prefixes.

    The state dict is found under ``state_dict``, ``model_state_dict``, ``model`` or ``net``,
    or ``obj`` is itself one (all values tensors).
    """
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise InputFileError(f"expected a checkpoint dict or a state_dict, got {type(obj)}")
    meta: dict = {}
    sd = None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj.get(key), Mapping):
            sd = obj[key]
            meta = {k: v for k, v in obj.items() if not isinstance(v, Mapping)}
            break
    if sd is None:
        if not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputFileError("no state_dict found (looked for state_dict, model_state_dict, "
                                 "model, net)")
        sd = obj
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out, meta


def _own_key(k: str, own: Mapping[str, torch.Tensor]) -> str | None:
    """Our key for official key ``k``: same path, ``.module`` inserted for wrapped layers,
    ``Vth`` renamed ``threshold``."""
    parts = k.split(".")
    if parts[-1] == "Vth":
        parts[-1] = "threshold"
    for cand in (".".join(parts), ".".join(parts[:-1] + ["module", parts[-1]])):
        if cand in own:
            return cand
    return None


def _fixed(model: nn.Module) -> set[str]:
    """State entries that are ours and not trained: identity shortcuts, pooling kernels and
    fixed (buffer) thresholds, which keep the architecture's values."""
    out = set()
    for name, m in model.named_modules():
        if isinstance(m, (IdentityConv, AvgPoolConv)):
            out.add(f"{name}.weight")
        if isinstance(m, SpikingNeuron) and not isinstance(m.threshold, nn.Parameter):
            out.add(f"{name}.threshold")
    return out


def _transfer(sd: dict, model: nn.Module, what: str, convert=None) -> None:
    """Copy ``sd`` into ``model`` key by key; every trained entry of ours must be filled."""
    own = model.state_dict()
    new = {}
    for k, v in sd.items():
        if convert is not None:
            k, v = convert(k, v)
            if k is None:
                continue
        dst = _own_key(k, own)
        if dst is None:
            raise InputFileError(f"{what} checkpoint key {k!r} has no place in our model")
        if own[dst].shape != v.shape:
            raise InputFileError(f"{what}: {k} has shape {tuple(v.shape)}, our model needs "
                                 f"{tuple(own[dst].shape)}")
        new[dst] = v.to(own[dst].dtype)
    missing = sorted(set(own) - set(new) - _fixed(model))
    if missing:
        raise InputFileError(f"{what} checkpoint lacks {missing[:4]}")
    own.update(new)
    model.load_state_dict(own)


_STAGE = re.compile(r"^layer(\d+)\.(\d+)\.conv1\.weight$")


def load_dsr(obj, size: int | None = None, time_steps: int | None = None, **arch_kwargs):
    """Official DSR checkpoint -> ``dsr-preact-resnet18`` or ``dsr-vgg11`` (by its keys)."""
    sd, meta = unwrap(obj)
    if "linear.weight" in sd and "conv1.weight" in sd:
        return _load_dsr_resnet(sd, meta, size, time_steps, arch_kwargs)
    if "classifier.1.weight" in sd and "layer1.0.weight" in sd:
        return _load_dsr_vgg(sd, meta, size, time_steps, arch_kwargs)
    raise InputFileError("not a DSR checkpoint: expected PreAct-ResNet keys (conv1.weight, "
                         "layer1.0.bn1.weight, ..., linear.weight) or VGG keys (layer1.0.weight, "
                         "..., classifier.1.weight)")


def _dsr_common(sd, arch_kwargs) -> dict:
    vths = {k: v for k, v in sd.items() if k.endswith(".Vth")}
    bad = [k for k, v in vths.items() if v.dim() != 0]
    if bad:
        raise InputFileError(f"DSR thresholds must be scalars; {bad[0]} is not")
    kw = {k: arch_kwargs.pop(k) for k in ("neuron", "alpha", "tau", "dt", "vth_bound")
          if k in arch_kwargs}
    return kw


def _load_dsr_resnet(sd, meta, size, time_steps, arch_kwargs):
    w0 = sd["conv1.weight"]
    blocks: dict[int, int] = {}
    for k in sd:
        m = _STAGE.match(k)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            blocks[i] = max(blocks.get(i, 0), j + 1)
    if not blocks or sorted(blocks) != list(range(1, len(blocks) + 1)):
        raise InputFileError("DSR ResNet checkpoint: layer1.0.conv1.weight ... not found")
    width = int(w0.shape[0])
    for i in blocks:
        got = int(sd[f"layer{i}.0.conv1.weight"].shape[0])
        if got != width * 2 ** (i - 1):
            raise InputFileError(f"layer{i} has {got} channels; our PreAct-ResNet doubles the "
                                 f"width per stage ({width * 2 ** (i - 1)} expected)")
    n = len(blocks)
    side = int(size or 32)
    kw = dict(in_channels=int(w0.shape[1]), classes=int(sd["linear.weight"].shape[0]),
              width=width, blocks=[blocks[i] for i in range(1, n + 1)],
              pool=max(1, side // 2 ** (n - 1)), **_dsr_common(sd, arch_kwargs))
    kw.update(arch_kwargs)
    model = build("dsr-preact-resnet18", **kw)
    _transfer(sd, model, "DSR")
    return model.eval(), _info("dsr-preact-resnet18", kw, [kw["in_channels"], side, side],
                               time_steps or DEFAULT_TIME_STEPS["dsr"], meta)


def _load_dsr_vgg(sd, meta, size, time_steps, arch_kwargs):
    convs = {}
    for k, v in sd.items():
        m = re.match(r"^layer(\d+)\.(\d+)\.weight$", k)
        if m and v.dim() == 4:
            convs.setdefault(int(m.group(1)), []).append((int(m.group(2)), v))
    n = len(convs)
    if not n or sorted(convs) != list(range(1, n + 1)):
        raise InputFileError("DSR VGG checkpoint: layer1.0.weight ... not found")
    width = int(convs[1][0][1].shape[0])
    for i in range(1, n + 1):
        want = [c * width // 64 for c in VGG11_STAGES[i - 1]] if i <= len(VGG11_STAGES) else []
        got = [int(v.shape[0]) for _, v in sorted(convs[i], key=lambda t: t[0])]
        if got != want:
            raise InputFileError(f"DSR VGG layer{i} has channels {got}; VGG-11 scaled to width "
                                 f"{width} has {want}")
    side = int(size or 48)
    kw = dict(in_channels=int(convs[1][0][1].shape[1]), size=side,
              classes=int(sd["classifier.1.weight"].shape[0]), width=width, n_stages=n,
              **_dsr_common(sd, arch_kwargs))
    kw.update(arch_kwargs)
    model = build("dsr-vgg11", **kw)
    fc = model.classifier[1].module
    c_last = int(convs[n][-1][1].shape[0])
    final = model.final_side

    def convert(k, v):
        if k == "classifier.1.weight" and v.shape[1] != fc.in_features:
            if v.shape[1] == c_last * 49 and final == 1:
                return k, v.reshape(v.shape[0], c_last, 49).sum(-1)
            raise InputFileError(
                f"classifier.1.weight reads {v.shape[1]} features; with input size {side} our "
                f"final map is {c_last}x{final}x{final} (AdaptiveAvgPool2d((7, 7)) folds only "
                "from a 1x1 map; pass size=...)")
        return k, v

    _transfer(sd, model, "DSR", convert)
    return model.eval(), _info("dsr-vgg11", kw, [kw["in_channels"], side, side],
                               time_steps or DEFAULT_TIME_STEPS["dsr"], meta)


def load_ltl(obj, size: int | None = None, time_steps: int | None = None, strides=None,
             **arch_kwargs):
    """Official LTL checkpoint (spiking VGG) -> ``ltl-vgg11``."""
    sd, meta = unwrap(obj)
    if "conv1.0.weight" in sd:
        raise InputFileError("this is LTL's ANN teacher (conv1.0.* = conv, conv1.1.* = BN); "
                             "load the spiking network's checkpoint")
    layers = {}
    for k, v in sd.items():
        m = re.match(r"^(conv|fc)(\d+)\.weight$", k)
        if m:
            layers[int(m.group(2))] = (m.group(1), v)
    idx = sorted(layers)
    if not idx or idx != list(range(1, len(idx) + 1)) or layers[idx[-1]][0] != "fc":
        raise InputFileError("not an LTL checkpoint: expected conv1.weight, ..., fc11.weight")
    convs = [layers[i][1] for i in idx if layers[i][0] == "conv"]
    fcs = [layers[i][1] for i in idx if layers[i][0] == "fc"]
    if [layers[i][0] for i in idx] != ["conv"] * len(convs) + ["fc"] * len(fcs):
        raise InputFileError("LTL checkpoint: conv layers must precede the fc layers")
    strides = list(strides or (VGG11_STRIDES * 2)[:len(convs)])
    side = int(size or 32)
    kw = dict(in_channels=int(convs[0].shape[1]), size=side, classes=int(fcs[-1].shape[0]),
              channels=[int(w.shape[0]) for w in convs], strides=strides,
              hidden=[int(w.shape[0]) for w in fcs[:-1]])
    kw.update(arch_kwargs)
    model = build("ltl-vgg11", **kw)
    first_fc = getattr(model, f"fc{len(convs) + 1}").module
    if first_fc.in_features != fcs[0].shape[1]:
        c = int(convs[-1].shape[0])
        s = math.isqrt(int(fcs[0].shape[1]) // c)
        raise InputFileError(f"fc{len(convs) + 1} reads {fcs[0].shape[1]} features = {c} x "
                             f"{s} x {s}; input size {side} with strides {strides} gives "
                             f"{first_fc.in_features} (pass size=... or strides=...)")
    _transfer(sd, model, "LTL")
    return model.eval(), _info("ltl-vgg11", kw, [kw["in_channels"], side, side],
                               time_steps or DEFAULT_TIME_STEPS["ltl"], meta)


def _info(arch, kw, input_shape, time_steps, meta) -> dict:
    info = {"arch": arch, "arch_kwargs": kw, "input_shape": list(input_shape),
            "time_steps": int(time_steps),
            "extra": {k: meta[k] for k in ("epoch", "acc", "best_acc", "acc1", "arch")
                      if k in meta and isinstance(meta[k], (int, float, str))}}
    return info


def _other_loaders() -> dict[str, tuple[str, Callable]]:
    """SPIDE/IDE/Lee loaders from ``loaders_spide_lee`` (if installed), keyed by arch name."""
    try:
        from . import loaders_spide_lee as other
    except ImportError:
        return {}
    out = {}
    for method, fn in other.LOADERS.items():
        out[method] = (method, fn)
    for arch, method in (("spide-f", "spide"), ("ide-f", "ide"), ("lee-vgg9", "lee"),
                         ("lee-resnet11", "lee")):
        if method in other.LOADERS:
            out[arch] = (method, other.LOADERS[method])
    return out


#: Official-layout loader per architecture name (and per method name).
LOADERS: dict[str, tuple[str, Callable]] = {
    "dsr-preact-resnet18": ("dsr", load_dsr), "dsr-vgg11": ("dsr", load_dsr),
    "dsr": ("dsr", load_dsr), "ltl-vgg11": ("ltl", load_ltl), "ltl": ("ltl", load_ltl),
}


def official_archs() -> set[str]:
    """Names :func:`load_foreign` accepts: architectures and method names."""
    return set(_other_loaders()) | set(LOADERS)


def load_foreign(obj, arch: str, **kw) -> tuple[nn.Module, dict]:
    """Map an already loaded official checkpoint ``obj`` onto architecture ``arch``."""
    table = {**_other_loaders(), **LOADERS}
    if arch not in table:
        raise InputFileError(f"no official-checkpoint loader for arch {arch!r}; known: "
                             f"{', '.join(sorted(table))}")
    method, fn = table[arch]
    time_steps = kw.pop("time_steps", None)
    model, info = fn(obj, **kw)
    info.setdefault("time_steps", int(time_steps or DEFAULT_TIME_STEPS.get(method, 1)))
    if time_steps:
        info["time_steps"] = int(time_steps)
    info.setdefault("extra", {})
    if arch in ("dsr-preact-resnet18", "dsr-vgg11", "ltl-vgg11") and info["arch"] != arch:
        raise InputFileError(f"the checkpoint holds a {info['arch']}, not a {arch}")
    return model, info


def load_foreign_checkpoint(path: str | Path, arch: str, trust_pickle: bool = False, **kw
                            ) -> tuple[nn.Module, dict]:
    """Read an official checkpoint file and map it onto ``arch``; returns ``(model, info)``.

    ``kw``: what the file does not store (see the module docstring), e.g. ``neuron="lif"``,
    ``size=48``, ``time_steps=10``.
    """
    return load_foreign(read_checkpoint(path, trust_pickle), arch, **kw)
