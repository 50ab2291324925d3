# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Training data of LLaVE: MMEB-train rows, the contrastive collator and the modality/length-grouped sampler.

MMEB-train (TIGER-Lab/MMEB-train, Jiang et al., arXiv 2410.05160) has one config per subset, each with the splits
`original` (the instructions LLaVE trains on), `diverse_instruction` and `train`; each row is a query/positive pair:

    qry, qry_image_path, pos_text, pos_image_path [, neg_text, neg_image_path]

Texts carry the image placeholder `<|image_1|>` (the processor swaps it for the backbone's image token); an empty
image path means a text-only item. Image paths are relative to an image root (the unpacked `images.zip`). Paths stay
relative in the dataset, so that content ids (false-negative masking) agree between machines that mount the images
at different places.
"""

import hashlib
import multiprocessing
import os
import posixpath
import random
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets, load_dataset
from torch.utils.data import Sampler
from transformers.utils import logging

from .modeling.processing_llave import load_image


logger = logging.get_logger(__name__)

MMEB_TRAIN_SUBSETS = (
    "ImageNet_1K", "HatefulMemes", "SUN397", "N24News", "VOC2007", "OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA",
    "ChartQA", "Visual7W", "VisDial", "CIRR", "NIGHTS", "WebQA", "VisualNews_i2t", "VisualNews_t2i", "MSCOCO_t2i",
    "MSCOCO_i2t", "MSCOCO",
)  # fmt: skip
REQUIRED_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")
_LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


# ---------------------------------------------------------------------------------------------------------------------
# loading


def _local_parts(source: Path, split: str) -> dict[str, list[str]]:
    """Files of a local source, by subset: a file; a folder of `<subset>.<ext>` files; or a folder of
    `<subset>/<split>-*.<ext>` shards (the Hub repository's layout, e.g. a downloaded snapshot)."""
    if source.is_file():
        return {source.stem: [str(source)]}
    parts = {}
    for path in sorted(source.iterdir()):
        if path.is_file() and path.suffix in _LOCAL_FORMATS:
            parts[path.stem] = [str(path)]
        elif path.is_dir():
            shards = sorted(str(p) for p in path.glob(f"{split}[-.]*") if p.suffix in _LOCAL_FORMATS)
            if shards:
                parts[path.name] = shards
    if not parts:
        raise FileNotFoundError(
            f"No MMEB-train files in {str(source)!r}: expected .parquet/.jsonl files (one per subset) or "
            f"<subset>/{split}-*.parquet shards."
        )
    return parts


def _load_local(files: list[str], cache_dir: str | None) -> Dataset:
    formats = {_LOCAL_FORMATS[Path(file).suffix] for file in files}
    if len(formats) > 1:
        raise ValueError(f"Mixed file formats in one subset: {files}.")
    return load_dataset(formats.pop(), data_files=files, split="train", cache_dir=cache_dir)


def _check_and_normalise(dataset: Dataset, where: str) -> Dataset:
    """Keeps the MMEB-train columns (and `subset`), adds empty negatives when absent, types null columns as strings."""
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(missing)}. MMEB-train rows need the columns "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(NEGATIVE_COLUMNS)}); found "
            f"{', '.join(dataset.column_names) or 'none'}."
        )
    keep = [c for c in (*REQUIRED_COLUMNS, *NEGATIVE_COLUMNS, "subset") if c in dataset.column_names]
    dataset = dataset.select_columns(keep)
    for column in NEGATIVE_COLUMNS:
        if column not in dataset.column_names:
            dataset = dataset.add_column(column, [""] * len(dataset), feature=Value("string"))
    for column, feature in dataset.features.items():
        # an all-empty jsonl column comes in as null: give it the type the other subsets have
        if isinstance(feature, Value) and feature.dtype == "null":
            dataset = dataset.cast_column(column, Value("string"))
    return dataset


