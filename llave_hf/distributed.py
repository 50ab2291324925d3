"""Process-group helpers for the cross-device contrastive loss.

LLaVE gathers queries and targets from every process WITH gradient, so that each process scores its own rows
against all ``world_size * batch`` candidates (LLaVE paper, Lan et al. 2025, arXiv 2503.04812).
A plain ``torch.distributed.all_gather`` returns tensors detached from the graph: the loss would then only
send gradient into this process's own rows, which is a wrong gradient, not merely a rescaled one.

All helpers are no-ops in a single process, so the same training code runs with and without a launcher.
"""

import torch
import torch.distributed as dist
from accelerate import PartialState


__all__ = ["get_rank_and_world_size", "all_gather_with_grad", "all_gather_no_grad"]


def _torch_distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank_and_world_size() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of this process.

    Taken from an initialised ``accelerate.PartialState`` (never created here: creating one would initialise
    a process group as a side effect), else from ``torch.distributed``, else ``(0, 1)``.
    """
    # `PartialState()` on an empty shared state would set one up; accelerate's own `is_initialized` reads the
    # shared dict the same way.
    if PartialState._shared_state:
        state = PartialState()
        return state.process_index, state.num_processes
    if _torch_distributed_ready():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends every process's gradient back to the rows' owner.

    Forward: ``x_k`` (B, ...) on rank k -> ``X = cat(x_0, ..., x_{K-1})`` (K*B, ...) on every rank.
    Backward: rank r holds ``dL_r/dX``. The owner of ``x_k`` needs ``sum_r dL_r/dx_k``, so the incoming
    gradients are summed over ranks (all_reduce SUM) and rank k keeps its slice. DDP then divides parameter
    gradients by K, which turns ``sum_r L_r`` into ``mean_r L_r``: the loss of one process on the
    concatenated batch, because each ``L_r`` is itself a mean over B rows.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        ctx.rank, ctx.batch_size = rank, tensor.shape[0]
        tensor = tensor.contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor)
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        # Copy: the in-place reduce must not write into a buffer autograd may still use elsewhere.
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch_size
        return grad[start : start + ctx.batch_size]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather: ``(B, ...)`` on each of K processes -> ``(K*B, ...)`` in rank order.

    Every process must pass a tensor of the SAME shape and dtype (collectives need equal sizes; the trainer
    drops an uneven last batch). Gradients flow back to the process that owns each row; see
    `_AllGatherWithGrad` for why the backward sums over processes. Returns ``tensor`` unchanged in a
    single process.
    """
    if not _torch_distributed_ready() or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather without gradient, e.g. integer content ids: ``(B, ...)`` -> ``(K*B, ...)`` in rank order.

    Same equal-shape requirement as `all_gather_with_grad`; returns ``tensor`` unchanged in a single process.
    """
    if not _torch_distributed_ready() or dist.get_world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)
