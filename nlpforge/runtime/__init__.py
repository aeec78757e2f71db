"""The torch-free runtime: ONNX Runtime sessions, tokenization, prediction.

``Predictor`` is imported on first use: ``import nlpforge`` (which exports ``Tokenizer``)
need not load the prediction code, the manifest and its version handling.
"""

from typing import Any

from nlpforge.runtime.tokenizer import Tokenizer

__all__ = ["Predictor", "Tokenizer"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from nlpforge.runtime.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'nlpforge.runtime' has no attribute {name!r}")
