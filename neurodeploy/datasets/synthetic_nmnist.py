"""A synthetic N-MNIST-like data set made from scikit-learn's bundled 8x8 digits.

N-MNIST (Orchard et al., 2015) was recorded by an ATIS camera on a pan-tilt unit looking at MNIST
digits on a monitor, moved in three ~105 ms saccades along a triangle. We reproduce that on the
1,797 digits of :func:`sklearn.datasets.load_digits` (shipped inside scikit-learn: no download):

1. each 8x8 digit (0..16) is upsampled to 28x28 with bilinear interpolation and scaled to 0..1;
2. it is placed on a 34x34 sensor and moved, linearly interpolated, along three saccades of
   ``saccade_us`` each: (+3.5, +7), (+3.5, -7), (-7, 0) pixels (x right, y down), starting at
   ``start`` so that the path is centred on the sensor;
3. an event-camera model turns the moving image into events, simulated in steps of ``dt_us``:
   each pixel keeps the log intensity at its last event; when the current log intensity differs
   by one or more contrast thresholds (ON ``threshold_on``, OFF ``threshold_off``, each pixel's
   own threshold drawn once per data set from N(threshold, ``threshold_sigma``), like one physical
   sensor), it emits one event per threshold crossed, at the time within the step at which the
   linearly interpolated log intensity crosses that level, no sooner than ``refractory_us`` after
   the pixel's previous event (crossings that do not fit in the step wait for the next one);
4. background activity: Poisson noise events at ``noise_rate_hz`` per pixel, uniform in time and
   polarity.

Everything is deterministic from the seed: the threshold map comes from the seed, each sample's
noise from its own child seed (so a sample does not depend on which others are generated with
it). Files are written as N-MNIST ``.bin`` files in ``DIR/{train,test}/<label>/<index>.bin`` (the
index is the digit's index in ``load_digits``), plus ``DIR/meta.json``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from neurodeploy.events import EVENT_DTYPE, read_events, to_frames, write_nmnist

SENSOR_SIZE = (34, 34, 2)
DIGIT_SIZE = 28
N_DIGITS = 1797  # images in sklearn's load_digits
DEFAULT_N_TRAIN = 1497
DEFAULT_N_TEST = 300
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GeneratorParams:
    """Parameters of the motion and of the event-camera model (times in microseconds)."""

    dt_us: int = 1000
    saccade_us: int = 105_000
    saccades: tuple[tuple[float, float], ...] = ((3.5, 7.0), (3.5, -7.0), (-7.0, 0.0))
    start: tuple[float, float] = (-0.5, -0.5)
    background: float = 0.38
    foreground: float = 1.0
    threshold_on: float = 0.2
    threshold_off: float = 0.2
    threshold_sigma: float = 0.03
    threshold_min: float = 0.05
    refractory_us: float = 100.0
    noise_rate_hz: float = 0.1
    batch_size: int = 256

    @property
    def duration_us(self) -> int:
        return self.saccade_us * len(self.saccades)

    @property
    def n_steps(self) -> int:
        return math.ceil(self.duration_us / self.dt_us)


@dataclass
class Sample:
    events: np.ndarray
    label: int
    index: int


@dataclass
class _Split:
    name: str
    indices: list[int] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits upsampled to 28x28 (float32 0..1) and their labels (int64); read-only."""
    img8, target = _load_digits_8x8()
    a = _bilinear_matrix(8, DIGIT_SIZE)
    img28 = a @ (img8 / 16.0) @ a.T
    images = np.clip(img28, 0.0, 1.0).astype(np.float32)
    labels = target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits()``'s images [1797, 8, 8] (0..16) and targets.

    Reads the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, the file
    ``load_digits`` itself reads) without importing scikit-learn, which takes seconds; falls back
    to ``sklearn.datasets.load_digits`` if that file is not where expected.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            with gzip.open(csv, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            if data.shape == (N_DIGITS, 65):
                return data[:, :64].reshape(-1, 8, 8), data[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float64), d.target.astype(np.int64)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``A`` (n_out x n_in) such that ``A @ v`` resamples ``v`` bilinearly
    (pixel-centre aligned, edges clamped)."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    a = np.zeros((n_out, n_in))
    a[np.arange(n_out), lo] += 1 - frac
    a[np.arange(n_out), hi] += frac
    return a


def motion_path(params: GeneratorParams) -> np.ndarray:
    """Digit offset (x, y) on the sensor at each simulation step boundary, shape [steps+1, 2]."""
    t = np.arange(params.n_steps + 1) * params.dt_us
    t = np.minimum(t, params.duration_us)
    seg = np.minimum(t // params.saccade_us, len(params.saccades) - 1).astype(int)
    frac = (t - seg * params.saccade_us) / params.saccade_us
    vec = np.asarray(params.saccades, dtype=np.float64)
    corners = np.concatenate(([[0.0, 0.0]], np.cumsum(vec, axis=0)))
    return np.asarray(params.start) + corners[seg] + frac[:, None] * vec[seg]


def threshold_maps(params: GeneratorParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ON and OFF contrast thresholds (the sensor's fixed mismatch), shape [H, W]."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E45]))
    h, w = SENSOR_SIZE[1], SENSOR_SIZE[0]
    on = params.threshold_on + params.threshold_sigma * rng.standard_normal((h, w))
    off = params.threshold_off + params.threshold_sigma * rng.standard_normal((h, w))
    lo = params.threshold_min
    return np.maximum(on, lo).astype(np.float64), np.maximum(off, lo).astype(np.float64)


def _render(padded: np.ndarray, pad: int, offset: np.ndarray) -> np.ndarray:
    """Padded canvases shifted by ``offset`` (x, y) onto the 34x34 sensor, bilinear (separable:
    along x, then along y)."""
    h, w = SENSOR_SIZE[1], SENSOR_SIZE[0]
    ux, uy = -offset[0], -offset[1]  # canvas coordinate of sensor pixel 0
    ix, iy = math.floor(ux), math.floor(uy)
    ax, ay = np.float32(ux - ix), np.float32(uy - iy)
    x0, y0 = pad + ix, pad + iy
    rows = padded[:, y0 : y0 + h + 1]
    r = rows[:, :, x0 : x0 + w] * (1 - ax)
    r += rows[:, :, x0 + 1 : x0 + 1 + w] * ax
    out = r[:, :h] * (1 - ay)
    out += r[:, 1:] * ay
    return out


def simulate(
    digits: np.ndarray,
    params: GeneratorParams,
    thresholds: tuple[np.ndarray, np.ndarray],
    noise_seeds: Sequence[np.random.SeedSequence],
    path: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Events (sorted by time) for each 28x28 digit image of ``digits`` [B, 28, 28].

    ``path``: the digit's offset at each step boundary, shape ``[n_steps + 1, 2]`` (default
    :func:`motion_path`, constant speed along each saccade).
    """
    b = len(digits)
    h, w = SENSOR_SIZE[1], SENSOR_SIZE[0]
    pad = 10
    # the sensor sees log intensity; the log image is shifted with sub-pixel (bilinear) accuracy
    bg, fg = params.background, params.foreground
    padded = np.full(
        (b, DIGIT_SIZE + 2 * pad, DIGIT_SIZE + 2 * pad), np.log(bg), dtype=np.float32
    )
    padded[:, pad : pad + DIGIT_SIZE, pad : pad + DIGIT_SIZE] = np.log(bg + (fg - bg) * digits)
    path = motion_path(params) if path is None else np.asarray(path, dtype=np.float64)
    if path.shape != (params.n_steps + 1, 2):
        raise ValueError(f"path must have shape ({params.n_steps + 1}, 2), got {path.shape}")
    th_on = np.broadcast_to(thresholds[0].astype(np.float32), (b, h, w)).ravel()
    th_off = np.broadcast_to(thresholds[1].astype(np.float32), (b, h, w)).ravel()
    neg_th_off = -th_off
    refr = float(params.refractory_us)
    dt = float(params.dt_us)

    l_prev = _render(padded, pad, path[0]).ravel()
    memory = l_prev.copy()
    last_t = np.full(b * h * w, -np.inf)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (pixel id, time, polarity)
    for k in range(1, params.n_steps + 1):
        l_cur = _render(padded, pad, path[k]).ravel()
        t_prev, t_cur = (k - 1) * dt, min(k * dt, params.duration_us)
        d = l_cur - memory
        active = np.flatnonzero((d >= th_on) | (d <= neg_th_off))
        if len(active) == 0:
            l_prev = l_cur
            continue
        da = d[active].astype(np.float64)
        on = da > 0
        theta = np.where(on, th_on[active], th_off[active]).astype(np.float64)
        n = np.floor(np.abs(da) / theta).astype(np.int64)
        sign = np.where(on, 1.0, -1.0)
        # one row per threshold crossing: crossing j (1..n) of the level memory + sign*j*theta
        owner = np.repeat(np.arange(len(active)), n)
        j = np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n) + 1
        pix = active[owner]
        lp = l_prev[pix].astype(np.float64)
        level = memory[pix] + sign[owner] * j * theta[owner]
        slope = l_cur[pix] - lp
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(slope != 0, (level - lp) / slope, 1.0)
        t_raw = t_prev + np.clip(frac, 0.0, 1.0) * (t_cur - t_prev)
        # refractory: t_j = max(t_raw_j, t_{j-1} + r), t_0 = last event of the pixel, i.e.
        # t_j = j*r + max(last, max_{i<=j}(t_raw_i - i*r)): a cumulative max within each pixel
        v = t_raw - j * refr
        grp = owner.astype(np.float64)
        big = 4.0 * (params.duration_us + refr * (n.max() + 2))
        run = np.maximum.accumulate(v + grp * big) - grp * big
        t_ev = j * refr + np.maximum(run, last_t[pix])
        fired = t_ev <= t_cur
        if fired.any():
            n_fired = np.bincount(owner[fired], minlength=len(active))
            memory[active] += (sign * theta * n_fired).astype(np.float32)
            pf = pix[fired]
            tf = t_ev[fired]
            last_t[pf] = tf  # rows of a pixel are in time order: the last write wins
            parts.append((pf, tf, (sign[owner[fired]] > 0).astype(np.int8)))
        l_prev = l_cur

    if parts:
        pix_all = np.concatenate([p[0] for p in parts])
        t_all = np.rint(np.concatenate([p[1] for p in parts])).astype(np.int64)
        p_all = np.concatenate([p[2] for p in parts])
    else:
        pix_all = np.zeros(0, dtype=np.int64)
        t_all = np.zeros(0, dtype=np.int64)
        p_all = np.zeros(0, dtype=np.int8)
    sample = pix_all // (h * w)
    order = np.lexsort((t_all, sample))
    pix_all, t_all, p_all, sample = pix_all[order], t_all[order], p_all[order], sample[order]
    bounds = np.searchsorted(sample, np.arange(b + 1))
    out = []
    for i in range(b):
        s, e = bounds[i], bounds[i + 1]
        rem = pix_all[s:e] % (h * w)
        ev = np.empty(e - s, dtype=EVENT_DTYPE)
        ev["x"] = rem % w
        ev["y"] = rem // w
        ev["t"] = t_all[s:e]
        ev["p"] = p_all[s:e]
        out.append(_add_noise(ev, params, noise_seeds[i]))
    return out


def _add_noise(ev: np.ndarray, params: GeneratorParams, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = SENSOR_SIZE[1], SENSOR_SIZE[0]
    lam = params.noise_rate_hz * h * w * params.duration_us * 1e-6
    k = int(rng.poisson(lam))
    if k == 0:
        return ev
    noise = np.empty(k, dtype=EVENT_DTYPE)
    noise["x"] = rng.integers(0, w, k)
    noise["y"] = rng.integers(0, h, k)
    noise["t"] = rng.integers(0, params.duration_us, k)
    noise["p"] = rng.integers(0, 2, k)
    allev = np.concatenate((ev, noise))
    return allev[np.argsort(allev["t"], kind="stable")]


def _child_seeds(seed: int, indices: Sequence[int]) -> list[np.random.SeedSequence]:
    return [np.random.SeedSequence([seed, int(i)]) for i in indices]


def _simulate_batch(args) -> list[np.ndarray]:
    images, params, thresholds, seed, chunk = args
    return simulate(images, params, thresholds, _child_seeds(seed, chunk))


def generate_indices(
    indices: Sequence[int],
    seed: int = 0,
    params: GeneratorParams | None = None,
    workers: int = 1,
) -> list[Sample]:
    """Simulate the digits at ``indices`` of ``load_digits`` (any order, repeats allowed).

    ``workers > 1`` simulates batches in that many processes; the result does not depend on it.
    """
    params = params or GeneratorParams()
    images, labels = load_digit_images()
    thresholds = threshold_maps(params, seed)
    idx = np.asarray(indices, dtype=np.int64)
    chunks = [idx[s : s + params.batch_size] for s in range(0, len(idx), params.batch_size)]
    jobs = [(images[c], params, thresholds, seed, c) for c in chunks]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(method)) as ex:
            results = list(ex.map(_simulate_batch, jobs))
    else:
        results = [_simulate_batch(job) for job in jobs]
    out: list[Sample] = []
    for events, chunk in zip(results, chunks, strict=True):
        out += [Sample(ev, int(labels[i]), int(i)) for ev, i in zip(events, chunk, strict=True)]
    return out


def generate(
    n: int, seed: int = 0, params: GeneratorParams | None = None, workers: int = 1
) -> list[tuple[np.ndarray, int]]:
    """``n`` synthetic recordings as ``(events, label)`` pairs, in memory.

    The digits are drawn without replacement (class-balanced order) from the 1,797 images of
    ``load_digits``, with replacement beyond that.
    """
    _, labels = load_digit_images()
    order = _balanced_order(labels, seed)
    if n > len(order):
        extra = np.random.default_rng([seed, 1]).integers(0, len(order), n - len(order))
        order = np.concatenate((order, order[extra]))
    return [(s.events, s.label) for s in generate_indices(order[:n], seed, params, workers)]


def _balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """All indices, shuffled within each class, then interleaved class by class (0, 1, ..., 9,
    0, 1, ...): any prefix is as class-balanced as the data allow."""
    rng = np.random.default_rng([seed, 2])
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rank = np.empty(len(labels), dtype=np.int64)
    cls = np.empty(len(labels), dtype=np.int64)
    for c, idx in enumerate(per_class):
        rank[idx] = np.arange(len(idx))
        cls[idx] = c
    return np.lexsort((cls, rank))


def stratified_split(labels: np.ndarray, n_train: int, n_test: int, seed: int):
    """Disjoint, class-balanced train and test index lists (sorted)."""
    if n_train < 0 or n_test < 0 or n_train + n_test > len(labels):
        raise ValueError(
            f"n_train + n_test must be between 0 and {len(labels)}, got {n_train} + {n_test}"
        )
    order = _balanced_order(labels, seed)
    test = np.sort(order[:n_test])
    train = np.sort(order[n_test : n_test + n_train])
    return train.tolist(), test.tolist()


def make_dataset(
    out: str | Path,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    seed: int = 0,
    params: GeneratorParams | None = None,
    workers: int | None = None,
) -> dict:
    """Generate the data set into ``out`` (N-MNIST ``.bin`` files + ``meta.json``).

    ``workers``: processes to simulate with (default: the CPU count, at most 4). Returns the
    metadata written to ``meta.json``.
    """
    params = params or GeneratorParams()
    out = Path(out)
    _, labels = load_digit_images()
    train, test = stratified_split(labels, n_train, n_test, seed)
    splits = {"train": train, "test": test}
    all_idx = train + test
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    samples = generate_indices(all_idx, seed, params, workers)
    by_index = {s.index: s for s in samples}
    counts: dict[str, dict[str, int]] = {}
    n_events: dict[str, int] = {}
    for name, idx in splits.items():
        counts[name] = {}
        n_events[name] = 0
        for i in idx:
            s = by_index[i]
            d = out / name / str(s.label)
            d.mkdir(parents=True, exist_ok=True)
            write_nmnist(d / f"{i:05d}.bin", s.events)
            counts[name][str(s.label)] = counts[name].get(str(s.label), 0) + 1
            n_events[name] += len(s.events)
        counts[name] = dict(sorted(counts[name].items(), key=lambda kv: int(kv[0])))
    meta = {
        "name": "synthetic-nmnist",
        "format_version": FORMAT_VERSION,
        "file_format": "nmnist-bin",
        "seed": seed,
        "n_train": len(train),
        "n_test": len(test),
        "sensor_size": list(SENSOR_SIZE),
        "duration_us": params.duration_us,
        "class_counts": counts,
        "mean_events": {k: (n_events[k] / max(1, len(splits[k]))) for k in splits},
        "generator": asdict(params),
        "source": "sklearn.datasets.load_digits (8x8, upsampled to 28x28)",
    }
    text = json.dumps(meta, indent=2) + "\n"
    (out / "meta.json").write_text(text)
    return json.loads(text)


def load_meta(root: str | Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no meta.json (generate the data set with make_dataset)")
    return json.loads(path.read_text())


def load_split(root: str | Path, split: str) -> list[tuple[Path, int]]:
    """``(path, label)`` of every recording of ``split`` ("train" or "test"), sorted by path."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such split directory")
    items = []
    for label_dir in sorted(base.iterdir()):
        if label_dir.is_dir() and label_dir.name.isdigit():
            items += [(p, int(label_dir.name)) for p in sorted(label_dir.glob("*.bin"))]
    return items


def frames_dataset(
    root: str | Path,
    split: str,
    n_bins: int = 10,
    *,
    cache: bool = True,
    merge_polarity: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of every recording of a split: ``X`` float32 ``[N, T, C, 34, 34]`` event counts
    (``C`` = 2, or 1 with ``merge_polarity``), ``y`` int64 ``[N]``.

    Each recording is cut into ``n_bins`` equal time bins. With ``cache``, the arrays are kept in
    ``root/cache/`` (never outside ``root``) and reused while ``meta.json`` is unchanged.
    """
    root = Path(root)
    items = load_split(root, split)
    meta_text = (root / "meta.json").read_bytes() if (root / "meta.json").is_file() else b""
    key = hashlib.sha256(
        meta_text + f"|{split}|{n_bins}|{merge_polarity}|{len(items)}".encode()
    ).hexdigest()[:16]
    cache_file = root / "cache" / f"frames_{split}_T{n_bins}_{key}.npz"
    if cache and cache_file.is_file():
        with np.load(cache_file) as z:
            return z["X"], z["y"]
    c = 1 if merge_polarity else 2
    size = (SENSOR_SIZE[0], SENSOR_SIZE[1], c)
    x = np.zeros((len(items), n_bins, c, SENSOR_SIZE[1], SENSOR_SIZE[0]), dtype=np.float32)
    y = np.zeros(len(items), dtype=np.int64)
    for i, (path, label) in enumerate(items):
        ev = read_events(path, sensor_size=SENSOR_SIZE).events
        if len(ev):
            x[i] = to_frames(ev, size, n_time_bins=n_bins)
        y[i] = label
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        for old in cache_file.parent.glob(f"frames_{split}_T{n_bins}_*.npz"):
            old.unlink()
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, X=x, y=y)
        tmp.replace(cache_file)
    return x, y
