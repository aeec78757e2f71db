"""text-generation (decoder-only causal LM): built into nlpforge (work in progress)."""

NLPFORGE_PLUGIN_API = 1
