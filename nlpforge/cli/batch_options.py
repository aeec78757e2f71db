"""The options ``predict`` and ``generate`` share for batch runs over a file: input and output
formats, field names, chunks, shards, resuming, bad rows, progress."""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import click

from nlpforge.errors import UsageError

batch_options = [
    click.option("--input", "input_file", help="Rows to predict: .jsonl/.json/.csv/.tsv (also "
                 ".gz/.zst/.bz2/.xz), .parquet or a directory of them, a datasets directory "
                 "(save_to_disk), or '-' for stdin (text lines unless --input-format)."),
    click.option("--output", help="Write the results here (.jsonl/.csv/.tsv, compressed or "
                 "not, or .parquet: a directory of part files), one row per input with its id; "
                 "'-': JSON Lines on stdout. Without it, predictions go to stdout."),
    click.option("--input-format", type=click.Choice(
        ["jsonl", "json", "csv", "tsv", "parquet", "arrow", "text"]),
        help="Read --input as this format, whatever its name."),
    click.option("--output-format", type=click.Choice(["jsonl", "csv", "tsv", "parquet"]),
                 help="Write --output as this format, whatever its name."),
    click.option("--field", "fields", multiple=True, metavar="FIELD=COLUMN",
                 help="Read the task's FIELD from the input's COLUMN; repeatable."),
    click.option("--text-field", help="The input column holding the text (the task's first "
                 "field); --field FIELD=COLUMN for the others."),
    click.option("--id-field", help="The input column with each row's id, copied to the "
                 "output (default: 'id' when the rows have one, else the row number as 'row')."),
    click.option("--chunk-size", type=int, default=8192, show_default=True,
                 help="Rows read, predicted and written at a time (memory grows with it)."),
    click.option("--shard", metavar="I/N", help="Take only the I-th of N disjoint shards of the "
                 "rows (0 <= I < N), e.g. 0/4 … 3/4 on four machines."),
    click.option("--on-error", type=click.Choice(["fail", "skip", "record"]), default="fail",
                 show_default=True, help="A bad row: stop naming file:line and field, skip it "
                 "(counted), or write it as an 'error' row."),
    click.option("--resume", is_flag=True, help="Continue an --output whose run was stopped, "
                 "after its last complete chunk."),
    click.option("--overwrite", is_flag=True, help="Replace an existing --output."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr."),
]


def with_batch_options(func: Callable) -> Callable:
    for option in reversed(batch_options):
        func = option(func)
    return func


def parse_shard(value: str | None) -> tuple[int, int]:
    if value is None:
        return (0, 1)
    index, sep, count = value.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        raise UsageError(f"--shard {value}: expected I/N, e.g. 0/4") from None
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard {value}: expected I/N with 0 <= I < N, e.g. 0/4")
    return shard


def field_map(fields: Sequence[str], text_field: str | None, first: str) -> dict[str, str]:
    from nlpforge.data.sources import parse_fields

    mapping = parse_fields(fields)
    if text_field:
        if first in mapping and mapping[first] != text_field:
            raise UsageError(f"--text-field {text_field} and --field {first}="
                             f"{mapping[first]} name two columns for '{first}'")
        mapping[first] = text_field
    return mapping


def run_batch(options: dict[str, Any], model: str, columns: Sequence[str],
              predict: Callable[[list[dict]], list[dict]],
              check: Callable[[dict, str, int], None],
              extra: Sequence[dict] = ()) -> None:
    """Stream ``--input`` (after the ``extra`` rows given as arguments) through ``predict``
    into ``--output`` (or stdout), as the options say; a summary on stderr. ``columns``: the
    fields a row may use, the first the one a text line fills."""
    from nlpforge.batch.job import BatchJob
    from nlpforge.data.sinks import output_format
    from nlpforge.data.sources import open_source

    output = options["output"]
    fields = field_map(options["fields"], options["text_field"], columns[0])
    source = open_source(options["input_file"], options["input_format"], fields,
                         text_field=columns[0]) if options["input_file"] else None
    if extra:
        if output is not None:
            raise UsageError("--output writes the rows of --input; give the texts in the file "
                             "instead of as arguments")
        source = _Prepended(extra, source)
    if source is None:
        raise UsageError("nothing to predict: give TEXT arguments or --input FILE")
    if hasattr(source, "needs"):  # Parquet and Arrow: decode only the columns used
        source.needs([*columns, options["id_field"] or "id"])
    quiet = options["quiet"]
    job = BatchJob(source, output or "-", output_format(output or "-", options["output_format"]),
                   predict, check, model, chunk_size=options["chunk_size"],
                   shard=parse_shard(options["shard"]), on_error=options["on_error"],
                   id_field=options["id_field"], resume=options["resume"],
                   overwrite=options["overwrite"],
                   progress=not quiet and output not in (None, "-") and sys.stderr.isatty(),
                   with_ids=output is not None)
    if job.output == "-" and (options["resume"] or options["overwrite"]):
        raise UsageError("--resume and --overwrite apply to an --output file or directory")
    result = job.run()
    if not quiet and output not in (None, "-"):
        for line in result.messages or [result.summary()]:
            click.echo(line, err=True)
    elif result.skipped and not quiet:
        click.echo(f"{result.skipped} bad rows skipped", err=True)


class _Prepended:
    """Rows given as arguments, then (if any) a source's records."""

    def __init__(self, rows: Sequence[dict], source: Any):
        self.rows, self.source = list(rows), source
        self.name = "arguments" if source is None else source.name
        self.files = [] if source is None else source.files
        self.total = None

    def records(self):
        from nlpforge.data.sources import Record

        for i, row in enumerate(self.rows):
            yield Record(i, "arguments", i + 1, row=row)
        if self.source is not None:
            for record in self.source.records():
                record.index += len(self.rows)
                yield record

    def fingerprint(self) -> dict[str, Any]:
        return {"input": self.name}
