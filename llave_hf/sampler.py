# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`ModalityLengthGroupedSampler`: the order of training rows that groups each micro-batch by query modality."""

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Sampler


if TYPE_CHECKING:  # the sampler itself needs no `datasets` (benchmarks run it where that is not installed)
    from datasets import Dataset


__all__ = ["ModalityLengthGroupedSampler"]


class ModalityLengthGroupedSampler(Sampler[int]):
    """
    Orders training rows so that every micro-batch holds one query modality (image or text) and rows of similar
    length, as the released LLaVE recipe (LLaVA's `group_by_modality_length`).

    Per epoch, each modality's rows are shuffled and cut into mega-batches of `batch_size * world_size` rows; a
    mega-batch is sorted by length (longest first) and cut into `world_size` per-device batches, laid out in rank
    order, as accelerate deals consecutive batches to the processes round-robin. Mega-batches are shuffled; the
    leftovers of both modalities form a last, mixed one. The order depends only on `seed` and the epoch
    (`set_epoch`), so a resumed run sees the same batches.

    Args:
        lengths: a length per row (e.g. characters of query and target text).
        image_queries: whether each row's query has an image.
        batch_size: the per-device batch size.
        world_size: the number of processes.
        seed: the shuffling seed.
    """

    def __init__(
        self, lengths: list[int], image_queries: list[bool], batch_size: int, world_size: int = 1, seed: int = 0
    ):
        if len(lengths) != len(image_queries):
            raise ValueError(f"{len(lengths)} lengths but {len(image_queries)} modality flags.")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        image = torch.as_tensor(image_queries, dtype=torch.bool)
        self.groups = [image.nonzero().flatten(), (~image).nonzero().flatten()]
        self.batch_size, self.world_size, self.seed = batch_size, world_size, seed
        self.epoch = 0

    @classmethod
    def from_dataset(cls, dataset: "Dataset", batch_size: int, world_size: int = 1, seed: int = 0):
        """From MMEB-train rows: the query modality and the characters of query plus target text."""
        lengths = [len(query or "") + len(target or "") for query, target in zip(dataset["qry"], dataset["pos_text"])]
        return cls(lengths, [bool(path) for path in dataset["qry_image_path"]], batch_size, world_size, seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def _arrange(self, indices: torch.Tensor) -> list[int]:
        return indices[torch.argsort(self.lengths[indices], descending=True, stable=True)].tolist()

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        size = self.batch_size * self.world_size
        megabatches, leftovers = [], []
        for group in self.groups:
            shuffled = group[torch.randperm(len(group), generator=generator)]
            full = len(shuffled) // size * size
            megabatches += [self._arrange(shuffled[start : start + size]) for start in range(0, full, size)]
            leftovers.append(shuffled[full:])
        order = torch.randperm(len(megabatches), generator=generator).tolist()
        indices = [index for k in order for index in megabatches[k]] + self._arrange(torch.cat(leftovers))
        return iter(indices)
