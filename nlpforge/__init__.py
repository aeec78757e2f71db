"""nlpforge: fine-tune transformers for NLP tasks, export to ONNX, run without torch.

This module imports neither torch nor transformers. ``__all__`` is what a plugin author
imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from nlpforge.version import __version__

#: Decorator for plugin hook implementations: ``@nlpforge.hookimpl``.
hookimpl = pluggy.HookimplMarker("nlpforge")

from nlpforge.data import read_dataset  # noqa: E402
from nlpforge.errors import DataError, ModelDirError, NlpforgeError, UsageError  # noqa: E402
from nlpforge.families import ModelFamily  # noqa: E402
from nlpforge.metrics import IGNORE_INDEX  # noqa: E402
from nlpforge.report.section import ReportSection  # noqa: E402
from nlpforge.runtime.tokenizer import Tokenizer  # noqa: E402
from nlpforge.tasks import (ENCODER_INPUTS, Field, Option, Signature, Task,  # noqa: E402
                            config_labels, encoder_signature)

if TYPE_CHECKING:
    from nlpforge.runtime.generation.generator import Generator
    from nlpforge.runtime.predictor import Predictor


def load(path: str, **kwargs: Any) -> "Predictor | Generator":
    """Load an export dir (torch-free) with its family's runtime: a
    :class:`nlpforge.runtime.Predictor` for an encoder, a
    :class:`nlpforge.runtime.generation.generator.Generator` for a decoder-only or
    encoder-decoder export. Keywords: ``device``, ``threads``, ``batch_size``, ``variant``."""
    from nlpforge.families import family
    from nlpforge.manifest import read_manifest

    runtime = family(read_manifest(path)["family"]).load("runtime")
    return runtime.load(path, **kwargs)


__all__ = [
    "__version__", "hookimpl", "load", "Task", "Field", "Option", "ModelFamily", "Signature",
    "encoder_signature", "config_labels", "ENCODER_INPUTS", "IGNORE_INDEX", "Tokenizer",
    "NlpforgeError", "DataError", "UsageError", "ModelDirError", "read_dataset",
    "ReportSection",
]
