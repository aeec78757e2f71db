"""nlpforge export."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run_dir")
@click.option("--output", required=True, help="Export dir to write.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest absolute difference from PyTorch accepted in validation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export dir.")
def export(run_dir: str, output: str, opset: int | None, atol: float, overwrite: bool) -> None:
    """Export a run dir to ONNX, validated against PyTorch."""
    from nlpforge.export.onnx import export_run

    manifest = export_run(run_dir, output, opset=opset, atol=atol, overwrite=overwrite)
    validation = manifest["validation"]
    click.echo(json.dumps({
        "output": output, "opset": manifest["opset"], "passed": validation["passed"],
        "max_abs_diff": validation["max_abs_diff"], "atol": validation["atol"],
        "shapes_validated": len(validation["cases"]), "seconds": manifest["export_seconds"],
    }, indent=2))
