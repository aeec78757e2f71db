"""nlpforge: fine-tune transformers for NLP tasks, export to ONNX, run without torch.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@nlpforge.hookimpl``.
hookimpl = pluggy.HookimplMarker("nlpforge")

from nlpforge.errors import NlpforgeError  # noqa: E402
from nlpforge.tasks import Field, ModelFamily, Option, Signature, Task  # noqa: E402

if TYPE_CHECKING:
    from nlpforge.runtime.generation.generator import Generator
    from nlpforge.runtime.predictor import Predictor


def load(path: str, **kwargs: Any) -> "Predictor | Generator":
    """Load an export dir (torch-free): a :class:`nlpforge.runtime.Predictor`, or for a
    decoder-only or encoder-decoder export a
    :class:`nlpforge.runtime.generation.generator.Generator`."""
    from nlpforge.manifest import read_manifest
    from nlpforge.runtime.generation.generator import Generator, is_generative
    from nlpforge.runtime.predictor import Predictor

    if is_generative(read_manifest(path)):
        return Generator.load(path, **kwargs)
    return Predictor.load(path, **kwargs)


__all__ = [
    "__version__", "hookimpl", "load", "NlpforgeError", "Task", "Field", "Option",
    "ModelFamily", "Signature",
]
