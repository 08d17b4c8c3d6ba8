"""Training-time building blocks: multi-step spiking neurons and surrogate gradients."""

from .neurons import IF, LIF, RESET_MODES, SpikingNeuron, TimeDistributed, multistep
from .surrogate import SURROGATES, ATan, Dspike, FastSigmoid, Rectangle, StraightThrough, Surrogate

__all__ = [
    "IF",
    "LIF",
    "RESET_MODES",
    "SpikingNeuron",
    "TimeDistributed",
    "multistep",
    "SURROGATES",
    "ATan",
    "Dspike",
    "FastSigmoid",
    "Rectangle",
    "StraightThrough",
    "Surrogate",
]
