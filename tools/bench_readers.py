#!/usr/bin/env python3
"""Reader throughput per format, and peak memory while streaming.

    python tools/bench_readers.py [--repeat 5] [--events 5000000] [--core 0] [--no-jit]

1. Every reference recording in shared/reference/events is read whole ``--repeat`` times; the
   best time gives events/s.
   Both wall-clock and CPU time (``time.process_time``) are shown: on a shared machine the CPU
   time is the better measure of single-core speed. Before any timing, one reference file of
   each of EVT 3.0, EVT 2.0 and N-MNIST is read once: the cost of that first read (importing
   numba and loading the compiled decoders, or compiling them on a fresh machine) is printed
   apart and is not in the throughput.
2. ~5M-event EVT 3.0, EVT 2.0 and N-MNIST files are made in a temporary directory with our
   writers by tiling the reference recordings of those formats (real event statistics, time
   shifted copies), plus a uniformly random EVT 3.0 file (the format's worst case: one
   TIME_LOW and one ADDR_Y word per event), and read the same way.
3. Peak RSS (``resource.getrusage`` in a fresh subprocess) while streaming with ``iter_chunks``
   a file 1x and 10x as long as the largest reference recording: streaming memory must not grow
   with the file; a whole-file read is shown for contrast.

Per format, the files with at least ``--min-events`` events (smaller ones measure the fixed cost
of opening a file, not the decoder) are then summed up and compared with the throughput target
(``--target``, 20 M events per CPU-second for EVT 2.0, EVT 3.0 and N-MNIST): PASS when every
such file reaches it. ``--no-jit`` measures the numpy decoders (``NEURODEPLOY_JIT=0``).

The process is pinned to one core (``--core``) so that the numbers are single-core ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from neurodeploy import events as nde
except ModuleNotFoundError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from neurodeploy import events as nde

from neurodeploy.events.formats import _base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REF = REPO.parent / "shared" / "reference" / "events"
TARGET_FORMATS = ("evt3", "evt2", "nmnist")
WARM_UP = {
    "evt3": "expelliarmus_evt3_sample.raw",
    "evt2": "expelliarmus_evt2_sample.raw",
    "nmnist": "tonic_sample_nmnist.bin",
}


def best_read_time(path: Path, repeat: int) -> tuple[float, float, int]:
    """Best wall-clock and best CPU time (``time.process_time``) of a whole-file read."""
    best_wall, best_cpu, n = float("inf"), float("inf"), 0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        rec = nde.read_events(path)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        n = len(rec.events)
    return best_wall, best_cpu, n


def warm_up() -> None:
    """Read one file per target format once (first use of its decoder), then once more; print
    both CPU times and how the compiled decoders were obtained."""
    first = {}
    for fmt, name in WARM_UP.items():
        c0 = time.process_time()
        nde.read_events(REF / name)
        c1 = time.process_time()
        nde.read_events(REF / name)
        first[fmt] = (name, c1 - c0, time.process_time() - c1)
    jit = _base.jit_decoders()
    if jit is None:
        print("# decoders: numpy (NEURODEPLOY_JIT=0 or no numba)")
    else:
        import numba

        hits = misses = 0
        for kernel in ("evt3_max_events", "evt3_decode", "evt2_decode", "nmnist_decode"):
            stats = getattr(jit, kernel).stats
            hits += sum(stats.cache_hits.values())
            misses += sum(stats.cache_misses.values())
        print(f"# decoders: numba {numba.__version__}, {hits} kernel(s) loaded from the on-disk "
              f"cache, {misses} compiled now")
    print("# first read of a format in this process, then a second read (not in the table):")
    for fmt, (name, c_first, c_second) in first.items():
        print(f"{fmt:7s} {name:30s} first {c_first * 1e3:8.1f} CPU ms, second "
              f"{c_second * 1e3:6.1f} CPU ms")
    print()


def print_targets(rows, target: float, min_events: int) -> None:
    """Per format: events and CPU time summed over its files of ``min_events`` or more."""
    print(f"\n# target: >= {target:g} M events per CPU-second on one core, every file of "
          f">= {min_events:,} events")
    print(f"{'format':7s} {'files':>5s} {'events':>11s} {'CPU s':>7s} {'Mev/CPU-s':>9s} "
          f"{'slowest':>8s}  verdict")
    for fmt in TARGET_FORMATS:
        sel = [r for r in rows if r[1] == fmt and r[2] >= min_events]
        if not sel:
            continue
        n = sum(r[2] for r in sel)
        cpu = sum(r[5] for r in sel)
        slowest = min(r[2] / max(r[5], 1e-9) / 1e6 for r in sel)
        verdict = "PASS" if slowest >= target else "MISS"
        print(f"{fmt:7s} {len(sel):5d} {n:11,d} {cpu:7.3f} {n / cpu / 1e6:9.1f} "
              f"{slowest:8.1f}  {verdict}")


def tiled(path: Path, n_events: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Time-shifted copies of a recording, ``n_events`` long, timestamps non-decreasing."""
    rec = nde.read_events(path, time_order="clamp")
    ev = rec.events
    t0 = int(ev["t"][0])
    span = int(ev["t"][-1]) - t0 + 1
    reps = -(-n_events // len(ev))
    out = np.concatenate([ev] * reps)[:n_events]
    out["t"] = out["t"] - t0 + np.repeat(np.arange(reps, dtype=np.int64) * span, len(ev))[
        :n_events
    ]
    return out, rec.sensor_size


def random_events(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.2, n)).astype(np.int64)  # ~5 events per microsecond
    return nde.make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n))


