"""DecoderScorer: a decoder-only export scored teacher-forced (``Task.evaluate_by ==
"forward"``: perplexity) with one forward pass per batch of whole texts. No torch.

The KV-cache graph takes the whole text as its prompt; its cache inputs get empty arrays
(``[batch, kv heads, 0, head dim]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlpforge.runtime.predictor import Predictor


class DecoderScorer(Predictor):
    """A ``Predictor`` over a decoder export's graph, with empty caches fed in."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.empty_caches = {i.name: (i.shape[1], i.shape[3]) for i in self.session.get_inputs()
                             if i.name.startswith("past_key_values.")}

    def run(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(features["input_ids"])
        caches = {name: np.zeros((batch, heads, 0, dim), dtype=np.float32)
                  for name, (heads, dim) in self.empty_caches.items() if name not in features}
        return super().run({**features, **caches})
