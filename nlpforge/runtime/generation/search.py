"""The search: greedy, sampling and beam search over a :class:`Stepper`, all numpy.

Both loops follow ``transformers``' ``generate()`` step for step (``_sample`` and the
vectorised ``_beam_search``: top-k over ``beams × vocab``, finished hypotheses kept in a
``[batch, beams]`` table, the same early-stopping heuristics, the same length penalty) so
that greedy and beam search give the same tokens as transformers on the same weights.
Sampling draws from ``numpy.random`` with its own seed: reproducible, not torch's stream.

Everything is batched: one step is a handful of numpy calls on ``[rows, vocab]`` arrays
whatever the batch size; there is no Python loop over rows. The token table is allocated
once (``[rows, prompt + max_new_tokens]``) and the processors see a view of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nlpforge.runtime.generation.config import GenerationConfig
from nlpforge.runtime.generation.logits import LogitsProcessor, log_softmax
from nlpforge.runtime.generation.stepper import Stepper

#: ``stop_check(sequences, prompt_length) -> [rows] bool``: rows whose new tokens
#: (``sequences[:, prompt_length:]``) now contain a stop string. Called after every step.
StopCheck = Callable[[np.ndarray, int], np.ndarray]

_BIG = np.float32(-1.0e9)


@dataclass
class SearchResult:
    """Generated tokens, one row per returned sequence (``num_return_sequences`` per prompt).

    ``sequences`` is laid out as transformers returns it — the decoder-only prompt (or the
    decoder start token) followed by the new tokens, padded with ``pad_token_id`` — and
    ``lengths`` holds the number of new tokens of each row, the end-of-sequence token included.
    """

    sequences: np.ndarray
    prompt_length: int
    lengths: np.ndarray

    def new_tokens(self, row: int) -> np.ndarray:
        start = self.prompt_length
        return self.sequences[row, start:start + int(self.lengths[row])]


@dataclass
class Step:
    """One step of greedy or sampling search: the token each row got and which rows were
    still generating when it was chosen (finished rows get the pad token)."""

    tokens: np.ndarray
    alive: np.ndarray


def generate(stepper: Stepper, input_ids: np.ndarray, attention_mask: np.ndarray,
             config: GenerationConfig, stop_check: StopCheck | None = None) -> SearchResult:
    """Run greedy/sampling search (``num_beams == 1``) or beam search to the end."""
    if config.num_beams > 1:
        return beam_search(stepper, input_ids, attention_mask, config, stop_check)
    steps = sample_steps(stepper, input_ids, attention_mask, config, stop_check)
    for _ in steps:
        pass
    return steps.result


class sample_steps:
    """Greedy or sampling search as an iterator of :class:`Step` (for streaming); after the
    last one, ``result`` holds the :class:`SearchResult`."""

    def __init__(self, stepper: Stepper, input_ids: np.ndarray, attention_mask: np.ndarray,
                 config: GenerationConfig, stop_check: StopCheck | None = None):
        self.result: SearchResult | None = None
        self._steps = self._run(stepper, input_ids, attention_mask, config, stop_check)

    def __iter__(self) -> Iterator[Step]:
        return self._steps

    def __next__(self) -> Step:
        return next(self._steps)

    def _run(self, stepper: Stepper, input_ids: np.ndarray, attention_mask: np.ndarray,
             config: GenerationConfig, stop_check: StopCheck | None) -> Iterator[Step]:
        eos, pad = _special_ids(stepper, config)
        processor = LogitsProcessor(config, eos, _padding(stepper, attention_mask))
        rng = np.random.default_rng(config.seed) if config.do_sample else None
        logits, state = stepper.start(input_ids, attention_mask)
        prefix = _prefix(stepper, input_ids, config)
        rows, start = prefix.shape
        tokens = np.full((rows, start + config.max_new_tokens), pad, dtype=np.int64)
        tokens[:, :start] = prefix
        alive = np.ones(rows, dtype=bool)
        everyone = True  # no row finished yet: nothing to mask
        lengths = np.full(rows, config.max_new_tokens, dtype=np.int64)  # until a row ends
        last = start + config.max_new_tokens - 1
        # Few numpy calls per step: after a model call has streamed its weights through the
        # caches, each call here costs tens of microseconds.
        for end in range(start, last + 1):
            scores = processor(tokens[:, :end], _writable(logits), end - start) \
                if processor else logits
            chosen = _sample(scores, rng) if rng is not None else scores.argmax(axis=1)
            if not everyone:
                chosen = np.where(alive, chosen, pad)
            tokens[:, end] = chosen
            yield Step(chosen, alive)
            ended = _ends(chosen, eos)
            if stop_check is not None:
                ended = stop_check(tokens[:, :end + 1], start) | \
                    (ended if ended is not None else False)
            if ended is not None and ended.any():
                ended &= alive
                lengths[ended] = end - start + 1
                alive = alive & ~ended  # a new array: the Step yielded keeps its own
                everyone = False
                if not alive.any():
                    break
            if end == last:
                break
            logits, state = stepper.step(state, chosen)
        self.result = SearchResult(tokens[:, :end + 1], start, lengths)


def beam_search(stepper: Stepper, input_ids: np.ndarray, attention_mask: np.ndarray,
                config: GenerationConfig, stop_check: StopCheck | None = None) -> SearchResult:
    """Beam search (with ``do_sample``: beam sampling), as transformers' ``_beam_search``."""
    eos, pad = _special_ids(stepper, config)
    batch, beams = len(input_ids), config.num_beams
    padding = _padding(stepper, attention_mask)
    processor = LogitsProcessor(config, eos,
                                None if padding is None else np.repeat(padding, beams))
    rng = np.random.default_rng(config.seed) if config.do_sample else None
    logits, state = stepper.start(input_ids, attention_mask)
    expand = np.repeat(np.arange(batch), beams)
    state = stepper.select(state, expand)
    logits = logits[expand]
    prefix = _prefix(stepper, input_ids, config)
    start = prefix.shape[1]
    max_length = start + config.max_new_tokens
    vocab = logits.shape[1]
    # Keep (eos + 1) × beams candidates per step so that, even if the best ones all end,
    # ``beams`` running ones remain.
    keep = max(2, 1 + eos.size) * beams
    top_beams = np.arange(keep) < beams

    running = np.full((batch, beams, max_length), pad, dtype=np.int64)
    running[:, :, :start] = prefix.reshape(batch, 1, start)
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _BIG  # only the first beam's tokens count at the first step
    done = running.copy()
    done_scores = np.full((batch, beams), _BIG, dtype=np.float32)
    done_lengths = np.zeros((batch, beams), dtype=np.int64)
    finished = np.zeros((batch, beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    offsets = (np.arange(batch) * beams)[:, None]
    early = config.early_stopping
    penalty = config.length_penalty

    cur = start
    while True:
        flat = running.reshape(batch * beams, max_length)[:, :cur]
        scores = log_softmax(np.asarray(logits, dtype=np.float32))
        if processor:
            scores = processor(flat, scores, cur - start)
        scores = scores.reshape(batch, beams, vocab)
        scores += running_scores[:, :, None]
        scores = scores.reshape(batch, beams * vocab)
        if rng is not None:
            picked = _sample_without_replacement(scores, keep, rng)
            picked_scores = np.take_along_axis(scores, picked, axis=1)
            order = np.argsort(-picked_scores, axis=1, kind="stable")
            picked = np.take_along_axis(picked, order, axis=1)
        else:
            picked = _top_k(scores, keep)
        picked_scores = np.take_along_axis(scores, picked, axis=1)
        source, ids = np.divmod(picked, vocab)
        candidates = np.take_along_axis(running, source[:, :, None], axis=1)
        candidates[:, :, cur] = ids

        ends = np.isin(ids, eos) if eos.size else np.zeros_like(ids, dtype=bool)
        if cur + 1 >= max_length:
            ends[:] = True
        elif stop_check is not None:
            ends |= stop_check(candidates.reshape(batch * keep, max_length)[:, :cur + 1],
                               start).reshape(batch, keep)

        # The best ``beams`` candidates that did not end run on.
        live_scores = picked_scores + np.where(ends, _BIG, np.float32(0))
        best = _top_k(live_scores, beams)
        running = np.take_along_axis(candidates, best[:, :, None], axis=1)
        running_scores = np.take_along_axis(live_scores, best, axis=1)
        running_source = np.take_along_axis(source, best, axis=1)

        # Candidates among the top ``beams`` that ended join the finished table if better.
        just_ended = ends & top_beams[None, :]
        ended_scores = picked_scores / np.float32((cur + 1 - start) ** penalty)
        full = finished.all(axis=1, keepdims=True) & (early is True)
        ended_scores = ended_scores + np.where(full | ~improvable, _BIG, np.float32(0))
        ended_scores = ended_scores + np.where(just_ended, np.float32(0), _BIG)
        merged_scores = np.concatenate([done_scores, ended_scores], axis=1)
        chosen = _top_k(merged_scores, beams)
        done = np.take_along_axis(np.concatenate([done, candidates], axis=1),
                                  chosen[:, :, None], axis=1)
        done_scores = np.take_along_axis(merged_scores, chosen, axis=1)
        done_lengths = np.take_along_axis(
            np.concatenate([done_lengths, np.full((batch, keep), cur + 1 - start)], axis=1),
            chosen, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just_ended], axis=1),
                                      chosen, axis=1)

        cur += 1
        improvable = improvable & _can_improve(running_scores, done_scores, finished, cur,
                                               max_length, start, early, penalty)
        if not improvable.any() or (finished.all() and early is True) or ends.all():
            break
        state = stepper.select(state, (offsets + running_source).reshape(-1))
        logits, state = stepper.step(state, running[:, :, cur - 1].reshape(-1))

    returned = config.num_return_sequences
    lengths = done_lengths[:, :returned].reshape(-1)
    width = start + int(lengths.max(initial=0))
    sequences = done[:, :returned, :width].reshape(batch * returned, width)
    # Rows shorter than the longest end in pad tokens (the tables were filled with them).
    return SearchResult(sequences, start, lengths)


