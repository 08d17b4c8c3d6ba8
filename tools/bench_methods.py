"""Train every registered seed method with its defaults and deploy it on loihi-sim.

    .venv/bin/python tools/bench_methods.py                 # all methods, ~2 min each
    .venv/bin/python tools/bench_methods.py --methods dsr,ltl --out build/bench_methods.json
    .venv/bin/python tools/bench_methods.py --models models  # the shipped checkpoints, no training

Per method: float test accuracy (the trained torch model), loihi-sim accuracy (export to NIR,
compile to Loihi fixed point, run the test set on the native fixed-point engine with Lava's
timing), both with and without :func:`neurodeploy.train.common.align_for_pipeline`, time steps,
spikes per inference and training time. The table also lists the accuracies the papers report;
those are on CIFAR/ImageNet/DVS data sets that cannot be reproduced here (no downloads, CPU
only), so the two columns are not comparable: ours are 8x8 digits.

``--models DIR`` evaluates the checkpoints ``DIR/<method>/model.pt`` written by
``tools/train.py`` instead of training: the float accuracy and training time are the ones the
training run recorded (``extra`` of the checkpoint, ``train_log.json`` beside it), the loihi-sim
columns are measured now on the data set and input mode the checkpoint records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from neurodeploy.checkpoint import load_checkpoint
from neurodeploy.train import METHODS, TrainConfig
from neurodeploy.train.common import TrainResult, deploy, load_data

#: Results the papers report (``/work/shared/notes/seed-methods.md``); [2nd] = quoted by a citing
#: paper, not read in the original.
PAPER_RESULTS = {
    "dsr": "CIFAR-10 PreAct-ResNet-18 LIF T=20: 95.40 [2nd]; CIFAR10-DVS VGG-11 T=10: 77.3 [2nd]",
    "dspike": "CIFAR10-DVS ResNet-18 T=10: 75.4 (abstract); CIFAR-10 ResNet-18 T=6: 94.25 [2nd]",
    "shortcut": "not verified (no number available)",
    "ltl": "CIFAR-10 VGG-11 T=16: 93.20 [2nd]; CIFAR-100: 72.63 [2nd]",
    "single-step": "92.90 at T=1 (README screenshot, data set unlabelled, likely CIFAR-10)",
    "spide": "not verified",
    "ide": "CIFAR-10 AlexNet-F IF T=30: 91.73; MNIST T=30: 99.49 (README)",
    "lee": "not verified",
}


def bench_one(method: str, cfg: TrainConfig, limit: int | None, cache: Path | None = None,
              reuse: bool = False) -> dict:
    path = cache / f"{method}.pt" if cache else None
    if reuse and path is not None and path.is_file():
        res = torch.load(path, weights_only=False)  # our own cache file
        wall, cpu = res.extra["train_wall_s"], res.extra["train_cpu_s"]
    else:
        torch.manual_seed(cfg.seed)
        c0, t0 = time.process_time(), time.time()
        res = METHODS[method](cfg)
        wall, cpu = time.time() - t0, time.process_time() - c0
        res.extra.update(train_wall_s=wall, train_cpu_s=cpu)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(res, path)
    return _deploy_row(method, res, load_data(cfg, res.time_steps), limit, wall, cpu)


def bench_checkpoint(path: Path, limit: int | None) -> dict:
    """The row of a ``tools/train.py`` checkpoint: deployed now, float accuracy as recorded."""
    model, info = load_checkpoint(path)
    extra = info["extra"]
    if "method" not in extra or "dataset" not in extra:
        raise ValueError(f"{path}: not a tools/train.py checkpoint (no method/dataset in extra)")
    log_path = path.parent / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    T = int(extra.get("train_time_steps", info["time_steps"]))
    res = TrainResult(extra["method"], model, info["arch"], info["arch_kwargs"],
                      tuple(info["input_shape"]), T, float(extra["float_test_accuracy"]),
                      input_mode=extra.get("input_mode", "repeat"),
                      eval_steps=int(info["time_steps"]))
    cfg = TrainConfig(data=extra["dataset"], seed=int(extra.get("seed", 0)), verbose=False)
    return _deploy_row(extra["method"], res, load_data(cfg, T), limit,
                       log.get("seconds", float("nan")), log.get("cpu_seconds", float("nan")))


def _deploy_row(method: str, res: TrainResult, split, limit, wall: float, cpu: float) -> dict:
    row = {"method": method, "arch": res.arch, "time_steps": res.time_steps,
           "deploy_steps": res.deploy_steps, "float_accuracy": res.float_accuracy,
           "train_wall_s": wall, "train_cpu_s": cpu}
    for align in (False, True):
        try:
            d = deploy(res, split, limit=limit, align=align)
        except Exception as e:  # report, do not stop the other methods
            row[f"loihi_{'aligned' if align else 'plain'}"] = f"failed: {e}"
            continue
        key = "aligned" if align else "plain"
        row[f"loihi_{key}"] = d["loihi_accuracy"]
        row[f"spikes_{key}"] = d["spikes_per_inference"]
        row[f"network_spikes_{key}"] = d["network_spikes_per_inference"]
        row[f"depth_{key}"] = d["pipeline_depth"]
    return row


def _pct(v) -> str:
    return f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    out = ["| method | arch | T (deployed) | float acc % | loihi-sim % (aligned) | loihi-sim % "
           "(plain compile) | spikes / inference (network + alignment) | train s (wall / CPU) "
           "| papers report % |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = f"{r['time_steps']}" + (f" ({r['deploy_steps']})" if r["deploy_steps"] !=
                                    r["time_steps"] else "")
        if "spikes_aligned" in r:
            net = r["network_spikes_aligned"]
            spikes = f"{net:.0f} + {r['spikes_aligned'] - net:.0f}"
        else:
            spikes = f"{r['spikes_plain']:.0f}" if "spikes_plain" in r else "-"
        out.append(f"| {r['method']} | {r['arch']} | {t} | {_pct(r['float_accuracy'])} | "
                   f"{_pct(r.get('loihi_aligned', '-'))} | {_pct(r.get('loihi_plain', '-'))} | "
                   f"{spikes} | "
                   f"{r['train_wall_s']:.0f} / {r['train_cpu_s']:.0f} | "
                   f"{PAPER_RESULTS.get(r['method'], 'n/a')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(sorted(METHODS)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="test samples for loihi-sim")
    ap.add_argument("--max-iters", type=int, default=None, help="smoke runs: stop early")
    ap.add_argument("--out", type=Path, default=Path("build/bench_methods.json"))
    ap.add_argument("--cache", type=Path, default=Path("build/bench_methods_cache"),
                    help="trained results are kept here")
    ap.add_argument("--reuse", action="store_true",
                    help="deploy the cached trained results instead of training again")
    ap.add_argument("--models", type=Path, default=None,
                    help="evaluate DIR/<method>/model.pt (tools/train.py checkpoints) instead of "
                         "training")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    methods = [s for s in a.methods.split(",") if s]
    if a.models is not None:
        for m in methods:
            path = a.models / m / "model.pt"
            if not path.is_file():
                print(f"skipping {m!r}: no {path}", file=sys.stderr)
                continue
            rows.append(bench_checkpoint(path, a.limit))
            print(json.dumps(rows[-1]), flush=True)
        methods = []
    for m in methods:
        if m not in METHODS:
            print(f"skipping {m!r}: not registered", file=sys.stderr)
            continue
        cfg = TrainConfig(max_iters=a.max_iters, verbose=False)
        rows.append(bench_one(m, cfg, a.limit, a.cache, a.reuse))
        print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1))
    print()
    print("Data: scikit-learn 8x8 digits, 1437 train / 360 test images, integer pixels 0..16 as "
          "direct input. The papers' data sets cannot be reproduced here.")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
