"""Lava backend: our neuron/source processes and the graph -> Lava process builder.

Lava calls ``multiprocessing.set_start_method('fork')`` when first imported and fails if any
library has fixed the start method before; we clear a previously chosen method so that importing
the backend late (after torch work) is safe.
"""

import multiprocessing as _mp

if _mp.get_start_method(allow_none=True) is not None:
    _mp.set_start_method(None, force=True)
