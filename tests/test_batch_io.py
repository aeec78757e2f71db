"""Inputs and outputs of batch inference: every format read as the same rows, compressed or
not; each output format written chunk by chunk and read back whole; errors naming the file."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest

from nlpforge.data import read_dataset
from nlpforge.data.sinks import open_sink, output_format
from nlpforge.data.sources import open_source, parse_fields
from nlpforge.errors import DataError, UsageError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")

ROWS = [{"id": f"r{i}", "text": f"review {i}, with a comma", "stars": i % 5} for i in range(25)]
CODECS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
          ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv(rows, sep=",") -> bytes:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(rows[0].keys())
    writer.writerows([r.values() for r in rows])
    return out.getvalue().encode()


def _as_text(rows):
    return [{k: str(v) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize("suffix", ["", *CODECS])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
def test_text_formats_read_the_same_rows_compressed_or_not(tmp_path, fmt, suffix):
    body = {"jsonl": _jsonl(ROWS), "json": json.dumps(ROWS, indent=1).encode(),
            "csv": _csv(ROWS), "tsv": _csv(ROWS, "\t")}[fmt]
    path = tmp_path / f"data.{fmt}{suffix}"
    path.write_bytes(CODECS[suffix](body) if suffix else body)
    rows = read_dataset(path).rows
    assert rows == (ROWS if fmt.startswith("json") else _as_text(ROWS))


def test_a_cut_short_compressed_file_names_itself(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(ROWS * 40))[:-50])
    with pytest.raises(DataError, match=r"data.jsonl.gz.*compressed data is corrupt or cut"):
        read_dataset(path)


def test_parquet_files_dirs_and_datasets_dirs_read_the_same_rows(tmp_path):
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=7)
    parts = tmp_path / "parts"
    (parts / "b").mkdir(parents=True)
    pq.write_table(table.slice(0, 10), parts / "a.parquet")
    pq.write_table(table.slice(10), parts / "b" / "c.parquet")
    (parts / "_SUCCESS.parquet").write_bytes(b"not read: a marker")
    assert read_dataset(tmp_path / "one.parquet").rows == ROWS
    assert read_dataset(parts).rows == ROWS
    source = open_source(str(parts))
    assert source.total == 25 and [r.index for r in source.records()] == list(range(25))

    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(saved))
    assert read_dataset(saved).rows == ROWS
    assert open_source(str(saved)).total == 25
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dict"))
    with pytest.raises(DataError, match=r"DatasetDict; give one split's directory .*dict/train"):
        open_source(str(tmp_path / "dict"))


def test_columns_are_renamed_and_only_the_needed_ones_decoded(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "in.parquet")
    source = open_source(str(tmp_path / "in.parquet"), fields=parse_fields(["review=text"]))
    source.needs(["review", "id"])
    first = next(source.records()).row
    assert first == {"id": "r0", "review": "review 0, with a comma"}  # no 'stars' decoded
    with pytest.raises(UsageError, match="expected FIELD=COLUMN"):
        parse_fields(["review"])


def test_bad_rows_come_as_errors_in_their_place(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n{oops\n[1]\n{"text": "b"}\n')
    records = list(open_source(str(path)).records())
    assert [r.row for r in records] == [{"text": "a"}, None, None, {"text": "b"}]
    assert "in.jsonl:2: not valid JSON" in str(records[1].error)
    assert "in.jsonl:3: expected a JSON object" in str(records[2].error)
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("text,label\na,1\nb\nc,2\n")
    errors = [str(r.error) for r in open_source(str(csv_path)).records() if r.error]
    assert errors == [f"{csv_path}:3: 1 columns, the header has 2"]
    with pytest.raises(DataError, match=r"in.csv:3: 1 columns"):  # read_dataset is strict
        read_dataset(csv_path)


def test_unknown_inputs_and_outputs_are_named(tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match=r"x.xlsx: unknown file type '.xlsx'"):
        open_source(str(tmp_path / "x.xlsx"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is a directory with no .parquet files"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        open_source(str(tmp_path / "bad.parquet"))
    with pytest.raises(UsageError, match="--output out.xlsx: unknown file type"):
        output_format("out.xlsx")
    assert output_format("a.csv.zst") == "csv" and output_format("d.parquet") == "parquet"


PREDICTIONS = [{"id": i, "label": "pos", "scores": {"pos": 0.75, "neg": 0.25},
                "entities": [{"word": "x", "start": 0}] if i % 2 else []} for i in range(6)]


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst", "out.csv", "out.tsv.gz"])
def test_file_outputs_append_whole_chunks_and_resume_cuts_a_torn_tail(tmp_path, name):
    path = tmp_path / name
    fmt = output_format(str(path))
    sink = open_sink(str(path), fmt)
    sink.write(PREDICTIONS[:3])
    committed = sink.position()
    sink.write(PREDICTIONS[3:5])
    sink.finish()
    with open(path, "ab") as torn:  # a crash while writing the chunk after
        torn.write(b'{"id": 99, "lab')
    sink = open_sink(str(path), fmt, resume=committed)
    sink.write(PREDICTIONS[3:])
    sink.finish()
    got = read_dataset(path).rows
    assert [str(r["id"]) for r in got] == [str(p["id"]) for p in PREDICTIONS]
    if fmt == "jsonl":
        assert got == PREDICTIONS
    else:  # nested values are JSON in a cell
        assert json.loads(got[1]["scores"]) == {"pos": 0.75, "neg": 0.25}


def test_parquet_output_is_parts_with_one_schema_even_when_a_type_comes_late(tmp_path):
    out = tmp_path / "out.parquet"
    sink = open_sink(str(out), "parquet")
    sink.write([{"id": 0, "entities": [], "error": None}])  # list<null>, null
    committed = sink.position()
    sink.write([{"id": 1, "entities": [{"word": "x", "start": 0}], "error": "bad"}])
    (out / ".part-000002.parquet.tmp").write_bytes(b"torn")  # a crash mid-part
    sink = open_sink(str(out), "parquet", resume=committed)  # drops the uncommitted part 1
    assert sorted(p.name for p in out.iterdir()) == ["part-000000.parquet"]
    sink.write([{"id": 1, "entities": [{"word": "x", "start": 0}], "error": "bad"}])
    sink.finish()
    schemas = {str(pq.read_schema(p)) for p in out.glob("part-*.parquet")}
    assert len(schemas) == 1
    table = pq.read_table(out)
    assert table.to_pylist() == [{"id": 0, "entities": [], "error": None},
                                 {"id": 1, "entities": [{"word": "x", "start": 0}],
                                  "error": "bad"}]
    with pytest.raises(DataError, match="ids that are numbers in some rows and text"):
        sink.write([{"id": 1}, {"id": "a"}])
