"""`BatchMiningSampler` (B3 batch mining) on tiny random vectors, and one GradCache training step on its batches."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrun import torchrun
from trainer_fixtures import SGD_COMPARISON, TinyCollator, rows, tiny_training_args

from llave_hf.batch_mining import BatchMiningSampler, mine_neighbors, partition_neighbors
from llave_hf.testing import tiny_model_and_processor
from llave_hf.trainer import ContrastiveTrainer


WORKERS = Path(__file__).resolve().parent / "distributed_workers"


def clustered_vectors(num_rows: int, dim: int = 16, num_centres: int = 12, seed: int = 0) -> np.ndarray:
    """Rows around a few random centres, so that mining has groups to find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_centres, dim))
    return (centres[rng.integers(num_centres, size=num_rows)] + 0.3 * rng.standard_normal((num_rows, dim))).astype(
        np.float32
    )


def naive_neighbors(vectors: np.ndarray, k: int) -> np.ndarray:
    """The reference: every row's k most cosine-similar other rows by a full similarity matrix."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def test_neighbors_match_a_full_similarity_matrix():
    vectors = clustered_vectors(300)
    assert (mine_neighbors(vectors, 5) == naive_neighbors(vectors, 5)).mean() > 0.99  # ties may swap


def test_deterministic_for_a_seed_and_epoch():
    vectors, image = clustered_vectors(400), [i % 3 == 0 for i in range(400)]
    order = list(BatchMiningSampler(vectors, 8, 2, seed=1, image_queries=image))
    sampler = BatchMiningSampler(vectors, 8, 2, seed=1, image_queries=image)
    assert list(sampler) == order and list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0)
    assert list(sampler) == order
    assert list(BatchMiningSampler(vectors, 8, 2, seed=2, image_queries=image)) != order


@pytest.mark.parametrize("num_rows", [400, 403, 61])
def test_every_row_once_per_epoch_and_full_batches_of_one_modality(num_rows):
    vectors, image = clustered_vectors(num_rows), [i % 3 == 0 for i in range(num_rows)]
    sampler = BatchMiningSampler(vectors, 4, 2, seed=0, image_queries=image)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(num_rows)) and len(sampler) == num_rows
    image_rows, text_rows = sum(image), num_rows - sum(image)
    full = (image_rows // 8 + text_rows // 8) * 8  # the leftovers of both modalities come last
    assert full == len(order) - image_rows % 8 - text_rows % 8
    for start in range(0, full, 8):
        assert len({image[i] for i in order[start : start + 8]}) == 1


def test_rows_that_cannot_avoid_their_false_negatives_are_counted(caplog):
    """Two rows, each the other's nearest, and one batch of both: no batch without a false negative."""
    with caplog.at_level("WARNING"):
        assert sorted(BatchMiningSampler(clustered_vectors(2), 2, 1, skip_ranks=1)) == [0, 1]
    assert "1 row(s) share a batch with one of their skipped nearest rows" in caplog.text


def test_false_negative_ranks_never_share_a_batch():
    vectors = clustered_vectors(600, num_centres=6)
    skip = 4
    nearest = naive_neighbors(vectors, skip)
    sampler = BatchMiningSampler(vectors, 16, 1, seed=0, skip_ranks=skip)
    batch_of = {}
    for number, batch in enumerate(sampler.batches()):
        batch_of.update(dict.fromkeys(batch, number))
    conflicts = sum(batch_of[row] == batch_of[other] for row in range(600) for other in nearest[row])
    assert conflicts == 0
    # without skipping, mining groups near rows together: the test above can see a broken exclusion
    unskipped = BatchMiningSampler(vectors, 16, 1, seed=0, skip_ranks=0)
    batch_of = {row: number for number, batch in enumerate(unskipped.batches()) for row in batch}
    assert sum(batch_of[row] == batch_of[other] for row in range(600) for other in nearest[row]) > 600


