"""Batch runs: streamed in chunks, each output row with its id, resumable after kill -9 with
no row missing or twice, shards that split an input without overlap, bad rows failed,
skipped or recorded, and an output that is never overwritten unasked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from io import StringIO

import pytest

from nlpforge.batch.job import BatchJob
from nlpforge.batch.state import state_path
from nlpforge.data import read_dataset
from nlpforge.data.sources import open_source
from nlpforge.errors import DataError, UsageError
from tests.conftest import run_cli, wait_until, write_jsonl

pytest.importorskip("pyarrow")


def _check(row, file, line):
    if not isinstance(row.get("text"), str):
        raise DataError("missing required field 'text' (string)", file, line)


def _predict(rows):
    return [{"length": len(r["text"]), "upper": r["text"].upper()} for r in rows]


def _job(source, output, fmt="jsonl", **kwargs):
    return BatchJob(open_source(str(source)), str(output), fmt, kwargs.pop("predict", _predict),
                    _check, kwargs.pop("model", str(source.parent)), **kwargs)


def _rows(n, bad=()):
    return [{"id": f"r{i}", "text": f"text {i}"} if i not in bad else {"id": f"r{i}"}
            for i in range(n)]


def test_rows_stream_in_chunks_and_carry_their_ids(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", _rows(23))
    seen = []
    result = _job(source, tmp_path / "out.jsonl", chunk_size=5,
                  predict=lambda rows: seen.append(len(rows)) or _predict(rows)).run()
    assert seen == [5, 5, 5, 5, 3]
    out = read_dataset(tmp_path / "out.jsonl").rows
    assert out[7] == {"id": "r7", "length": 6, "upper": "TEXT 7"} and len(out) == 23
    assert result.written == 23 and result.complete
    assert json.loads(state_path(str(tmp_path / "out.jsonl"), "jsonl").read_text())["complete"]


def test_without_an_id_column_rows_are_numbered_across_the_whole_input(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{i}"} for i in range(10)])
    shards = []
    for index in range(3):
        out = tmp_path / f"out{index}.jsonl"
        _job(source, out, chunk_size=2, shard=(index, 3)).run()
        shards.append([r["row"] for r in read_dataset(out).rows])
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


@pytest.mark.parametrize("mode,written,skipped,errors", [("skip", 8, 2, 0),
                                                         ("record", 10, 0, 2)])
def test_bad_rows_are_skipped_or_recorded_never_dropped_silently(tmp_path, mode, written,
                                                                  skipped, errors):
    source = write_jsonl(tmp_path / "in.jsonl", _rows(10, bad={3, 8}))
    result = _job(source, tmp_path / "out.jsonl", chunk_size=4, on_error=mode).run()
    assert (result.written, result.skipped, result.errors) == (written, skipped, errors)
    out = read_dataset(tmp_path / "out.jsonl").rows
    if mode == "record":
        assert out[3] == {"id": "r3", "error": f"{source}:4: missing required field 'text' "
                                               f"(string)"}
        assert out[2]["error"] is None


def test_a_bad_row_fails_the_run_naming_file_and_line_and_keeps_what_was_written(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", _rows(10, bad={6}))
    with pytest.raises(DataError, match=r"in.jsonl:7: missing required field 'text'"):
        _job(source, tmp_path / "out.jsonl", chunk_size=3).run()
    assert len(read_dataset(tmp_path / "out.jsonl").rows) == 6  # two whole chunks


def test_an_existing_output_is_kept_unless_asked_and_resume_refuses_another_input(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", _rows(4))
    out = tmp_path / "out.jsonl"
    _job(source, out).run()
    with pytest.raises(UsageError, match=r"out.jsonl already exists; pass --resume to continue "
                                         r"it, --overwrite to replace it"):
        _job(source, out).run()
    assert _job(source, out, resume=True).run().messages == [
        f"{out} is already complete (4 rows); nothing to do"]
    write_jsonl(source, _rows(5))
    with pytest.raises(UsageError, match=r"cannot continue .*out.jsonl: it belongs to input "
                                         r".*in.jsonl \(1 file\(s\), \d+ bytes\)"):
        _job(source, out, resume=True).run()
    assert _job(source, out, overwrite=True, chunk_size=2).run().written == 5
    state = json.loads(state_path(str(out), "jsonl").read_text())
    assert state["chunk_size"] == 2
    state.update(complete=False, read=2, written=2, position={"offset": 0, "columns": None})
    state_path(str(out), "jsonl").write_text(json.dumps(state))
    seen = []
    _job(source, out, resume=True, chunk_size=100,
         predict=lambda rows: seen.append(len(rows)) or _predict(rows)).run()
    assert seen == [2, 1]  # the 3 rows left in chunks of 2, as the run began
    with pytest.raises(UsageError, match="its shard was"):
        _job(source, out, resume=True, shard=(1, 2)).run()
    os.utime(source, ns=(1, 1))
    with pytest.raises(UsageError, match=r"its input .*in.jsonl was modified after the run"):
        _job(source, out, resume=True).run()


def test_progress_shows_rows_rate_and_eta_when_the_size_is_known(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_rows(30)), tmp_path / "in.parquet")
    stream = StringIO()
    _job(tmp_path / "in.parquet", tmp_path / "out.parquet", "parquet", chunk_size=10,
         progress=True, stream=stream).run()
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("30/30 rows") and "rows/s" in last and "ETA 0m00s" in last


KILLABLE = textwrap.dedent("""
    import sys, time
    from nlpforge.batch.job import BatchJob
    from nlpforge.data.sources import open_source

    def predict(rows):
        time.sleep(0.05)
        return [{"n": len(r["text"])} for r in rows]

    source, output, fmt = sys.argv[1:4]
    BatchJob(open_source(source), output, fmt, predict, lambda row, file, line: None,
             source, chunk_size=7, resume=True).run()
