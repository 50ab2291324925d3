"""2-process worker for tests/test_distributed.py; run as ``torchrun --nproc_per_node 2 loss_worker.py OUT_DIR``.

Every rank builds the same seeded global batch and a shared linear "encoder" W, encodes its own slice, computes
the loss with ``gather_across_devices=True`` and backpropagates through ``all_gather_with_grad``. W's gradient is
then averaged over ranks as DDP does (all_reduce / world_size). The full-batch loss is the mean of the rank
losses, so its gradient on this rank's embeddings is the local embedding gradient / world_size. Each rank writes
``rank{r}.pt``; the parent test compares them with one process on the concatenated batch.

Before the loss, `gather_probe` checks ``all_gather_with_grad`` alone: each rank gathers rows of its own and
backpropagates rank-specific coefficients, so a backward that kept another rank's block, or did not sum over
ranks, gives a different gradient.
"""

import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import PartialState

from llave_hf.distributed import all_gather_no_grad, all_gather_with_grad, get_rank_and_world_size
from llave_hf.loss import hardness_weighted_contrastive_loss


WORLD_SIZE, BATCH_PER_RANK, NUM_HARD_NEGATIVES, INPUT_DIM, EMBED_DIM = 2, 3, 2, 6, 5

CONFIGS = {
    "released": dict(alpha=9.0, symmetric=True),
    "hard_negatives_masked": dict(
        alpha=9.0, symmetric=True, hard_negatives=True, query_ids=True, target_ids=True, hard_negative_ids=True
    ),
    "mean_normalized_one_direction": dict(
        alpha=9.0, symmetric=False, hard_negatives=True, target_ids=True, hardness_normalization="mean"
    ),
}


def global_batch() -> dict[str, torch.Tensor]:
    """Seeded float64 inputs of the whole step (WORLD_SIZE * BATCH_PER_RANK pairs); duplicates cross ranks."""
    generator = torch.Generator().manual_seed(0)
    size = WORLD_SIZE * BATCH_PER_RANK
    batch = {
        "weight": torch.randn(INPUT_DIM, EMBED_DIM, generator=generator, dtype=torch.float64),
        "query_inputs": torch.randn(size, INPUT_DIM, generator=generator, dtype=torch.float64),
        "target_inputs": torch.randn(size, INPUT_DIM, generator=generator, dtype=torch.float64),
        "hard_negative_inputs": torch.randn(
            size, NUM_HARD_NEGATIVES, INPUT_DIM, generator=generator, dtype=torch.float64
        ),
        "query_ids": torch.tensor([10, 11, 12, 13, 10, 14]),
        "target_ids": torch.tensor([0, 1, 2, 1, 3, 0]),
        "hard_negative_ids": torch.randint(0, 5, (size, NUM_HARD_NEGATIVES), generator=generator),
    }
    # Equal ids mean equal content: pairs 3 and 5 (rank 1) repeat the targets of pairs 1 and 0 (rank 0), and
    # query 4 (rank 1) repeats query 0 (rank 0).
    batch["target_inputs"][3] = batch["target_inputs"][1]
    batch["target_inputs"][5] = batch["target_inputs"][0]
    batch["query_inputs"][4] = batch["query_inputs"][0]
    return batch


def encode(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(inputs @ weight, dim=-1)


def loss_kwargs(config: dict, batch: dict[str, torch.Tensor], rows: slice, weight: torch.Tensor) -> dict:
    """Keyword arguments for the loss on ``rows`` of the global batch (embeddings encoded with ``weight``)."""
    kwargs = {"alpha": config["alpha"], "symmetric": config["symmetric"]}
    kwargs["hardness_normalization"] = config.get("hardness_normalization", "none")
    if config.get("hard_negatives"):
        kwargs["hard_negatives"] = encode(batch["hard_negative_inputs"][rows], weight)
    for key in ("query_ids", "target_ids", "hard_negative_ids"):
        if config.get(key):
            kwargs[key] = batch[key][rows]
    return kwargs


def gather_probe_rows(rank: int) -> torch.Tensor:
    """This rank's (BATCH_PER_RANK, EMBED_DIM) rows of the probe: distinct on every rank."""
    return torch.arange(BATCH_PER_RANK * EMBED_DIM, dtype=torch.float64).view(BATCH_PER_RANK, EMBED_DIM) + 100 * rank


def gather_probe_coefficients(rank: int) -> torch.Tensor:
    """What rank ``rank`` multiplies the gathered (WORLD_SIZE * BATCH_PER_RANK, EMBED_DIM) probe by before summing."""
    size = WORLD_SIZE * BATCH_PER_RANK * EMBED_DIM
    return torch.linspace(-1, 1, size, dtype=torch.float64).view(-1, EMBED_DIM) * (rank + 1) ** 2


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        assert world_size == WORLD_SIZE, f"launch with --nproc_per_node {WORLD_SIZE}"
        result = {"rank_from_torch": torch.tensor(get_rank_and_world_size())}
        # accelerate reuses the existing gloo group: creating its state must not change the answer.
        PartialState(cpu=True)
        result["rank_from_accelerate"] = torch.tensor(get_rank_and_world_size())
        result["gathered_ids"] = all_gather_no_grad(torch.tensor([rank, 10 + rank]))

        probe = gather_probe_rows(rank).requires_grad_(True)
        gathered = all_gather_with_grad(probe)
        (gathered * gather_probe_coefficients(rank)).sum().backward()
        result["gather_probe/gathered"], result["gather_probe/grad"] = gathered.detach(), probe.grad

        batch = global_batch()
        rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
        for name, config in CONFIGS.items():
            weight = batch["weight"].clone().requires_grad_(True)
            query = encode(batch["query_inputs"][rows], weight)
            target = encode(batch["target_inputs"][rows], weight)
            kwargs = loss_kwargs(config, batch, rows, weight)
            embeddings = [query, target] + ([kwargs["hard_negatives"]] if "hard_negatives" in kwargs else [])
            for embedding in embeddings:
                embedding.retain_grad()
            output = hardness_weighted_contrastive_loss(query, target, gather_across_devices=True, **kwargs)
            output.loss.backward()
            loss = output.loss
            dist.all_reduce(weight.grad, op=dist.ReduceOp.SUM)
            result[f"{name}/loss"] = loss.detach()
            result[f"{name}/diagnostics"] = output.diagnostics.stack()
            result[f"{name}/weight_grad"] = weight.grad / world_size
            for key, embedding in zip(("query", "target", "hard_negatives"), embeddings):
                result[f"{name}/{key}_grad"] = embedding.grad / world_size
        torch.save(result, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
