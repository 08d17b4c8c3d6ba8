"""Train the bundled default model (``dvs-cnn``) on the synthetic N-MNIST-like digits.

Re-run to reproduce ``models/default/model.pt`` and ``models/default/samples.npz``::

    .venv/bin/python tools/train_default.py --data build/synthetic-nmnist --out models/default

The data set is generated first if ``--data`` does not hold it (tools/make_dataset.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import neurodeploy
from neurodeploy import zoo
from neurodeploy.checkpoint import save
from neurodeploy.datasets import synthetic_nmnist as ds
from neurodeploy.events import read_events
from neurodeploy.streaming import bin_events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("build/synthetic-nmnist"))
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    ap.add_argument("--time-steps", type=int, default=16)
    ap.add_argument("--bin-us", type=int, default=20_000, help="time bin per step (us)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=16, help="test samples bundled for the demo")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    if not (a.data / "meta.json").exists():
        ds.make_dataset(a.data, seed=a.seed)
    xtr, ytr = load_frames(a.data, "train", a.time_steps, a.bin_us)
    xte, yte = load_frames(a.data, "test", a.time_steps, a.bin_us)
    model = zoo.build("dvs-cnn")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    xtr_t, ytr_t = torch.as_tensor(xtr), torch.as_tensor(ytr)
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr_t))
        bar = tqdm(range(0, len(perm), a.batch), desc=f"epoch {epoch + 1}/{a.epochs}",
                   leave=False)
        for i in bar:
            idx = perm[i:i + a.batch]
            x = xtr_t[idx].transpose(0, 1)  # [T, B, 2, 34, 34]
            rate = model(x).mean(0)
            loss = nn.functional.cross_entropy(rate * 5.0, ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        sched.step()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}: test accuracy {acc:.2%}")
    a.out.mkdir(parents=True, exist_ok=True)
    acc = evaluate(model, xte, yte)
    save(model, a.out / "model.pt", arch="dvs-cnn", input_shape=(2, 34, 34),
         time_steps=a.time_steps,
         extra={"float_test_accuracy": acc, "data_seed": a.seed, "epochs": a.epochs,
                "input_encoding": {"bin_us": a.bin_us, "sensor_size": [34, 34, 2],
                                   "origin": "first event of the window"}})
    write_samples(a.out / "samples.npz", xte, yte, a.samples)
    (a.out / "train_log.json").write_text(json.dumps(
        {"float_test_accuracy": acc, "epochs": a.epochs, "time_steps": a.time_steps,
         "train_samples": len(xtr), "test_samples": len(xte), "seconds": time.time() - t0,
         "neurodeploy": neurodeploy.__version__}, indent=1))
    print(f"saved {a.out / 'model.pt'}: float test accuracy {acc:.2%}")


def write_samples(path: Path, x: np.ndarray, y: np.ndarray, n: int) -> None:
    """``n`` evenly spaced test samples (all classes, as the split is sorted by label)."""
    idx = np.linspace(0, len(x) - 1, n).round().astype(int)
    np.savez_compressed(path, x=x[idx].astype(np.uint8), y=y[idx])


def load_frames(root: Path, split: str, steps: int, bin_us: int):
    """Event counts per ``bin_us`` from each recording's first event: the runtime's binning."""
    items = ds.load_split(root, split)
    x = np.zeros((len(items), steps, 2, 34, 34), np.float32)
    for i, (path, _) in enumerate(items):
        ev = read_events(path, sensor_size=(34, 34, 2)).events
        x[i] = bin_events(ev, int(ev["t"].min()), steps, bin_us, (2, 34, 34))
    return x, np.array([label for _, label in items], np.int64)


@torch.no_grad()
def evaluate(model, x, y, batch=128) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        out = model(torch.as_tensor(x[i:i + batch]).transpose(0, 1)).sum(0)
        correct += int((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


if __name__ == "__main__":
    main()
