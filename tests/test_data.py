"""Data readers: every bad row names the file, the line and the field."""

from __future__ import annotations

import json

import pytest

from nlpforge.data import read_dataset
from nlpforge.errors import DataError, UsageError
from nlpforge_text_classification import TextClassification


def task(**kw):
    return TextClassification(**kw)


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_dataset(path, task(**kw) if kw.get("t", True) else None)
    return str(info.value)


def test_jsonl_rows_keep_their_line_numbers(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n')
    data = read_dataset(path, task())
    assert data.rows == [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    assert data.lines == [1, 3]


def test_json_array(tmp_path):
    path = write(tmp_path, "d.json", '[\n {"text": "a", "label": "x"},\n {"text": 3, "label": "y"}\n]\n')
    with pytest.raises(DataError, match=r"d.json:3: field 'text': expected string, got integer"):
        read_dataset(path, task())


def test_csv_and_tsv(tmp_path):
    csv = write(tmp_path, "d.csv", 'text,label\n"hello, world",pos\n"multi\nline",neg\n')
    data = read_dataset(csv, task())
    assert data.rows[0] == {"text": "hello, world", "label": "pos"}
    assert data.lines == [2, 3]
    tsv = write(tmp_path, "d.tsv", "text\tlabel\nhi\tpos\n")
    assert read_dataset(tsv, task()).rows == [{"text": "hi", "label": "pos"}]


def test_csv_list_cells_become_lists(tmp_path):
    csv = write(tmp_path, "d.csv", 'text,label\nhi,"[""a"", ""b""]"\n')
    assert read_dataset(csv, task(multi_label=True)).rows[0]["label"] == ["a", "b"]


def test_csv_wrong_column_count(tmp_path):
    csv = write(tmp_path, "d.csv", "text,label\nhi,pos,extra\n")
    assert "d.csv:2: 3 columns, the header has 2" in error(csv)


def test_empty_file(tmp_path):
    assert "empty file" in error(write(tmp_path, "e.jsonl", ""))
    assert "empty file" in error(write(tmp_path, "e2.jsonl", "\n\n  \n"))
    assert "empty file" in error(write(tmp_path, "e.csv", "text,label\n"))


def test_missing_field(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    msg = error(path)
    assert "d.jsonl:2:" in msg and "missing required field 'label'" in msg


def test_mistyped_field(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": ["a"], "label": "x"}\n')
    assert "d.jsonl:1: field 'text': expected string, got list" in error(path)
    path = write(tmp_path, "b.jsonl", '{"text": "a", "label": true}\n')
    assert "d.jsonl" not in error(path) and "field 'label'" in error(path)


def test_invalid_json_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": \n')
    assert "d.jsonl:2: not valid JSON" in error(path)


def test_not_an_object(tmp_path):
    assert "d.jsonl:1: expected a JSON object" in error(write(tmp_path, "d.jsonl", '["a"]\n'))


def test_invalid_utf8_names_the_line(tmp_path):
    raw = b'{"text": "ok", "label": "x"}\n{"text": "caf\xe9", "label": "x"}\n'
    msg = error(write(tmp_path, "d.jsonl", raw, "wb"))
    assert "d.jsonl:2: invalid UTF-8" in msg


def test_unreadable_files(tmp_path):
    assert "no such file" in error(tmp_path / "missing.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    assert "is a directory" in error(tmp_path / "dir.jsonl")
    assert "unknown file type '.xlsx'" in error(write(tmp_path, "d.xlsx", "x"))
    # a .txt file is one text per line: a classifier's rows then lack their label
    assert "d.txt:1: missing required field 'label'" in error(write(tmp_path, "d.txt", "x"))


def test_unknown_label_in_validation(tmp_path):
    t = task()
    train = read_dataset(write(tmp_path, "t.jsonl",
                               '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n'), t)
    t.fit(train.rows)
    val = write(tmp_path, "v.jsonl", '{"text": "a", "label": "pos"}\n{"text": "c", "label": "meh"}\n')
    with pytest.raises(DataError, match=r"v.jsonl:2: field 'label': unknown label 'meh' "
                                        r"\(known labels: neg, pos\)"):
        read_dataset(val, t)


def test_given_labels_check_training_rows(tmp_path):
    path = write(tmp_path, "t.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "bad"}\n')
    with pytest.raises(DataError, match="t.jsonl:2: field 'label': unknown label 'bad'"):
        read_dataset(path, task(labels=["pos", "neg"]))


def test_single_label_set_is_refused(tmp_path):
    t = task()
    data = read_dataset(write(tmp_path, "t.jsonl", '{"text": "a", "label": "pos"}\n'), t)
    with pytest.raises(UsageError, match="at least 2"):
        t.fit(data.rows)


def test_list_label_needs_multi_label(tmp_path):
    path = write(tmp_path, "t.jsonl", json.dumps({"text": "a", "label": ["x", "y"]}) + "\n")
    assert "multi_label=true" in error(path)


def test_unknown_task_option():
    with pytest.raises(UsageError, match="has no option colour"):
        task(colour="red")
    with pytest.raises(UsageError, match="expected float"):
        task(threshold="high")
