"""nlpforge train."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from click.core import ParameterSource

from nlpforge.cli.options import parse_list, parse_task_options

CHOICES = {"scheduler": ("linear", "cosine", "constant"), "precision": ("fp32", "bf16", "fp16"),
           "eval_strategy": ("epoch", "steps", "no")}


def _options(func):
    specs = [
        ("--task", {"help": "Task id (see 'nlpforge tasks')."}),
        ("--model", {"help": "Base model: a local directory or a Hub id."}),
        ("--train", {"help": "Training data: .jsonl, .json, .csv, .tsv (also .gz, .zst, .bz2, "
                             ".xz), .parquet or a directory of them, a datasets directory."}),
        ("--validation", {"help": "Validation data, evaluated each epoch (or --eval-steps)."}),
        ("--output", {"help": "Run dir to write."}),
        ("--config", {"help": "YAML, TOML or JSON file of settings (flags override it)."}),
        ("--epochs", {"type": float, "help": "Passes over the data [3]."}),
        ("--max-steps", {"type": int, "help": "Optimizer steps; overrides --epochs."}),
        ("--batch-size", {"type": int, "help": "Rows per process and micro-batch [16]."}),
        ("--eval-batch-size", {"type": int, "help": "[64]"}),
        ("--gradient-accumulation-steps", {"type": int, "help": "Micro-batches per optimizer step [1]."}),
        ("--max-length", {"type": int, "help": "Maximum tokens per input [the task's, capped by the model]."}),
        ("--group-by-length/--no-group-by-length", {"default": None,
                                                    "help": "Batch rows of similar length together [on]."}),
        ("--stream", {"is_flag": True, "default": None,
                      "help": "Read --train as it trains, a buffer of 50 batches at a time, "
                              "shuffled and grouped by length within it: data larger than "
                              "memory (needs --max-steps)."}),
        ("--split-by-length/--no-split-by-length", {
            "default": None, "help": "Cut each batch into micro-batches of similar length: the "
                                     "same gradient with less padding [off]."}),
        ("--lr", {"type": float, "help": "Peak learning rate [5e-5]."}),
        ("--weight-decay", {"type": float, "help": "AdamW weight decay, not on biases and norms [0.01]."}),
        ("--scheduler", {"type": click.Choice(CHOICES["scheduler"]), "help": "[linear]"}),
        ("--warmup-ratio", {"type": float, "help": "Share of steps for warmup [0.1]."}),
        ("--warmup-steps", {"type": int, "help": "Warmup steps (overrides --warmup-ratio)."}),
        ("--max-grad-norm", {"type": float, "help": "Gradient clipping; 0 turns it off [1.0]."}),
        ("--precision", {"type": click.Choice(CHOICES["precision"]),
                         "help": "Autocast: bf16 (CPU or GPU), fp16 (GPU, with a grad scaler) [fp32]."}),
        ("--device", {"help": "auto, cpu, cuda or cuda:N [auto]."}),
        ("--seed", {"type": int, "help": "[42]"}),
        ("--eval-strategy", {"type": click.Choice(CHOICES["eval_strategy"]), "help": "[epoch]"}),
        ("--eval-steps", {"type": int, "help": "Evaluate every N steps (--eval-strategy steps)."}),
        ("--metric", {"help": "Metric that picks the best model [the task's]."}),
        ("--greater-is-better/--lower-is-better", {"default": None,
                                                   "help": "Direction of --metric [the task's]."}),
        ("--early-stopping-patience", {"type": int, "help": "Stop after N evaluations without improvement."}),
        ("--early-stopping-min-delta", {"type": float, "help": "Smallest change that counts as improvement [0]."}),
        ("--save-steps", {"type": int, "help": "Checkpoint every N steps [each epoch]."}),
        ("--save-total-limit", {"type": int, "help": "Checkpoints kept, besides the best [2]."}),
        ("--gradient-checkpointing", {"is_flag": True, "default": None,
                                      "help": "Recompute activations to save memory."}),
        ("--freeze-base", {"is_flag": True, "default": None, "help": "Train only the task head."}),
        ("--lora-r", {"type": int, "help": "LoRA rank (needs peft); 0 = full fine-tuning [0]."}),
        ("--lora-alpha", {"type": int, "help": "[16]"}),
        ("--lora-dropout", {"type": float, "help": "[0.05]"}),
        ("--lora-target-modules", {"help": "Comma-separated layer names [peft's default]."}),
        ("--logging-steps", {"type": int, "help": "Write metrics.jsonl every N steps [10]."}),
        ("--tensorboard/--no-tensorboard", {"default": None, "help": "Log to RUN/tensorboard when installed [on]."}),
        ("--labels", {"help": "Comma-separated label set [read from the training data]."}),
        ("--option", {"multiple": True, "metavar": "NAME=VALUE",
                      "help": "A task option, e.g. multi_label=true (repeatable)."}),
    ]
    for flag, kwargs in reversed(specs):
        func = click.option(flag, **kwargs)(func)
    return func


@click.command()
@_options
@click.option("--resume", is_flag=True, help="Continue the unfinished run in --output from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run dir.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, **params: Any) -> None:
    """Fine-tune a model for a task and write a run dir.

    \b
    Settings come from defaults, then --config FILE, then flags. Under torchrun
    (torchrun --nproc-per-node N -m nlpforge train ...) it trains with
    DistributedDataParallel; rank 0 writes the run dir.
    """
    from nlpforge.training.config import build_config, read_config_file
    from nlpforge.training.loop import resume_config
    from nlpforge.training.loop import train as run_training

    given = {name: value for name, value in params.items()
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE and value is not None}
    config_file = given.pop("config", None)
    resume, overwrite, quiet = (given.pop(k, False) for k in ("resume", "overwrite", "quiet"))
    if "option" in given:
        given["task_options"] = parse_task_options(given.pop("option"))
    if "labels" in given:
        given["labels"] = parse_list(given["labels"])
    if "lora_target_modules" in given:
        given["lora_target_modules"] = parse_list(given["lora_target_modules"])
    file_settings = read_config_file(config_file) if config_file else {}
    if resume:
        output = given.get("output") or file_settings.get("output")
        if not output:
            raise click.UsageError("--resume needs --output RUN_DIR")
        base = resume_config(output).resolved()
        config = build_config({**base, **file_settings}, given)
    else:
        config = build_config(file_settings, given)
    config.resume, config.overwrite, config.progress = resume, overwrite, not quiet
    summary = run_training(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        click.echo(json.dumps(summary, indent=2))
