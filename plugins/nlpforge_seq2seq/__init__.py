"""text2text-generation, summarization, translation and span-corruption: the
encoder-decoder tasks built into nlpforge, found through the ``nlpforge`` entry-point group
like any plugin.

Modules: ``tasks`` (the three source → target tasks), ``pretraining`` (span corruption),
``encoding`` (rows → features, no torch), ``span_corruption`` (T5's noise mask),
``metrics`` (ROUGE, BLEU, chrF, perplexity). Nothing here imports torch at module level.
"""

from __future__ import annotations

import nlpforge

from nlpforge_seq2seq.pretraining import SpanCorruption
from nlpforge_seq2seq.tasks import Summarization, Text2TextGeneration, Translation

NLPFORGE_PLUGIN_API = 1

__all__ = ["SpanCorruption", "Summarization", "Text2TextGeneration", "Translation"]


@nlpforge.hookimpl
def register_tasks(register):
    for task in (Text2TextGeneration, Summarization, Translation, SpanCorruption):
        register(task)
