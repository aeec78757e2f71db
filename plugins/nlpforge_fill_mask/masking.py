"""Which tokens a masked-LM sees corrupted, and how (numpy only).

BERT's recipe: a share of the non-special tokens (15 %) is chosen; of those, 80 % become the
mask token, 10 % a random token and 10 % stay as they are; the model must restore every chosen
token. Training draws the choice from ``numpy.random`` (the trainer checkpoints its state, so a
resumed run draws the same masks). Evaluation draws it from a generator seeded by the row's
text, so every run, PyTorch and ONNX alike, scores the same tokens of the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nlpforge import IGNORE_INDEX, ModelDirError, Tokenizer


@dataclass(frozen=True)
class Vocabulary:
    """What masking needs to know about a tokenizer."""

    tokenizer: Tokenizer
    mask_token: str
    mask_id: int
    special_ids: np.ndarray      # never chosen: [CLS], [SEP], [PAD], [UNK], [MASK]…
    replacement_ids: np.ndarray  # the 10 % random tokens are drawn from these


@dataclass(frozen=True)
class Recipe:
    """How many tokens are chosen and what becomes of them."""

    probability: float = 0.15
    mask_share: float = 0.8
    random_share: float = 0.1


def mask_token_of(tokenizer: Tokenizer) -> str:
    """The tokenizer's own mask token (``Tokenizer.mask_token``); ModelDirError without one."""
    token = tokenizer.mask_token
    if token is None:
        raise ModelDirError("the tokenizer has no mask token (tokenizer_config.json sets no "
                            "mask_token); fill-mask needs a masked-LM tokenizer such as BERT's "
                            "([MASK]) or RoBERTa's (<mask>)")
    return token


def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    token = mask_token_of(tokenizer)
    special = sorted(set(tokenizer.special_ids()) | {tokenizer.pad_id})
    replacement = np.setdiff1d(np.arange(tokenizer.vocab_size, dtype=np.int64),
                               np.array(special, dtype=np.int64))
    return Vocabulary(tokenizer, token, int(tokenizer.token_to_id(token)),
                      np.array(special, dtype=np.int64), replacement)


def eligible(features: dict[str, np.ndarray], vocab: Vocabulary) -> np.ndarray:
    """Tokens that may be chosen: real (not padding) and not special."""
    ids = features["input_ids"]
    real = features["attention_mask"].astype(bool) if "attention_mask" in features \
        else np.ones(ids.shape, dtype=bool)
    return real & ~np.isin(ids, vocab.special_ids)


def corrupt(ids: np.ndarray, chosen: np.ndarray, vocab: Vocabulary, recipe: Recipe,
            rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Apply the 80/10/10 rule to the ``chosen`` tokens; returns (corrupted ids, labels).

    ``rng`` is ``numpy.random`` (training) or a ``numpy.random.RandomState`` (evaluation):
    both offer ``random_sample`` and ``randint``. Labels hold the original id of each chosen
    token and ``IGNORE_INDEX`` elsewhere.
    """
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(np.int64)
    draw = rng.random_sample(int(chosen.sum()))
    rows, cols = np.nonzero(chosen)
    masked = draw < recipe.mask_share
    randomised = ~masked & (draw < recipe.mask_share + recipe.random_share)
    out = ids.copy()
    out[rows[masked], cols[masked]] = vocab.mask_id
    if randomised.any() and vocab.replacement_ids.size:
        picks = rng.randint(0, vocab.replacement_ids.size, int(randomised.sum()))
        out[rows[randomised], cols[randomised]] = vocab.replacement_ids[picks]
    return out, labels


def training_choice(allowed: np.ndarray, probability: float) -> np.ndarray:
    """Each allowed token is chosen with ``probability`` (from ``numpy.random``).

    A batch where no token came up gets one, so its loss is defined (a mean over zero tokens
    is NaN and would poison the weights).
    """
    chosen = allowed & (np.random.random_sample(allowed.shape) < probability)
    if not chosen.any() and allowed.any():
        rows, cols = np.nonzero(allowed)
        pick = np.random.randint(0, rows.size)
        chosen[rows[pick], cols[pick]] = True
    return chosen


def text_seed(text: str) -> int:
    """A seed from the text alone: the same row gets the same masks in every run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def evaluation_masks(texts: Sequence[str], owners: np.ndarray, ids: np.ndarray,
                     allowed: np.ndarray, vocab: Vocabulary,
                     recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic corruption of evaluation rows; returns (corrupted ids, labels).

    Each row (all its windows together) gets ``round(probability × tokens)`` chosen tokens, at
    least one, drawn from a generator seeded by its text: the choice does not depend on the
    batch the row lands in, its order, or the runner.
    """
    out = ids.copy()
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    for row, text in enumerate(texts):
        windows = np.flatnonzero(owners == row)
        if not windows.size:
            continue
        mine = allowed[windows]
        count = int(mine.sum())
        if not count:
            continue
        rng = np.random.RandomState(text_seed(text))
        k = max(1, int(round(recipe.probability * count)))
        flat = np.zeros(count, dtype=bool)
        flat[rng.choice(count, size=k, replace=False)] = True
        chosen = np.zeros(mine.shape, dtype=bool)
        chosen[mine] = flat
        out[windows], labels[windows] = corrupt(ids[windows], chosen, vocab, recipe, rng)
    return out, labels
