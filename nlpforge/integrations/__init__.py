"""Batch inference on other engines (Ray Data, Spark): the rows, checks and output rows of
``nlpforge predict --input … --output …``, with one Predictor per worker process.

``RowPredictor`` is the engine-neutral part: it loads an export dir once (refusing generative
exports, which run on another runtime), caps the threads it uses, and turns a batch of input
rows into output rows ``{id_key: id, **prediction}``, handling a bad row as ``BatchJob`` does
(``on_error``: fail, skip, or record it as an ``error`` row). An engine runs one per worker:
``nlpforge.integrations.ray`` for Ray Data's ``map_batches``, ``examples/spark_predict.py`` for
Spark's ``mapInPandas``.

A distributed run cannot number rows across its workers the way ``nlpforge predict`` does
(the ``row`` column): each row needs an id (an ``id`` column, or the column ``id_field``
names) to match its prediction. Nothing here imports torch, Ray or Spark.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from nlpforge.errors import DataError, UsageError

#: What to do with a row that is no valid request (as ``nlpforge predict --on-error``).
ON_ERROR = ("fail", "skip", "record")


def check_export(path: str | os.PathLike) -> Any:
    """The manifest of export dir ``path``; UsageError for a generative export (its runtime
    generates text and is not a ``Predictor``), ManifestError/ModelDirError for a dir that is
    no export."""
    from nlpforge.families import family
    from nlpforge.manifest import read_manifest

    manifest = read_manifest(path, kind="export")
    if family(manifest["family"]).generates:
        raise UsageError(f"{path}: a generative export ({manifest['task']['id']}, "
                         f"{manifest['family']} family); Ray and Spark batch inference run the "
                         f"other families' exports (classification, token classification, "
                         f"question answering, fill-mask, embeddings) for now: generate with "
                         f"'nlpforge generate EXPORT --input FILE' instead")
    return manifest


def cap_threads(threads: int) -> None:
    """Cap this process's thread pools below ONNX Runtime's session, unless set already: the
    Rust pool the tokenizers encode batches on (``RAYON_NUM_THREADS``) and OpenMP
    (``OMP_NUM_THREADS``). Takes effect when called before the process's first prediction."""
    for name in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def id_key(columns: list[str], id_field: str | None) -> str:
    """The id column of rows with ``columns``: ``id_field``, else ``id``; UsageError when there
    is none (a distributed run cannot number rows across workers)."""
    if id_field is not None:
        if id_field not in columns:
            raise UsageError(f"--id-field {id_field}: the input has no such column (its columns: "
                             f"{', '.join(columns)})")
        return id_field
    if "id" in columns:
        return "id"
    raise UsageError(f"the input has no 'id' column (its columns: {', '.join(columns)}); a "
                     f"distributed run cannot number rows across its workers as the local "
                     f"engine does ('row'), so each row needs an id to match its prediction: "
                     f"add an 'id' column or name one with --id-field COLUMN (id_field=)")