def test_mined_batches_are_more_similar_than_random_ones():
    vectors = clustered_vectors(800, num_centres=10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def mean_similarity(batches):
        return np.mean([(unit[b] @ unit[b].T)[~np.eye(len(b), dtype=bool)].mean() for b in batches if len(b) > 1])

    mined = BatchMiningSampler(vectors, 16, 1, seed=0).batches()
    shuffled = np.random.default_rng(0).permutation(800).reshape(-1, 16)
    assert mean_similarity(mined) > mean_similarity(shuffled) + 0.4


def test_partition_is_balanced_and_cuts_few_edges():
    vectors = clustered_vectors(640, num_centres=10)
    neighbors = mine_neighbors(vectors, 10)
    parts = partition_neighbors(neighbors, 10)
    sizes = np.bincount(parts, minlength=10)
    assert sizes.min() >= 55 and sizes.max() <= 70
    assert (parts[neighbors] == parts[:, None]).mean() > 0.9  # edges kept within a part


def test_two_processes_draw_the_same_mined_batches():
    """accelerate's `BatchSamplerShard` (split_batches=False, as the Trainer uses) deals the per-device batches of
    the sampler's order to the processes round-robin. Each process builds its own sampler from the same embeddings
    and seed; simulated here with accelerate's own shard: step k's rows over both ranks are mined batch k."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    vectors, image = clustered_vectors(203), [i % 4 == 0 for i in range(203)]
    per_rank = []
    for rank in range(2):
        sampler = BatchMiningSampler(vectors, 4, 2, seed=3, image_queries=image)
        sampler.set_epoch(1)
        shard = BatchSamplerShard(BatchSampler(sampler, 4, drop_last=True), num_processes=2, process_index=rank)
        per_rank.append(list(shard))
    mined = sampler.batches()
    assert len(per_rank[0]) == len(per_rank[1]) == 203 // 8
    for step, (first, second) in enumerate(zip(*per_rank)):  # 51 image rows: 6 batches + 3 dropped; 152 text: 19
        assert first + second == mined[step]
    assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))


def test_under_torch_distributed_rank_0_mines_and_every_process_gets_the_same_batches(tmp_path):
    """2 gloo processes: only rank 0 searches neighbours (one faiss index per run, not per process), and both pack
    exactly the batches a single process mines from the same rows."""
    sys.path.insert(0, str(WORKERS))
    from mining_worker import mining_inputs

    torchrun(WORKERS / "mining_worker.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [rank["mine_calls"] for rank in ranks] == [2, 0]  # two modality groups, searched on rank 0 only
    vectors, image = mining_inputs()
    alone = BatchMiningSampler(vectors, 4, 2, seed=3, image_queries=image)
    alone.set_epoch(1)
    assert ranks[0]["batches"] == ranks[1]["batches"] == [[int(row) for row in batch] for batch in alone.batches()]


def test_grad_cache_step_on_mined_batches(tmp_path):
    """One ContrastiveTrainer step with GradCache on the sampler's first mined batch: it trains on exactly that
    batch, and its loss and weights equal those of the uncached step on the same batch."""
    data = rows(24, with_images=False)  # text rows: the step is what is tested, not the images
    vectors = clustered_vectors(24, num_centres=3)
    results = []
    for chunk in (0, 4):  # 0: no GradCache
        model, processor = tiny_model_and_processor("qwen2_vl", seed=0)
        collator, seen = TinyCollator(processor), []

        def collate(batch, collator=collator, seen=seen):
            seen.append([row["index"] for row in batch])
            return collator(batch)

        sampler = BatchMiningSampler(vectors, 6, 1, seed=0, skip_ranks=1, num_neighbors=3)
        args = tiny_training_args(str(tmp_path / str(chunk)), max_steps=1, grad_cache_chunk_size=chunk, **SGD_COMPARISON)
        trainer = ContrastiveTrainer(
            model=model,
            args=args,
            train_dataset=[dict(row, index=k) for k, row in enumerate(data)],
            data_collator=collate,
            processing_class=processor,
            train_sampler=sampler,
        )
        trainer.train()
        assert seen[0] == sampler.batches()[0]
        loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
        results.append((loss, [p.detach().clone() for p in model.parameters()]))
    (loss, weights), (cached_loss, cached_weights) = results
    assert cached_loss == pytest.approx(loss, rel=1e-4)
    for cached, plain in zip(cached_weights, weights):
        torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-6)


def test_llave_train_mines_with_the_starting_model(tmp_path):
    """`llave-train --batch_mining`: the tiny starting model embeds the fixture's queries; the trainer's sampler
    holds the mined batches, one query modality each."""
    from mmeb_fixtures import make_mmeb_fixture
    from test_train_e2e import TINY, _losses, _overrides

    from llave_hf.cli.train import main

    fixture = make_mmeb_fixture(tmp_path / "mmeb", num_colours=4)  # 8 image and 8 text queries
    arguments = _overrides(fixture, tmp_path / "out", max_steps=2, per_device_train_batch_size=4)
    trainer = main([TINY, *arguments, "--batch_mining", "--batch_mining_skip_ranks", "1", "--group_by_modality_length"])
    assert isinstance(trainer.train_sampler, BatchMiningSampler)
    batches = trainer.train_sampler.batches()
    assert sorted(sum(batches, [])) == list(range(16)) and all(len(batch) == 4 for batch in batches)
    image = [bool(path) for path in trainer.train_dataset["qry_image_path"]]
    assert all(len({image[row] for row in batch}) == 1 for batch in batches)
    assert len(_losses(trainer.state.log_history)) == 2
