"""This process's place under ``torchrun`` (DDP), and the few collectives the trainer needs.

Under ``torchrun --nproc_per_node=N zoo train ...`` (``WORLD_SIZE`` > 1) the trainer wraps the model
in ``DistributedDataParallel``: every rank takes the slice ``rank::world`` of each global batch
(``train.batch_size`` is the global batch), gradients are averaged by DDP, the loss is normalised by
the global count of real rows (so the gradient equals the single-process gradient of the same
global batch), evaluation batches are split over the ranks and their sums all-reduced, and rank 0
alone writes checkpoints, logs and the summary. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

__all__ = ["Dist"]


@dataclass
class Dist:
    """This process's place under torchrun (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` under torchrun, the given one (with an index) otherwise."""
        if device.type == "cuda":
            if self.world > 1:
                device = torch.device("cuda", self.local_rank)
            elif device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
        return device

    def init(self, device: torch.device, global_batch: int) -> None:
        """Join the process group (NCCL on GPUs, gloo on CPUs); the global batch must split evenly."""
        if self.world == 1:
            return
        if global_batch % self.world:
            from zoo.train.experiment import ExperimentConfigError

            raise ExperimentConfigError(f"train.batch_size={global_batch} is the global batch: it must be divisible "
                                        f"by the {self.world} processes of torchrun")
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def rank_slice(self, b):
        """This rank's rows ``rank::world`` of a global :class:`zoo.train.batching.Batch` (counts stay global)."""
        if self.world == 1:
            return b
        r, w = self.rank, self.world
        return dataclasses.replace(b, inputs=[x[r::w] for x in b.inputs],
                                   masks=[m if m is None else m[r::w] for m in b.masks], labels=b.labels[r::w],
                                   weights=b.weights[r::w])
