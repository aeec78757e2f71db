"""token-classification (named-entity recognition): built into nlpforge.

Found through the ``nlpforge`` entry-point group like any plugin. The modules imported here
use numpy and tokenizers only; the head is built inside ``build_model``.
"""

from __future__ import annotations

import nlpforge
from nlpforge_token_classification.task import TokenClassification

NLPFORGE_PLUGIN_API = 1

__all__ = ["TokenClassification"]


@nlpforge.hookimpl
def register_tasks(register):
    register(TokenClassification)
