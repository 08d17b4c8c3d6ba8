"""neurodeploy: PyTorch SNNs -> NIR -> Loihi fixed point -> Lava, with energy accounting."""

__version__ = "0.1.0"
