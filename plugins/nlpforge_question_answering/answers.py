"""Gold answers of SQuAD-format rows: both spellings, checked against the context.

Hugging Face's ``datasets`` writes ``{"text": [...], "answer_start": [...]}``; the original
SQuAD JSON and many exports write ``[{"text": ..., "answer_start": ...}, ...]``. Both are
accepted. An answer that is not where ``answer_start`` says would train the model on the
wrong tokens without any visible failure, so it is an error that shows what is there.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from nlpforge import DataError

FIELD = "answers"


class Answer(NamedTuple):
    text: str
    start: int  # character offset in the context

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def parse_answers(value: Any, path: str | None = None, line: int | None = None) -> list[Answer]:
    """The answers of a row's ``answers`` field, in order; DataError when malformed."""
    def fail(message: str) -> DataError:
        return DataError(message, path, line, FIELD)

    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if isinstance(texts, str) or isinstance(starts, int):
            texts, starts = [texts], [starts]
        if not isinstance(texts, list) or not isinstance(starts, list):
            raise fail('expected {"text": [...], "answer_start": [...]} (lists of the same '
                       f'length), got {_brief(value)}')
        if len(texts) != len(starts):
            raise fail(f"'text' has {len(texts)} answers but 'answer_start' has {len(starts)}")
        pairs = list(zip(texts, starts))
    elif isinstance(value, list):
        pairs = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "text" not in item or "answer_start" not in item:
                raise fail(f'answer {i}: expected {{"text": ..., "answer_start": ...}}, got '
                           f'{_brief(item)}')
            pairs.append((item["text"], item["answer_start"]))
    else:
        raise fail(f"expected an object or a list of answers, got {_brief(value)}")
    answers = []
    for i, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text:
            raise fail(f"answer {i}: 'text' must be a non-empty string, got {_brief(text)}")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise fail(f"answer {i} {text!r}: 'answer_start' must be a character offset "
                       f"(an integer >= 0), got {_brief(start)}")
        answers.append(Answer(text, start))
    return answers


def check_answers(row: dict, path: str | None, line: int | None,
                  allow_no_answer: bool) -> list[Answer]:
    """Parse a row's answers and check each one is in the context where it says it is."""
    answers = parse_answers(row[FIELD], path, line)
    if not answers and not allow_no_answer:
        raise DataError("no answers: a question without an answer needs the task option "
                        "allow_no_answer=true (SQuAD 2.0 style)", path, line, FIELD)
    context = row["context"]
    for i, answer in enumerate(answers):
        found = context[answer.start:answer.end]
        if found == answer.text:
            continue
        where = context.find(answer.text)
        hint = (f"; the text occurs at offset {where}" if where >= 0
                else "; the text does not occur in the context at all")
        raise DataError(f"answer {i} {answer.text!r} is not at answer_start {answer.start}: "
                        f"the context there reads {found!r}{hint}", path, line, FIELD)
    return answers


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
