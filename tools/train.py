"""Train a model with one of the seed papers' methods and save a deployable checkpoint.

    .venv/bin/python tools/train.py --method dsr --out build/methods/dsr
    .venv/bin/python tools/train.py --method ltl --epochs 4 --set channels=8,16 --set strides=1,2
    neurodeploy compile build/methods/dsr/model.pt -o build/methods/dsr/model.ndp

Each method's defaults (data, T, epochs, widths) train on scikit-learn's 8x8 digits in about two
minutes on two CPU cores. ``--set key=value`` passes a method option (see docs/methods.md);
``--deploy`` also compiles the result for loihi-sim and reports the fixed-point accuracy.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from neurodeploy.checkpoint import save
from neurodeploy.train import KNOWN_METHODS, METHODS, TrainConfig
from neurodeploy.train.common import deploy, load_data


def parse_set(items: list[str]) -> dict:
    opts = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = v.strip()
    return opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=sorted(set(KNOWN_METHODS) | set(METHODS)))
    ap.add_argument("--data", default="digits", choices=["digits", "dvs"])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--time-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-iters", type=int, default=None, help="stop after N optimiser steps")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="report test accuracy every N epochs (default: only at the end)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="method option, repeatable")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for model.pt and train_log.json (default build/methods/M)")
    ap.add_argument("--deploy", action="store_true",
                    help="compile for loihi-sim and report the fixed-point test accuracy")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.method not in METHODS:
        print(f"method {a.method!r} is not available in this installation (its training module "
              f"is missing); available: {', '.join(sorted(METHODS))}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(data=a.data, data_dir=a.data_dir, epochs=a.epochs, batch=a.batch,
                      lr=a.lr, time_steps=a.time_steps, seed=a.seed, max_iters=a.max_iters,
                      verbose=not a.quiet, eval_every=a.eval_every, options=parse_set(a.set))
    cpu0 = time.process_time()
    res = METHODS[a.method](cfg)
    cpu = time.process_time() - cpu0
    out = a.out or Path("build/methods") / a.method
    out.mkdir(parents=True, exist_ok=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    log = {"command": shlex.join([".venv/bin/python", "tools/train.py", *argv]),
           "seed": a.seed, "threads": a.threads, "dataset": a.data,
           "method": a.method, "arch": res.arch, "arch_kwargs": res.arch_kwargs,
           "float_test_accuracy": res.float_accuracy, "time_steps": res.time_steps,
           "deploy_steps": res.deploy_steps, "input_mode": res.input_mode,
           "seconds": res.seconds, "cpu_seconds": cpu, "history": res.history,
           "extra": json.loads(json.dumps(res.extra, default=str))}
    save(res.model, out / "model.pt", arch=res.arch, arch_kwargs=res.arch_kwargs,
         input_shape=res.input_shape, time_steps=res.deploy_steps,
         extra={"method": a.method, "float_test_accuracy": res.float_accuracy,
                "dataset": a.data, "seed": a.seed, "input_mode": res.input_mode,
                "train_time_steps": res.time_steps})
    print(f"[{a.method}] float test accuracy {res.float_accuracy:.2%} ({res.seconds:.0f}s); "
          f"saved {out / 'model.pt'}")
    if a.deploy:
        d = deploy(res, load_data(cfg, res.time_steps))
        log.update({k: v for k, v in d.items() if k != "compiled"})
        print(f"[{a.method}] loihi-sim accuracy {d['loihi_accuracy']:.2%}, "
              f"{d['spikes_per_inference']:.0f} spikes per inference, pipeline depth "
              f"{d['pipeline_depth']}")
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
