"""Exceptions that carry a user-facing, one-line message.

``NeurodeployError`` subclasses are user errors: the CLI prints their message on one line and
exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NeurodeployError(Exception):
    """Base class of all user-facing errors."""


class InputFileError(NeurodeployError):
    """A file is missing, corrupt, of the wrong kind, or refused (e.g. an untrusted pickle)."""


class UnsupportedLayerError(NeurodeployError):
    """A model contains a layer or NIR node that the exporter/compiler cannot handle."""

    def __init__(self, where: str, kind: str, supported: list[str], hint: str = ""):
        self.where, self.kind, self.supported = where, kind, list(supported)
        msg = f"unsupported layer {where!r} of type {kind}; supported: {', '.join(supported)}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class GraphError(NeurodeployError):
    """A NIR graph is malformed: bad edge, shape mismatch, NaN parameter, neuron-less cycle."""


class QuantizationError(NeurodeployError):
    """A layer cannot be represented in the target's fixed-point format."""
