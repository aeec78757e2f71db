"""nlpforge plot: redraw a run dir's training curves."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir")
@click.option("--output", help="Where to write the PNG (default: RUN_DIR/curves.png).")
def plot(run_dir: str, output: str | None) -> None:
    """Draw RUN_DIR's training loss and validation metrics against the step (curves.png).

    Reads RUN_DIR/metrics.jsonl, so it works on an unfinished run too; the best checkpoint's
    step is marked. Needs matplotlib: pip install 'nlpforge[plots]'.
    """
    from nlpforge.report import plots
    from nlpforge.report.curves import write_curves

    plots.pyplot()
    click.echo(str(write_curves(run_dir, output)))
