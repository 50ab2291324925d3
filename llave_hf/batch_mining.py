# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
`BatchMiningSampler`: batches of mutually similar rows, mined once from a teacher's embeddings (B3, "Breaking the
Batch Barrier", Thirukovalluru et al. 2025, arXiv 2505.11293).

Mining, once per sampler, within each query modality:
1. faiss finds every row's `skip_ranks + num_neighbors` nearest rows by cosine similarity (exact below
   `EXACT_SEARCH_MAX_ROWS` rows, an inverted-file index above: an exact search of MMEB-train's 662K rows would cost
   ~10^15 flops).
2. The nearest `skip_ranks` are likely false negatives (paraphrases, the same image): they are never put into one
   batch together. Ranks `skip_ranks .. skip_ranks + num_neighbors` are the edges of a kNN graph (a mutual edge
   weighs double).
3. METIS (pymetis) cuts the graph into `rows // global_batch` parts of near-equal size with few cut edges: the
   parts are groups of mutually similar rows. METIS's multilevel partitioning is near-linear in the edges, and its
   parts come out balanced (within its `ufactor`, 3%), which k-means or spectral clustering do not give.

Per epoch (seeded by `seed` and `set_epoch`), each part becomes one global batch of `batch_size * world_size`
rows: its rows in shuffled order up to the batch size; the overflow of large parts tops up other batches (first
those holding the row's graph neighbours), and what is left forms a last, partial batch. No batch holds two rows
within each other's skipped ranks: a row that would swaps places with a row of another batch (where even that is
impossible, in data with few rows per batch, a warning counts them). The full batches come in shuffled order, then
the partial ones; a batch is laid out in rank order, as accelerate deals consecutive per-device batches to the
processes round-robin. Under `torch.distributed`, rank 0 mines (the kNN search and METIS) and broadcasts the
neighbours and parts, and every process packs the same batches from them (seeded alike), so every process trains on
its slice of the same mined batches; one faiss index is built for the whole run, not one per process. Every
process must then build the sampler, as the Trainer's do. Mining alone, faiss's search and METIS are deterministic
for a seed.
"""

import itertools
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from transformers.utils import logging

from .image_paths import resolve_image_path


if TYPE_CHECKING:
    from datasets import Dataset


__all__ = ["BatchMiningSampler", "mine_neighbors", "partition_neighbors", "EXACT_SEARCH_MAX_ROWS"]

logger = logging.get_logger(__name__)

EXACT_SEARCH_MAX_ROWS = 50_000


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(
            f"Batch mining needs {module}: pip install 'llave-hf[mining]' (faiss-cpu, pymetis, scipy)."
        ) from error


def mine_neighbors(embeddings: np.ndarray, num_neighbors: int, seed: int = 0, nprobe: int = 16) -> np.ndarray:
    """
    The indices of every row's `num_neighbors` nearest other rows by cosine similarity, nearest first, `(rows,
    num_neighbors)`; -1 where an approximate search found fewer. Exact (`IndexFlatIP`) up to `EXACT_SEARCH_MAX_ROWS`
    rows, above that an inverted-file index of `4 * sqrt(rows)` lists (k-means on 40 rows per list) searched `nprobe`
    at a time: about `rows * (4 + nprobe / 4) * sqrt(rows) * dim` multiply-adds instead of `rows**2 * dim`.
    """
    faiss = _require("faiss")
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    faiss.normalize_L2(vectors)
    rows, dim = vectors.shape
    k = min(num_neighbors + 1, rows)  # + the row itself
    if rows <= EXACT_SEARCH_MAX_ROWS:
        index = faiss.IndexFlatIP(dim)
    else:
        num_lists = int(4 * np.sqrt(rows))
        index = faiss.index_factory(dim, f"IVF{num_lists},Flat", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed, index.cp.niter = seed, 10  # coarse lists only route the search: 10 k-means rounds do
        sample = np.random.default_rng(seed).choice(rows, size=min(rows, 40 * num_lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = nprobe
    index.add(vectors)
    _, found = index.search(vectors, k)
    # drop each row itself (usually rank 0, but not always among duplicates); rows without it lose their last
    not_self = found != np.arange(rows)[:, None]
    not_self[not_self.all(axis=1), -1] = False
    neighbors = found[not_self].reshape(rows, k - 1)
    if k - 1 < num_neighbors:
        neighbors = np.pad(neighbors, ((0, 0), (0, num_neighbors - k + 1)), constant_values=-1)
    return neighbors.astype(np.int64)


def partition_neighbors(neighbors: np.ndarray, num_parts: int, seed: int = 0) -> np.ndarray:
    """A part id per row: METIS's `num_parts`-way partition of the symmetrised kNN graph whose edges are
    `neighbors` (a row's list of nearest rows, -1 for none)."""
    rows = len(neighbors)
    if num_parts <= 1 or rows <= 1:
        return np.zeros(rows, dtype=np.int64)
    pymetis = _require("pymetis")
    sparse = _require("scipy.sparse").sparse
    sources = np.repeat(np.arange(rows), neighbors.shape[1])
    targets = neighbors.ravel()
    keep = (targets >= 0) & (targets != sources)
    graph = sparse.csr_matrix((np.ones(keep.sum(), dtype=np.int64), (sources[keep], targets[keep])), (rows, rows))
    graph = (graph + graph.T).tocsr()  # METIS needs both directions; a mutual edge weighs 2
    graph.sum_duplicates()
    options = pymetis.Options(seed=seed)
    _, parts = pymetis.part_graph(
        num_parts, xadj=graph.indptr, adjncy=graph.indices, eweights=graph.data, options=options
    )
    return np.asarray(parts, dtype=np.int64)


class _Batch:
    """A batch being filled: its rows and the rows that may not join it (the skipped ranks of its members)."""

    __slots__ = ("capacity", "rows", "members", "blocked")

    def __init__(self, capacity: int):
        self.capacity, self.rows, self.members, self.blocked = capacity, [], set(), Counter()

    def full(self) -> bool:
        return len(self.rows) >= self.capacity

    def fits(self, row: int, skipped: list[list[int]]) -> bool:
        return row not in self.blocked and not any(other in self.members for other in skipped[row])

    def add(self, row: int, skipped: list[list[int]]) -> None:
        self.rows.append(row)
        self.members.add(row)
        self.blocked.update(skipped[row])

    def remove(self, row: int, skipped: list[list[int]]) -> None:
        self.rows.remove(row)
        self.members.discard(row)
        self.blocked.subtract(skipped[row])
        self.blocked += Counter()  # drops the counts that reached 0


def _swap_in(
    row: int, target: _Batch, full: list[_Batch], skipped: list[list[int]], where: dict[int, _Batch]
) -> bool:
    """Puts `row` into a full batch in place of a member that moves to `target`, where both fit."""
    for batch in full:
        for member in list(batch.rows):
            if not target.fits(member, skipped):
                continue
            batch.remove(member, skipped)
            if batch.fits(row, skipped):
                batch.add(row, skipped)
                target.add(member, skipped)
                where[row], where[member] = batch, target
                return True
            batch.add(member, skipped)
    return False


def _mine_groups(
    embeddings: np.ndarray, groups: list[np.ndarray], size: int, seed: int, skip_ranks: int, num_neighbors: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group of rows: its neighbours (`mine_neighbors`) and METIS part labels, the costly part of mining. Under
    `torch.distributed`, rank 0 computes them and broadcasts them: each process mining for itself would hold the
    index's copies of the embeddings once per process (~13 GB each at 662K rows of 1536 dimensions) and make its
    faiss threads compete with the others' for the node's cores."""

    def mine() -> list[tuple[np.ndarray, np.ndarray]]:
        results = []
        for group in groups:
            neighbors = mine_neighbors(embeddings[group], skip_ranks + num_neighbors, seed)
            labels = partition_neighbors(neighbors[:, skip_ranks:], max(1, len(group) // size), seed)
            results.append((neighbors, labels))
        return results

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return mine()
    shared = [mine() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


class BatchMiningSampler(Sampler[int]):
    """
    Orders training rows into mined batches: groups of mutually similar rows from a teacher's embeddings, without
    likely false negatives (the `skip_ranks` nearest rows of each). See the module's docstring for the method.

    Args:
        embeddings: `(rows, dim)` teacher embeddings of the rows' queries.
        batch_size: the per-device batch size; a mined batch holds `batch_size * world_size` rows.
        world_size: the number of processes.
        seed: seeds the mining and each epoch's order (with `set_epoch`).
        image_queries: whether each row's query has an image; rows are then mined within each modality and every
            full batch holds one. `None`: all rows together.
        skip_ranks: the nearest rows per row that never share its batch.
        num_neighbors: the kNN graph's edges per row (the ranks after the skipped ones).
    """

    def __init__(
        self,
        embeddings: np.ndarray | torch.Tensor,
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        image_queries: list[bool] | None = None,
        skip_ranks: int = 3,
        num_neighbors: int = 10,
    ):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (rows, dim), got shape {embeddings.shape}.")
        if skip_ranks < 0 or num_neighbors < 1:
            raise ValueError(f"skip_ranks must be >= 0 and num_neighbors >= 1, got {skip_ranks}, {num_neighbors}.")
        rows = len(embeddings)
        if image_queries is not None and len(image_queries) != rows:
            raise ValueError(f"{rows} embeddings but {len(image_queries)} modality flags.")
        self.batch_size, self.world_size, self.seed, self.epoch = batch_size, world_size, seed, 0
        self.num_rows = rows
        image = np.zeros(rows, bool) if image_queries is None else np.asarray(image_queries, dtype=bool)
        self.skipped: list[list[int]] = [[] for _ in range(rows)]
        self.near = np.full((rows, num_neighbors), -1, dtype=np.int64)  # the graph's edges: ranks after the skipped
        self.parts: list[list[np.ndarray]] = []  # per modality, the rows of each part
        size = batch_size * world_size
        groups = [group for group in (np.flatnonzero(image), np.flatnonzero(~image)) if len(group)]
        mined = _mine_groups(embeddings, groups, size, seed, skip_ranks, num_neighbors)
        for group, (neighbors, labels) in zip(groups, mined):
            for local, near in enumerate(neighbors[:, :skip_ranks].tolist()):
                self.skipped[group[local]] = [int(group[other]) for other in near if other >= 0]
            self.near[group] = np.where(neighbors[:, skip_ranks:] >= 0, group[neighbors[:, skip_ranks:]], -1)
            order = np.argsort(labels, kind="stable")
            bounds = np.flatnonzero(np.diff(labels[order])) + 1
            self.parts.append([group[part] for part in np.split(order, bounds)])

    @classmethod
    def from_teacher(
        cls,
        model,
        dataset: "Dataset",
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        image_root: str | None = None,
        allow_absolute_image_paths: bool = False,
        by_modality: bool = True,
        encode_batch_size: int = 32,
        **mining_kwargs,
    ) -> "BatchMiningSampler":
        """Mines MMEB-train rows (`qry`, `qry_image_path`) from their query embeddings by `model.encode` (under
        `torch.distributed`, each process encodes a share and all get every embedding)."""
        paths = dataset["qry_image_path"]
        images = [
            resolve_image_path(path, image_root, f"row {row} query", allow_absolute_image_paths) if path else None
            for row, path in enumerate(paths)
        ]
        texts = [text or None for text in dataset["qry"]]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                embeddings = model.encode(
                    texts,
                    images=images,
                    batch_size=encode_batch_size,
                    convert_to="numpy",
                    item_names=[f"row {row} query" for row in range(len(texts))],
                    distributed=dist.is_available() and dist.is_initialized(),
                )
        finally:
            model.train(was_training)
        image_queries = [bool(path) for path in paths] if by_modality else None
        return cls(embeddings, batch_size, world_size, seed, image_queries=image_queries, **mining_kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def batches(self) -> list[list[int]]:
        """This epoch's global batches, in order: full ones, then what is left over."""
        rng = np.random.default_rng([self.seed, self.epoch])
        size = self.batch_size * self.world_size
        full, leftovers, forced = [], [], 0
        for parts in self.parts:
            rows = sum(map(len, parts))
            # a batch per part (METIS may leave parts empty: those start empty) and one for the remainder
            batches = [_Batch(size) for _ in range(rows // size)] + ([_Batch(rows % size)] if rows % size else [])
            pool, where = [], {}
            for batch, part in zip(batches, parts):
                for row in rng.permutation(part).tolist():
                    if not batch.full() and batch.fits(row, self.skipped):
                        batch.add(row, self.skipped)
                        where[row] = batch
                    else:
                        pool.append(row)
            open_batches = [batch for batch in batches if not batch.full()]
            for row in pool:
                # rather the batch of a graph neighbour's, then any with room
                near = (where.get(other) for other in self.near[row].tolist())
                candidates = itertools.chain((batch for batch in near if batch is not None), open_batches)
                target = next((b for b in candidates if not b.full() and b.fits(row, self.skipped)), None)
                if target is not None:
                    target.add(row, self.skipped)
                    where[row] = target
                elif _swap_in(row, target := open_batches[0], [b for b in batches if b.full()], self.skipped, where):
                    pass
                else:  # every batch holds a skipped rank of the row's and no swap frees one: few rows, many ties
                    target.add(row, self.skipped)
                    where[row] = target
                    forced += 1
                if target.full():
                    open_batches.remove(target)
            full += [batch.rows for batch in batches if batch.capacity == size]
            leftovers += [batch.rows for batch in batches if batch.capacity != size]
        if forced:
            logger.warning(
                f"Batch mining: {forced} row(s) share a batch with one of their skipped nearest rows: too few rows "
                "to keep them apart (lower --batch_mining_skip_ranks)."
            )
        return [full[k] for k in rng.permutation(len(full))] + leftovers

    def __iter__(self):
        return iter([row for batch in self.batches() for row in batch])
