"""token-classification (named-entity recognition): built into nlpforge (work in progress)."""

NLPFORGE_PLUGIN_API = 1
