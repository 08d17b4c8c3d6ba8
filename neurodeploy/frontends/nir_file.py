"""Read ``.nir`` files, including ones from older exporters that fail NIR's type checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import nir

from ..errors import InputFileError


def read_nir(path: str | Path) -> nir.NIRGraph:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        return nir.read(path)
    except OSError as e:
        raise InputFileError(f"{path}: not a readable NIR (HDF5) file ({e})") from e
    except Exception as strict_error:  # NIR raises assorted types from its type inference
        try:
            graph = nir.read(path, type_check=False)
        except Exception as e:
            raise InputFileError(f"{path}: cannot read NIR graph: {e}") from e
        warnings.warn(f"{path}: NIR type check failed ({strict_error}); loaded without it",
                      stacklevel=2)
        return graph
