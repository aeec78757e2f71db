"""predict --engine ray and nlpforge.integrations.ray on a local Ray: the same rows as the local
engine's, bad rows handled as it handles them, and the options that make no sense refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_jsonl

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nlpforge[ray]')")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = ["a fine film", "an awful film", "wonderful, moving, funny", "dull and far too long",
         "Ein großartiger Film — très bien", "ok", "the plot made no sense at all " * 12,
         "I laughed, I cried", "never again", "a masterpiece of its kind", "meh", "😀 great"]
ROWS = [{"id": 100 + i, "text": text} for i, text in enumerate(TEXTS * 2)]


@pytest.fixture(scope="module")
def local_ray():
    """A Ray on this machine for the module. Three logical CPUs: one for each of the two
    workers and one for Ray Data's read and write tasks (with every CPU held by the actors,
    the Parquet reader's file listing waits forever)."""
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def nlpforge(*args: str):
    """Run the CLI in this process, so that --engine ray uses the module's Ray."""
    from nlpforge.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-inputs")
    parquet = root / "reviews.parquet"
    parquet.mkdir()
    table = pa.Table.from_pylist([{**row, "unused": "x"} for row in ROWS])
    pq.write_table(table.slice(0, 10), parquet / "part-0.parquet")
    pq.write_table(table.slice(10), parquet / "part-1.parquet")
    return {"jsonl": write_jsonl(root / "reviews.jsonl", ROWS), "parquet": parquet,
            "root": root}


@pytest.fixture(scope="module")
def reference(exported, inputs) -> dict[str, object]:
    """The local engine's output rows by id, and its Parquet output's schema."""
    root = inputs["root"]
    result = nlpforge("predict", str(exported), "--input", str(inputs["jsonl"]), "--output",
                      str(root / "local.jsonl"), "-q")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (root / "local.jsonl").read_text().splitlines()]
    result = nlpforge("predict", str(exported), "--input", str(inputs["parquet"]), "--output",
                      str(root / "local.parquet"), "-q")
    assert result.exit_code == 0, result.output
    return {"rows": {row["id"]: row for row in rows},
            "schema": pq.read_table(root / "local.parquet").schema}


def assert_same(rows: list[dict], reference: dict[int, dict]) -> None:
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows) == len(reference)
    assert set(by_id) == set(reference)
    for ident, expected in reference.items():
        got = by_id[ident]
        assert got["label"] == expected["label"], ident
        assert got["score"] == pytest.approx(expected["score"], abs=1e-6), ident
        assert set(got["scores"]) == set(expected["scores"])
        for label, score in expected["scores"].items():
            assert got["scores"][label] == pytest.approx(score, abs=1e-6), (ident, label)


def read_jsonl_dir(path: Path) -> list[dict]:
    files = sorted(path.glob("*.jsonl"))
    assert files, f"no .jsonl files in {path}"
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_ray_engine_jsonl_matches_the_local_engine(local_ray, exported, inputs, reference,
                                                    tmp_path):
    out = tmp_path / "scores.jsonl"
    result = nlpforge("predict", str(exported), "--input", str(inputs["jsonl"]), "--output",
                      str(out), "--engine", "ray", "--workers", "2", "--threads-per-worker", "1",
                      "--chunk-size", "5")
    assert result.exit_code == 0, result.output
    assert out.is_dir()  # Ray writes a directory of files
    assert_same(read_jsonl_dir(out), reference["rows"])
    assert f"{len(ROWS)} rows in {out}" in result.stderr
    # An existing output is refused, then replaced with --overwrite.
    again = ["predict", str(exported), "--input", str(inputs["jsonl"]), "--output", str(out),
             "--engine", "ray", "-q"]
    result = nlpforge(*again)
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.stderr
    assert nlpforge(*again, "--overwrite").exit_code == 0
    assert_same(read_jsonl_dir(out), reference["rows"])


def test_ray_engine_parquet_matches_the_local_engine(local_ray, exported, inputs, reference,
                                                      tmp_path):
    out = tmp_path / "scores.parquet"
    result = nlpforge("predict", str(exported), "--input", str(inputs["parquet"]), "--output",
                      str(out), "--engine", "ray", "--workers", "2", "--threads-per-worker", "1",
                      "--chunk-size", "4", "-q")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert_same(table.to_pylist(), reference["rows"])
    # The same columns and types as the local engine's Parquet (scores a struct, no 'unused').
    assert table.schema.remove_metadata() == reference["schema"].remove_metadata()


