"""Truncation that tokenizes a bounded prefix of each input instead of all of it.

``Tokenizer.encode`` keeps the first ``max_length`` tokens of an input. ``tokenizers`` reaches
them by tokenizing the whole text, at a cost in memory and time proportional to the text, not
to what is kept (and, for a pair of texts, to the product of their lengths: it builds every
combination of their overflowing windows). Here a long input is tokenized from a prefix,
grown until the tokens kept are provably the whole input's:

- A tokenizer cuts text into pieces (its pre-tokenizer: words, punctuation, whitespace runs,
  CJK characters) and tokenizes each piece on its own. Cutting the text off changes the piece
  the cut falls in and, through the pre-tokenizer's one-character lookahead, the piece before
  it; the normalizer (lowercasing, accents, NFC…) is local too, and an added token (``[SEP]``,
  ``<mask>``) cut in two becomes pieces no longer than itself. So the tokens of pieces at
  least ``MARGIN_WORDS`` pieces and ``margin`` characters (``MARGIN_CHARS``, or the longest
  added token) before the cut are those of the whole text (``Encoding.word_ids`` numbers the
  pieces).
- The prefix starts at ``START_CHARS_PER_TOKEN`` characters per token needed and doubles until
  enough such tokens precede the cut, or it is the whole text.
- A piece too long to reach its end (a "word" of more than ``cap_chars`` characters, where the
  pre-tokenizer never splits): its tokens that start in the first half of a prefix of at least
  ``cap_chars`` are taken as they are. Their ids are the whole text's (WordPiece turns any
  over-long word into one ``[UNK]``; byte-level BPE and Unigram merge locally), but a token
  reaching the cut ends there, not at the end of its word.
- Pre-tokenized inputs (lists of words) are tokenized word by word, so whole words are
  always exact: their prefix is a number of words.

Pairs keep what ``tokenizers``' own strategies keep. ``longest_first`` depends on the lengths
of both texts only through the shorter one's, except that with an odd token budget the longer
text gets the odd token: when both texts are over the budget, which is longer is settled by
counting tokens chunk by chunk (``Prefixes.running_counts``), in memory bounded by the chunk.
``only_second`` (a QA question, then its context) needs all of the first text, as before.

The encodings returned equal those of the whole input in everything but ``overflowing``
(which holds the rest of the prefix, not of the text): ids, type ids, masks, offsets, word
ids and sequence ids of every token kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from tokenizers import Encoding
from tokenizers import Tokenizer as Backend

#: A prefix starts at this many characters (or words, when pre-tokenized) per token needed.
START_CHARS_PER_TOKEN = 8
#: Tokens are the whole text's when their piece is at least this many pieces before the last
#: piece of a prefix…
MARGIN_WORDS = 2
#: …and they end at least this many characters before the cut (more where an added token is
#: longer).
MARGIN_CHARS = 64
#: From a prefix of this many characters per token needed (and at least ``MIN_CAP_CHARS``), a
#: piece reaching the cut is taken as it is.
CAP_CHARS_PER_TOKEN = 64
MIN_CAP_CHARS = 1 << 14
#: Characters (or words) per chunk when counting tokens…
COUNT_CHUNK = 1 << 14
#: …and the longest chunk, reached when one piece (or no token) fills a chunk.
COUNT_CAP = 4 * COUNT_CHUNK

Item = Any  # a text, or a list of words when pre-tokenized


def raw_backend(backend: Backend) -> Backend:
    """A copy of ``backend`` that neither truncates, pads nor post-processes."""
    raw = Backend.from_str(backend.to_str())
    raw.no_truncation()
    raw.no_padding()
    raw.post_processor = None
    return raw


def cap_chars(need: int) -> int:
    """Prefix length from which a piece reaching the cut is taken as it is."""
    return max(CAP_CHARS_PER_TOKEN * need, MIN_CAP_CHARS)


def longest_first_lengths(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """How many tokens ``tokenizers``' ``longest_first`` keeps of texts of ``n1`` and ``n2``
    tokens with room for ``budget``: the shorter whole if the longer can fill the rest, else
    half each, the odd token to the longer (to the second when they are as long)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long = (n2, n1) if swap else (n1, n2)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short = budget // 2
        long = short + budget % 2
    return (long, short) if swap else (short, long)


