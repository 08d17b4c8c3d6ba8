"""Registry of reference architectures, so checkpoints load by name without user code.

``neurodeploy.save`` stores the architecture name and constructor arguments next to the
state_dict; ``neurodeploy compile ckpt.pt`` rebuilds the model from here. Each module of this
package registers its architectures on import (one line each at the bottom of this file).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        ARCHITECTURES[name] = fn
        return fn

    return deco


def build(name: str, **kwargs) -> nn.Module:
    if name not in ARCHITECTURES:
        raise KeyError(name)
    return ARCHITECTURES[name](**kwargs)


# Each module registers its architectures on import: default (dvs-cnn), dsr (DSR, Dspike,
# Shortcut back-prop), lee (Lee et al. 2020), ltl (LTL VGG), single_step (ACML 2023 sequencer),
# spide (SPIDE and IDE feedback SNNs).
from . import default, dsr, lee, ltl, single_step, spide  # noqa: E402,F401
