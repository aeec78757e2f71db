"""Batch order for an epoch: random, or grouped by length to cut padding."""

from __future__ import annotations

from typing import Sequence

import torch

from nlpforge.runtime.batching import by_length

MEGABATCH = 50  # batches per group that is sorted by length (as in Hugging Face's sampler)


def epoch_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                  group_by_length: bool = True) -> list[list[int]]:
    """Row indices per batch for one epoch.

    With ``group_by_length``, rows are shuffled, cut into groups of ``MEGABATCH`` batches, each
    group sorted by length and split into batches, and the batch order shuffled: every batch
    holds rows of similar length (little padding) while the epoch stays random.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    size = MEGABATCH * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        group = sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


#: What one more forward/backward pass costs, in padded tokens: the per-pass work that does not
#: grow with the batch (writing every weight's gradient, the embedding table's included) against
#: the cost of a token, measured by ``python tools/profile_train_step.py --pass-cost`` (the
#: figures are in docs/training.md).
SPLIT_COST = 80


def split_by_length(lengths: Sequence[int], cost: int = SPLIT_COST) -> list[list[int]]:
    """Cut one batch into micro-batches of similar length, as few as pay for themselves.

    ``lengths`` are the rows' token counts. Rows are sorted by length and cut into runs that
    minimise ``padded tokens + cost × micro-batches`` (exactly, by dynamic programming over
    the cut points). Returns positions into ``lengths``, one list per micro-batch, shortest
    first. Accumulating the micro-batches' gradients weighted by their examples gives the
    batch's own gradient; only the padding changes.
    """
    order = by_length(lengths)
    n = len(order)
    best = [0] + [float("inf")] * n  # best[j]: cheapest plan for the j shortest rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            value = best[i] + (j - i) * longest + cost
            if value < best[j]:
                best[j], cut[j] = value, i
    parts: list[list[int]] = []
    j = n
    while j:
        parts.append(order[cut[j]:j])
        j = cut[j]
    return parts[::-1]
