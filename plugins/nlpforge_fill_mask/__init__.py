"""fill-mask (masked-LM): built into nlpforge (work in progress)."""

NLPFORGE_PLUGIN_API = 1
