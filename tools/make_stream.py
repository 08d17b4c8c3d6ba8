"""Concatenate labelled recordings into one long event stream (a stand-in for a live camera).

Each recording is shifted to start at ``k * period`` (its first event at exactly that time),
so a model streaming the result with ``--window PERIOD`` sees one digit per window::

    .venv/bin/python tools/make_stream.py --data build/synthetic-nmnist --n 10 \\
        --out build/demo/stream.raw

Writes EVT 3.0 (``.raw``) or any format ``neurodeploy.events.write_events`` knows, plus
``<out>.labels.json`` with the label of each window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from neurodeploy.datasets import load_split
from neurodeploy.events import read_events, write_events


def concat(paths: list[Path], period_us: int, sensor=(34, 34, 2)) -> np.ndarray:
    parts = []
    for k, p in enumerate(paths):
        ev = read_events(p, sensor_size=sensor).events.copy()
        ev["t"] = ev["t"] - ev["t"].min() + k * period_us
        parts.append(ev[ev["t"] < (k + 1) * period_us])
    return np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("build/synthetic-nmnist"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=10, help="recordings to concatenate")
    ap.add_argument("--period", type=int, default=320_000, help="us per recording")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("build/demo/stream.raw"))
    a = ap.parse_args()
    items = load_split(a.data, a.split)
    pick = np.random.default_rng(a.seed).choice(len(items), size=a.n, replace=False)
    chosen = [items[i] for i in pick]
    ev = concat([p for p, _ in chosen], a.period)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_events(a.out, ev, (34, 34, 2))
    labels = [int(lbl) for _, lbl in chosen]
    Path(f"{a.out}.labels.json").write_text(json.dumps({"period_us": a.period,
                                                         "labels": labels}))
    print(f"wrote {a.out}: {len(ev)} events, {a.n} recordings of {a.period} us, labels {labels}")


if __name__ == "__main__":
    main()