RSS_SCRIPT = r"""
import resource, sys
from neurodeploy import events as nde
path, mode = sys.argv[1], sys.argv[2]
n = 0
if mode == "stream":
    for chunk in nde.iter_chunks(path, chunk_events=1 << 16):
        n += len(chunk)
elif mode == "whole":
    n = len(nde.read_events(path).events)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


# Linux carries a process's peak RSS over fork + exec (the child's ru_maxrss starts at the size
# of the process that forked it), so the measuring process is started by a tiny launcher that
# has not imported numpy: its floor is then a few MiB, not this benchmark's arrays.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def peak_rss(path: Path, mode: str) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", LAUNCHER, sys.executable, "-c", RSS_SCRIPT, str(path), mode]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.split()
    return int(out[0]), int(out[1]) / 1024.0  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--core", type=int, default=0, help="CPU to pin to (-1: do not pin)")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--no-jit", action="store_true", help="numpy decoders (NEURODEPLOY_JIT=0)")
    ap.add_argument("--target", type=float, default=20.0, help="M events per CPU-second")
    ap.add_argument("--min-events", type=int, default=100_000)
    args = ap.parse_args(argv)
    if args.no_jit:
        os.environ["NEURODEPLOY_JIT"] = "0"
    if not REF.is_dir():
        print(f"reference recordings not found at {REF}", file=sys.stderr)
        return 1
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# one core (pinned: {args.core >= 0}), load average at start {load:.2f}\n")
    warm_up()

    rows = []
    for path in sorted(REF.iterdir()):
        if path.suffix in (".md",) or path.stat().st_size == 0:
            continue
        try:
            fmt = nde.detect_format(path)
        except nde.EventFileError:
            continue
        wall, cpu, n = best_read_time(path, args.repeat)
        if n:
            rows.append((path.name, fmt, n, path.stat().st_size, wall, cpu))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = {}
        specs = [
            ("evt3, tiled reference", "expelliarmus_evt3_sample.raw", nde.write_evt3, ".raw"),
            ("evt2, tiled reference", "expelliarmus_evt2_sample.raw", nde.write_evt2, ".raw"),
            ("nmnist, tiled reference", "tonic_sample_nmnist.bin", nde.write_nmnist, ".bin"),
        ]
        for label, src, writer, ext in specs:
            ev, size = tiled(REF / src, args.events)
            path = tmp / f"{label.split(',')[0]}_big{ext}"
            writer(path, ev, size)
            big[label] = path
        rnd = tmp / "evt3_random.raw"
        nde.write_evt3(rnd, random_events(args.events, 1280, 720), (1280, 720))
        big["evt3, uniform random"] = rnd
        for label, path in big.items():
            wall, cpu, n = best_read_time(path, max(2, args.repeat // 2))
            rows.append((label, nde.detect_format(path), n, path.stat().st_size, wall, cpu))

        print("# whole-file read_events, best of the repeats; Mev/s = million events per second")
        print(
            f"{'file':30s} {'format':7s} {'events':>10s} {'MB':>6s} {'wall ms':>8s} "
            f"{'Mev/s':>6s} {'CPU ms':>8s} {'Mev/CPU-s':>9s}"
        )
        for name, fmt, n, size, wall, cpu in rows:
            print(
                f"{name:30s} {fmt:7s} {n:10,d} {size / 1e6:6.2f} {wall * 1e3:8.1f} "
                f"{n / wall / 1e6:6.1f} {cpu * 1e3:8.1f} {n / max(cpu, 1e-9) / 1e6:9.1f}"
            )
        print_targets(rows, args.target, args.min_events)

        if not args.skip_rss:
            largest = max(
                (p for p in REF.iterdir() if p.suffix != ".md"),
                key=lambda p: p.stat().st_size,
            )
            rec = nde.read_events(largest)
            ev = rec.events.copy()
            ev["t"] = np.maximum.accumulate(ev["t"])
            print(f"\n# peak RSS streaming with iter_chunks(chunk_events=65536); file made from "
                  f"{largest.name} ({len(ev):,} events), written as EVT 3.0")
            print(f"{'file':22s} {'events':>11s} {'MB':>7s} {'mode':>7s} {'peak RSS MiB':>13s}")
            for mult in (1, 10):
                reps = np.concatenate([ev] * mult)
                span = int(ev["t"][-1] - ev["t"][0]) + 1
                reps["t"] = reps["t"] - ev["t"][0] + np.repeat(
                    np.arange(mult, dtype=np.int64) * span, len(ev)
                )
                path = tmp / f"rss_{mult}x.raw"
                nde.write_evt3(path, reps, rec.sensor_size)
                del reps
                for mode in ("import", "stream", "whole"):
                    n, mib = peak_rss(path, mode)
                    print(f"{path.name:22s} {n:11,d} {path.stat().st_size / 1e6:7.1f} "
                          f"{mode:>7s} {mib:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
