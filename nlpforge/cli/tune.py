"""nlpforge tune: measure an export's variants on this machine and keep the fastest."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("export_dir")
@click.option("--data", metavar="FILE",
              help="Rows with the real shapes; labelled rows also gate the int8 candidates by "
                   "the task metric (default: the run's validation file, else synthetic texts).")
@click.option("--rows", type=int, default=256, show_default=True, help="Rows measured.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Turns every candidate runs (the median counts).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--threads", type=int, help="Most CPU threads tried (default: all cores).")
@click.option("--objective", type=click.Choice(["throughput", "latency"]),
              default="throughput", show_default=True,
              help="Rows per second over batches, or batch-1 latency.")
@click.option("--max-metric-drop", type=float, default=1.0, show_default=True,
              help="Most points of the task's primary metric an int8 candidate may lose.")
@click.option("--min-cosine", type=float, default=0.99, show_default=True,
              help="Without labelled rows: the lowest cosine of an int8 candidate's outputs "
                   "to fp32's, row by row.")
@click.option("--force", is_flag=True,
              help="Keep int8 candidates that fail their quality check (recorded).")
@click.option("-v", "--verbose", is_flag=True, help="Each candidate's check and timing.")
def tune(export_dir: str, data: str | None, rows: int, rounds: int, batch_size: int,
         threads: int | None, objective: str, max_metric_drop: float, min_cosine: float,
         force: bool, verbose: bool) -> None:
    """Measure EXPORT_DIR's candidate variants on this CPU and record the fastest.

    Candidates: the fp32 graph and the export's variants with ONNX Runtime's fusions on and
    off, dynamic and static int8 (gated by the task metric on labelled rows, else by the
    cosine of their outputs to fp32's), then thread count and spinning. The winner becomes
    the 'tuned' variant, which nlpforge.load runs on a CPU with the same fingerprint (model
    and instruction-set flags).
    """
    from nlpforge.export.tune import tune as run_tune

    report = (lambda line: click.echo(line, err=True)) if verbose else (lambda line: None)
    record = run_tune(export_dir, data, rows=rows, rounds=rounds, batch_size=batch_size,
                      threads=threads, objective=objective, max_metric_drop=max_metric_drop,
                      min_cosine=min_cosine, force=force, log=report)
    click.echo(json.dumps(summary(record), indent=2))


def summary(record: dict) -> dict:
    """What the command prints: the choice, the CPU, and each candidate's figures."""
    return {
        "tuned": record["candidate"], "settings": record["settings"],
        "speedup_vs_fp32": record["speedup_vs_fp32"], "objective": record["objective"],
        "default_variant": record["default_variant"], "cpu": record["cpu"],
        "rows": record["rows"], "data": record["data"], "seconds": record["seconds"],
        "candidates": {name: {k: c[k] for k in ("rows_per_second", "batch1_ms") if k in c}
                       | {"passed": c["check"].get("passed")}
                       for name, c in record["candidates"].items()},
    }
