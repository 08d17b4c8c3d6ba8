"""The compiled artifact (``.ndp``): one versioned HDF5 file that is also a valid NIR file.

Layout: NIR's own ``/version`` and ``/node`` (the lowered graph; every synapse and neuron node
carries its fixed-point parameters in ``metadata["loihi"]``), plus root attributes
``format = "neurodeploy-ndp"`` and ``ndp_version``, and ``/neurodeploy/meta``: a JSON document
with the source (path, sha256, kind), target, input shape, time steps, dt, readout, pipeline
depth and the quantization report (every scale chosen). Later commands need none of the original
Python classes. Files are written atomically: a failed compile leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nir
import numpy as np

from . import __version__
from .errors import InputFileError

FORMAT = "neurodeploy-ndp"
NDP_VERSION = 1


@dataclass
class CompiledModel:
    graph: nir.NIRGraph
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.meta["input_shape"])

    @property
    def time_steps(self) -> int:
        return int(self.meta["time_steps"])


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(model: CompiledModel, path: str | Path) -> None:
    meta = dict(model.meta, format=FORMAT, ndp_version=NDP_VERSION, neurodeploy=__version__)
    with atomic_path(path) as tmp:
        nir.write(tmp, model.graph)
        with h5py.File(tmp, "a") as f:
            f.attrs["format"] = FORMAT
            f.attrs["ndp_version"] = NDP_VERSION
            f.create_group("neurodeploy").create_dataset(
                "meta", data=json.dumps(_jsonable(meta), indent=1), dtype=h5py.string_dtype())


def load(path: str | Path) -> CompiledModel:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputFileError(f"{path}: not a neurodeploy .ndp file (no format attribute); "
                                     "compile a model with 'neurodeploy compile' first")
            version = int(f.attrs["ndp_version"])
            meta = json.loads(f["neurodeploy/meta"][()])
    except OSError as e:
        raise InputFileError(f"{path}: not a readable HDF5 file ({e})") from e
    if version > NDP_VERSION:
        raise InputFileError(f"{path}: .ndp version {version} is newer than this neurodeploy "
                             f"supports ({NDP_VERSION}); upgrade neurodeploy")
    graph = nir.read(path, type_check=False)
    for node in graph.nodes.values():
        q = node.metadata.get("loihi")
        if isinstance(q, dict):
            node.metadata["loihi"] = {k: (v.decode() if isinstance(v, bytes) else v)
                                      for k, v in q.items()}
        if isinstance(node.metadata.get("reset"), bytes):
            node.metadata["reset"] = node.metadata["reset"].decode()
    graph.metadata = dict(graph.metadata or {}, dt=float(meta.get("dt", 1.0)))
    return CompiledModel(graph=graph, meta=meta)
