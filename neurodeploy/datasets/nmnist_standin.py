"""A stand-in for the N-MNIST test set, for networks trained on real N-MNIST (e.g. the NIR paper's
``cnn_sinabs.nir``), built offline from scikit-learn's bundled 8x8 digits.

:mod:`.synthetic_nmnist` makes the data set our own default model is trained on: blurry digits
filling the whole 28x28 field, moved at constant speed. A network trained on real N-MNIST sees
something else, so this module reproduces what N-MNIST's recordings contain:

* MNIST-style digits (LeCun et al.): each 8x8 digit (a 32x32 NIST bitmap counted in 4x4 blocks)
  is interpolated to 128x128 and thresholded at ``ink_level`` to recover a binary bitmap, cropped
  to its bounding box, scaled with area averaging (anti-aliasing) so that its longer side is
  20 pixels, and placed in a 28x28 field with its centre of mass at the centre. ``ink_level``
  sets the stroke width: at 0.6 the set's pixels have mean 0.125 and std 0.312 (MNIST: 0.1307,
  0.3081).
* N-MNIST's camera motion (Orchard et al., 2015): the three saccades of
  :class:`.GeneratorParams`, each a smooth point-to-point move (minimum-jerk position profile,
  speed ``30 u^2 (1 - u)^2``) rather than constant speed, so the event rate rises and falls
  within each saccade as in the real recordings (``shared/reference/events``'s N-MNIST sample).
* The event-camera model of :func:`.synthetic_nmnist.simulate` (contrast thresholds with
  per-pixel mismatch, refractory period, background noise).
* The NIR paper's input encoding for ``cnn_sinabs.nir``: events counted in 1 ms bins
  (tonic ``ToFrame(time_window=1e3)``), channel = polarity (0 = OFF, 1 = ON).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .synthetic_nmnist import (
    DIGIT_SIZE,
    SENSOR_SIZE,
    GeneratorParams,
    _balanced_order,
    _bilinear_matrix,
    _child_seeds,
    _load_digits_8x8,
    simulate,
    threshold_maps,
)

MNIST_BOX = 20  # MNIST scales each digit to fit a 20x20 box inside the 28x28 field
HIRES = 128  # resolution at which the 8x8 digits are turned back into binary bitmaps
BIN_US = 1000  # 1 ms bins, as the NIR paper fed N-MNIST to cnn_sinabs.nir

#: N-MNIST's saccades and sensor model of :class:`.GeneratorParams`, with dark digits on a bright
#: background: in the real N-MNIST recording of ``shared/reference/events`` ON events trail the
#: motion (their centroid lies 4-6 pixels behind the OFF events' in each saccade), which is what a
#: dark digit moving over a bright background produces; ``GeneratorParams``' bright digits give
#: the opposite, i.e. swapped polarities.
STANDIN_PARAMS = GeneratorParams(background=1.0, foreground=0.38)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``A`` (n_out x n_in) averaging ``v`` over ``n_out`` equal intervals of its length
    (each output pixel is the mean of the input it covers, fractional pixels weighted)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    left, right = np.arange(n_in)[None, :], np.arange(n_in)[None, :] + 1.0
    overlap = np.clip(np.minimum(hi, right) - np.maximum(lo, left), 0.0, None)
    return overlap / (n_in / n_out)


def mnist_style(img8: np.ndarray, ink_level: float = 0.6) -> np.ndarray:
    """MNIST-style 28x28 images (float32, 0..1) of 8x8 digits ``img8`` [N, 8, 8] (0..16)."""
    a = _bilinear_matrix(8, HIRES)
    out = np.zeros((len(img8), DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    for i, d in enumerate(np.asarray(img8, dtype=np.float64) / 16.0):
        ink = (a @ d @ a.T) >= ink_level
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        if len(rows) == 0:
            continue
        crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float64)
        scale = MNIST_BOX / max(crop.shape)
        h, w = (max(1, round(n * scale)) for n in crop.shape)
        box = _area_matrix(crop.shape[0], h) @ crop @ _area_matrix(crop.shape[1], w).T
        yy, xx = np.indices(box.shape)
        cy, cx = (yy * box).sum() / box.sum(), (xx * box).sum() / box.sum()
        top = min(max(round((DIGIT_SIZE - 1) / 2 - cy), 0), DIGIT_SIZE - h)
        left = min(max(round((DIGIT_SIZE - 1) / 2 - cx), 0), DIGIT_SIZE - w)
        out[i, top : top + h, left : left + w] = box
    return out


@functools.lru_cache(maxsize=1)
def load_mnist_style_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits as MNIST-style 28x28 images and their labels; read-only."""
    img8, labels = _load_digits_8x8()
    images = mnist_style(img8)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def smooth_motion_path(params: GeneratorParams) -> np.ndarray:
    """Digit offset (x, y) at each step boundary, shape [steps+1, 2]: the saccades of
    ``params``, each with a minimum-jerk profile (zero speed and acceleration at its ends)."""
    t = np.minimum(np.arange(params.n_steps + 1) * params.dt_us, params.duration_us)
    seg = np.minimum(t // params.saccade_us, len(params.saccades) - 1).astype(int)
    u = (t - seg * params.saccade_us) / params.saccade_us
    s = u**3 * (10 - 15 * u + 6 * u**2)
    vec = np.asarray(params.saccades, dtype=np.float64)
    corners = np.concatenate(([[0.0, 0.0]], np.cumsum(vec, axis=0)))
    return np.asarray(params.start) + corners[seg] + s[:, None] * vec[seg]


def standin_events(
    n: int, seed: int = 0, params: GeneratorParams | None = None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``n`` recordings: their events, labels and digit indices.

    Digits are drawn class-balanced without replacement from the 1,797 (with replacement beyond
    that); each recording depends only on ``seed`` and its digit's index.
    """
    params = params or STANDIN_PARAMS
    images, labels = load_mnist_style_digits()
    order = _balanced_order(labels, seed)
    if n > len(order):
        extra = np.random.default_rng([seed, 1]).integers(0, len(order), n - len(order))
        order = np.concatenate((order, order[extra]))
    idx = order[:n]
    thresholds = threshold_maps(params, seed)
    path = smooth_motion_path(params)
    events: list[np.ndarray] = []
    for s in range(0, n, params.batch_size):
        chunk = idx[s : s + params.batch_size]
        events += simulate(images[chunk], params, thresholds, _child_seeds(seed, chunk), path)
    return events, labels[idx].copy(), idx


def bin_events(events: list[np.ndarray], steps: int, bin_us: int = BIN_US) -> np.ndarray:
    """Event counts ``x`` int64 [steps, N, 2, 34, 34] in bins of ``bin_us`` from t = 0, channel =
    polarity (0 OFF, 1 ON); events at or after ``steps * bin_us`` are dropped."""
    w, h, c = SENSOR_SIZE
    x = np.zeros((steps, len(events), c, h, w), dtype=np.int64)
    for i, ev in enumerate(events):
        b = ev["t"].astype(np.int64) // bin_us
        keep = b < steps
        np.add.at(x, (b[keep], i, ev["p"][keep].astype(np.int64), ev["y"][keep].astype(np.int64),
                      ev["x"][keep].astype(np.int64)), 1)
    return x


def nmnist_standin(
    n: int, seed: int = 0, steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stand-in N-MNIST recordings as network input: ``x`` [steps, n, 2, 34, 34] event
    counts in 1 ms bins (default: the whole 315 ms recording) and the digit labels ``y``."""
    events, y, _ = standin_events(n, seed)
    if steps is None:
        steps = math.ceil(STANDIN_PARAMS.duration_us / BIN_US)
    return bin_events(events, steps), y
