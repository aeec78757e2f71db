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
    from nlpforge.runtime.predictor import Predictor


def load(path: str, **kwargs: Any) -> "Predictor":
    """Load an export dir for prediction (torch-free). See :class:`nlpforge.runtime.Predictor`."""
    from nlpforge.runtime.predictor import Predictor

    return Predictor.load(path, **kwargs)


__all__ = [
    "__version__", "hookimpl", "load", "NlpforgeError", "Task", "Field", "Option",
    "ModelFamily", "Signature",
]
