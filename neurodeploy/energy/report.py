"""Energy reports: Markdown (+ PNG figures beside it), one self-contained HTML file, or JSON.

``write_report(result, "out/energy.md")`` writes ``out/energy.md`` and ``out/energy_figs/*.png``;
``.html`` embeds the figures as base64 PNG with inline CSS and no external references; ``.json``
holds the same numbers (:meth:`EnergyResult.to_dict`). Files are written to temporary names and
moved into place only when everything has been rendered, so an error leaves no partial output.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .model import EnergyResult

if TYPE_CHECKING:  # matplotlib is imported only when figures are drawn (it is slow to import)
    from matplotlib.figure import Figure

FORMATS = ("md", "html", "json")
_SUFFIX = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}
_FIGURES = (
    ("energy_per_layer", "Energy per inference, per layer"),
    ("firing_rate", "Firing rate per layer"),
    ("raster", "Spike raster"),
    ("synops_over_time", "Synaptic operations over time"),
)


# ------------------------------------------------------------------------------------- numbers


def _si(x: float | None, unit: str) -> str:
    """``1.23 nJ`` style formatting of a value given in base ``unit`` (J, W, s, ...)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x == 0:
        return f"0 {unit}"
    for scale, prefix in ((1e0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"),
                          (1e-15, "f")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def _ratio(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}x"


def _table_rows(result: EnergyResult) -> tuple[list[str], list[list[str]]]:
    head = ["layer", "kind", "neurons", "synapses", "spikes", "synops", "neuron updates",
            "active updates", "energy / inference", "share"]
    rows = []
    for r in result.layers:
        rows.append([
            r.name, r.kind_label,
            _num(r.n_neurons) if r.role != "synapse" else "",
            _num(r.n_synapses) if r.role == "synapse" else "",
            _num(r.spikes_per_sample) if r.role != "synapse" else "",
            _num(r.synops_per_sample) if r.role == "synapse" else "",
            _num(r.neuron_updates_per_sample) if r.role in ("neuron", "readout") else "",
            _num(r.active_updates_per_sample) if r.role in ("neuron", "readout") else "",
            _si(r.total_pj * 1e-12, "J"),
            f"{100 * r.share:.1f} %",
        ])
    c = result.counts
    rows.append([
        "total", "",
        _num(sum(p.n_neurons for p in c.populations if p.role != "input")),
        _num(sum(s.n_synapses for s in c.synapse_layers)),
        _num(c.spikes_per_sample), _num(c.synops_per_sample),
        _num(c.neuron_updates_per_sample), _num(c.active_updates_per_sample),
        _si(result.total_pj * 1e-12, "J"), "100 %",
    ])
    return head, rows


def _summary(result: EnergyResult) -> list[tuple[str, str]]:
    c = result.counts
    out = [
        ("target", f"{result.target.name}: {result.target.description}"),
        ("estimate", "per-operation neuromorphic model" if result.estimate == "neuromorphic"
         else "45 nm AC/MAC model"),
        ("time steps x samples", f"{c.n_steps} x {c.n_samples} (numbers are per sample)"),
        ("energy per inference", _si(result.total_pj * 1e-12, "J")),
    ]
    if result.dt_s is not None:
        out.append(("time step", _si(result.dt_s, "s")))
        out.append(("mean dynamic power", _si(result.mean_power_w, "W")))
    out += [
        ("synaptic ops (NeuroBench effective pairs, all layers)", _num(c.synops_per_sample)),
        ("synaptic ops (sinabs value x fan-out)", _num(c.sinabs_synops_per_sample)),
        ("neuron updates (all / active)",
         f"{_num(c.neuron_updates_per_sample)} / {_num(c.active_updates_per_sample)}"),
        ("spikes emitted by neurons", _num(c.spikes_per_sample)),
        ("SNN at 45 nm (ACs x E_AC + MACs x E_MAC)", _si(result.snn_45nm_pj * 1e-12, "J")),
        (f"equivalent ANN, fp32 ({result.ann_target.name}, {result.ann_steps} pass(es))",
         f"{_si(result.ann_fp32_pj * 1e-12, 'J')} (ANN / SNN = {_ratio(result.ann_fp32_ratio)})"),
        ("equivalent ANN, int8",
         f"{_si(result.ann_int8_pj * 1e-12, 'J')} (ANN / SNN = {_ratio(result.ann_int8_ratio)})"),
    ]
    if result.mapping is not None:
        m = result.mapping
        out.append(("cores / chips", f"{m.n_cores} / {m.n_chips}"))
    return out


def _neurobench_rows(result: EnergyResult) -> list[tuple[str, str]]:
    nb = result.counts.neurobench()
    return [(k, _num(v) if k not in ("ActivationSparsity", "ConnectionSparsity") else f"{v:.4f}")
            for k, v in nb.items()]


def _mapping_rows(result: EnergyResult) -> tuple[list[str], list[list[str]]]:
    head = ["core", "chip", "x, y", "layer", "neurons", "in axons", "out axons",
            "synapse memory", "max utilisation"]
    rows = []
    if result.mapping is None:
        return head, rows
    for c in result.mapping.cores:
        u = c.utilisation(result.mapping.limits)
        worst = max(u, key=u.get)
        rows.append([str(c.core), str(c.chip), f"{c.x}, {c.y}", c.population,
                     f"{c.neuron_start}..{c.neuron_stop - 1}", str(c.in_axons), str(c.out_axons),
                     f"{c.synapse_memory_bits} bit", f"{100 * u[worst]:.1f} % ({worst})"])
    return head, rows


def _citation_rows(result: EnergyResult) -> tuple[list[str], list[list[str]]]:
    head = ["number", "value", "target", "source"]
    rows = [[n.key, f"{_num(n.value)} {n.unit}".strip(), n.target, n.citation]
            for n in result.numbers_used()]
    return head, rows


# ------------------------------------------------------------------------------------- figures


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _left_margin(labels: list[str], width_in: float) -> float:
    """Room for y tick labels, as a fraction of the figure width (no layout engine: fast)."""
    chars = max((len(s) for s in labels), default=4)
    return min(0.55, (0.075 * chars + 0.35) / width_in)


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders the PNG

    return Figure(figsize=(width_in, height_in))


def _fig_energy(result: EnergyResult) -> Figure:
    rows = result.layers
    fig = _new_figure(8, max(2.5, 0.35 * len(rows) + 1))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for attr, label in (("synop_pj", "synaptic ops"), ("neuron_update_pj", "neuron updates"),
                        ("routing_pj", "spike routing")):
        v = np.array([getattr(r, attr) for r in rows]) * 1e-3
        ax.barh(y, v, left=left, label=label)
        left += v
    labels = [f"{r.name} ({r.kind_label})" for r in rows]
    ax.set_yticks(y, labels)
    fig.subplots_adjust(left=_left_margin(labels, 8), right=0.97)
    ax.invert_yaxis()
    ax.set_xlabel("energy per inference (nJ)")
    ax.set_title(f"{result.target.name}: energy per layer")
    ax.legend(loc="lower right", fontsize="small")
    fig.subplots_adjust(bottom=0.55 / fig.get_figheight())
    return fig


def _fig_rates(result: EnergyResult) -> Figure:
    pops = [p for p in result.counts.populations if p.role != "readout"]
    fig = _new_figure(8, 3.2)
    ax = fig.add_subplot()
    rates = np.array([p.firing_rate_per_step for p in pops])
    if result.dt_s:
        rates = rates / result.dt_s
        ax.set_ylabel("events per neuron per second (Hz)")
    else:
        ax.set_ylabel("events per neuron per step")
    colors = [f"C{i % 10}" for i in range(len(pops))]
    ax.bar(np.arange(len(pops)), rates, color=colors)
    ax.set_xticks(np.arange(len(pops)), [p.name for p in pops], rotation=30, ha="right")
    chars = max((len(p.name) for p in pops), default=4)
    fig.subplots_adjust(bottom=min(0.6, (0.06 * chars + 0.45) / 3.2), left=0.12, right=0.97)
    ax.set_title("firing rate per layer")
    return fig


def _fig_raster(result: EnergyResult) -> Figure:
    pops = [p for p in result.counts.populations if p.role != "readout"]
    fig = _new_figure(8, max(2.5, 1.6 * len(pops)))
    axes = fig.subplots(len(pops), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, p) in enumerate(zip(axes, pops, strict=True)):
        ax.scatter(p.raster_t, p.raster_neuron, s=2, marker="|", color=f"C{i % 10}")
        ax.set_xlim(-0.5, result.counts.n_steps - 0.5)
        ax.set_ylim(-0.5, max(p.n_neurons, 1) - 0.5)
        ax.set_ylabel(p.name + ("\n(truncated)" if p.raster_truncated else ""), fontsize="small")
    axes[-1].set_xlabel("time step")
    fig.subplots_adjust(left=_left_margin([p.name for p in pops], 8) + 0.04, right=0.97)
    axes[0].set_title(f"spike raster, sample {result.counts.raster_sample}")
    return fig


def _fig_synops(result: EnergyResult) -> Figure:
    fig = _new_figure(8, 3.5)
    ax = fig.add_subplot()
    t = np.arange(result.counts.n_steps)
    for i, s in enumerate(result.counts.synapse_layers):
        ax.plot(t, s.synops_per_step, label=s.name, color=f"C{i % 10}", lw=1)
    ax.plot(t, result.counts.synops_per_step, label="total", color="k", lw=2)
    ax.set_xlabel("time step")
    ax.set_ylabel("synaptic ops per step (per sample)")
    ax.set_title("synaptic operations over time")
    ax.legend(fontsize="small", ncol=2)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15)
    return fig


def render_figures(result: EnergyResult) -> dict[str, bytes]:
    """The report's figures as PNG bytes, keyed by file stem."""
    makers = {"energy_per_layer": _fig_energy, "firing_rate": _fig_rates,
              "raster": _fig_raster, "synops_over_time": _fig_synops}
    return {name: _png(makers[name](result)) for name, _ in _FIGURES}


# ------------------------------------------------------------------------------------ renderers


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(result: EnergyResult, figs_dir_name: str) -> str:
    parts = [f"# Energy report: {result.target.name}", ""]
    parts += [_md_table(["quantity", "value"], [list(x) for x in _summary(result)]), ""]
    parts += ["## Per layer (per inference)", "", _md_table(*_table_rows(result)), ""]
    parts += ["## NeuroBench metrics", "",
              _md_table(["metric", "value"], [list(x) for x in _neurobench_rows(result)]), ""]
    if result.mapping is not None:
        parts += ["## Core mapping", "", _md_table(*_mapping_rows(result)), ""]
    parts += ["## Figures", ""]
    for name, title in _FIGURES:
        parts += [f"![{title}]({figs_dir_name}/{name}.png)", ""]
    parts += ["## Numbers used and their sources", "", _md_table(*_citation_rows(result)), ""]
    parts += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    return "\n".join(parts)


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; }
tr.total td { font-weight: bold; }
img { max-width: 100%; display: block; margin: 1em 0; }
.assumption { color: #a33; }
"""


def _html_table(head, rows, text_cols=(), total_last=False, assumption_rows=()) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cls = []
        if total_last and i == len(rows) - 1:
            cls.append("total")
        if i in assumption_rows:
            cls.append("assumption")
        attr = f' class="{" ".join(cls)}"' if cls else ""
        cells = "".join(
            f'<td class="text">{e(c)}</td>' if j in text_cols else f"<td>{e(c)}</td>"
            for j, c in enumerate(r)
        )
        out.append(f"<tr{attr}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_html(result: EnergyResult, figures: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>Energy report: {e(result.target.name)}</title>",
             f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>Energy report: {e(result.target.name)}</h1>"]
    parts.append(_html_table(["quantity", "value"], [list(x) for x in _summary(result)],
                             text_cols=(1,)))
    parts.append("<h2>Per layer (per inference)</h2>")
    head, rows = _table_rows(result)
    parts.append(_html_table(head, rows, text_cols=(1,), total_last=True))
    parts.append("<h2>NeuroBench metrics</h2>")
    parts.append(_html_table(["metric", "value"], [list(x) for x in _neurobench_rows(result)]))
    if result.mapping is not None:
        parts.append("<h2>Core mapping</h2>")
        parts.append(_html_table(*_mapping_rows(result), text_cols=(3,)))
    parts.append("<h2>Figures</h2>")
    for name, title in _FIGURES:
        data = base64.b64encode(figures[name]).decode("ascii")
        parts.append(f'<img alt="{e(title)}" src="data:image/png;base64,{data}">')
    parts.append("<h2>Numbers used and their sources</h2>")
    used = result.numbers_used()
    head, rows = _citation_rows(result)
    parts.append(_html_table(head, rows, text_cols=(0, 2, 3),
                             assumption_rows={i for i, n in enumerate(used) if n.assumption}))
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result.notes)
                 + "</ul>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def render_json(result: EnergyResult) -> str:
    return json.dumps(result.to_dict(), indent=1, allow_nan=False, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


# ------------------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_temp(directory: Path, prefix: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file in ``directory`` with the usual permissions."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_report(
    result: EnergyResult,
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    figures: dict[str, bytes] | None = None,
) -> list[Path]:
    """Write a report; return the paths written.

    ``fmt`` is ``"md"``, ``"html"`` or ``"json"``; by default it follows the suffix of ``path``
    (Markdown when the suffix is unknown). Markdown also writes ``<stem>_figs/*.png``.
    ``figures`` (from :func:`render_figures`) avoids drawing them again when one result is
    written in several formats.
    """
    path = Path(path)
    if fmt is None:
        fmt = _SUFFIX.get(path.suffix.lower(), "md")
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."

    if fmt == "json":
        tmp = _write_temp(parent, prefix, render_json(result).encode("utf-8"))
        os.replace(tmp, path)
        return [path]

    if figures is None:
        figures = render_figures(result)
    missing = [name for name, _ in _FIGURES if name not in figures]
    if missing:
        raise ValueError(f"figures lack {', '.join(missing)}")
    if fmt == "html":
        tmp = _write_temp(parent, prefix, render_html(result, figures).encode("utf-8"))
        os.replace(tmp, path)
        return [path]

    figs_name = f"{path.stem}_figs"
    figs_dir = parent / figs_name
    new_dir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{figs_name}."))
    os.chmod(new_dir, 0o777 & ~_umask())
    tmp_md: Path | None = None
    old_dir: Path | None = None
    swapped = False
    try:
        for name, data in figures.items():
            (new_dir / f"{name}.png").write_bytes(data)  # mode follows the umask
        tmp_md = _write_temp(parent, prefix, render_markdown(result, figs_name).encode("utf-8"))
        if figs_dir.exists():
            old_dir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{figs_name}.old."))
            os.rmdir(old_dir)
            os.replace(figs_dir, old_dir)
        os.replace(new_dir, figs_dir)
        swapped = True
        os.replace(tmp_md, path)
        tmp_md = None
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        if swapped:  # the new figures are in place but the Markdown is not: undo
            shutil.rmtree(figs_dir, ignore_errors=True)
        if tmp_md is not None and tmp_md.exists():
            tmp_md.unlink()
        if old_dir is not None and old_dir.exists() and not figs_dir.exists():
            os.replace(old_dir, figs_dir)
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    written = [path] + [figs_dir / f"{name}.png" for name, _ in _FIGURES]
    return written
