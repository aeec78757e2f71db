"""Rows → token ids and loss targets for causal-LM training and teacher-forced scoring.

Three kinds of rows:
- ``{"text"}``: every token is a target; the document ends with EOS. For training, the texts
  of a batch are concatenated (EOS between documents) and cut into blocks of max_length, as
  Hugging Face's run_clm does (``text_mode=blocks``), or each is truncated (``truncate``).
- ``{"prompt", "completion"}``: the targets are the completion's tokens and the EOS after it.
- ``{"messages"}``: rendered with the chat template; the targets are the assistant turns.

Targets are written as ``labels`` aligned with ``input_ids`` (−100: not a target), the layout
transformers' causal-LM heads shift themselves.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nlpforge import IGNORE_INDEX, DataError, Tokenizer
from nlpforge_text_generation.chat import assistant_spans, render


def chat_template(tokenizer: Tokenizer) -> str:
    template = tokenizer.chat_template
    if not template:
        raise DataError("rows with 'messages' need a tokenizer with a chat template, and this "
                        "model's tokenizer has none (add chat_template.jinja to the base model "
                        "dir, or use 'prompt'/'completion' rows)", field="messages")
    return template


def text_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text with the tokenizer's special tokens (a BOS where it adds one), then EOS."""
    eos = tokenizer.special_token_id("eos_token")
    encodings = tokenizer.encode(list(texts), truncate=False)
    return [e.ids + ([eos] if eos is not None else []) for e in encodings]


def pair_ids(tokenizer: Tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """Prompt (with the tokenizer's special tokens) + completion + EOS; labels on the
    completion and EOS only."""
    prompt = tokenizer.encode([row["prompt"]], truncate=False)[0].ids
    completion = tokenizer.encode([row["completion"]], truncate=False,
                                  add_special_tokens=False)[0].ids
    eos = tokenizer.special_token_id("eos_token")
    completion = completion + ([eos] if eos is not None else [])
    return prompt + completion, [IGNORE_INDEX] * len(prompt) + completion


def chat_ids(tokenizer: Tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """The rendered conversation; labels on the tokens of assistant turns."""
    text, spans = assistant_spans(chat_template(tokenizer), row["messages"],
                                  tokenizer.special_tokens)
    (encoding,) = tokenizer.encode([text], truncate=False, add_special_tokens=False)
    labels = []
    for token, (start, _) in zip(encoding.ids, encoding.offsets):
        inside = any(a <= start < b for a, b in spans)
        labels.append(token if inside else IGNORE_INDEX)
    return encoding.ids, labels


def chat_prompt(tokenizer: Tokenizer, messages: Sequence[dict]) -> str:
    """A conversation rendered up to the assistant's next turn (for generation)."""
    return render(chat_template(tokenizer), messages, tokenizer.special_tokens,
                  add_generation_prompt=True)


def kind(row: dict) -> str:
    if "messages" in row and row["messages"] is not None:
        return "messages"
    if row.get("completion") is not None:
        return "pair"
    if row.get("text") is not None:
        return "text"
    return "prompt"


def sequences(tokenizer: Tokenizer, rows: Sequence[dict], max_length: int, blocks: bool,
              windows: bool) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Token ids, labels and the row each sequence came from.

    ``blocks``: the texts are packed into blocks of ``max_length`` (training);
    ``windows``: a long text becomes consecutive windows, every token scored (evaluation);
    otherwise a long text is truncated. Pairs and conversations are truncated.
    """
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    owners: list[int] = []
    texts = [i for i, row in enumerate(rows) if kind(row) in ("text", "prompt")]
    encoded = dict(zip(texts, text_ids(tokenizer, [
        rows[i]["text"] if kind(rows[i]) == "text" else rows[i]["prompt"] for i in texts])))
    if blocks and texts:
        stream = [t for i in texts for t in encoded[i]]
        for start in range(0, len(stream), max_length):
            block = stream[start:start + max_length]
            if len(block) > 1:  # a lone token has nothing to predict
                ids.append(block)
                labels.append(list(block))
                owners.append(texts[0])
    for i, row in enumerate(rows):
        k = kind(row)
        if k in ("text", "prompt"):
            if blocks:
                continue
            tokens = encoded[i]
            chunks = range(0, len(tokens), max_length) if windows else [0]
            for start in chunks:
                chunk = tokens[start:start + max_length]
                ids.append(chunk)
                labels.append(list(chunk))
                owners.append(i)
            continue
        seq, lab = pair_ids(tokenizer, row) if k == "pair" else chat_ids(tokenizer, row)
        ids.append(seq[:max_length])
        labels.append(lab[:max_length])
        owners.append(i)
    return ids, labels, owners


def pad_right(ids: list[list[int]], labels: list[list[int]],
              pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (padding: −100)."""
    length = max((len(s) for s in ids), default=0)
    out = {"input_ids": np.full((len(ids), length), pad_id, dtype=np.int64),
           "attention_mask": np.zeros((len(ids), length), dtype=np.int64),
           "labels": np.full((len(ids), length), IGNORE_INDEX, dtype=np.int64)}
    for r, (seq, lab) in enumerate(zip(ids, labels)):
        out["input_ids"][r, :len(seq)] = seq
        out["attention_mask"][r, :len(seq)] = 1
        out["labels"][r, :len(lab)] = lab
    return out


def pad_left(ids: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Left-padded prompts for generation."""
    length = max((len(s) for s in ids), default=0)
    out = {"input_ids": np.full((len(ids), length), pad_id, dtype=np.int64),
           "attention_mask": np.zeros((len(ids), length), dtype=np.int64)}
    for r, seq in enumerate(ids):
        if seq:
            out["input_ids"][r, -len(seq):] = seq
            out["attention_mask"][r, -len(seq):] = 1
    return out
