"""Distributed data-parallel training with ``torch.distributed`` (DDP), started by ``torchrun``.

``torchrun --nproc_per_node=K -m fitnet.train ...`` starts K processes (ranks); each holds the
whole model and every split, and trains on its share of each global batch: ``batch_size`` stays
the global batch, so a K-process run takes the same steps as a one-process run. Gradients are
averaged by DDP (gloo on the CPU, NCCL on GPUs). Every rank validates on the whole validation
split, so the sigma calibration and the early-stopping decision are the same on all of them;
rank 0 alone writes checkpoints, metrics and plots. Without torchrun's environment nothing here
does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sersic_runtime.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size`` (0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this rank writes the run's files (rank 0)."""
        return self.rank == 0


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on the
    CPU. Returns the world and this rank's device (``cuda:<LOCAL_RANK>`` on GPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def close() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def same_everywhere(world: World, value, what: str) -> None:
    """Refuse a run whose ranks disagree on ``value`` (picklable; ``what`` names it)."""
    if not world.distributed:
        return
    values = [None] * world.size
    dist.all_gather_object(values, value)
    for rank, other in enumerate(values):
        if other != values[0]:
            raise UserError(
                f"the ranks of this DDP run see different {what}: rank 0 has {values[0]}, "
                f"rank {rank} has {other}; give every rank the same files and options"
            )


def from_main(world: World, value):
    """Rank 0's ``value`` on every rank (a decision that must agree, such as stopping)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_all(world: World, *values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (in place; returned for convenience)."""
    if world.distributed:
        for v in values:
            dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return list(values)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` inside ``DistributedDataParallel`` when distributed (its parameters start as
    rank 0's), else unchanged."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_batch_size(batch_size: int, world: World) -> int:
    """This rank's share of the global ``batch_size`` (which must divide evenly)."""
    if batch_size % world.size:
        raise UserError(
            f"batch_size={batch_size} is not allowed with {world.size} DDP processes: the "
            f"global batch must be a multiple of the number of processes"
        )
    return batch_size // world.size
