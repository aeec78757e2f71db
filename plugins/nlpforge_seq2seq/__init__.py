"""text2text-generation, summarization, translation, span-corruption (encoder-decoder): built into nlpforge (work in progress)."""

NLPFORGE_PLUGIN_API = 1
