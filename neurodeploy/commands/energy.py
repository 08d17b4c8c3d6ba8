"""``neurodeploy energy``: operation counts and energy per inference from simulated activity."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..errors import NeurodeployError


class ReportFormat(str, Enum):
    md = "md"
    html = "html"
    json = "json"


EXAMPLES = """
Examples:

  neurodeploy energy model.ndp --events data/test --target loihi2 -o report.html

  neurodeploy energy model.ndp --events recording.bin --format json -o energy.json
"""


def activity_for(model, x: np.ndarray, backend: str) -> dict[str, np.ndarray]:
    """Input and neuron activity ``[T + depth, B, ...]`` as the chosen backend produced it."""
    from ..graph import input_names, is_neuron
    from ..runtime import run

    res = run(model, x, backend)
    depth = int(model.meta.get("pipeline_depth", 0))
    act = {k: v for k, v in res.activity.items() if is_neuron(model.graph.nodes[k])}
    pad = np.zeros((depth, *x.shape[1:]), dtype=np.int64)
    act[input_names(model.graph)[0]] = np.concatenate([x.astype(np.int64), pad])
    return act


def register(app) -> None:
    @app.command("energy", epilog=EXAMPLES)
    def energy_cmd(
        model: Annotated[Path, typer.Argument(help="compiled .ndp")],
        events: Annotated[Path, typer.Option(
            "--events", help="a recording, or a folder of them (<label>/<file> layout)")],
        target: Annotated[str, typer.Option(help="energy model: loihi, loihi2 or a .toml")] = (
            "loihi2"),
        fmt: Annotated[ReportFormat, typer.Option("--format", help="report format")] = (
            ReportFormat.html),
        output: Annotated[Path | None, typer.Option("-o", "--output", help="report file")] = None,
        samples: Annotated[int | None, typer.Option(help="use at most N recordings")] = None,
        backend: Annotated[str, typer.Option(help="native or lava (same counts)")] = "native",
    ):
        """Per-layer synaptic operations, neuron updates, spikes and energy per inference."""
        from rich.console import Console
        from rich.table import Table

        from .. import artifact
        from ..energy import analyze, write_report
        from ..streaming import collect_recordings, recording_frames

        out, err = Console(width=None if sys.stdout.isatty() else 120), Console(stderr=True)
        cm = artifact.load(model)
        recs = collect_recordings(events)[: samples or None]
        with err.status(f"binning {len(recs)} recordings..."):
            frames = [recording_frames(cm, p)[0] for p, _ in recs]
        x = np.stack(frames, axis=1)
        with err.status(f"simulating {x.shape[1]} samples on {backend}..."):
            act = activity_for(cm, x, backend)
        bin_us = (cm.meta.get("input_encoding") or {}).get("bin_us")
        dt_s = float(bin_us) * 1e-6 if bin_us else None
        result = analyze(cm.graph, act, target, dt_s=dt_s)
        output = output or model.with_suffix(f".energy.{fmt.value}")
        written = write_report(result, output, fmt.value)
        t = Table(title=f"energy per inference on {result.target.name} "
                        f"({x.shape[1]} recordings)")
        for c in ("layer", "role", "synops", "spikes", "neuron updates", "energy (nJ)", "share"):
            t.add_column(c, justify="right" if c not in ("layer", "role") else "left")
        for ly in result.layers:
            role = f"{ly.role} ({ly.added_by}, alignment)" if ly.added_by else ly.role
            t.add_row(ly.name, role, f"{ly.synops_per_sample:,.0f}",
                      f"{ly.spikes_per_sample:,.0f}", f"{ly.neuron_updates_per_sample:,.0f}",
                      f"{ly.total_pj / 1e3:,.2f}", f"{ly.share:.1%}")
        out.print(t)
        out.print(f"total {result.total_pj / 1e3:,.1f} nJ per inference; equivalent ANN (fp32, "
                  f"45 nm) {result.ann_fp32_pj / 1e3:,.1f} nJ -> {result.ann_fp32_ratio:.1f}x")
        out.print("report: " + ", ".join(str(p) for p in written))
        if not np.isfinite(result.total_pj):
            raise NeurodeployError("energy is not finite; check the target's figures")
