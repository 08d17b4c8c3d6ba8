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


from . import default  # noqa: E402,F401  (registers dvs-cnn)
from . import dsr  # noqa: E402,F401  (DSR, Dspike and Shortcut back-prop architectures)
from . import lee  # noqa: E402,F401  (Lee et al. 2020 VGG/ResNet)
from . import ltl  # noqa: E402,F401  (LTL spiking VGG)
from . import single_step  # noqa: E402,F401  (single-time-step sequencer SNN)
from . import spide  # noqa: E402,F401  (SPIDE and IDE feedback SNNs)
