"""Optional numba-compiled modules (engine kernels, event decoders) behind one switch.

A compiled module is used when numba imports, unless the environment sets
``NEURODEPLOY_JIT=0``; each caller's ``use`` flag overrides that (``True`` requires it,
``False`` selects the numpy code, which gives the same results).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType


class OptionalModule:
    """A module imported on first use; ``get(use)`` returns it, or None for the numpy path."""

    def __init__(self, name: str):
        self.name = name
        self._module: ModuleType | None = None
        self._tried = False

    def get(self, use: bool | None = None) -> ModuleType | None:
        want = use if use is not None else os.environ.get("NEURODEPLOY_JIT", "1") != "0"
        if not want:
            return None
        if not self._tried:
            self._tried = True
            try:
                self._module = importlib.import_module(self.name)
            except ImportError:  # no numba
                if use:
                    raise
            except RuntimeError as e:  # e.g. numba finds no writable cache directory
                if use:
                    raise
                warnings.warn(f"{self.name} unavailable, using numpy: {e}", stacklevel=3)
        if use and self._module is None:
            raise ImportError(f"{self.name} needs numba")
        return self._module
