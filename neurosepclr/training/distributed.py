"""Multi-GPU (or multi-process CPU) training with ``torchrun``: DDP, per-rank shards of each global
batch, optional all-gather of the embeddings so the all-pairs terms (uniformity, k-JEM) see the
global batch, and only rank 0 writing files.

    torchrun --nproc_per_node=4 -m neurosepclr train DERIVATIVES RUN_DIR --config pipelines/hospital-gpu.yaml

With CUDA: NCCL backend, one GPU per rank, SyncBatchNorm. On CPU (tests): gloo backend and plain
BatchNorm, whose running statistics DDP broadcasts from rank 0 at every forward.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def shard(indices, ctx: DistContext):
    """This rank's share of a global batch (strided, so each shard mixes both groups)."""
    return indices[ctx.rank :: ctx.world_size] if ctx.enabled else indices


def gather(tensor: torch.Tensor, ctx: DistContext, with_grad: bool) -> torch.Tensor:
    """Concatenate every rank's rows (rank order). With ``with_grad`` gradients flow back to each
    rank's own rows, so a loss on the global batch trains every shard."""
    if not ctx.enabled:
        return tensor
    if with_grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_finite(value: torch.Tensor, ctx: DistContext) -> bool:
    """Whether ``value`` is finite on every rank (so all ranks stop together)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if ctx.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def parameters_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the trainable parameters (BatchNorm running statistics are excluded: on CPU each
    rank updates its own after the last forward, and DDP re-broadcasts rank 0's before the next)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ranks_agree(model: torch.nn.Module, ctx: DistContext) -> bool:
    """Whether every rank holds exactly the same trainable weights."""
    if not ctx.enabled:
        return True
    digests: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(digests, parameters_digest(model))
    return len(set(digests)) == 1


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
