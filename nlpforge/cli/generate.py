"""nlpforge generate: write text with a generative export (decoder-only or encoder-decoder)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from nlpforge.cli.batch_options import run_batch, with_batch_options
from nlpforge.errors import DataError, UsageError


@click.command()
@click.argument("export_dir")
@click.argument("prompts", nargs=-1, metavar="PROMPT...")
@click.option("--max-new-tokens", type=int, help="Most tokens to generate (default: the export's "
              "generation_config.json, else 64).")
@click.option("--min-new-tokens", type=int, help="Fewest tokens before end-of-sequence may come.")
@click.option("--num-beams", type=int, help="Beam search with N beams (1: greedy or sampling).")
@click.option("--do-sample/--greedy", default=None, help="Sample the next token instead of taking "
              "the most likely one.")
@click.option("--temperature", type=float, help="Sampling: below 1 sharper, above 1 flatter.")
@click.option("--top-k", type=int, help="Sampling: keep the K most likely tokens (0: all; "
              "default 50).")
@click.option("--top-p", type=float, help="Sampling: keep the most likely tokens whose "
              "probability adds up to P.")
@click.option("--seed", type=int, help="Sampling: random seed, for reproducible output.")
@click.option("--repetition-penalty", type=float, help="Above 1 discourages repeated tokens.")
@click.option("--no-repeat-ngram-size", type=int, help="Never repeat an n-gram of this size.")
@click.option("--length-penalty", type=float, help="Beam search: above 0 favours longer "
              "sequences, below 0 shorter ones.")
@click.option("--early-stopping", type=click.Choice(["true", "false", "never"]),
              help="Beam search: when to stop (see docs/generation.md).")
@click.option("--num-return-sequences", type=int, help="Beam search: texts per prompt.")
@click.option("--stop", "stop_strings", multiple=True, help="Stop when the text contains this "
              "string (cut before it); repeatable.")
@click.option("--stream", is_flag=True, help="Print the text as it is generated.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per prompt: "
              "{\"prompt\", \"generated_text\"}.")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Prompts generated together.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--variant", type=click.Choice(["fp32", "optimized"]),
              help="Which graphs to run (default: the export's default, optimized when made "
                   "and faster on the machine that exported it).")
@with_batch_options
def generate(export_dir: str, prompts: tuple[str, ...], stream: bool, as_json: bool,
             batch_size: int, device: str, threads: int | None, variant: str | None,
             **settings: object) -> None:
    """Generate text from PROMPTs with a text-generation or seq2seq export dir.

    \b
    nlpforge generate EXPORT "Once upon a time" --max-new-tokens 40
    nlpforge generate EXPORT "Once upon a time" --do-sample --temperature 0.8 --seed 1
    nlpforge generate EXPORT "summarize: ..." --num-beams 4 --stream
    nlpforge generate EXPORT --input prompts.parquet --output texts.parquet --resume

    --input takes a text file (one prompt per line) or any file predict reads; with --output
    the prompts stream through in chunks and each output row carries the prompt's id.
    """
    from nlpforge.runtime.generation.generator import Generator

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    if stream and as_json:
        raise UsageError("--stream prints text as it comes; --json needs the whole text: "
                         "choose one")
    batch = {name: settings.pop(name) for name in BATCH_OPTIONS}
    input_file = batch["input_file"]
    if batch["output"] is not None and (stream or as_json):
        raise UsageError("--output writes rows with each prompt's id; --stream and --json "
                         "print to the terminal: choose one")
    texts = list(prompts)
    if input_file and batch["output"] is None and _text_lines(input_file):
        texts += _read_prompts(input_file)
    if not texts and not (input_file and batch["output"]):
        raise UsageError("nothing to generate from: give PROMPT arguments or --input FILE")
    parameters = {name: value for name, value in settings.items() if value not in (None, ())}
    if "early_stopping" in parameters:
        value = parameters["early_stopping"]
        parameters["early_stopping"] = value if value == "never" else value == "true"
    generator = Generator.load(export_dir, device=device, threads=threads,
                               batch_size=batch_size, variant=variant)
    generator.config_for(parameters, where="option")
    if input_file and batch["output"] is None and not _text_lines(input_file):
        texts += _data_prompts(batch, generator)
        if not texts:
            raise UsageError(f"nothing to generate from: {input_file} has no rows")
    if batch["output"] is not None:
        if batch["input_format"] is None and _text_lines(input_file):
            batch["input_format"] = "text"
        run_batch(batch, export_dir, [generator.prompt_field],
                  lambda rows: generator.predict(rows, **parameters), _checker(generator),
                  extra=[{generator.prompt_field: text} for text in texts])
        return
    if stream:
        for prompt in texts:
            for piece in generator.stream(prompt, **parameters):
                click.echo(piece, nl=False)
                sys.stdout.flush()
            click.echo()
        return
    outputs = generator.predict(texts, **parameters)
    for prompt, output in zip(texts, outputs):
        if as_json:
            click.echo(json.dumps({"prompt": prompt, **output}, ensure_ascii=False))
        else:
            for text in output.get("generated_texts", [output["generated_text"]]):
                click.echo(text)


BATCH_OPTIONS = ("input_file", "output", "input_format", "output_format", "fields",
                 "text_field", "id_field", "chunk_size", "shard", "on_error", "resume",
                 "overwrite", "quiet")


def _text_lines(path: str) -> bool:
    """Whether ``path`` is read as one prompt per line: stdin, .txt, or no data suffix."""
    from nlpforge.data.compressed import split_suffix
    from nlpforge.data.readers import FORMATS

    suffix, _ = split_suffix(path)
    return path == "-" or (suffix not in FORMATS and suffix != ".parquet"
                           and not os.path.isdir(path))


def _checker(generator: Any) -> Any:
    def check(row: dict, file: str, line: int) -> None:
        if generator.task is not None:
            generator.task.check_row(row, file, line, training=False)
        elif not isinstance(row.get(generator.prompt_field), str):
            raise DataError(f"missing required field '{generator.prompt_field}' (string)",
                            file, line)
    return check


def _data_prompts(batch: dict[str, Any], generator: Any) -> list[str]:
    """The prompts of a data file (JSON Lines, CSV, Parquet, …), each row checked."""
    from nlpforge.cli.batch_options import field_map
    from nlpforge.data.sources import open_source

    field = generator.prompt_field
    source = open_source(batch["input_file"], batch["input_format"],
                         field_map(batch["fields"], batch["text_field"], field), field)
    check = _checker(generator)
    prompts = []
    for record in source.records():
        if record.error is not None:
            raise record.error
        check(record.row, record.file, record.line)
        prompts.append(record.row[field])
    return prompts


def _read_prompts(path: str) -> list[str]:
    if path == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    try:
        with open(path, encoding="utf-8") as lines:
            return [line.rstrip("\n") for line in lines if line.strip()]
    except OSError as exc:
        raise UsageError(f"--input {path}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError:
        raise UsageError(f"--input {path}: not UTF-8 text")
