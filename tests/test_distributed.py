"""Cross-process gathering: a 2-process step must equal one process on the concatenated batch.

The semantics tested here are stated in the docstrings of `llave_hf.distributed` (gradient of a gathered step) and
`hardness_weighted_contrastive_loss` (``gather_across_devices``).
"""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchrun import torchrun

from llave_hf.distributed import all_gather_no_grad, all_gather_with_grad, get_rank_and_world_size
from llave_hf.loss import LossDiagnostics, hardness_weighted_contrastive_loss


WORKER_PATH = Path(__file__).parent / "distributed_workers" / "loss_worker.py"


def _load_worker():
    spec = importlib.util.spec_from_file_location("loss_worker", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_process_helpers_are_no_ops():
    tensor = torch.randn(3, 4, requires_grad=True)
    assert get_rank_and_world_size() == (0, 1)
    assert all_gather_with_grad(tensor) is tensor
    assert all_gather_no_grad(tensor) is tensor


def test_gather_flag_without_process_group_equals_local_loss():
    generator = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    target = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    hard_negatives = F.normalize(torch.randn(4, 2, 8, generator=generator), dim=-1)
    local = hardness_weighted_contrastive_loss(query, target, hard_negatives=hard_negatives)
    gathered = hardness_weighted_contrastive_loss(
        query, target, hard_negatives=hard_negatives, gather_across_devices=True
    )
    torch.testing.assert_close(gathered.loss, local.loss, rtol=0, atol=0)
    torch.testing.assert_close(gathered.diagnostics.stack(), local.diagnostics.stack(), rtol=0, atol=0)


@pytest.mark.timeout(120)
def test_two_processes_match_one_process_on_the_full_batch(tmp_path):
    worker = _load_worker()
    assert worker.WORLD_SIZE == 2
    torchrun(WORKER_PATH, tmp_path, timeout=110)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(worker.WORLD_SIZE)]

    for rank, result in enumerate(results):
        assert result["rank_from_torch"].tolist() == [rank, worker.WORLD_SIZE]
        assert result["rank_from_accelerate"].tolist() == [rank, worker.WORLD_SIZE]
        assert result["gathered_ids"].tolist() == [0, 10, 1, 11]

    # all_gather_with_grad alone: rows in rank order forward; backward, rank k gets block k summed over ranks.
    probe_rows = torch.cat([worker.gather_probe_rows(rank) for rank in range(worker.WORLD_SIZE)])
    summed_coefficients = sum(worker.gather_probe_coefficients(rank) for rank in range(worker.WORLD_SIZE))
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["gather_probe/gathered"], probe_rows, rtol=0, atol=0)
        block = summed_coefficients.split(worker.BATCH_PER_RANK)[rank]
        torch.testing.assert_close(result["gather_probe/grad"], block, rtol=0, atol=1e-12, msg=f"rank {rank}")

    batch = worker.global_batch()
    for name, config in worker.CONFIGS.items():
        weight = batch["weight"].clone().requires_grad_(True)
        query = worker.encode(batch["query_inputs"], weight)
        target = worker.encode(batch["target_inputs"], weight)
        kwargs = worker.loss_kwargs(config, batch, slice(None), weight)
        embeddings = {"query": query, "target": target}
        if "hard_negatives" in kwargs:
            embeddings["hard_negatives"] = kwargs["hard_negatives"]
        for embedding in embeddings.values():
            embedding.retain_grad()
        output = hardness_weighted_contrastive_loss(query, target, **kwargs)
        output.loss.backward()
        loss = output.loss

        rank_losses = torch.stack([result[f"{name}/loss"] for result in results])
        assert not torch.allclose(rank_losses[0], rank_losses[1]), "degenerate batch: ranks see the same loss"
        torch.testing.assert_close(rank_losses.mean(), loss.detach(), rtol=0, atol=1e-6, msg=f"{name}: loss")
        # Each rank describes its own rows against all gathered columns; with equal rows per rank, the mean over
        # ranks is the full batch's value for the per-row means (not for mean_hardness_weight, a per-pair mean).
        per_row = [LossDiagnostics.NAMES.index(key) for key in LossDiagnostics.NAMES if key != "mean_hardness_weight"]
        rank_diagnostics = torch.stack([result[f"{name}/diagnostics"] for result in results]).mean(0)
        torch.testing.assert_close(
            rank_diagnostics[per_row], output.diagnostics.stack()[per_row], rtol=0, atol=1e-6, msg=f"{name}: diag"
        )
        for result in results:
            torch.testing.assert_close(
                result[f"{name}/weight_grad"], weight.grad, rtol=0, atol=1e-6, msg=f"{name}: averaged W grad"
            )
        for key, embedding in embeddings.items():
            assembled = torch.cat([result[f"{name}/{key}_grad"] for result in results])
            torch.testing.assert_close(assembled, embedding.grad, rtol=0, atol=1e-6, msg=f"{name}: {key} grad")
