"""``nlpforge predict --engine ray``: the rows of ``--input`` predicted by a pool of Ray actors
and written by Ray's writers (``nlpforge.integrations.ray``).

Ray reads the input with its own readers (Parquet files or directories, JSON Lines, CSV and
TSV files or directories of them, plain or .gz/.zst) and writes ``--output`` as a directory
of files: ``.parquet`` → Parquet files, ``.jsonl`` → JSON Lines files. Rows need an id column;
``--resume`` and ``--shard`` have no meaning here (Ray splits the rows and writes the output
in one go). Without ``--ray-address`` (or ``$RAY_ADDRESS``) a Ray is started on this machine
for the run and stopped after it.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from nlpforge.errors import DataError, UsageError

ray_options = [
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True, help="local: this process (streamed, resumable); ray: "
                 "the actors of a Ray cluster (needs an id column; --output is a directory "
                 "of files)."),
    click.option("--ray-address", metavar="ADDR", help="--engine ray: the cluster to run on "
                 "(e.g. auto, or ray://HEAD:10001); default: $RAY_ADDRESS, else a Ray started "
                 "on this machine for the run."),
    click.option("--workers", type=int, help="--engine ray: actors, each with its own copy "
                 "of the model (default 2)."),
    click.option("--threads-per-worker", type=int, help="--engine ray: CPUs each actor "
                 "reserves and ONNX Runtime threads it runs (default 1)."),
]
_RAY_ONLY = ("ray_address", "workers", "threads_per_worker")
#: Input formats Ray reads (as ``--input-format`` names them) and codecs it decompresses.
_READ = ("parquet", "jsonl", "csv", "tsv")
_CODECS = ("gzip", "zstd")


def with_ray_options(func: Callable) -> Callable:
    for option in reversed(ray_options):
        func = option(func)
    return func


@dataclass
class RayEngine:
    """The ``--engine ray`` settings."""

    address: str | None
    workers: int
    threads: int


def engine_options(options: dict[str, Any]) -> RayEngine | None:
    """Take the engine options out of ``options``: the Ray settings for ``--engine ray``, None
    for ``--engine local`` (UsageError when a Ray-only option is given with it)."""
    engine = options.pop("engine")
    values = {name: options.pop(name) for name in _RAY_ONLY}
    if engine == "ray":
        engine = RayEngine(values["ray_address"],
                           2 if values["workers"] is None else values["workers"],
                           1 if values["threads_per_worker"] is None else
                           values["threads_per_worker"])
        for flag, value in (("--workers", engine.workers),
                            ("--threads-per-worker", engine.threads)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")
        return engine
    given = [f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} apply to --engine ray")
    return None


def run_ray(engine: RayEngine, model_dir: str, texts: Sequence[str], options: dict[str, Any],
            batch_size: int, device: str, threads: int | None, variant: str | None) -> None:
    """Predict every row of ``--input`` into ``--output`` on Ray, as the options say."""
    from nlpforge.cli.batch_options import field_map
    from nlpforge.data.sinks import output_format
    from nlpforge.integrations import check_export
    from nlpforge.manifest import task_from_manifest

    _refuse(texts, options, threads)
    manifest = check_export(model_dir)
    task = task_from_manifest(manifest, model_dir)
    first = task.request_fields[0].name
    fields = field_map(options["fields"], options["text_field"], first)
    read_format = _input_format(options["input_file"], options["input_format"])
    output = options["output"]
    out_format = output_format(output, options["output_format"])
    _check_output(output, out_format, options["overwrite"])

    from nlpforge.integrations.ray import (nlpforge_error, predict_dataset, require_ray,
                                           write_jsonl)

    ray = require_ray()
    quiet = options["quiet"]
    started = time.monotonic()
    ours = _start(ray, engine)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = not quiet
        if quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = _read(ray, _location(options["input_file"]), read_format,
                   [*(fields.get(f.name, f.name) for f in task.request_fields),
                    options["id_field"] or "id"])
        with warnings.catch_warnings(record=True) as caught:  # too few CPUs: said, not raised
            warnings.simplefilter("always")
            ds = predict_dataset(ds, _location(model_dir), workers=engine.workers,
                                 threads_per_worker=engine.threads, batch_size=batch_size,
                                 rows_per_call=options["chunk_size"], variant=variant,
                                 fields=fields, id_field=options["id_field"],
                                 on_error=options["on_error"],
                                 # Ray gives each actor its GPU (CUDA_VISIBLE_DEVICES)
                                 device="cuda" if device.startswith("cuda") else "cpu",
                                 num_gpus=1 if device.startswith("cuda") else 0)
        for warning in caught:
            click.echo(f"warning: {warning.message}", err=True)
        mode = ray.data.SaveMode.OVERWRITE if options["overwrite"] else ray.data.SaveMode.ERROR
        target = _location(output)
        if out_format == "parquet":
            ds.write_parquet(target, mode=mode)
        else:
            write_jsonl(ds, target, mode=mode)
    except Exception as exc:
        error = nlpforge_error(exc)
        if error is None:
            raise
        raise error from None
    finally:
        if ours:
            ray.shutdown()
    if not quiet:
        click.echo(_summary(output, out_format, engine, time.monotonic() - started), err=True)


def _refuse(texts: Sequence[str], options: dict[str, Any], threads: int | None) -> None:
    if texts:
        raise UsageError("--engine ray predicts the rows of --input into --output; give the "
                         "texts in a file")
    if options["resume"]:
        raise UsageError("--resume continues a local run; --engine ray writes its output in "
                         "one go through Ray's writers and cannot continue a stopped run: run "
                         "it again with --overwrite, or use --engine local --resume")
    if options["shard"]:
        raise UsageError("--shard splits a local run across machines; with --engine ray the "
                         "cluster splits the rows among its workers: leave --shard out")
    if threads is not None:
        raise UsageError("--threads sets a local run's threads; with --engine ray use "
                         "--threads-per-worker")
    if not options["input_file"] or not options["output"]:
        raise UsageError("--engine ray needs --input and --output")
    if options["input_file"] == "-" or options["output"] == "-":
        raise UsageError("--engine ray reads and writes files and directories, not standard "
                         "input or output ('-')")


def _remote(spec: str) -> bool:
    return "://" in spec


def _location(spec: str) -> str:
    """An absolute path (Ray's workers do not share this process's directory), or a URI."""
    return spec if _remote(spec) else str(Path(spec).absolute())


def _input_format(spec: str, format: str | None) -> str:
    """The format of input ``spec`` for Ray's readers (which decompress by the file name);
    UsageError for what they do not read."""
    from nlpforge.data.compressed import split_suffix
    from nlpforge.data.readers import FORMATS

    path = Path(spec)
    if not _remote(spec) and not path.exists():
        raise DataError("no such file or directory", spec)
    suffix, codec = split_suffix(spec)
    if format is None:
        if not _remote(spec) and path.is_dir():
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                raise UsageError(f"--input {spec}: a datasets directory; --engine ray reads "
                                 f"Parquet, JSON Lines and CSV: write it as Parquet "
                                 f"(Dataset.to_parquet) or use --engine local")
            if not any(path.rglob("*.parquet")):
                raise UsageError(f"--input {spec}: a directory with no .parquet files; give "
                                 f"--input-format jsonl, csv or tsv for a directory of those")
            format = "parquet"
        else:
            format = "parquet" if suffix == ".parquet" else FORMATS.get(suffix)
    if format not in _READ:
        what = f"format {format}" if format else f"file type '{suffix or spec}'"
        raise UsageError(f"--input {spec}: --engine ray reads Parquet, JSON Lines (.jsonl), CSV "
                         f"and TSV, not {what}" + ("; write JSON as JSON Lines, one object a "
                                                   "line" if format == "json" else ""))
    if codec is not None and codec not in _CODECS:
        raise UsageError(f"--input {spec}: Ray's readers do not decompress {codec} here; use "
                         f".gz or .zst, or no compression")
    return format


def _check_output(spec: str, format: str, overwrite: bool) -> None:
    from nlpforge.data.compressed import split_suffix

    if format not in ("parquet", "jsonl"):
        raise UsageError(f"--output {spec}: --engine ray writes .parquet or .jsonl (a directory "
                         f"of files), not {format}")
    if split_suffix(spec)[1] is not None:
        raise UsageError(f"--output {spec}: --engine ray writes uncompressed files (Parquet "
                         f"compresses its columns): leave out the compression suffix")
    if _remote(spec) or not Path(spec).exists():
        return
    if not overwrite:
        raise UsageError(f"--output {spec} already exists; pass --overwrite to replace it")
    if not Path(spec).is_dir():
        Path(spec).unlink()  # Ray writes a directory; SaveMode.OVERWRITE replaces directories


def _start(ray: Any, engine: RayEngine) -> bool:
    """Connect to the cluster, or start a Ray here; whether this run started (so must stop)
    it. A Ray started here has a CPU for each of the actors' threads and one for Ray Data's
    read and write tasks, at least as many as the machine's cores."""
    if ray.is_initialized():
        return False
    address = engine.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # "local": a new Ray even where 'ray start' runs one (ray.init() would join it)
        need = engine.workers * engine.threads + 1
        try:
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, need))
        except ValueError as exc:
            if "existing cluster" not in str(exc):
                raise
            raise UsageError("a Ray cluster already runs on this machine (ray start?) and a "
                             "second one cannot start beside it: pass --ray-address auto to "
                             "run on it, or stop it (ray stop)") from None
    return True


