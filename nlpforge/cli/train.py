"""nlpforge train."""

from __future__ import annotations

import json

import click

from nlpforge.cli.options import parse_list, parse_task_options


@click.command()
@click.option("--task", required=True, help="Task id (see 'nlpforge tasks').")
@click.option("--model", required=True, help="Base model: a local directory or a Hub id.")
@click.option("--train", "train_file", required=True, help="Training data (.jsonl, .json, .csv, .tsv).")
@click.option("--validation", "validation_file", help="Validation data, evaluated each epoch.")
@click.option("--output", required=True, help="Run dir to write.")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-length", type=int, help="Maximum tokens per input (default: the task's, capped by the model).")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Peak learning rate.")
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--group-by-length/--no-group-by-length", default=True, show_default=True,
              help="Batch rows of similar length together (less padding, faster).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--labels", help="Comma-separated label set (default: read from the training data).")
@click.option("--option", "task_options", multiple=True, metavar="NAME=VALUE",
              help="A task option, e.g. multi_label=true (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run dir.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(task: str, model: str, train_file: str, validation_file: str | None, output: str,
          epochs: float, max_steps: int | None, batch_size: int, max_length: int | None,
          lr: float, warmup_ratio: float, weight_decay: float, seed: int, group_by_length: bool, device: str, labels: str | None,
          task_options: tuple[str, ...], overwrite: bool, quiet: bool) -> None:
    """Fine-tune a model for a task and write a run dir."""
    from nlpforge.training.loop import TrainConfig
    from nlpforge.training.loop import train as run_training

    config = TrainConfig(
        task=task, model=model, train=train_file, validation=validation_file, output=output,
        task_options=parse_task_options(task_options), labels=parse_list(labels),
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length,
        lr=lr, warmup_ratio=warmup_ratio, weight_decay=weight_decay, seed=seed, group_by_length=group_by_length, device=device,
        overwrite=overwrite, progress=not quiet,
    )
    summary = run_training(config)
    click.echo(json.dumps(summary, indent=2))
