"""``neurodeploy.save``/``load_checkpoint``: safe checkpoints that rebuild without pickles.

A checkpoint is a plain dict of tensors, strings and numbers, so ``torch.load`` reads it with
``weights_only=True``: ``{"format": "neurodeploy-checkpoint", "version": 1, "arch": name,
"arch_kwargs": {...}, "state_dict": {...}, "input_shape": [...], "time_steps": T}``.
Whole pickled modules are read only with ``trust_pickle=True`` (they can run arbitrary code).
"""

from __future__ import annotations

import pickle
import re
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


def torch_load(path: str | Path, trust_pickle: bool = False, official: bool = False):
    """``torch.load`` with ``weights_only=True``; full unpickling only with ``trust_pickle``.

    Errors are one-line :class:`InputFileError` messages naming the Python object that needs
    ``--trust-pickle`` (``official``: the file was written by a method's own training code).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e) and "GLOBAL" not in str(e):
            raise InputFileError(f"{path}: not a readable PyTorch checkpoint (corrupt or not "
                                 "written by torch.save)") from e
        if not trust_pickle:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            hint = ("training scripts often save such objects (argparse.Namespace, numpy "
                    "scalars) next to the weights" if official else
                    "better, re-save it with neurodeploy.save()")
            raise InputFileError(
                f"{path}: refused to unpickle: the file holds Python objects beyond tensors"
                f"{what}, and loading it could run arbitrary code. If you trust it, pass "
                f"--trust-pickle; {hint}") from e
    except Exception as e:
        raise InputFileError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as e:
        raise InputFileError(
            f"{path}: unpickling needs Python code that is not installed here ({e}); load it "
            "where the code that wrote it is importable and save model.state_dict()") from e
    except Exception as e:
        raise InputFileError(f"{path}: not a readable PyTorch checkpoint ({e})") from e


def load_checkpoint(path: str | Path, trust_pickle: bool = False, arch: str | None = None,
                    arch_kwargs: dict | None = None, input_shape=None
                    ) -> tuple[nn.Module, dict]:
    """Return ``(model, info)``; ``info`` has ``arch``, ``input_shape``, ``time_steps``.

    ``arch``: for a checkpoint written by a method's official code (no architecture inside),
    map it onto this registered architecture (:mod:`neurodeploy.zoo.loaders`); ``arch_kwargs``
    gives what such files do not store (e.g. ``{"neuron": "lif", "size": 48}``). A registered
    architecture without an official loader takes a plain state dict (``module.`` prefixes
    stripped) and is built from ``arch_kwargs``. ``input_shape`` (``C, H, W``) sets the input
    size of such a model; ``info["input_shape"]`` is ``None`` when neither it nor the
    architecture's defaults give one.
    """
    path = Path(path)
    obj = torch_load(path, trust_pickle, official=arch is not None)
    if isinstance(obj, nn.Module) and arch is None:
        return obj, {"arch": type(obj).__name__}
    if arch is not None and (not isinstance(obj, dict) or obj.get("format") != FORMAT):
        model, info = _load_foreign(path, obj, arch, dict(arch_kwargs or {}), input_shape)
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


def _load_foreign(path: Path, obj, arch: str, kw: dict, input_shape) -> tuple[nn.Module, dict]:
    """``arch`` built from a checkpoint without our metadata (official layout or state dict)."""
    from .zoo.loaders import load_foreign, official_archs

    shape = [int(s) for s in input_shape] if input_shape else None
    if arch in official_archs():
        if shape and "size" not in kw:
            if len(shape) != 3 or shape[1] != shape[2]:
                raise InputFileError(f"{path}: {arch} takes square images C,S,S; got input "
                                     f"shape {','.join(map(str, shape))}")
            kw["size"] = shape[1]
        try:
            model, info = load_foreign(obj, arch, **kw)
        except TypeError as e:
            raise InputFileError(f"{path}: bad arch arguments for {arch}: {e}") from e
        except InputFileError as e:
            raise InputFileError(f"{path}: {e}") from e
    else:
        model, info = _load_state_dict(path, obj, arch, kw, shape)
    if shape and info.get("input_shape") and list(info["input_shape"]) != shape:
        raise InputFileError(f"{path}: this {arch} takes input shape "
                             f"{','.join(map(str, info['input_shape']))}, not "
                             f"{','.join(map(str, shape))}")
    return model, info


def _load_state_dict(path: Path, obj, arch: str, kw: dict, shape) -> tuple[nn.Module, dict]:
    """A plain state dict into registered ``arch`` (no official loader), built from ``kw``."""
    import inspect

    from .zoo.loaders import unwrap

    if arch not in zoo.ARCHITECTURES:
        from .zoo.loaders import official_archs

        raise InputFileError(f"unknown arch {arch!r}; known: "
                             f"{', '.join(sorted(set(zoo.ARCHITECTURES) | official_archs()))}")
    sd, _ = unwrap(obj)
    params = inspect.signature(zoo.ARCHITECTURES[arch]).parameters
    time_steps = kw.pop("time_steps", None)
    if shape and len(shape) == 3 and shape[1] == shape[2]:
        for k, v in (("in_channels", shape[0]), ("size", shape[1])):
            if k in params:
                kw.setdefault(k, v)
    try:
        model = zoo.build(arch, **kw)
        model.load_state_dict(sd)
    except (TypeError, ValueError) as e:
        raise InputFileError(f"{path}: bad arch arguments for {arch}: {e}") from e
    except RuntimeError as e:
        raise InputFileError(f"{path}: weights do not match arch {arch!r}: "
                             f"{str(e).splitlines()[0]}") from e
    default = None
    if "in_channels" in params and "size" in params:
        c = kw.get("in_channels", params["in_channels"].default)
        side = kw.get("size", params["size"].default)
        if isinstance(c, int) and isinstance(side, int):
            default = [c, side, side]
    return model, {"arch": arch, "arch_kwargs": kw, "input_shape": shape or default,
                   "time_steps": int(time_steps) if time_steps else None, "extra": {}}
