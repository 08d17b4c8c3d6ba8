"""Training methods of the seed papers, each producing a model that ``neurodeploy`` deploys.

``METHODS`` maps a method name to ``train(cfg: TrainConfig) -> TrainResult``. A method module
registers itself with ``@register("name")`` and is imported by one line at the bottom of this
file; ``tools/train.py`` and ``tools/bench_methods.py`` read the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from .common import TrainConfig, TrainResult

#: Every method the command line knows; those not in ``METHODS`` are reported as unavailable.
KNOWN_METHODS = ("dsr", "dspike", "spide", "ide", "lee", "shortcut", "ltl", "single-step")

METHODS: dict[str, Callable[[TrainConfig], TrainResult]] = {}


def register(name: str):
    """Decorator: ``@register("dsr") def train(cfg) -> TrainResult``."""

    def deco(fn: Callable[[TrainConfig], TrainResult]):
        if name in METHODS and METHODS[name] is not fn:
            raise ValueError(f"training method {name!r} registered twice")
        METHODS[name] = fn
        return fn

    return deco


def train(method: str, cfg: TrainConfig | None = None) -> TrainResult:
    if method not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise KeyError(f"training method {method!r} is not available; available: {known}")
    return METHODS[method](cfg or TrainConfig())


__all__ = ["KNOWN_METHODS", "METHODS", "TrainConfig", "TrainResult", "register", "train"]

from . import dsr  # noqa: E402,F401,I001  (one line per method module, any order)
from . import dspike  # noqa: E402,F401
from . import shortcut  # noqa: E402,F401
from . import ltl  # noqa: E402,F401
from . import single_step  # noqa: E402,F401
from . import ide, lee, spide  # noqa: E402,F401  (SPIDE, IDE, Lee et al. 2020)