def _can_improve(running_scores: np.ndarray, done_scores: np.ndarray, finished: np.ndarray,
                 cur: int, max_length: int, start: int, early: bool | str,
                 penalty: float) -> np.ndarray:
    """Whether the best running beam could still beat the worst finished one (per prompt).

    With ``early_stopping="never"`` and a positive length penalty the best running beam is
    scored at the longest length it could reach; otherwise at its current length
    (transformers' heuristic).
    """
    if early == "never" and penalty > 0.0:
        length = max_length - start
    else:
        length = cur - start
    best_running = running_scores[:, :1] / np.float32(length ** penalty)
    worst_done = np.where(finished, done_scores.min(axis=1, keepdims=True), _BIG)
    return (best_running > worst_done).any(axis=1, keepdims=True)


def _ends(chosen: np.ndarray, eos: np.ndarray) -> np.ndarray | None:
    """Rows whose token is an end-of-sequence id (None: there are none to check)."""
    if not eos.size:
        return None
    if eos.size == 1:
        return chosen == eos[0]
    return (chosen[:, None] == eos).any(axis=1)


def _special_ids(stepper: Stepper, config: GenerationConfig) -> tuple[np.ndarray, int]:
    eos = config.eos_token_id if config.eos_token_id is not None else stepper.eos_token_ids
    pad = config.pad_token_id if config.pad_token_id is not None else stepper.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    return np.asarray(list(eos or ()), dtype=np.int64), int(pad)


