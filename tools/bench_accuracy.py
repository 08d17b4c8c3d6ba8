"""Accuracy cost of deployment: float vs loihi-sim top-1 of every model, on held-out data.

For every ``MODELS/<name>/model.pt`` (a ``neurodeploy.save`` checkpoint), every observer and
every weight rounding (``--rounding``): compile (``search`` calibrates on ``--calib-samples``
samples of the train split; ``gptq`` rounding takes its input statistics from the same samples,
with any observer; ``minmax`` with ``nearest`` sees no data), then
``neurodeploy.commands.eval.evaluate`` on the test split of the data set the model was trained
on: checkpoints whose ``extra["dataset"]`` is ``"digits"`` (``tools/train.py``'s method models)
get scikit-learn's digits split of ``neurodeploy.train.common`` fed as ``extra["input_mode"]``
says; all others the synthetic N-MNIST data set (``neurodeploy.datasets.synthetic_nmnist``,
generated into ``--data`` if missing). Prints a
markdown table with float top-1, loihi-sim top-1 (native engine: bit-exact with Lava, with its
synapse delays), the drop in percentage points and whether it meets the target (<= 0.3 pp).
``--align`` compiles with pipeline alignment (the default, ``on``), without it (``off``) or
both, one row each::

    .venv/bin/python tools/bench_accuracy.py --models models --data build/synthetic-nmnist

``--digits`` needs neither: it trains a small ``dvs-cnn`` on scikit-learn's 8x8 digits turned
into Bernoulli spike frames (deterministic) in a temporary directory (or ``--digits-dir``) and
benchmarks that. Exit status 3 when a calibrated (``search``), aligned model compiled with
the default rounding (``compile_graph``'s ``DEFAULT_ROUNDING``) misses the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neurodeploy import zoo
from neurodeploy.checkpoint import load_checkpoint, save
from neurodeploy.commands.eval import evaluate
from neurodeploy.compiler import DEFAULT_ROUNDING, compile_file

TARGET_PP = 0.3


def digits_frames(time_steps: int = 16, seed: int = 0):
    """scikit-learn digits as ``[N, T, 2, 16, 16]`` spike frames (two Bernoulli polarity
    channels at rate ``0.4 * intensity``), split 1297 train / 500 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.kron(d.images / 16.0, np.ones((2, 2)))  # [N, 16, 16]
    rng = np.random.default_rng(seed)
    p = 0.4 * img[:, None, None]  # [N, 1, 1, 16, 16]
    x = (rng.random((len(img), time_steps, 2, 16, 16)) < p).astype(np.uint8)
    order = rng.permutation(len(img))
    x, y = x[order], d.target[order].astype(np.int64)
    return (x[:1297], y[:1297]), (x[1297:], y[1297:])


def train_digits_model(out: Path, epochs: int = 8, seed: int = 0) -> dict:
    """Train ``dvs-cnn(size=16)`` on :func:`digits_frames` into ``out/model.pt`` (kept if it
    is already there); returns the splits."""
    (xtr, ytr), (xte, yte) = digits_frames(seed=seed)
    splits = {"train": (xtr, ytr), "test": (xte, yte)}
    if (out / "model.pt").is_file():
        return splits
    torch.manual_seed(seed)
    kw = {"size": 16, "c1": 8, "c2": 16}
    model = zoo.build("dvs-cnn", **kw)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(xtr, dtype=torch.float32), torch.as_tensor(ytr)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            rate = model(xt[idx].transpose(0, 1)).mean(0)
            loss = nn.functional.cross_entropy(rate * 5.0, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.as_tensor(xte, dtype=torch.float32).transpose(0, 1)).sum(0).argmax(1)
    acc = float((pred.numpy() == yte).mean())
    out.mkdir(parents=True, exist_ok=True)
    save(model, out / "model.pt", arch="dvs-cnn", arch_kwargs=kw, input_shape=(2, 16, 16),
         time_steps=16, extra={"float_test_accuracy": acc})
    return splits


def digits_split(split: str, time_steps: int, extra: dict):
    """``[N, T, 1, 8, 8]`` steps of the digits split a method model was trained and tested on."""
    from neurodeploy.train.common import load_digits_split, to_steps

    d = load_digits_split(int(extra.get("seed", 0)))
    x, y = (d.x_train, d.y_train) if split == "train" else (d.x_test, d.y_test)
    steps = to_steps(x, time_steps, extra.get("input_mode", "repeat"))
    return np.moveaxis(steps.numpy(), 0, 1), y.numpy()


def data_for(path: Path, data: Path):
    """``splits(split, T, C)`` of the data set checkpoint ``path`` was trained on."""
    extra = load_checkpoint(path)[1].get("extra", {})
    if extra.get("dataset") == "digits":
        return lambda s, T, C: digits_split(s, T, extra)
    return lambda s, T, C: nmnist_split(data, s, T, C)


def nmnist_split(data: Path, split: str, time_steps: int, channels: int):
    from neurodeploy.datasets import synthetic_nmnist as ds

    if not (data / "meta.json").is_file():
        print(f"generating the synthetic N-MNIST data set into {data} ...", file=sys.stderr)
        ds.make_dataset(data)
    x, y = ds.frames_dataset(data, split, n_bins=time_steps, merge_polarity=channels == 1)
    return x, y


