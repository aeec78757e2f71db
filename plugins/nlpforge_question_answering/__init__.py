"""question-answering (extractive): the span of a context that answers a question.

Built into nlpforge, found through the ``nlpforge`` entry-point group like any plugin. Rows
are SQuAD-format (``question``, ``context``, ``answers`` with character starts); long
contexts are split into overlapping windows (``windows.py``), answers are the best span over
all windows (``spans.py``), metrics are the official SQuAD EM and F1 (``squad.py``). This
module imports no torch; the head is built inside ``build_model``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import (ENCODER_INPUTS, Field, ModelFamily, Option, Signature, Task, UsageError,
                      encoder_signature)
from nlpforge_question_answering.answers import check_answers, parse_answers
from nlpforge_question_answering.spans import RowSpans, Span, search_spans
from nlpforge_question_answering.squad import squad_scores
from nlpforge_question_answering.windows import (
    answer_positions,
    split_windows,
    window_features,
)

NLPFORGE_PLUGIN_API = 1

OUTPUTS = ("start_logits", "end_logits")


class QuestionAnswering(Task):
    """SQuAD-style extractive QA; SQuAD 2.0 no-answer questions with allow_no_answer=true."""

    id = "question-answering"
    version = 1
    description = "Extractive QA: the span of a context that answers a question (SQuAD format)"
    family = ModelFamily.ENCODER
    splits_rows = True  # long texts become several windows
    train_fields = (
        Field("question", str, description="the question"),
        Field("context", str, description="the text that holds the answer"),
        Field("answers", (dict, list),
              description='{"text": [...], "answer_start": [...]} or a list of '
                          '{"text", "answer_start"}; empty: no answer (allow_no_answer=true)'),
    )
    request_fields = (
        Field("question", str, description="the question"),
        Field("context", str, description="the text to find the answer in"),
    )
    options = (
        Option("doc_stride", 128, "tokens shared by consecutive windows of a long context"),
        Option("max_answer_length", 30, "longest answer, in tokens"),
        Option("n_best", 1, "answers returned per question; more than 1 adds an 'n_best' list"),
        Option("allow_no_answer", False, "questions may have no answer in the context "
                                         "(SQuAD 2.0): answer '' when that scores best"),
        Option("null_threshold", 0.0, "allow_no_answer: answer '' when the no-answer logit "
                                      "beats the best span's by more than this"),
    )
    primary_metric = "f1"
    checkpoint_heads = ("ForQuestionAnswering",)
    greater_is_better = True
    default_max_length = 384

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        for name, least in (("doc_stride", 0), ("max_answer_length", 1), ("n_best", 1)):
            if self.settings[name] < least:
                raise UsageError(f"task option {name} must be at least {least}, got "
                                 f"{self.settings[name]}")

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        if training:
            check_answers(row, path, line, self.settings["allow_no_answer"])

    # -- preprocessing ----------------------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        # Leading whitespace in a question only wastes window room (run_qa strips it too).
        windows, owners = split_windows(tokenizer, [r["question"].lstrip() for r in rows],
                                        [r["context"] for r in rows],
                                        self.settings["doc_stride"])
        return window_features(tokenizer, windows, owners)

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """One example per window: the answer's token positions, or the first token when the
        window does not hold the (first) answer."""
        features = self.encode(rows, tokenizer)
        spans = []
        for row in rows:
            answers = parse_answers(row["answers"])
            spans.append((answers[0].start, answers[0].end) if answers else None)
        starts, ends = answer_positions(features, spans)
        batch = {name: features[name] for name in ENCODER_INPUTS}
        return {**batch, "start_positions": starts, "end_positions": ends}

    def loss_units(self, batch: dict[str, Any]) -> int:
        return int(batch["start_positions"].shape[0])  # windows, not rows

    # -- head -------------------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(base, **kwargs)

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(path, **kwargs)

    def forward(self, model: Any, features: dict[str, Any]) -> dict[str, Any]:
        out = model(**features)
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}

    def export_signature(self, model_inputs: Sequence[str]) -> Signature:
        return encoder_signature(model_inputs, outputs=OUTPUTS, per_token=True)

    # -- outputs ----------------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        """``{"answer", "start", "end", "score"}`` per row: the text, its character span in
        the context, and its probability; no answer is ``""`` with start and end null."""
        n_best = self.settings["n_best"]
        found = search_spans(outputs, len(rows), self.settings["max_answer_length"], n_best,
                             self.settings["allow_no_answer"])
        return [self._prediction(outputs["offsets"], row["context"], result, n_best)
                for row, result in zip(rows, found)]

    def _prediction(self, offsets: np.ndarray, context: str, found: RowSpans,
                    n_best: int) -> dict[str, Any]:
        answers: list[dict[str, Any]] = []
        seen: set[tuple[int, int]] = set()
        for span in found.spans:  # overlapping windows find the same span more than once
            answer = _answer(offsets, context, span)
            key = (answer["start"], answer["end"])
            if key not in seen:
                seen.add(key)
                answers.append(answer)
            if len(answers) == n_best:
                break
        null = {"answer": "", "start": None, "end": None, "score": found.null_probability}
        best = answers[0] if answers else null
        if answers and found.null_logit is not None \
                and found.null_logit - found.spans[0].logit > self.settings["null_threshold"]:
            best = null
        if n_best == 1:
            return best
        return {**best, "n_best": answers}

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        golds = [[a.text for a in parse_answers(row["answers"])] for row in rows]
        return squad_scores([p["answer"] for p in predictions], golds,
                            no_answers=self.settings["allow_no_answer"])

    def report(self, predictions: Sequence[dict], rows: Sequence[dict],
               metrics: dict[str, Any]) -> list[Any]:
        """Exact match and F1 by the length of the gold answer, in words."""
        from nlpforge import ReportSection
        from nlpforge_question_answering.squad import by_answer_length

        golds = [[a.text for a in parse_answers(row["answers"])] for row in rows]
        buckets = by_answer_length([p["answer"] for p in predictions], golds,
                                   self.settings["allow_no_answer"])
        names = [b["answer words"] for b in buckets]
        series = {"exact_match": [b["exact_match"] / 100 for b in buckets],
                  "f1": [b["f1"] / 100 for b in buckets]}
        return [ReportSection("Scores by answer length", table=buckets,
                        note="the gold answer's length in words (the shortest gold answer)",
                        draw=lambda p: p.bars(names, series, "exact match and F1 (0-1)"))]

    def example_request(self) -> dict[str, Any]:
        return {"question": "What does the export check?",
                "context": "The export check runs one question through the exported model."}


def _answer(offsets: np.ndarray, context: str, span: Span) -> dict[str, Any]:
    start = int(offsets[span.window, span.start, 0])
    end = int(offsets[span.window, span.end, 1])
    return {"answer": context[start:end], "start": start, "end": end,
            "score": span.probability}


@nlpforge.hookimpl
def register_tasks(register):
    register(QuestionAnswering)
