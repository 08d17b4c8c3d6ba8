"""Exporters of a compiled model to other toolchains' formats.

* :mod:`.nir_out`: a plain NIR graph with the dequantized fixed-point parameters, runnable by
  any NIR simulator (snnTorch, Norse, ...);
* :mod:`.netx`: a lava-dl ``netx`` HDF5 ``.net`` file (sequential CUBA networks).
"""

from .netx import export_netx
from .nir_out import dequantize, export_nir

__all__ = ["dequantize", "export_netx", "export_nir"]
