"""Import official SPIDE, IDE and Lee et al. 2020 checkpoints into our architectures.

Layouts (``/work/shared/notes/seed-methods.md`` §2 and §4):

* **SPIDE** (pkuxmq/SPIDE-FSNN): ``{'epoch', 'state_dict', 'acc', 'best_acc', 'optimizer'}``,
  keys with a DataParallel ``module.`` prefix. The forward convolutions are stored as
  ``network_x.conv.*`` and ``network_s{1..4}.conv.{weight,bias}``; the same tensors appear
  again under the aliases ``snn_func.network_s_list.{0..}.…`` and
  ``snn_spide_conv.snn_func.…`` (list index ``i - 1`` for ``network_s{i}``). The feedback is
  ``network_s5.convT.weight_w``, a *raw* weight: the model uses
  ``W = W_w min(1, r / ||W_w||_F)`` (``r`` = ``norm_range``, 2 on CIFAR, 10 on DVS), which our
  :class:`~neurodeploy.nn.feedback.FeedbackSynapse` recomputes with the exact Frobenius norm.
  Head: ``classifier.{weight,bias}``.
* **IDE** (pkuxmq/IDE-FSNN): as SPIDE, plus ``network_x.bn.*``/``network_s{i}.bn.*`` (conv ->
  BN, kept as ``Sequential(conv, BatchNorm)`` and folded at export) and the spectral-norm
  feedback ``network_s5.convT.{weight_w, weight_g, weight_u, weight_v}``:
  ``W = clamp(g, -r, r) W_w / sigma`` with ``sigma = u . (A v)``. Whether ``u``/``v`` are
  feature-map shaped (``A`` the operator) or weight-matrix shaped (``A`` the reshaped weight)
  is read from their sizes. The stale copy ``snn_ide_conv.snn_func_copy.*`` is ignored.
* **Lee et al.** (chan8972/Enabling_Spikebased_Backpropagation):
  ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}``, keys *without* prefix:
  ``cnn11.weight``, ``cnn12.weight``, ..., ``shortcut1.0.weight``, ``fc0.weight``,
  ``fc1.weight`` (no biases, no BN). ``shortcut`` keys mean ResNet11, otherwise VGG9.

Not stored in any of these files and therefore arguments: strides and paddings (SPIDE/IDE:
"same" convolutions, ``network_x`` and ``network_s2`` with stride 2, the feedback transposed
convolution with stride 2 padded to restore the size), ``vth``/``u_rest``/``leak`` (SPIDE:
1/-vth/1; IDE: ``vth=2``, ``leak=1``, pass ``leak=0.99`` for the LIF scripts; Lee: 1 and 0.99,
pooling threshold 0.75), the norm radius and the input size (inferred from the classifier's
width when not given). Each loader returns ``(model, info)``: ``info["arch"]``,
``info["arch_kwargs"]`` and ``info["input_shape"]`` for :func:`neurodeploy.save`, and the
file's own scalars (``epoch``, ``best_acc``/``best_prec1``, Lee's ``arch`` string) in
``info["extra"]``. :data:`LOADERS` is what :mod:`neurodeploy.zoo.loaders` delegates to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import InputFileError
from . import build

SPIDE_ALIASES = ("", "snn_func.", "snn_spide_conv.snn_func.", "snn_ide_conv.snn_func.")


def unwrap(obj) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, metadata)`` of a checkpoint dict or a bare state_dict; strips ``module.``."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd, meta = obj["state_dict"], {k: v for k, v in obj.items()
                                       if k not in ("state_dict", "optimizer")}
    elif isinstance(obj, Mapping):
        sd, meta = obj, {}
    else:
        raise InputFileError(f"expected a checkpoint dict or a state_dict, got {type(obj)}")
    out = {}
    for k, v in sd.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out, meta


def _pick(sd: dict, names: list[str], what: str, required: bool = True) -> torch.Tensor | None:
    """The tensor stored under the first of ``names``; every alias present must agree."""
    found = [(n, sd[n]) for n in names if n in sd]
    if not found:
        if required:
            raise InputFileError(f"checkpoint has no {what} (looked for {names[0]!r})")
        return None
    ref_name, ref = found[0]
    for n, t in found[1:]:
        if t.shape != ref.shape or not torch.equal(t, ref):
            raise InputFileError(f"aliases {ref_name!r} and {n!r} of {what} differ")
    return ref


def _layer(sd: dict, i: int | None, part: str, field: str, required: bool = True):
    """``network_x`` (``i`` None) or ``network_s{i}`` tensor ``part.field`` under any alias."""
    names = []
    for a in SPIDE_ALIASES:
        if i is None:
            names.append(f"{a}network_x.{part}.{field}")
        else:
            names += [f"{a}network_s{i}.{part}.{field}",
                      f"{a}network_s_list.{i - 1}.{part}.{field}"]
    return _pick(sd, names, f"network_{'x' if i is None else f's{i}'}.{part}.{field}", required)


def _stage_indices(sd: dict) -> list[int]:
    idx = set()
    for k in sd:
        m = re.search(r"(?:^|\.)network_s(\d+)\.", k)
        if m and not k.startswith("snn_ide_conv.snn_func_copy."):
            idx.add(int(m.group(1)))
    return sorted(idx)


def _conv_into(target: nn.Module, sd: dict, i: int | None, bn: bool) -> None:
    conv = target[0] if isinstance(target, nn.Sequential) else target
    w = _layer(sd, i, "conv", "weight")
    if conv.weight.shape != w.shape:
        raise InputFileError(f"layer {i}: weight {tuple(w.shape)} does not fit "
                             f"{tuple(conv.weight.shape)}")
    conv.weight.data.copy_(w)
    b = _layer(sd, i, "conv", "bias", required=False)
    if bn:
        norm = target[1]
        for f in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            t = _layer(sd, i, "bn", f, required=f != "num_batches_tracked")
            if t is not None:
                getattr(norm, f).data.copy_(t)
        if b is not None:  # BN(conv + b): fold the conv bias into the running mean
            norm.running_mean.data.sub_(b)
    elif b is not None:
        conv.bias.data.copy_(b)
    elif conv.bias is not None:
        conv.bias.data.zero_()


def load_feedback(obj, method: str = "spide", in_channels: int | None = None,
                  size: int | None = None, **arch_kwargs):
    """Official SPIDE/IDE "-F" checkpoint (5 layers, transposed-conv feedback) -> our
    ``{method}-f`` model. ``arch_kwargs`` go to :func:`neurodeploy.zoo.spide.feedback_f`."""
    if method not in ("spide", "ide"):
        raise ValueError(f"method must be 'spide' or 'ide', got {method!r}")
    sd, meta = unwrap(obj)
    stages = _stage_indices(sd)
    if stages != [1, 2, 3, 4, 5]:
        raise InputFileError(f"expected network_s1..s5 (the -F layout), found {stages}")
    fb_w = _pick(sd, [f"{a}network_s5.convT.weight_w" for a in SPIDE_ALIASES]
                 + [f"{a}network_s_list.4.convT.weight_w" for a in SPIDE_ALIASES],
                 "network_s5.convT.weight_w")
    ws = [_layer(sd, None, "conv", "weight")] + [_layer(sd, i, "conv", "weight")
                                                 for i in range(1, 5)]
    channels = [int(w.shape[0]) for w in ws]
    kernels = [int(w.shape[-1]) for w in ws] + [int(fb_w.shape[-1])]
    cls_w = _pick(sd, ["classifier.weight"], "classifier.weight")
    side = math.isqrt(int(cls_w.shape[1]) // channels[4])
    bn = _layer(sd, None, "bn", "weight", required=False) is not None
    kw = dict(in_channels=int(in_channels or ws[0].shape[1]), size=int(size or side * 4),
              channels=channels, kernels=kernels, classes=int(cls_w.shape[0]), bn=bn)
    if method == "ide":
        kw.setdefault("vth", 2.0)
    kw.update(arch_kwargs)
    spectral = any(k.endswith("network_s5.convT.weight_u") for k in sd)
    if spectral:
        u = _pick(sd, [f"{a}network_s5.convT.weight_u" for a in SPIDE_ALIASES], "weight_u")
        v = _pick(sd, [f"{a}network_s5.convT.weight_v" for a in SPIDE_ALIASES], "weight_v")
        kw["norm"] = "spectral"
        probe = build(f"{method}-f", **kw).feedback
        if not (u.numel() == probe.weight_u.numel() and v.numel() == probe.weight_v.numel()):
            kw["sigma_of"] = "matrix"
    model = build(f"{method}-f", **kw)
    _conv_into(model.input_syn, sd, None, bn)
    for i, m in enumerate(model.chain, start=1):
        _conv_into(m, sd, i, bn)
    fb = model.feedback
    if fb.weight_w.shape != fb_w.shape:
        raise InputFileError(f"feedback weight {tuple(fb_w.shape)} does not fit "
                             f"{tuple(fb.weight_w.shape)}")
    fb.weight_w.data.copy_(fb_w)
    if spectral:
        g = _pick(sd, [f"{a}network_s5.convT.weight_g" for a in SPIDE_ALIASES], "weight_g")
        fb.weight_g.data.copy_(g.reshape(fb.weight_g.shape))
        fb.weight_u.copy_(u.reshape(fb.weight_u.shape))
        fb.weight_v.copy_(v.reshape(fb.weight_v.shape))
    model.classifier.weight.data.copy_(cls_w)
    model.classifier.bias.data.copy_(_pick(sd, ["classifier.bias"], "classifier.bias"))
    info = {"arch": f"{method}-f", "arch_kwargs": kw,
            "input_shape": [kw["in_channels"], kw["size"], kw["size"]],
            "extra": _scalars(meta, ("epoch", "acc", "best_acc"))}
    return model.eval(), info


def _scalars(meta: dict, keys) -> dict:
    out = {}
    for k in keys:
        v = meta.get(k)
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, str)):
            out[k] = v
    return out


def load_spide(obj, **kw):
    """Official SPIDE checkpoint -> ``spide-f`` (see :func:`load_feedback`)."""
    return load_feedback(obj, "spide", **kw)


def load_ide(obj, **kw):
    """Official IDE checkpoint -> ``ide-f`` (see :func:`load_feedback`)."""
    return load_feedback(obj, "ide", **kw)


_LEE_CONV = re.compile(r"^cnn(\d)(\d)\.weight$")


def load_lee(obj, size: int | None = None, **arch_kwargs):
    """Official Lee et al. checkpoint -> ``lee-vgg9`` or ``lee-resnet11`` (by its keys).

    Shapes give widths, depths, the input channels and the hidden/classes widths; ``size``
    (the input side) is inferred from ``fc0``'s width when not given. ``fc1``'s bias (ours
    only, for the deployed readout) is set to zero.
    """
    sd, meta = unwrap(obj)
    convs = {}
    for k, v in sd.items():
        m = _LEE_CONV.match(k)
        if m:
            convs[(int(m.group(1)), int(m.group(2)))] = v
    if not convs or "fc0.weight" not in sd or "fc1.weight" not in sd:
        raise InputFileError("not a Lee et al. checkpoint: needs cnn11.weight ... fc0.weight, "
                             "fc1.weight")
    resnet = any(k.startswith("shortcut") for k in sd)
    fc0, fc1 = sd["fc0.weight"], sd["fc1.weight"]
    stages = sorted({i for i, _ in convs})
    common = dict(in_channels=int(convs[(1, 1)].shape[1]), classes=int(fc1.shape[0]),
                  fc=int(fc0.shape[0]))
    last = convs[max(convs)]
    side = math.isqrt(int(fc0.shape[1]) // int(last.shape[0]))
    if resnet:
        widths = [int(convs[(i, 1)].shape[0]) for i in stages if i >= 2]
        n_down = max(0, len(widths) - 1)
        kw = dict(pre=int(convs[(1, 1)].shape[0]), widths=widths,
                  size=int(size or side * 2 ** (1 + n_down)), **common)
        arch = "lee-resnet11"
    else:
        widths = [int(convs[(i, max(j for s, j in convs if s == i))].shape[0]) for i in stages]
        depth = [max(j for s, j in convs if s == i) for i in stages]
        kw = dict(widths=widths, convs=depth, size=int(size or side * 2 ** len(stages)),
                  **common)
        arch = "lee-vgg9"
    kw.update(arch_kwargs)
    model = build(arch, **kw)
    own = model.state_dict()
    new = {}
    for k, v in sd.items():
        parts = k.split(".")
        cand = [k, ".".join(parts[:-1] + ["module", parts[-1]])]
        hit = [c for c in cand if c in own]
        if not hit:
            raise InputFileError(f"Lee checkpoint key {k!r} has no place in {arch}")
        if own[hit[0]].shape != v.shape:
            raise InputFileError(f"{k}: shape {tuple(v.shape)} does not fit "
                                 f"{tuple(own[hit[0]].shape)}")
        new[hit[0]] = v
    missing = [k for k in own if k not in new and not _lee_fixed(k)]
    if missing:
        raise InputFileError(f"Lee checkpoint lacks {missing[:4]} for {arch}")
    own.update(new)
    own["fc1.module.bias"] = torch.zeros_like(own["fc1.module.bias"])
    model.load_state_dict(own)
    info = {"arch": arch, "arch_kwargs": kw,
            "input_shape": [kw["in_channels"], kw["size"], kw["size"]],
            "extra": _scalars(meta, ("epoch", "best_prec1", "arch"))}
    return model.eval(), info


def _lee_fixed(key: str) -> bool:
    """State entries that are ours, not trained: pool kernels, thresholds, fc1's bias."""
    return (key.startswith("pool") or key.endswith("threshold") or key == "fc1.module.bias")


#: Loader per official code base.
LOADERS = {"spide": load_spide, "ide": load_ide, "lee": load_lee}
