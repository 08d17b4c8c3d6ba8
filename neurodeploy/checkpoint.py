"""``neurodeploy.save``/``load_checkpoint``: safe checkpoints that rebuild without pickles.

A checkpoint is a plain dict of tensors, strings and numbers, so ``torch.load`` reads it with
``weights_only=True``: ``{"format": "neurodeploy-checkpoint", "version": 1, "arch": name,
"arch_kwargs": {...}, "state_dict": {...}, "input_shape": [...], "time_steps": T}``.
Whole pickled modules are read only with ``trust_pickle=True`` (they can run arbitrary code).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from . import zoo
from .artifact import atomic_path
from .errors import InputFileError

FORMAT = "neurodeploy-checkpoint"


def save(model: nn.Module, path: str | Path, *, arch: str, input_shape, time_steps: int,
         arch_kwargs: dict | None = None, extra: dict | None = None) -> None:
    """Write ``model``'s weights with what is needed to rebuild and compile it."""
    if arch not in zoo.ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; registered: {sorted(zoo.ARCHITECTURES)}")
    ckpt = {"format": FORMAT, "version": 1, "arch": arch, "arch_kwargs": dict(arch_kwargs or {}),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "input_shape": [int(s) for s in input_shape], "time_steps": int(time_steps),
            "extra": dict(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | Path, trust_pickle: bool = False, arch: str | None = None,
                    arch_kwargs: dict | None = None) -> tuple[nn.Module, dict]:
    """Return ``(model, info)``; ``info`` has ``arch``, ``input_shape``, ``time_steps``.

    ``arch``: for a checkpoint written by a method's official code (no architecture inside),
    map it onto this registered architecture (:mod:`neurodeploy.zoo.loaders`); ``arch_kwargs``
    gives what such files do not store (e.g. ``{"neuron": "lif", "size": 48}``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e) and "GLOBAL" not in str(e):
            raise InputFileError(f"{path}: not a readable PyTorch checkpoint (corrupt or not "
                                 "written by torch.save)") from e
        if not trust_pickle:
            raise InputFileError(
                f"{path}: refused to unpickle: the file holds Python objects beyond tensors "
                "(e.g. a whole nn.Module), and loading it could run arbitrary code. If you trust "
                "it, pass --trust-pickle; better, re-save it with neurodeploy.save()") from e
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputFileError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, nn.Module):
        return obj, {"arch": type(obj).__name__}
    if arch is not None and (not isinstance(obj, dict) or obj.get("format") != FORMAT):
        from .zoo.loaders import load_foreign

        model, info = load_foreign(obj, arch, **dict(arch_kwargs or {}))
        return model.eval(), info
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputFileError(
            f"{path}: a state_dict without architecture; save it with neurodeploy.save(model, "
            "path, arch=...) or export it to NIR")
    if obj["arch"] not in zoo.ARCHITECTURES:
        raise InputFileError(f"{path}: unknown arch {obj['arch']!r}; known: "
                             f"{sorted(zoo.ARCHITECTURES)}")
    model = zoo.build(obj["arch"], **obj["arch_kwargs"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise InputFileError(f"{path}: weights do not match arch {obj['arch']!r}: "
                             f"{str(e).splitlines()[0]}") from e
    info = {k: obj[k] for k in ("arch", "arch_kwargs", "input_shape", "time_steps")}
    info["extra"] = obj.get("extra", {})
    return model.eval(), info