def _first_rows(dataset: Dataset, subsets: set[str] | None, max_rows: int | None) -> Dataset:
    """The first `max_rows` rows of each wanted subset of a part that has a `subset` column, in file order."""
    counts, keep = Counter(), []
    for index, subset in enumerate(dataset["subset"]):
        if (subsets is None or subset in subsets) and (max_rows is None or counts[subset] < max_rows):
            counts[subset] += 1
            keep.append(index)
    return dataset.select(keep)


def load_mmeb_train(
    source: str | os.PathLike,
    *,
    subsets: list[str] | None = None,
    split: str = "original",
    max_rows_per_subset: int | None = None,
    require_negatives: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """
    Loads MMEB-train-format training rows with `datasets`.

    Args:
        source: a Hub dataset id with one config per subset (`TIGER-Lab/MMEB-train`), or a local file or folder:
            `.parquet`/`.jsonl` files, one per subset (the subset is the file name), a single file (a `subset`
            column, if present, names each row's subset), or the Hub layout `<subset>/<split>-*.parquet`.
        subsets: subsets to keep, in this order. Defaults to the 20 MMEB-train subsets for a Hub id, and to every
            subset found for a local source.
        split: the Hub split (and local shard prefix); LLaVE trains on `original`.
        max_rows_per_subset: keep the first N rows of each subset (LLaVE: 50,000).
        require_negatives: drop rows without a hard negative (for training with `num_hard_negatives > 0`).
        cache_dir: the `datasets` cache.

    Returns:
        A `Dataset` with the columns `qry`, `qry_image_path`, `pos_text`, `pos_image_path`, `neg_text`,
        `neg_image_path` (empty when the source has none), `subset`, and `row_id` (the row's index in this dataset,
        which error messages name).

    Raises:
        `ValueError` naming the file or subset when a required column is missing, listing the expected columns;
        `FileNotFoundError` for an empty folder or an unknown subset.
    """
    wanted = set(subsets) if subsets is not None else None
    parts = []
    if os.path.exists(source):
        files = _local_parts(Path(source), split)
        available = set(files)  # subset names, for the error message
        if subsets is not None and len(files) > 1:  # one file per subset: load only the wanted ones, in that order
            files = {name: files[name] for name in subsets if name in files}
        for name, paths in files.items():
            dataset = _check_and_normalise(_load_local(paths, cache_dir), ", ".join(paths))
            if "subset" in dataset.column_names:
                available = available - {name} | set(dataset.unique("subset"))
                dataset = _first_rows(dataset, wanted, max_rows_per_subset)
            else:
                if max_rows_per_subset is not None:
                    dataset = dataset.select(range(min(max_rows_per_subset, len(dataset))))
                dataset = dataset.add_column("subset", [name] * len(dataset), feature=Value("string"))
            parts.append(dataset)
        found = {subset for part in parts for subset in part.unique("subset")}
        unknown = [name for name in subsets or () if name not in found]
        if unknown:
            raise FileNotFoundError(
                f"Subset(s) {', '.join(unknown)} not found in {os.fspath(source)!r}; "
                f"it has {', '.join(sorted(available))}."
            )
    else:
        for name in subsets if subsets is not None else MMEB_TRAIN_SUBSETS:
            part_split = split if max_rows_per_subset is None else f"{split}[:{max_rows_per_subset}]"
            dataset = load_dataset(os.fspath(source), name, split=part_split, cache_dir=cache_dir)
            dataset = _check_and_normalise(dataset, f"{os.fspath(source)} subset {name} (split {split})")
            if "subset" in dataset.column_names:
                dataset = dataset.remove_columns("subset")
            parts.append(dataset.add_column("subset", [name] * len(dataset), feature=Value("string")))

    dataset = concatenate_datasets(parts)
    if require_negatives:
        before = len(dataset)
        dataset = dataset.filter(
            lambda text, path: bool(text) or bool(path),
            input_columns=list(NEGATIVE_COLUMNS),
            desc="Rows with negatives",
        )
        if len(dataset) < before:
            logger.warning(f"Dropped {before - len(dataset):,} of {before:,} rows without a hard negative.")
    if len(dataset) == 0:
        raise ValueError(f"No training rows in {os.fspath(source)!r} (subsets: {subsets or 'all'}).")
    counts = Counter(dataset["subset"])
    logger.info(f"MMEB-train: {len(dataset):,} rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return dataset.add_column("row_id", np.arange(len(dataset)))


# ---------------------------------------------------------------------------------------------------------------------
# collator


def content_id(text: str | None, image_path: str | None) -> int:
    """A stable 63-bit id of an item's content: NFKC-normalised, case-folded text with collapsed whitespace, plus the
    normalised relative image path. Equal ids mark identical items (e.g. the class label "Yes" twice)."""
    normalised = " ".join(unicodedata.normalize("NFKC", text or "").split()).casefold()
    path = posixpath.normpath(image_path.replace("\\", "/")) if image_path else ""
    digest = hashlib.blake2b(f"{normalised}\x00{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # fits a non-negative int64


def _negatives(row: dict) -> list[tuple[str, str]]:
    """A row's hard negatives as (text, image path) pairs: MMEB stores one per row, other sources may store lists."""
    texts, paths = row.get("neg_text") or "", row.get("neg_image_path") or ""
    texts = [texts] if isinstance(texts, str) else list(texts)
    paths = [paths] if isinstance(paths, str) else list(paths)
    paths += [""] * (len(texts) - len(paths))
    texts += [""] * (len(paths) - len(texts))
    return [(text or "", path or "") for text, path in zip(texts, paths) if text or path]


class ContrastiveCollator:
    """
    Turns MMEB-train rows into ONE processor batch holding queries, targets and hard negatives (README, "internal contracts"):

        {"inputs": BatchFeature,   # rows [0, B) queries, [B, 2B) targets, [2B, 2B + B*n) negatives (query-major)
         "num_queries": B, "num_negatives": n,
         "query_ids": (B,), "target_ids": (B,), "negative_ids": (B, n)}   # content ids; negative_ids when n > 0

    Images are opened here, i.e. lazily in the dataloader workers.

    Bad rows (a missing or unreadable image, an item with neither text nor image, a placeholder without an image,
    fewer hard negatives than `num_hard_negatives`) raise an error naming the row (`row_id`, its subset) and the file.
    With `skip_bad_samples=True` they are replaced instead, each by a good row drawn from `dataset` (deterministically
    from the bad row's id), so that every batch keeps its size: processes that gather embeddings must hold batches of
    equal size, and an uneven one would hang them. Without `dataset` bad rows are dropped, which is safe only in a
    single process or without gathering. Skipped rows are logged and counted in `num_skipped` (shared with the
    dataloader workers).

    Args:
        processor: the model's `LlaveProcessor`.
        num_hard_negatives: hard negatives per query taken from `neg_text`/`neg_image_path` (0 = none).
        image_root: folder the image paths are relative to (default: as given, i.e. relative to the working directory).
        skip_bad_samples: replace (or drop) bad rows instead of raising.
        dataset: the training dataset, to draw replacements for bad rows from.
        max_replacement_attempts: draws per bad row before giving up with an error.
    """

    def __init__(
        self,
        processor,
        *,
        num_hard_negatives: int = 0,
        image_root: str | os.PathLike | None = None,
        skip_bad_samples: bool = False,
        dataset: Dataset | None = None,
        max_replacement_attempts: int = 16,
    ):
        if num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {num_hard_negatives}.")
        self.processor = processor
        self.num_hard_negatives = num_hard_negatives
        self.image_root = os.fspath(image_root) if image_root is not None else None
        self.skip_bad_samples = skip_bad_samples
        self.dataset = dataset
        self.max_replacement_attempts = max_replacement_attempts
        # shared memory: the collator runs in the dataloader workers, the count is read in the main process
        self._num_skipped = multiprocessing.Value("q", 0)

    @property
    def num_skipped(self) -> int:
        """Bad rows skipped so far in this process (its dataloader workers included)."""
        return self._num_skipped.value

    def _item(self, text: str, path: str, name: str) -> tuple[str | None, object]:
        """An item's text and loaded image; raises naming the item and the file when it is unusable."""
        image = None
        if path:
            image = load_image(os.path.join(self.image_root, path) if self.image_root else path, name)
        self.processor.format_text(text or None, image is not None, name=name)  # validates text and placeholder
        return text or None, image

    def _example(self, row: dict, position: int) -> dict:
        name = f"row {row['row_id']} ({row['subset']})" if "row_id" in row else f"batch row {position}"
        negatives = _negatives(row)
        if len(negatives) < self.num_hard_negatives:
            raise ValueError(
                f"{name}: {len(negatives)} hard negative(s), num_hard_negatives={self.num_hard_negatives} "
                "(load with require_negatives=True to drop such rows)."
            )
        pairs = [(row["qry"], row["qry_image_path"], "query"), (row["pos_text"], row["pos_image_path"], "target")]
        pairs += [(text, path, f"negative {k}") for k, (text, path) in enumerate(negatives[: self.num_hard_negatives])]
        names = [f"{name} {role}" for *_, role in pairs]
        items = [self._item(text or "", path or "", item_name) for (text, path, _), item_name in zip(pairs, names)]
        return {"items": items, "ids": [content_id(text, path) for text, path, _ in pairs], "names": names}

    def _replacement(self, row: dict, taken: set[int]) -> dict:
        rng = random.Random(int(row["row_id"]))
        for _ in range(self.max_replacement_attempts):
            index = rng.randrange(len(self.dataset))
            if index in taken:
                continue
            candidate = self.dataset[index]
            try:
                example = self._example(candidate, 0)
            except (FileNotFoundError, ValueError, TypeError) as error:
                logger.warning(f"Replacement candidate rejected: {error}")
                continue
            taken.add(index)
            return example
        raise RuntimeError(
            f"row {row['row_id']}: no good replacement found in {self.max_replacement_attempts} draws; is most of the "
            "data broken?"
        )

    def _skip(self, error: Exception) -> None:
        with self._num_skipped.get_lock():
            self._num_skipped.value += 1
        logger.warning(f"Skipping a bad training row: {error}")

    def __call__(self, rows: list[dict]) -> dict:
        examples, bad = [], []
        for position, row in enumerate(rows):
            try:
                examples.append(self._example(row, position))
            except (FileNotFoundError, ValueError, TypeError) as error:
                if not self.skip_bad_samples:
                    raise
                self._skip(error)
                bad.append(row)
        if bad and self.dataset is not None:
            taken = {int(row["row_id"]) for row in rows if "row_id" in row}
            examples += [self._replacement(row, taken) for row in bad]
        if not examples:
            raise ValueError(f"Every row of the batch is bad ({len(rows)} rows).")

        size, count = len(examples), self.num_hard_negatives
        # queries, then targets, then negatives query-major: item k of each example sits at block k
        order = [(k, e) for k in (0, 1) for e in range(size)]
        order += [(2 + j, e) for e in range(size) for j in range(count)]
        texts = [examples[e]["items"][k][0] for k, e in order]
        images = [examples[e]["items"][k][1] for k, e in order]
        names = [examples[e]["names"][k] for k, e in order]
        ids = torch.tensor([example["ids"] for example in examples], dtype=torch.long)
        batch = {
            "inputs": self.processor(text=texts, images=images, item_names=names),
            "num_queries": size,
            "num_negatives": count,
            "query_ids": ids[:, 0],
            "target_ids": ids[:, 1],
        }
        if count:
            batch["negative_ids"] = ids[:, 2:]
        return batch


# ---------------------------------------------------------------------------------------------------------------------
# sampler


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
    def from_dataset(cls, dataset: Dataset, batch_size: int, world_size: int = 1, seed: int = 0):
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


__all__ = [
    "MMEB_TRAIN_SUBSETS",
    "REQUIRED_COLUMNS",
    "NEGATIVE_COLUMNS",
    "ContrastiveCollator",
    "ModalityLengthGroupedSampler",
    "content_id",
    "load_mmeb_train",
]