@dataclass
class _Side:
    """One text (or list of words) of an input, and the prefix of it tokenized so far."""

    item: Item
    need: int  # leading tokens that must be known
    size: int  # characters (or words) in the prefix
    encoding: Encoding | None = None
    stable: int = 0  # leading tokens of ``encoding`` known to be the whole item's
    complete: bool = False  # the prefix is the whole item

    @classmethod
    def of(cls, item: Item, need: int) -> "_Side":
        return cls(item, need, size=max(1, START_CHARS_PER_TOKEN * need))

    @property
    def count(self) -> int:
        return len(self.encoding.ids) if self.encoding is not None else 0

    def truncate(self, length: int) -> None:
        if self.count > length:
            self.encoding.truncate(max(length, 0))


class Prefixes:
    """Truncated encodings of one tokenizer, tokenizing bounded prefixes (see the module)."""

    def __init__(self, backend: Backend):
        #: The tokenizer without truncation, padding or post-processor: prefixes are tokenized
        #: with it, and go through a truncating backend's ``post_process`` as ``encode`` sends
        #: its own encodings.
        self.raw = raw_backend(backend)
        added = backend.get_added_tokens_decoder().values()
        #: Characters a stable token ends before the cut: an added token cut in two splits
        #: into pieces within its own length.
        self.margin = max([MARGIN_CHARS, *(len(t.content) + 1 for t in added)])

    def encode(self, truncating: Backend, inputs: Sequence[Any], *, is_pretokenized: bool,
               add_special_tokens: bool) -> list[Encoding]:
        """``truncating.encode_batch(inputs)`` (texts, or pairs as tuples), tokenizing a
        bounded prefix of long inputs. ``truncating`` truncates with ``longest_first`` or
        ``only_second``; with another strategy, whole inputs are tokenized."""
        params = truncating.truncation or {}
        strategy, max_length = params.get("strategy"), params.get("max_length")
        options = {"is_pretokenized": is_pretokenized, "add_special_tokens": add_special_tokens}
        single = budget = 0
        if max_length:
            single = max_length - (truncating.num_special_tokens_to_add(False)
                                   if add_special_tokens else 0)
            budget = max_length - (truncating.num_special_tokens_to_add(True)
                                   if add_special_tokens else 0)
        if strategy not in ("longest_first", "only_second") or single < 1 or budget < 1:
            return truncating.encode_batch(list(inputs), **options)
        results: list[Encoding | None] = [None] * len(inputs)
        # Short inputs as ever; for pairs, short means both together no longer than the
        # budget in characters: truncating a pair, tokenizers builds every combination of
        # the overflowing windows of both texts.
        short = [i for i, item in enumerate(inputs)
                 if (sum(_length(part, is_pretokenized) for part in item) <= budget
                     if isinstance(item, tuple) else
                     _length(item, is_pretokenized) <= START_CHARS_PER_TOKEN * single)]
        for i, encoding in zip(short, truncating.encode_batch([inputs[i] for i in short],
                                                              **options)):
            results[i] = encoding
        singles = [i for i, item in enumerate(inputs)
                   if results[i] is None and not isinstance(item, tuple)]
        sides = [_Side.of(inputs[i], single) for i in singles]
        self._grow(sides, is_pretokenized)
        for i, side in zip(singles, sides):
            results[i] = truncating.post_process(side.encoding, None, add_special_tokens)
        pairs = [i for i, item in enumerate(inputs)
                 if results[i] is None and isinstance(item, tuple)]
        if pairs:
            encode_pairs = self._longest_first if strategy == "longest_first" \
                else self._only_second
            for i, (first, second) in zip(pairs, encode_pairs([inputs[i] for i in pairs],
                                                              budget, is_pretokenized)):
                results[i] = truncating.post_process(first, second, add_special_tokens)
        return results  # type: ignore[return-value]

    # -- prefixes ----------------------------------------------------------------------------

    def _grow(self, sides: list[_Side], is_pretokenized: bool) -> None:
        """Tokenize each side's prefix, doubling it until ``need`` tokens are known or it is
        the whole item; the prefixes of one round are tokenized in one batch."""
        pending = [s for s in sides
                   if not s.complete and (s.encoding is None or s.stable < s.need)]
        while pending:
            for side in pending:
                side.size = min(side.size, len(side.item))
            encodings = self.raw.encode_batch([s.item[:s.size] for s in pending],
                                              is_pretokenized=is_pretokenized,
                                              add_special_tokens=False)
            for side, encoding in zip(pending, encodings):
                side.encoding = encoding
                side.complete = side.size >= len(side.item)
                if side.complete or is_pretokenized:  # whole words are exact
                    side.stable = len(encoding.ids)
                else:
                    side.stable = self.stable(encoding, side.size, side.need)
            pending = [s for s in pending if not s.complete and s.stable < s.need]
            for side in pending:
                side.size *= 2

    def stable(self, encoding: Encoding, size: int, need: int) -> int:
        """How many leading tokens of the encoding of a text's first ``size`` characters
        are the whole text's (counting stops at ``need``)."""
        words, offsets = encoding.word_ids, encoding.offsets
        stable = self._stable_run(words, offsets, size, need)
        if stable < need and size >= cap_chars(need):  # a piece longer than the cap
            half, early = size // 2, 0
            for start, _ in offsets:
                if early >= need or start > half:
                    break
                early += 1
            stable = max(stable, early)
        return stable

    def _stable_run(self, words: list, offsets: list, size: int, need: int,
                    shift: int = 0) -> int:
        """Leading tokens (at most ``need``) whose piece is ``MARGIN_WORDS`` pieces before
        the last and which end ``margin`` characters before ``size`` (offsets + ``shift``)."""
        last = next((w for w in reversed(words) if w is not None), None)
        if last is None:
            return 0
        limit = size - self.margin - shift
        stable = 0
        for word, (_, end) in zip(words, offsets):
            if stable >= need or word is None or word > last - MARGIN_WORDS or end > limit:
                break
            stable += 1
        return stable

    # -- pairs -------------------------------------------------------------------------------

    def _only_second(self, pairs: list[tuple[Item, Item]], budget: int,
                     is_pretokenized: bool) -> list[tuple[Encoding, Encoding]]:
        """The first text whole (its tokens decide the second's room), then enough of the
        second: one token more than fits, which ``tokenizers`` truncates as it would the
        whole text."""
        firsts = [_Side.of(a, budget + 1) for a, _ in pairs]
        self._grow(firsts, is_pretokenized)
        # A first text over the budget makes tokenizers refuse the pair, as it would whole.
        seconds = [_Side.of(b, budget - first.count + 1 if first.complete else 1)
                   for (_, b), first in zip(pairs, firsts)]
        self._grow(seconds, is_pretokenized)
        for second in seconds:
            second.truncate(second.need)
        return [(a.encoding, b.encoding) for a, b in zip(firsts, seconds)]

    def _longest_first(self, pairs: list[tuple[Item, Item]], budget: int,
                       is_pretokenized: bool) -> list[tuple[Encoding, Encoding]]:
        """Both prefixes, each cut to a length that makes ``tokenizers`` keep what it keeps
        of the whole texts (``_stand_in_lengths``)."""
        sides = [(_Side.of(a, budget + 2), _Side.of(b, budget + 2)) for a, b in pairs]
        self._grow([side for pair in sides for side in pair], is_pretokenized)
        for first, second in sides:
            lengths = self._stand_in_lengths(first, second, budget, is_pretokenized)
            first.truncate(lengths[0])
            second.truncate(lengths[1])
        return [(first.encoding, second.encoding) for first, second in sides]

    def _stand_in_lengths(self, first: _Side, second: _Side, budget: int,
                          is_pretokenized: bool) -> tuple[int, int]:
        """Token counts, within what is known of each text, for which
        ``longest_first_lengths`` keeps what it keeps of the whole texts: a text's own count
        where both fit; else counts over the budget that keep which text is longer where that
        matters (an odd budget split in halves), read further only then."""
        # Every side is whole, or has at least ``budget + 2`` known tokens.
        n1 = first.count if first.complete else None
        n2 = second.count if second.complete else None
        if n1 is not None and n2 is not None and n1 + n2 <= budget:
            return n1, n2
        over = budget + 1
        halves = all(n is None or 2 * n > budget for n in (n1, n2))
        if budget % 2 == 0 or not halves:  # which text is longer does not matter
            return min(over, over if n1 is None else n1), min(over, over if n2 is None else n2)
        if n1 is not None and n2 is not None:
            order = (n1 > n2) - (n1 < n2)
        elif n1 is not None or n2 is not None:
            whole, other = (first, second) if n1 is not None else (second, first)
            if whole.count > budget:  # find out whether the other has more tokens than it
                other.need = whole.count + 1
                self._grow([other], is_pretokenized)
            if other.complete:
                order = (first.count > second.count) - (first.count < second.count)
            else:
                order = 1 if other is first else -1
        else:
            order = self._compare_counts(first.item, second.item, is_pretokenized)
        return over + (order > 0), over + (order < 0)

    def _compare_counts(self, a: Item, b: Item, is_pretokenized: bool) -> int:
        """The sign of (tokens of ``a`` − tokens of ``b``), counted chunk by chunk in step, so
        that it stops soon after the shorter one ends."""
        runs = [self.running_counts(item, is_pretokenized) for item in (a, b)]
        counts, done = [0, 0], [False, False]
        while not all(done):
            k = 0 if not done[0] and (done[1] or counts[0] <= counts[1]) else 1
            counts[k], done[k] = next(runs[k])
            for j in (0, 1):
                if done[j] and counts[1 - j] > counts[j]:  # the other is longer already
                    return -1 if j == 0 else 1
        return (counts[0] > counts[1]) - (counts[0] < counts[1])

    def running_counts(self, item: Item, is_pretokenized: bool) -> Iterator[tuple[int, bool]]:
        """Tokens of ``item`` counted so far, and whether that is all of them: one chunk per
        step, never holding more than a chunk's tokens.

        A chunk starts ``MARGIN_WORDS`` pieces and ``margin`` characters before the first
        token not counted yet (what a text's start changes, a prefix space for instance, stays
        in those) and counts the pieces that are the whole text's by the prefix rule. A piece
        longer than ``COUNT_CAP`` characters is counted in parts (approximately).
        """
        if is_pretokenized:
            yield from self._running_word_counts(item)
            return
        total = begin = context = 0
        size = COUNT_CHUNK
        while True:
            end = min(len(item), begin + size)
            encoding = self.raw.encode(item[context:end], add_special_tokens=False)
            words, offsets = encoding.word_ids, encoding.offsets
            starts = [context + start for start, _ in offsets]
            if end == len(item):
                yield total + sum(1 for s in starts if s >= begin), True
                return
            cut = self._stable_run(words, offsets, end, len(words), shift=context)
            while 0 < cut < len(words) and words[cut - 1] == words[cut]:
                cut -= 1  # back to the start of the piece the cut falls in
            counted = sum(1 for s in starts[:cut] if s >= begin)
            if counted and cut < len(words) and words[cut] is not None \
                    and starts[cut] > begin:
                total += counted
                back = next(i for i in range(cut + 1) if words[i] is not None
                            and words[i] >= words[cut] - MARGIN_WORDS)
                begin = starts[cut]
                context = max(0, min(starts[back], begin - self.margin))
                size = COUNT_CHUNK
            elif size >= COUNT_CAP:  # one piece, or no token, over the whole chunk
                middle = begin + size // 2
                total += sum(1 for s in starts if begin <= s < middle)
                begin, context, size = middle, max(0, middle - self.margin), COUNT_CHUNK
            else:
                size *= 2
            yield total, False

    def _running_word_counts(self, words: list[str]) -> Iterator[tuple[int, bool]]:
        """``running_counts`` of a list of words: each is tokenized on its own."""
        total = 0
        for start in range(0, len(words), COUNT_CHUNK):
            total += len(self.raw.encode(words[start:start + COUNT_CHUNK],
                                         is_pretokenized=True, add_special_tokens=False).ids)
            yield total, start + COUNT_CHUNK >= len(words)
        if not words:
            yield 0, True


def _length(item: Item, is_pretokenized: bool) -> int:
    """Characters of a text, or of a list of words with one separator each."""
    if is_pretokenized:
        return sum(len(word) + 1 for word in item)
    return len(item)