class RowPredictor:
    """An export dir loaded once, predicting batches of rows: ``predict_rows(rows, "id")`` or
    ``predict_table(arrow_table)``.

    ``threads``: ONNX Runtime's intra-op threads (and the tokenizers' and OpenMP's, see
    ``cap_threads``); ``batch_size``: rows per model run; ``fields``: {task field: input
    column}, e.g. ``{"text": "review"}``; ``id_field``: the id column (default ``id``);
    ``on_error``: fail (DataError naming the row's id and field), skip, or record;
    ``schema``: the output's pyarrow Schema, when known: every table ``predict_table``
    returns has it exactly (else each worker infers it from its batches)."""

    def __init__(self, export_dir: str | os.PathLike, threads: int = 1, batch_size: int = 32,
                 variant: str | None = None, fields: Mapping[str, str] | None = None,
                 id_field: str | None = None, on_error: str = "fail", device: str = "cpu",
                 schema: Any = None):
        from nlpforge.runtime.predictor import Predictor

        if on_error not in ON_ERROR:
            raise UsageError(f"--on-error {on_error}: use one of {', '.join(ON_ERROR)}")
        if threads < 1:
            raise UsageError(f"threads per worker must be at least 1, got {threads}")
        check_export(export_dir)
        cap_threads(threads)
        self.export_dir = str(Path(export_dir))
        self.predictor = Predictor.load(export_dir, device=device, threads=threads,
                                        batch_size=batch_size, variant=variant)
        self.fields = dict(fields or {})
        self.id_field = id_field
        self.on_error = on_error
        self.schema = schema
        #: Arrow types of the output columns seen so far (see ``_fill_types``).
        self._types: dict[str, Any] = {}

    @property
    def request_fields(self) -> list[str]:
        """The task's request fields, the text field first."""
        return [f.name for f in self.predictor.task.request_fields]

    def input_columns(self, columns: list[str]) -> list[str]:
        """The columns of ``columns`` a prediction reads: the id and the task's fields."""
        wanted = {id_key(columns, self.id_field),
                  *(self.fields.get(f, f) for f in self.request_fields)}
        return [c for c in columns if c in wanted]

    def predict_rows(self, rows: list[dict], key: str) -> list[dict]:
        """Output rows of input ``rows`` (columns as in the input; ``key``: the id column):
        ``{key: id, **prediction}``, in input order, less skipped rows; with on_error
        record, a bad row is ``{key: id, "error": message}`` and the others have
        ``"error": None``."""
        task = self.predictor.task
        good: list[tuple[int, dict]] = []
        out: list[dict | None] = [None] * len(rows)
        for i, row in enumerate(rows):
            ident = row.get(key)
            row = self._renamed(row)
            try:
                if ident is None:
                    raise DataError(f"a row has no '{key}' (the id column; --id-field names "
                                    f"another)")
                task.check_row(row, f"row {key}={ident!r}", None, training=False)
            except DataError as exc:
                if self.on_error == "fail":
                    raise
                if self.on_error == "record":
                    out[i] = {key: ident, "error": str(exc)}
                continue
            good.append((i, row))
        if good:
            predictions = self.predictor.predict([row for _, row in good], checked=True)
            for (i, _), prediction in zip(good, predictions):
                out[i] = {key: rows[i][key], **prediction}
                if self.on_error == "record":
                    out[i].setdefault("error", None)
        return [row for row in out if row is not None]

    def predict_table(self, table: Any) -> Any:
        """Output rows of a pyarrow Table as a pyarrow Table: the id column keeps its input
        type, nested predictions are structs and lists, ``error`` (on_error record) is
        text."""
        import pyarrow as pa

        key = id_key(table.column_names, self.id_field)
        table = table.select(self.input_columns(table.column_names))
        rows = self.predict_rows(table.to_pylist(), key)
        id_type = table.schema.field(key).type
        if not rows:
            return self.schema.empty_table() if self.schema is not None else \
                pa.table({key: pa.array([], type=id_type)})
        try:
            out = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"cannot make an Arrow table of these predictions ({exc})",
                            self.export_dir)
        index = out.column_names.index(key)
        out = out.set_column(index, key, out.column(index).cast(id_type))
        if "error" in out.column_names:
            index = out.column_names.index("error")
            out = out.set_column(index, "error", out.column(index).cast(pa.string()))
        return self._fill_types(out) if self.schema is None else self._conform(out)

    def _renamed(self, row: dict) -> dict:
        if not self.fields:
            return row
        row = dict(row)
        for field, column in self.fields.items():
            if column in row:
                row[field] = row.pop(column)
        return row

    def _conform(self, table: Any) -> Any:
        """``table`` with exactly ``self.schema``'s columns: missing ones null, types cast."""
        import pyarrow as pa

        extra = [name for name in table.column_names if name not in self.schema.names]
        if extra:
            raise UsageError(f"the predictions have columns the schema given lacks: "
                             f"{', '.join(extra)} (schema: {self.schema.names})")
        try:
            columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
                       else pa.nulls(len(table), f.type) for f in self.schema]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UsageError(f"the predictions do not fit the schema given ({exc})")
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _fill_types(self, table: Any) -> Any:
        """Make this batch's columns agree with the earlier batches of this worker: a column
        Arrow could only type as null here (all None, or lists empty in every row) takes the
        type an earlier batch gave it, and a column missing here (every row bad) is added as
        nulls. A worker's first batches cannot know what later ones will show."""
        import pyarrow as pa

        for index, field in enumerate(table.schema):
            if not _has_null(field.type):
                self._types[field.name] = field.type
            elif field.name in self._types:
                column = table.column(index).cast(self._types[field.name])
                table = table.set_column(index, field.name, column)
        for name, type_ in self._types.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(len(table), type_))
        order = [n for n in self._types if n in table.column_names]
        return table.select(order + [n for n in table.column_names if n not in order])


_SHARED: dict[str, RowPredictor] = {}


def shared_predictor(export_dir: str | os.PathLike, **options: Any) -> RowPredictor:
    """The ``RowPredictor(export_dir, **options)`` of this process, loaded on first use: where
    a worker process runs many tasks (Spark reuses its Python workers), the export is
    loaded once per process, not once per task."""
    key = repr((str(export_dir), sorted(options.items(), key=lambda kv: kv[0])))
    if key not in _SHARED:
        _SHARED[key] = RowPredictor(export_dir, **options)
    return _SHARED[key]


def _has_null(type_: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_null(type_):
        return True
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _has_null(type_.value_type)
    if pa.types.is_struct(type_):
        return any(_has_null(type_.field(i).type) for i in range(type_.num_fields))
    return False


__all__ = ["ON_ERROR", "RowPredictor", "cap_threads", "check_export", "id_key",
           "shared_predictor"]
