"""Data sets for training and checking deployed spiking networks."""

from .synthetic_nmnist import (
    SENSOR_SIZE,
    GeneratorParams,
    frames_dataset,
    generate,
    load_meta,
    load_split,
    make_dataset,
)

__all__ = [
    "SENSOR_SIZE",
    "GeneratorParams",
    "frames_dataset",
    "generate",
    "load_meta",
    "load_split",
    "make_dataset",
]
