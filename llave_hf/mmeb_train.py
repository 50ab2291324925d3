# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""MMEB-train, the training data of LLaVE, loaded with `datasets`.

MMEB-train (TIGER-Lab/MMEB-train, Jiang et al., arXiv 2410.05160) has one config per subset, each with the splits
`original` (the instructions LLaVE trains on), `diverse_instruction` and `train`; each row is a query/positive pair:

    qry, qry_image_path, pos_text, pos_image_path [, neg_text, neg_image_path]

Texts carry the image placeholder `<|image_1|>` (the processor swaps it for the backbone's image token); an empty
image path means a text-only item. Image paths are relative to an image root (the unpacked `images.zip`). Paths stay
relative in the dataset, so that content ids (false-negative masking) agree between machines that mount the images
at different places. `llave_hf.collator.ContrastiveCollator` turns these rows into training batches.
"""

import os
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import Dataset, Value, concatenate_datasets, load_dataset
from transformers.utils import logging


logger = logging.get_logger(__name__)

MMEB_TRAIN_SUBSETS = (
    "ImageNet_1K", "HatefulMemes", "SUN397", "N24News", "VOC2007", "OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA",
    "ChartQA", "Visual7W", "VisDial", "CIRR", "NIGHTS", "WebQA", "VisualNews_i2t", "VisualNews_t2i", "MSCOCO_t2i",
    "MSCOCO_i2t", "MSCOCO",
)  # fmt: skip
REQUIRED_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")
_LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}

__all__ = ["MMEB_TRAIN_SUBSETS", "NEGATIVE_COLUMNS", "REQUIRED_COLUMNS", "load_mmeb_train"]


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