def bench_model(name: str, path: Path, splits, observers, calib_samples: int,
                test_samples: int | None, aligns=(True,), roundings=("nearest",)) -> list[dict]:
    """Rows of the table for one checkpoint; ``splits(split, T, C)`` gives ``[N, T, ...]``."""
    _, info = load_checkpoint(path)
    T, shape = int(info["time_steps"]), tuple(info["input_shape"])
    xtr, _ = splits("train", T, shape[0])
    xte, yte = splits("test", T, shape[0])
    if test_samples:
        xte, yte = xte[:test_samples], yte[:test_samples]
    x_test = np.moveaxis(np.asarray(xte), 0, 1).astype(np.int64)
    x_cal = np.moveaxis(np.asarray(xtr), 0, 1).astype(np.int64)
    rows = []
    for obs, rnd, align in ((o, r, a) for o in observers for r in roundings for a in aligns):
        t0 = time.time()
        data = obs == "search" or rnd != "nearest"
        cm = compile_file(path, calibration=x_cal if data else None, observer=obs,
                          calibration_samples=calib_samples, align=align, rounding=rnd)
        t1 = time.time()
        rep = evaluate(cm, x_test, yte)
        drop = 100 * (rep.top1["float"] - rep.top1["loihi_sim"])
        rows.append({
            "model": name, "observer": obs, "rounding": rnd, "aligned": align,
            "samples": rep.samples,
            "float": rep.top1["float"], "fake_quant": rep.top1["fake_quant"],
            "loihi_sim": rep.top1["loihi_sim"], "drop_pp": drop,
            "agreement": rep.agreement_with_float["loihi_sim"],
            "saturated": cm.meta["saturated_weights"],
            "overflow": sum(v["u_wrap"] + v["v_clip"] for v in rep.overflow.values()),
            "compile_s": t1 - t0, "eval_s": time.time() - t1,
        })
        tag = "aligned" if align else "unaligned"
        print(f"{name}/{obs}/{rnd}/{tag}: drop {drop:+.2f} pp ({t1 - t0:.0f} s compile, "
              f"{time.time() - t1:.0f} s eval)", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | observer | rounding | aligned | test samples | float top-1 "
            "| fake-quant top-1 | loihi-sim top-1 | drop (pp) | agreement | saturated w "
            "| overflows | <= 0.3 pp |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        ok = "yes" if r["drop_pp"] <= TARGET_PP else "**no**"
        lines.append(
            f"| {r['model']} | {r['observer']} | {r['rounding']} | "
            f"{'yes' if r['aligned'] else 'no'} | "
            f"{r['samples']} | {100 * r['float']:.2f}% | "
            f"{100 * r['fake_quant']:.2f}% | {100 * r['loihi_sim']:.2f}% | "
            f"{r['drop_pp']:+.2f} | {100 * r['agreement']:.2f}% | {r['saturated']} | "
            f"{r['overflow']} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("build/synthetic-nmnist"))
    ap.add_argument("--observers", default="minmax,search",
                    help="comma-separated: minmax, percentile, search")
    ap.add_argument("--rounding", default=DEFAULT_ROUNDING,
                    help="comma-separated weight roundings: nearest, gptq (a row each; default: "
                         f"{DEFAULT_ROUNDING}, compile's default with calibration data)")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--test-samples", type=int, default=None, help="first N test samples only")
    ap.add_argument("--digits", action="store_true",
                    help="train and bench a small model on scikit-learn digits instead")
    ap.add_argument("--digits-dir", type=Path, default=None,
                    help="keep the digits model here (reused when present; default: temporary)")
    ap.add_argument("--align", choices=("on", "off", "both"), default="on",
                    help="compile with pipeline alignment, without, or both")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()
    observers = [o.strip() for o in a.observers.split(",") if o.strip()]
    aligns = {"on": (True,), "off": (False,), "both": (True, False)}[a.align]
    roundings = [r.strip() for r in a.rounding.split(",") if r.strip()]
    rows: list[dict] = []
    if a.digits:
        with tempfile.TemporaryDirectory() as tmp:
            work = a.digits_dir or Path(tmp)
            data = train_digits_model(work)
            rows += bench_model("digits-dvs-cnn", work / "model.pt",
                                lambda split, T, C: data[split], observers, a.calib_samples,
                                a.test_samples, aligns, roundings)
    else:
        paths = sorted(a.models.glob("*/model.pt"))
        if not paths:
            print(f"no models in {a.models}/*/model.pt (try --digits)", file=sys.stderr)
            return 1
        for p in paths:
            rows += bench_model(p.parent.name, p, data_for(p, a.data), observers,
                                a.calib_samples, a.test_samples, aligns, roundings)
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    judged = [r for r in rows if r["observer"] == "search" and r["aligned"]
              and r["rounding"] == DEFAULT_ROUNDING]
    return 0 if all(r["drop_pp"] <= TARGET_PP for r in judged) else 3


if __name__ == "__main__":
    sys.exit(main())
