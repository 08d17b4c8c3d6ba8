#!/usr/bin/env python3
"""Generate the synthetic N-MNIST-like data set (see neurodeploy.datasets.synthetic_nmnist).

    python tools/make_dataset.py --out data/synthetic_nmnist --n-train 1497 --n-test 300 --seed 0

Writes DIR/{train,test}/<label>/<index>.bin (N-MNIST format) and DIR/meta.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from neurodeploy.datasets import synthetic_nmnist as sn
except ModuleNotFoundError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from neurodeploy.datasets import synthetic_nmnist as sn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--n-train", type=int, default=sn.DEFAULT_N_TRAIN)
    ap.add_argument("--n-test", type=int, default=sn.DEFAULT_N_TEST)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workers", type=int, default=None, help="processes (default: CPU count, at most 4)"
    )
    args = ap.parse_args(argv)
    if args.n_train + args.n_test > sn.N_DIGITS or min(args.n_train, args.n_test) < 0:
        ap.error(f"--n-train + --n-test must be between 0 and {sn.N_DIGITS}")
    if args.out.exists() and any(args.out.iterdir()):
        if not (args.out / "meta.json").is_file():
            ap.error(f"{args.out} exists, is not empty and holds no data set: refusing to write")
        for split in ("train", "test"):  # replace a previous data set cleanly
            for f in sorted((args.out / split).glob("*/*.bin")):
                f.unlink()
    t0 = time.perf_counter()
    meta = sn.make_dataset(args.out, args.n_train, args.n_test, args.seed, workers=args.workers)
    dt = time.perf_counter() - t0
    print(
        f"wrote {meta['n_train']} train + {meta['n_test']} test recordings to {args.out} "
        f"in {dt:.1f} s (mean events: train {meta['mean_events']['train']:.0f}, "
        f"test {meta['mean_events']['test']:.0f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
