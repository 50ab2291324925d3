"""Process-group helpers for the cross-device contrastive loss.

LLaVE gathers queries and targets from every process WITH gradient (paper Eq. 8, Lan et al. 2025, arXiv
2503.04812): each of the K processes scores its own B rows against all K·B gathered candidates, and the gradient
of every score flows back to the process that encoded the candidate. A plain ``torch.distributed.all_gather``
returns tensors detached from the graph: the loss would then only send gradient into this process's own rows,
which is a wrong gradient, not merely a rescaled one.

Semantics of a gathered step: rank r's loss ``L_r`` is a mean over its B rows; the owner of candidate ``x_k``
receives ``Σ_r ∂L_r/∂x_k``; DDP then averages parameter gradients over the K processes. The result is the gradient
of ``mean_r L_r``, which is exactly the loss of one process on the concatenated K·B batch (rows in rank order).

Rank and world size come from ``torch.distributed`` (accelerate, DeepSpeed and torchrun all initialise it). All
helpers are no-ops without an initialised process group, so the same code runs with and without a launcher.
"""

import torch
import torch.distributed as dist


__all__ = ["get_rank_and_world_size", "all_gather_with_grad", "all_gather_no_grad"]

# torch 2.13 renamed the single-tensor collectives (the old names now warn); the old names serve torch < 2.13.
# Both forms are native on NCCL and have a fallback on gloo since torch 2.2, so the tests run them on CPU.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank_and_world_size() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of this process in the default process group, ``(0, 1)`` without one."""
    if _world_size() == 1:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` on each of K ranks -> ``(K·B, ...)`` in rank order."""
    tensor = tensor.contiguous()
    gathered = tensor.new_empty((_world_size() * tensor.shape[0], *tensor.shape[1:]))
    _all_gather_single(gathered, tensor)
    return gathered


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns to each rank the gradient of its rows summed over ranks.

    Forward: ``x_k`` (B, ...) on rank k -> ``X = cat(x_0, ..., x_{K-1})`` on every rank.
    Backward: rank r holds ``∂L_r/∂X``; the owner of ``x_k`` needs ``Σ_r ∂L_r/∂x_k``, i.e. block k of the sum
    over ranks: a reduce-scatter. It moves each block once (an all-reduce then slicing would also send every
    rank the K-1 blocks it throws away: twice the traffic).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return _gather_rows(tensor)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad_output = grad_output.contiguous()
        grad = grad_output.new_empty((grad_output.shape[0] // _world_size(), *grad_output.shape[1:]))
        _reduce_scatter_single(grad, grad_output, op=dist.ReduceOp.SUM)
        return grad


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather: ``(B, ...)`` on each of K processes -> ``(K·B, ...)`` in rank order.

    Every process must pass a tensor of the SAME shape and dtype (collectives need equal sizes; the trainer
    drops an uneven last batch). Each row's gradient, summed over processes, returns to the process that owns it
    (see the module docstring). Returns ``tensor`` unchanged in a single process.
    """
    if _world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather without gradient, e.g. integer content ids: ``(B, ...)`` -> ``(K·B, ...)`` in rank order.

    Same equal-shape requirement as `all_gather_with_grad`; returns ``tensor`` unchanged in a single process.
    """
    if _world_size() == 1:
        return tensor
    return _gather_rows(tensor)