def test_predict_dataset_records_and_skips_bad_rows(local_ray, exported, reference):
    from nlpforge.integrations.ray import predict_dataset

    rows = [{"id": r["id"], "review": r["text"]} for r in ROWS[:6]]
    rows[2]["review"] = None
    ds = ray.data.from_items(rows)
    recorded = predict_dataset(ds, exported, workers=2, fields={"text": "review"},
                               on_error="record").take_all()
    by_id = {row["id"]: row for row in recorded}
    assert sorted(by_id) == [r["id"] for r in rows]
    bad = by_id.pop(102)
    assert bad["label"] is None
    assert "row id=102" in bad["error"] and "field 'text'" in bad["error"]
    assert all(row["error"] is None for row in by_id.values())
    assert_same(list(by_id.values()), {i: reference["rows"][i] for i in by_id})

    skipped = predict_dataset(ds, exported, workers=2, fields={"text": "review"},
                              on_error="skip").take_all()
    assert sorted(row["id"] for row in skipped) == [r["id"] for r in rows if r["id"] != 102]
    assert "error" not in skipped[0]


def test_ray_engine_fails_on_a_bad_row_naming_it(local_ray, exported, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "text": "fine"},
                                                {"id": 2, "text": None}])
    result = nlpforge("predict", str(exported), "--input", str(data), "--output",
                      str(tmp_path / "out.jsonl"), "--engine", "ray", "-q")
    assert result.exit_code == 1
    assert "Error: row id=2: missing required field 'text'" in result.stderr


def test_ray_engine_needs_an_id_column(local_ray, exported, tmp_path):
    data = write_jsonl(tmp_path / "noid.jsonl", [{"text": "a fine film"}])
    result = nlpforge("predict", str(exported), "--input", str(data), "--output",
                      str(tmp_path / "out.parquet"), "--engine", "ray")
    assert result.exit_code == 2
    assert "no 'id' column" in result.stderr and "--id-field" in result.stderr
    result = nlpforge("predict", str(exported), "--input", str(data), "--output",
                      str(tmp_path / "out.parquet"), "--engine", "ray", "--id-field", "key")
    assert result.exit_code == 2 and "--id-field key: the input has no such column" in \
        result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--resume"], "--resume continues a local run"),
    (["--shard", "0/2"], "--shard splits a local run"),
    (["--threads", "2"], "use --threads-per-worker"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--output-format", "csv"], "writes .parquet or .jsonl"),
])
def test_ray_engine_refuses_options_that_make_no_sense(exported, tmp_path, extra, message):
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    result = nlpforge("predict", str(exported), "--input", str(data), "--output",
                      str(tmp_path / "out.jsonl"), "--engine", "ray", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("name, message", [
    ("in.jsonl.bz2", "do not decompress bz2"),
    ("in.json", "write JSON as JSON Lines"),
])
def test_ray_engine_refuses_inputs_its_readers_cannot_read(exported, tmp_path, name, message):
    (tmp_path / name).write_bytes(b"")
    result = nlpforge("predict", str(exported), "--input", str(tmp_path / name), "--output",
                      str(tmp_path / "out.jsonl"), "--engine", "ray")
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_ray_options_need_the_ray_engine(exported, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    result = nlpforge("predict", str(exported), "--input", str(data), "--workers", "4")
    assert result.exit_code == 2 and "--workers apply to --engine ray" in result.stderr


def test_ray_engine_refuses_a_generative_export(exported, tmp_path):
    # A decoder export's manifest is enough: the refusal comes before any model is loaded.
    generative = tmp_path / "gpt2"
    generative.mkdir()
    manifest = json.loads((exported / "nlpforge.json").read_text())
    (generative / "nlpforge.json").write_text(json.dumps({**manifest, "family": "decoder"}))
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    result = nlpforge("predict", str(generative), "--input", str(data), "--output",
                      str(tmp_path / "out.jsonl"), "--engine", "ray")
    assert result.exit_code == 2
    assert "a generative export" in result.stderr and "nlpforge generate" in result.stderr
