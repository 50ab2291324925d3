"""Builds a `BatchMiningSampler` in every process of a `torchrun` launch, counting the kNN searches made here.

Usage: torchrun --nproc_per_node 2 mining_worker.py OUT_DIR
Writes OUT_DIR/rank<r>.json: this process's number of `mine_neighbors` calls and the sampler's batches of epoch 1.
"""

import json
import os
import sys

import numpy as np
import torch.distributed as dist

from llave_hf import batch_mining


def mining_inputs() -> tuple[np.ndarray, list[bool]]:
    """Rows around a few random centres, a quarter of them with image queries (two modality groups)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 16))
    vectors = centres[rng.integers(12, size=203)] + 0.3 * rng.standard_normal((203, 16))
    return vectors.astype(np.float32), [i % 4 == 0 for i in range(203)]


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    calls = []
    mine_neighbors = batch_mining.mine_neighbors

    def counting_mine_neighbors(*args, **kwargs):
        calls.append(1)
        return mine_neighbors(*args, **kwargs)

    batch_mining.mine_neighbors = counting_mine_neighbors
    vectors, image = mining_inputs()
    sampler = batch_mining.BatchMiningSampler(vectors, 4, 2, seed=3, image_queries=image)
    sampler.set_epoch(1)
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as file:
        json.dump({"mine_calls": len(calls), "batches": sampler.batches()}, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