""")


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv.gz", "out.parquet"])
def test_resume_after_kill_9_gives_every_row_exactly_once(tmp_path, name):
    n = 400
    source = write_jsonl(tmp_path / "in.jsonl", _rows(n))
    out = tmp_path / name
    fmt = "parquet" if name.endswith("parquet") else "csv" if ".csv" in name else "jsonl"
    script = tmp_path / "job.py"
    script.write_text(KILLABLE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, str(script), str(source), str(out), fmt]
    proc = subprocess.Popen(command, env=env)
    record = state_path(str(out), fmt)

    def halfway():
        assert proc.poll() is None, "the run ended before it was killed"
        try:
            return json.loads(record.read_text())["read"] >= n // 3
        except (OSError, ValueError):
            return False

    wait_until(halfway, 60, "a third of the rows committed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads(record.read_text())
    assert 0 < partial["read"] < n and not partial["complete"]
    subprocess.run(command, env=env, check=True, timeout=120)
    ids = [str(r["id"]) for r in read_dataset(out).rows]
    assert sorted(ids) == sorted(f"r{i}" for i in range(n)) and len(set(ids)) == n


def test_predict_cli_streams_a_file_into_each_output_format(exported, tmp_path):
    rows = [{"id": i, "review": t} for i, t in
            enumerate(["great film", "dull and long", "fine", "bad"] * 5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plain = run_cli("predict", str(exported), *[r["review"] for r in rows])
    expected = [json.loads(line) for line in plain.stdout.splitlines()]
    for name in ("out.jsonl", "out.parquet", "out.csv"):
        result = run_cli("predict", str(exported), "--input", str(source), "--output",
                         str(tmp_path / name), "--text-field", "review", "--chunk-size", "6")
        assert result.returncode == 0, result.stderr
        assert f"20 rows in {tmp_path / name}" in result.stderr
        got = read_dataset(tmp_path / name).rows
        assert [str(r["id"]) for r in got] == [str(i) for i in range(20)]
        assert [r["label"] for r in got] == [e["label"] for e in expected]
    parquet = read_dataset(tmp_path / "out.parquet").rows
    assert parquet[0]["scores"] == pytest.approx(expected[0]["scores"])  # a struct, not text


def test_predict_cli_errors_are_one_line(exported, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, {"text": 3}])
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", str(exported), "--input", str(source), "--output", str(out))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{source}:2: field 'text': expected string" in result.stderr
    for args, message in [(["--shard", "2/2"], "--shard 2/2: expected I/N with 0 <= I < N"),
                          (["--resume", "--overwrite"], "choose one"),
                          (["--chunk-size", "0"], "--chunk-size must be at least 1"),
                          (["--field", "text"], "expected FIELD=COLUMN")]:
        result = run_cli("predict", str(exported), "--input", str(source), "--output",
                         str(tmp_path / "other.jsonl"), *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = run_cli("predict", str(exported), "--input", str(source), "--resume")
    assert result.returncode == 2 and "--resume and --overwrite apply to an --output" in result.stderr


def test_generate_streams_prompts_from_a_data_file_into_rows_with_ids(gpt2_export, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import GENERATION_PROMPTS

    _, export, _ = gpt2_export
    rows = [{"key": f"p{i}", "prompt": p} for i, p in enumerate(GENERATION_PROMPTS)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prompts.parquet")
    texts = tmp_path / "prompts.txt"
    texts.write_text("\n".join(GENERATION_PROMPTS) + "\n")
    plain = run_cli("generate", str(export), "--input", str(texts), "--max-new-tokens", "5",
                    "--json")
    assert plain.returncode == 0, plain.stderr
    expected = [json.loads(line)["generated_text"] for line in plain.stdout.splitlines()]
    out = tmp_path / "out.jsonl"
    result = run_cli("generate", str(export), "--input", str(tmp_path / "prompts.parquet"),
                     "--output", str(out), "--text-field", "prompt", "--id-field", "key",
                     "--max-new-tokens", "5", "--chunk-size", "3")
    assert result.returncode == 0, result.stderr
    got = read_dataset(out).rows
    assert [r["key"] for r in got] == [r["key"] for r in rows]
    assert [r["generated_text"] for r in got] == expected
    lines = run_cli("generate", str(export), "--input", str(texts), "--output",
                    str(tmp_path / "lines.jsonl"), "--max-new-tokens", "5")
    assert lines.returncode == 0, lines.stderr
    assert [r["row"] for r in read_dataset(tmp_path / "lines.jsonl").rows] == [0, 1, 2, 3]
    both = run_cli("generate", str(export), "--input", str(texts), "--output",
                   str(tmp_path / "x.jsonl"), "--stream")
    assert both.returncode == 2 and "choose one" in both.stderr
