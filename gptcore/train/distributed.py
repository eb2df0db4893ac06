"""torchrun's environment: which process this is, on which device, and a barrier."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..device import pick_device

__all__: list[str] = []  # internal to gptcore.train


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """One process (Dist()) unless torchrun set RANK and WORLD_SIZE; then join the group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(), pick_device(device_pref)
    import torch.distributed as dist

    d = Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return d, device


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
