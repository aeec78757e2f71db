"""Streaming text: turn tokens into text pieces that never change once given out.

Decoding one token at a time breaks text: a byte-level BPE token can hold half of a UTF-8
character (it decodes to "\\ufffd" until the rest arrives), and word-piece or sentencepiece
decoders join or space pieces depending on what follows. ``TextStream`` works the way
``transformers``' ``TextStreamer`` does: it decodes the tokens since the last line break
together and gives out only text up to the last space (all of it after a line break, and
after CJK characters, which have no spaces), holding back a trailing "\\ufffd".

``StopStrings`` finds stop strings in generated text, and tells how much of a text can be
given out without giving out the start of a stop string that the next token may complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class TextStream:
    """Incremental detokenizer: ``push(tokens)`` returns new final text, ``flush()`` the rest."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.tokens: list[int] = []
        self.given = 0  # characters of decode(tokens) already returned

    def push(self, tokens: Sequence[int]) -> str:
        self.tokens.extend(int(t) for t in tokens)
        text = self.decode(self.tokens)
        if text.endswith(REPLACEMENT):  # an incomplete UTF-8 character
            return ""
        if text.endswith("\n"):
            piece = text[self.given:]
            self.tokens, self.given = [], 0
            return piece
        if text and _is_cjk(text[-1]):
            end = len(text)
        else:
            end = text.rfind(" ") + 1
        piece = text[self.given:end] if end > self.given else ""
        self.given += len(piece)
        return piece

    def flush(self) -> str:
        """The text held back; call once the generation has ended."""
        text = self.decode(self.tokens) if self.tokens else ""
        piece = text[self.given:]
        self.tokens, self.given = [], 0
        return piece


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2CEAF or 0xF900 <= code <= 0xFAFF
            or 0x2F800 <= code <= 0x2FA1F or 0x3040 <= code <= 0x30FF
            or 0xAC00 <= code <= 0xD7AF)


class StopStrings:
    """The stop strings of a request: where generated text must end."""

    def __init__(self, strings: Sequence[str]):
        self.strings = tuple(strings)
        self.longest = max((len(s) for s in self.strings), default=0)

    def __bool__(self) -> bool:
        return bool(self.strings)

    def find(self, text: str) -> int | None:
        """Index of the earliest stop string in ``text``, or None."""
        found = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return min(found) if found else None

    def cut(self, text: str) -> str:
        """``text`` up to (without) its first stop string."""
        at = self.find(text)
        return text if at is None else text[:at]

    def safe_length(self, text: str) -> int:
        """How much of ``text`` (with no stop string in it) can be given out: all but a tail
        that is the beginning of a stop string."""
        for keep in range(min(self.longest - 1, len(text)), 0, -1):
            tail = text[-keep:]
            if any(s.startswith(tail) for s in self.strings):
                return len(text) - keep
        return len(text)

    def token_window(self) -> int:
        """Tokens to decode from the end of a row to see any stop string it ends with: a
        character is at most 4 UTF-8 bytes and a token at least one byte, plus slack for a
        character split across the window's start."""
        return 4 * self.longest + 4
