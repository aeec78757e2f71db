"""Training on data read as it trains (``--stream``): any batch input format, a buffer at a
time, the same order on resume, and a run from a Parquet file like one from JSON Lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import EXAMPLES, run_cli
from nlpforge.data import read_dataset
from nlpforge.errors import UsageError
from nlpforge.training.config import TrainConfig
from nlpforge.training.stream import stream_batches
from tests.test_trainer import assert_same_weights, base_args, stop_after_checkpoint

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_batches_are_drawn_a_buffer_at_a_time_grouped_by_length():
    pulled = []

    def rows():
        for i in range(100):
            pulled.append(i)
            yield {"text": "x " * (i % 13 + 1)}

    batches = stream_batches(rows(), 4, torch.Generator().manual_seed(0), True,
                             lambda row: len(row["text"]), buffer_rows=20)
    first = next(batches)
    assert len(pulled) == 20  # one buffer read, not the file
    rest = list(batches)
    assert len(pulled) == 100 and sum(map(len, [first, *rest])) == 100
    spreads = [max(map(len, (r["text"] for r in b))) - min(map(len, (r["text"] for r in b)))
               for b in [first, *rest]]
    assert max(spreads) < 26 - 2  # each batch's lengths close: grouped within the buffer


def test_stream_needs_max_steps_and_a_file():
    with pytest.raises(UsageError, match="--stream .* give --max-steps N"):
        TrainConfig(task="t", model="m", train="x", output="o", stream=True).check()
    with pytest.raises(UsageError, match="--stream reads a --train file"):
        TrainConfig(task="t", model="m", output="o", stream=True, max_steps=2).check({"train"})


def test_a_streamed_parquet_run_resumed_after_sigterm_equals_an_uninterrupted_one(
        tiny_bert, tmp_path):
    rows = read_dataset(EXAMPLES / "train.jsonl").rows
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data, row_group_size=50)
    extra = ("--max-steps", "60", "--save-steps", "5", "--stream")

    def args(output):
        return [a if a != str(EXAMPLES / "train.jsonl") else str(data)
                for a in base_args(tiny_bert, output, *extra)]

    straight = tmp_path / "straight"
    result = run_cli(*args(straight))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 60 and summary["epochs"] >= 1  # 320 rows / 8: past one epoch
    manifest = json.loads((straight / "nlpforge.json").read_text())
    assert manifest["task"]["state"]["labels"] == sorted({r["label"] for r in rows})

    run = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "nlpforge", *args(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    stop_after_checkpoint(proc, run, "step-45")  # inside the second epoch
    resumed = run_cli("train", "--resume", "--output", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(straight, run)
