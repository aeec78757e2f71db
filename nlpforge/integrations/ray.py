"""Batch inference on Ray Data: a pool of actors, each with one Predictor of an export dir.

    import ray
    from nlpforge.integrations.ray import predict_dataset, write_jsonl

    ds = ray.data.read_parquet("s3://bucket/reviews/")
    scores = predict_dataset(ds, "/shared/models/sentiment", workers=8, threads_per_worker=2)
    scores.write_parquet("s3://bucket/scores/")        # or write_jsonl(scores, "…")

Each output row is ``{id: …, **prediction}`` as ``nlpforge predict --output`` writes it, with
nested predictions as Arrow structs and lists. Rows need an id column (``id``, or the one
``id_field`` names): Ray cannot number rows across workers. The export dir is opened by every
worker: it must be at the same path on every node (shared storage). Each actor reserves
``threads_per_worker`` CPUs and runs that many ONNX Runtime threads; Ray Data's own read and
write tasks need a CPU beside them. The ``nlpforge predict --engine ray`` command is built on
this module (``nlpforge.cli.ray_engine``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from typing import Any, Mapping

from nlpforge.errors import (DataError, ManifestError, ModelDirError, NlpforgeError,
                             UsageError)
from nlpforge.integrations import RowPredictor, check_export, id_key

#: Rows handed to one actor call by default (the Predictor sorts them by length within it).
ROWS_PER_CALL = 1024


def require_ray() -> Any:
    """The ``ray`` module with ``ray.data``; UsageError saying what to install when absent."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"Ray Data is not installed ({exc}): pip install 'nlpforge[ray]'")
    return ray


class NlpforgePredictor(RowPredictor):
    """A callable class for ``Dataset.map_batches(..., batch_format="pyarrow")``: each actor
    loads the export once (``RowPredictor``'s arguments through ``fn_constructor_kwargs``) and
    maps an Arrow batch of input rows to an Arrow table of output rows."""

    def __call__(self, batch: Any) -> Any:
        return self.predict_table(batch)


def predict_dataset(ds: Any, export_dir: str | os.PathLike, *, workers: int = 2,
                    threads_per_worker: int = 1, batch_size: int = 32,
                    rows_per_call: int = ROWS_PER_CALL, variant: str | None = None,
                    fields: Mapping[str, str] | None = None, id_field: str | None = None,
                    on_error: str = "fail", device: str = "cpu", num_gpus: float = 0,
                    schema: Any = None) -> Any:
    """``ds`` (a ``ray.data.Dataset`` of input rows) mapped to output rows by ``workers``
    actors of ``threads_per_worker`` CPUs each; lazy, like any Dataset.

    ``batch_size``: rows per model run; ``rows_per_call``: rows per actor call (Ray's
    ``map_batches`` batch size); ``fields``: {task field: column}; ``id_field``: the id column
    (default ``id``; UsageError when the input has neither); ``on_error``: fail, skip or
    record a row that is no valid request; ``device``/``num_gpus``: the Predictor's device
    and the GPUs each actor reserves; ``schema``: the output's pyarrow Schema, when known
    (every block then has it; else each actor infers it from its batches, and a block of
    bad rows only, met before the actor's first prediction, lacks the prediction columns)."""
    ray = require_ray()
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker),
                        ("batch_size", batch_size), ("rows_per_call", rows_per_call)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    check_export(export_dir)
    input_schema = ds.schema()
    if input_schema is not None:
        id_key(list(input_schema.names), id_field)
    warning = cpu_shortfall(workers, threads_per_worker)
    if warning:
        warnings.warn(warning, stacklevel=2)
    if "target_num_rows_per_block" in inspect.signature(ds.repartition).parameters:
        # Blocks of at most one call's rows, so that one big block (a Parquet row group, a
        # small file) is shared among the actors instead of going to one; streaming, no
        # shuffle (Ray 2.60 marks it experimental; older Ray lacks it).
        ds = ds.repartition(target_num_rows_per_block=rows_per_call)
    return ds.map_batches(
        NlpforgePredictor, batch_format="pyarrow", batch_size=rows_per_call,
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads_per_worker,
        num_gpus=num_gpus or None,
        fn_constructor_kwargs={"export_dir": str(export_dir), "threads": threads_per_worker,
                               "batch_size": batch_size, "variant": variant,
                               "fields": dict(fields or {}), "id_field": id_field,
                               "on_error": on_error, "device": device, "schema": schema})


def cpu_shortfall(workers: int, threads_per_worker: int) -> str | None:
    """A warning when the connected cluster has too few CPUs for ``workers`` actors of
    ``threads_per_worker`` CPUs plus one for Ray Data's read and write tasks (without it the
    run waits for a CPU that never frees, unless an autoscaler adds one); None otherwise or
    when Ray is not started yet."""
    import ray

    if not ray.is_initialized():
        return None
    cpus = ray.cluster_resources().get("CPU", 0)
    need = workers * threads_per_worker + 1
    if cpus >= need:
        return None
    return (f"the Ray cluster has {cpus:g} CPUs now; {workers} workers x {threads_per_worker} "
            f"threads reserve {workers * threads_per_worker}, and Ray Data's read and write "
            f"tasks need one more: the run waits until the cluster has {need} (an autoscaling "
            f"cluster adds nodes; otherwise use fewer workers or threads)")


def write_jsonl(ds: Any, path: str, **options: Any) -> None:
    """Write ``ds`` as JSON Lines into directory ``path`` (``.jsonl`` files, one per write
    task), each row as ``nlpforge predict --output x.jsonl`` writes it: ``json.dumps``, so every
    digit of a score and ids as they are (Ray's ``write_json`` goes through pandas, which keeps
    10 digits of a float and makes integer ids floats in a block with a missing id).
    ``options``: Ray's file datasink options, e.g. ``mode=ray.data.SaveMode.OVERWRITE``."""
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonLinesDatasink(BlockBasedFileDatasink):
        def write_block_to_file(self, block: Any, file: Any) -> None:
            rows = block.to_arrow().to_pylist()
            file.write("".join(json.dumps(row, ensure_ascii=False) + "\n"
                               for row in rows).encode("utf-8"))

    ds.write_datasink(JsonLinesDatasink(path, file_format="jsonl", **options))


#: The classes an nlpforge error raised on a worker is re-raised as.
_ERRORS = {cls.__name__: cls for cls in (DataError, UsageError, ManifestError, ModelDirError,
                                          NlpforgeError)}
_ERROR_LINE = re.compile(r"^nlpforge\.errors\.(\w+): (.*)$", re.MULTILINE)


def nlpforge_error(exc: BaseException) -> NlpforgeError | None:
    """The nlpforge error a worker raised, out of the Ray exception that reports it (Ray
    passes on its type and message as text only), or None when it was none."""
    found = _ERROR_LINE.findall(str(exc))
    if not found:
        return None
    name, message = found[-1]
    return _ERRORS.get(name, NlpforgeError)(message)


__all__ = ["NlpforgePredictor", "ROWS_PER_CALL", "cpu_shortfall", "nlpforge_error",
           "predict_dataset", "require_ray", "write_jsonl"]
