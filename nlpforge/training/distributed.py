"""DistributedDataParallel under torchrun: gloo on CPU, nccl on CUDA; rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes in the environment (a no-op without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_sum(d: Dist, value: float, device: torch.device) -> float:
    if not d.enabled:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def all_any(d: Dist, flag: bool) -> bool:
    if not d.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def shard(d: Dist, rows: Sequence[Any]) -> list[Any]:
    """This rank's share of a global batch (strided, so lengths stay alike)."""
    return list(rows[d.rank::d.world])


def gather_in_order(d: Dist, shard_items: list[Any], total: int) -> list[Any]:
    """Inverse of ``shard`` for a list of ``total`` items: every rank gets the whole list."""
    if not d.enabled:
        return shard_items
    parts: list[list[Any]] = [None] * d.world  # type: ignore[list-item]
    dist.all_gather_object(parts, shard_items)
    result: list[Any] = [None] * total
    for rank, part in enumerate(parts):
        result[rank::d.world] = part
    return result
