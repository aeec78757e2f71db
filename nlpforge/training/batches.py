"""Batch order for an epoch: random, or grouped by length to cut padding."""

from __future__ import annotations

from typing import Sequence

import torch

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