def _read(ray: Any, spec: str, format: str, wanted: list[str]) -> Any:
    """``spec`` as a Ray Dataset; Parquet decodes only the ``wanted`` columns, CSV and TSV
    columns are text (as the local engine reads them)."""
    if format == "parquet":
        ds = ray.data.read_parquet(spec)
        schema = ds.schema()
        if schema is not None:
            present = [c for c in schema.names if c in wanted]
            if present:
                ds = ds.select_columns(present)
        return ds
    if format == "jsonl":
        return ray.data.read_json(spec)
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="," if format == "csv" else "\t")
    columns = None if _remote(spec) else _csv_columns(Path(spec), parse, format)
    convert = pacsv.ConvertOptions(column_types={c: "string" for c in columns or []})
    return ray.data.read_csv(spec, parse_options=parse, convert_options=convert)


def _csv_columns(path: Path, parse: Any, format: str) -> list[str]:
    """The header of a CSV/TSV file (the first one of a directory)."""
    import pyarrow.csv as pacsv

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and f".{format}" in p.suffixes)
        if not files:
            raise DataError(f"a directory with no .{format} files", str(path))
        path = files[0]
    try:
        with pacsv.open_csv(str(path), parse_options=parse) as reader:
            return list(reader.schema.names)
    except Exception as exc:  # pyarrow raises several kinds for an unreadable file
        raise DataError(f"cannot read the {format.upper()} header ({exc})", str(path))


def _summary(output: str, format: str, engine: RayEngine, seconds: float) -> str:
    where = (f"{engine.workers} workers x {engine.threads} threads, "
             f"{seconds:.1f} s")
    if _remote(output):
        return f"written to {output} ({where})"
    files = sorted(Path(output).glob(f"*.{format}"))
    if format == "parquet":
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    else:
        rows = 0
        for file in files:
            with open(file, "rb") as stream:
                rows += sum(1 for _ in stream)
    return f"{rows} rows in {output} ({len(files)} {format} files written by Ray; {where})"
