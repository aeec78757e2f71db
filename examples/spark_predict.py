"""Batch inference on Spark with an nlpforge export: ``mapInPandas`` over a DataFrame, one
Predictor per Python worker process, its threads capped to the task's CPUs.

    spark-submit --conf spark.task.cpus=2 examples/spark_predict.py \\
        /shared/models/sentiment reviews.parquet scores.parquet
    python examples/spark_predict.py EXPORT in.jsonl out.parquet --master 'local[4]'

Output rows are ``nlpforge predict``'s: ``{id, **prediction}`` (nested predictions as Spark
structs and arrays); rows need an id column (``id`` or ``--id-field``), as Spark cannot number
rows across partitions either.

Threads. Spark runs ``spark.executor.cores / spark.task.cpus`` tasks at once on an executor,
each in its own Python worker process. Each process loads the export once
(``nlpforge.integrations.shared_predictor``; Spark reuses Python workers between tasks, as
``spark.python.worker.reuse`` is true by default) and runs ONNX Runtime with
``TaskContext.cpus()`` threads, i.e. ``spark.task.cpus``; the tokenizers' and OpenMP's pools
get the same cap (``cap_threads``). So an executor's cores are its task slots x threads, with
no oversubscription: raise ``spark.task.cpus`` for fewer, faster model copies, lower it for
more copies (more memory, one model per slot).

The export dir is opened by every Python worker: put it on storage each executor sees at the
same path (a shared file system), or ship it with ``--archives``. The output schema is taken
from a prediction of the first rows on the driver (it needs one valid row among them); pass
``schema=`` to ``predict_dataframe`` where the first rows do not show every column's type
(token classification with no entity in them).
"""

from __future__ import annotations

import argparse
from typing import Any, Iterator, Mapping


def output_schema(df: Any, export_dir: str, fields: Mapping[str, str] | None = None,
                  id_field: str | None = None, on_error: str = "fail",
                  probe_rows: int = 16) -> Any:
    """The Arrow schema of the output rows, from a prediction of ``df``'s first rows here."""
    import pyarrow as pa

    from nlpforge.integrations import shared_predictor

    rows = shared_predictor(export_dir, threads=1, fields=dict(fields or {}),
                            id_field=id_field, on_error=on_error)
    first = pa.Table.from_pandas(df.limit(probe_rows).toPandas(), preserve_index=False)
    return rows.predict_table(first).schema


def predict_dataframe(df: Any, export_dir: str, *, batch_size: int = 32,
                      fields: Mapping[str, str] | None = None, id_field: str | None = None,
                      on_error: str = "fail", schema: Any = None) -> Any:
    """``df``'s rows mapped to output rows by ``mapInPandas`` (lazy, like any DataFrame).
    ``schema``: the output's pyarrow Schema (default: ``output_schema``)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    fields = dict(fields or {})
    if schema is None:
        schema = output_schema(df, export_dir, fields, id_field, on_error)

    def predict(frames: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        from nlpforge.integrations import shared_predictor

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 1
        rows = shared_predictor(export_dir, threads=threads, batch_size=batch_size,
                                fields=fields, id_field=id_field, on_error=on_error,
                                schema=schema)
        for frame in frames:
            batch = pa.Table.from_pandas(frame, preserve_index=False)
            yield rows.predict_table(batch).to_pandas()

    return df.mapInPandas(predict, from_arrow_schema(schema))


def _read(spark: Any, path: str) -> Any:
    if path.endswith((".jsonl", ".json", ".jsonl.gz")):
        return spark.read.json(path)
    if path.endswith(".csv"):
        return spark.read.option("header", True).csv(path)
    return spark.read.parquet(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("input", help=".parquet (file or directory), .jsonl or .csv")
    parser.add_argument("output", help="a directory of Parquet files (.jsonl: JSON files)")
    parser.add_argument("--id-field")
    parser.add_argument("--text-field", help="the column holding the text")
    parser.add_argument("--on-error", choices=["fail", "skip", "record"], default="fail")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--master", help="e.g. local[4] (default: spark-submit's)")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("nlpforge-predict")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    try:
        from nlpforge.integrations import check_export
        from nlpforge.manifest import task_from_manifest

        manifest = check_export(args.export_dir)
        text = task_from_manifest(manifest, args.export_dir).request_fields[0].name
        fields = {text: args.text_field} if args.text_field else {}
        scores = predict_dataframe(_read(spark, args.input), args.export_dir,
                                   batch_size=args.batch_size, fields=fields,
                                   id_field=args.id_field, on_error=args.on_error)
        writer = scores.write.mode("errorifexists")
        if args.output.endswith(".jsonl"):
            writer.json(args.output)
        else:
            writer.parquet(args.output)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
