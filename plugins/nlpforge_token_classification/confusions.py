"""Which entities a tagger gets wrong, and as what: for the report of ``nlpforge evaluate``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from nlpforge_token_classification.tags import BIOES, entities


def entity_confusions(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]],
                      scheme: str) -> list[dict]:
    """Counts of (true type → predicted type) over entities that are not found exactly: the
    same words with another type, a true entity no predicted one overlaps ('-' predicted), a
    predicted entity no true one overlaps ('-' true); overlapping spans of other extents count
    as a boundary error. Most frequent first."""
    counts: Counter = Counter()
    strict = scheme == BIOES
    for pred_tags, true_tags in zip(predicted, reference):
        pred = set(entities(pred_tags, scheme, strict))
        true = set(entities(true_tags, scheme, strict))
        for span in true - pred:
            same_words = [p for p in pred if (p.start, p.end) == (span.start, span.end)]
            overlapping = [p for p in pred if p.start < span.end and span.start < p.end]
            if same_words:
                counts[(span.type, same_words[0].type)] += 1
            elif overlapping:
                counts[(span.type, f"{overlapping[0].type} (other words)")] += 1
            else:
                counts[(span.type, "-")] += 1
        for span in pred - true:
            if not any(t.start < span.end and span.start < t.end for t in true):
                counts[("-", span.type)] += 1
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in counts.most_common()]
