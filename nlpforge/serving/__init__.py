"""nlpforge serve: export dirs over HTTP. Imports no torch or transformers.

``create_app([ServedModel.load("sentiment", "exports/sentiment")])`` is an ASGI app speaking the
Open Inference Protocol (KServe v2) and a plain JSON route, with a dynamic batcher per model.
"""

from nlpforge.serving.app import create_app
from nlpforge.serving.served import ServedModel
from nlpforge.serving.state import ServeSettings

__all__ = ["create_app", "ServedModel", "ServeSettings"]