def _padding(stepper: Stepper, attention_mask: np.ndarray) -> np.ndarray | None:
    """Left-padding tokens per prompt of a decoder-only batch (the first 1 of its mask)."""
    if stepper.is_encoder_decoder:
        return None
    return (np.asarray(attention_mask) != 0).argmax(axis=1)


def _prefix(stepper: Stepper, input_ids: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """The start of each output row: the prompt (decoder-only) or the decoder start token."""
    if not stepper.is_encoder_decoder:
        return np.asarray(input_ids, dtype=np.int64)
    start = config.decoder_start_token_id
    if start is None:
        start = stepper.decoder_start_token_id
    return np.full((len(input_ids), 1), start, dtype=np.int64)


def _writable(array: np.ndarray) -> np.ndarray:
    """Processors change scores in place: a float32 array of our own."""
    if array.dtype == np.float32 and array.flags.writeable:
        return array
    return np.array(array, dtype=np.float32)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, largest first (like ``torch.topk``)."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _gumbel(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    uniform = rng.random(shape, dtype=np.float32)
    return -np.log(-np.log(np.clip(uniform, 1e-20, 1.0), dtype=np.float32))


def _sample(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row from softmax(scores) (the Gumbel-max trick: -inf stays impossible)."""
    return (scores + _gumbel(scores.shape, rng)).argmax(axis=1)


def _sample_without_replacement(scores: np.ndarray, k: int,
                                rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices per row drawn from softmax(scores) without replacement
    (Gumbel-top-k), as ``torch.multinomial(..., replacement=False)``."""
    return _top_k(scores + _gumbel(scores.shape, rng), k)
