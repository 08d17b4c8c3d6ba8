"""``neurodeploy export``: hand a compiled model to other tools (NIR simulators, lava-dl netx)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputFileError


class ExportFormat(str, Enum):
    nir = "nir"
    netx = "netx"


SUFFIX = {ExportFormat.nir: ".nir", ExportFormat.netx: ".net"}

EXAMPLES = """
Examples:

  neurodeploy export model.ndp --format nir -o deployed.nir

  neurodeploy export model.ndp --format netx -o deployed.net
"""


def export_model(model_path: Path, fmt: ExportFormat, output: Path | None,
                 allow_reset_change: bool = False) -> tuple[Path, str]:
    """Write the compiled model at ``model_path`` as ``fmt``; returns ``(path, summary)``."""
    from .. import artifact

    if not model_path.is_file():
        raise InputFileError(f"{model_path}: no such file")
    cm = artifact.load(model_path)
    output = output or model_path.with_suffix(SUFFIX[fmt])
    if output.resolve() == model_path.resolve():
        raise InputFileError(f"{output}: refusing to overwrite the compiled model; pass -o")
    if fmt is ExportFormat.nir:
        from ..exporters.nir_out import export_nir

        graph = export_nir(cm, output)
        kinds = sorted({type(n).__name__ for n in graph.nodes.values()})
        return output, f"{len(graph.nodes)} nodes ({', '.join(kinds)}), dt {graph.metadata['dt']}"
    from ..exporters.netx import export_netx

    kinds = export_netx(cm, output, allow_reset_change=allow_reset_change)
    return output, f"{len(kinds)} layers: {' -> '.join(kinds)}"


def register(app) -> None:
    @app.command("export", epilog=EXAMPLES)
    def export_cmd(
        model: Annotated[Path, typer.Argument(help="compiled .ndp")],
        fmt: Annotated[ExportFormat, typer.Option(
            "--format", help="nir: dequantized NIR graph (runs in snnTorch, Norse, Sinabs, ...) "
            "that computes what the fixed-point model computes; netx: lava-dl .net HDF5")],
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="file to write (default: the model's name with .nir/.net)")]
        = None,
        allow_reset_change: Annotated[bool, typer.Option(
            "--allow-reset-change", help="netx only: export reset-by-subtraction neurons as "
            "netx CUBA (reset to zero), which changes their behaviour")] = False,
    ):
        """Write the compiled, quantized model as NIR or as a lava-dl netx network."""
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path, summary = export_model(model, fmt, output, allow_reset_change)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        typer.echo(f"wrote {path}: {summary}")
