# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""MMEB-eval-format data: finding the datasets of a source, loading their rows, and validating and deduplicating
them into the items an encoder sees.

A row has `qry_text`, `qry_img_path`, `tgt_text` (list) and `tgt_img_path` (parallel list), the ground truth at
index 0 of the candidate lists. An empty text or image path means "no text" / "no image".
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from ..image_paths import ImagePathError, resolve_image_path
from .mmeb import MMEB_DATASETS, mmeb_order


REQUIRED_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")
_FILE_EXTENSIONS = (".parquet", ".jsonl")

# A local folder of `<Name>.parquet` / `<Name>.jsonl`, a Hub dataset id, or name -> rows in memory.
DataSource = Union[str, os.PathLike, Mapping]


class MMEBDataError(ValueError):
    """Malformed evaluation data; the message names the dataset, the row and, for images, the file."""


def is_local_folder(data: DataSource) -> bool:
    return isinstance(data, (str, os.PathLike)) and os.path.isdir(data)


def source_id(data: DataSource) -> str:
    """The source in a run signature; a local folder as an absolute path (the same folder from another working
    directory is the same source)."""
    if isinstance(data, Mapping):
        return "in-memory mapping"
    return os.path.abspath(data) if os.path.isdir(data) else str(data)


def _local_file(directory: str, name: str) -> str:
    for extension in _FILE_EXTENSIONS:
        path = os.path.join(directory, name + extension)
        if os.path.isfile(path):
            return path
    raise MMEBDataError(f"Dataset {name!r}: no {name}.parquet or {name}.jsonl in {directory!r}.")


def _check_columns(dataset: str, columns, row: int | None = None):
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        where = f"Dataset {dataset!r}" + (f", row {row}" if row is not None else "")
        raise MMEBDataError(f"{where}: missing column(s) {missing} (MMEB-eval format needs {list(REQUIRED_COLUMNS)}).")


def check_dataset_name(name) -> None:
    """Raises `MMEBDataError` unless `name` is a plain file name: it becomes `<output_dir>/<name>.json`, and a name
    with a path separator or `..` would write outside the output folder (or read outside the data folder)."""
    if not isinstance(name, str) or not name:
        raise MMEBDataError(f"Dataset name {name!r}: a dataset name must be a non-empty string.")
    if any(separator in name for separator in ("/", "\\", os.sep, "\0")) or ".." in name or name.startswith("."):
        raise MMEBDataError(
            f"Dataset name {name!r}: dataset names become file names (<name>.json); path separators, '..' and a "
            "leading '.' are not allowed."
        )


def resolve_dataset_names(data: DataSource, datasets: Literal["all"] | Sequence[str]) -> list[str]:
    """The dataset names to score. `"all"` means every file of a local folder (MMEB ones in the paper's order
    first), every key of a mapping, or the 36 MMEB datasets for a Hub id; named datasets must exist in a folder or
    mapping (any name may exist on the Hub)."""
    if isinstance(datasets, str):
        datasets = [datasets]
    if isinstance(data, Mapping):
        available = list(data)
    elif is_local_folder(data):
        stems = (os.path.splitext(f) for f in os.listdir(data))
        available = mmeb_order({stem for stem, extension in stems if extension in _FILE_EXTENSIONS})
    else:
        available = None
    if not datasets:
        raise ValueError("No dataset to evaluate: pass 'all' or a list of names.")
    if list(datasets) == ["all"]:
        names = available if available is not None else list(MMEB_DATASETS)
        if not names:
            raise MMEBDataError(f"No dataset found in {data!r} (expected <Name>.parquet or <Name>.jsonl).")
        for name in names:
            check_dataset_name(name)
        return names
    for name in datasets:
        check_dataset_name(name)
    if available is not None:
        missing = [name for name in datasets if name not in available]
        if missing:
            raise MMEBDataError(f"Dataset(s) {missing} not found in {data!r}; available: {available}.")
    return list(datasets)


def load_rows(data: DataSource, name: str, split: str = "test", max_rows: int | None = None) -> list[dict]:
    """The first `max_rows` rows (all by default) of dataset `name` as dicts; columns checked, values not yet."""
    n = max_rows
    if isinstance(data, Mapping):
        source = data[name]
    elif is_local_folder(data):
        path = _local_file(data, name)
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            source = pq.read_table(path)
            _check_columns(name, source.column_names)
            return source.slice(0, n).to_pylist()
        source = []
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        source.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise MMEBDataError(f"Dataset {name!r}, {path} line {line_number}: {error}") from None
    else:
        from datasets import load_dataset

        source = load_dataset(data, name, split=split)

    if hasattr(source, "column_names"):  # datasets.Dataset
        _check_columns(name, source.column_names)
        return source.select(range(min(n or len(source), len(source)))).to_list()
    if isinstance(source, Mapping):  # dict of columns
        _check_columns(name, source)
        columns = {column: list(source[column]) for column in REQUIRED_COLUMNS}
        lengths = {column: len(values) for column, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise MMEBDataError(f"Dataset {name!r}: columns of different lengths {lengths}.")
        return [dict(zip(columns, values)) for values in zip(*columns.values())][:n]
    return list(source)[:n]


@dataclass
class PreparedDataset:
    """Validated, deduplicated items of one dataset: `items[k] = (text or None, image path or None)`, each query's
    item index and each query's candidate item indices (ground truth first)."""

    items: list[tuple[str | None, str | None]]
    queries: np.ndarray
    candidates: list[np.ndarray]
    num_duplicate_positives: int


def prepare_dataset(
    name: str, rows: Sequence, image_root: str, allow_absolute_image_paths: bool = False
) -> PreparedDataset:
    """Validates the rows of dataset `name` (raising `MMEBDataError` naming the row) and deduplicates their items.

    Every distinct (text, image) item, query or candidate, gets one index. Candidates identical to their ground truth
    (same text and image) are dropped from that candidate list, as they are the same answer. Relative image paths
    start from `image_root`; every image file must exist. A path leading out of `image_root` (absolute, `..`, a
    symbolic link pointing out) is an error unless `allow_absolute_image_paths` (`llave_hf.image_paths`).
    """
    if not rows:
        raise MMEBDataError(f"Dataset {name!r} has no rows.")
    item_index: dict[tuple, int] = {}
    checked_images: set[str] = set()
    missing_files: dict[str, str] = {}  # path -> where it was first seen
    queries, candidates, num_duplicate_positives = [], [], 0

    def error(row: int, message: str) -> MMEBDataError:
        return MMEBDataError(f"Dataset {name!r}, row {row}: {message}")

    def add_item(text, image_path, row: int, where: str) -> int:
        for kind, value in (("text", text), ("image path", image_path)):
            if value is not None and not isinstance(value, str):
                raise error(row, f"{where} {kind} must be a string, got {value!r}.")
        try:
            image = None
            if image_path:
                image = resolve_image_path(image_path, image_root, where, allow_absolute_image_paths)
        except ImagePathError as path_error:
            raise error(row, str(path_error)) from None
        key = (text or None, image)
        if key == (None, None):
            raise error(row, f"{where} has neither text nor image.")
        if image is not None and image not in checked_images:
            checked_images.add(image)
            if not os.path.isfile(image):
                missing_files[image] = f"row {row}, {where} = {image_path!r}"
        return item_index.setdefault(key, len(item_index))

    for row, record in enumerate(rows):
        if not isinstance(record, Mapping):
            raise error(row, f"expected a mapping of columns, got {type(record).__name__}.")
        _check_columns(name, record, row)
        texts, images = record["tgt_text"], record["tgt_img_path"]
        for column, value in (("tgt_text", texts), ("tgt_img_path", images)):
            if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
                raise error(row, f"{column} must be a list, got {type(value).__name__}.")
        if len(texts) != len(images):
            raise error(row, f"tgt_text has {len(texts)} items but tgt_img_path has {len(images)}.")
        if len(texts) == 0:
            raise error(row, "empty candidate list (tgt_text and tgt_img_path).")
        queries.append(add_item(record["qry_text"], record["qry_img_path"], row, "qry"))
        row_candidates = [add_item(t, i, row, f"candidate {j}") for j, (t, i) in enumerate(zip(texts, images))]
        positive = row_candidates[0]
        negatives = [c for c in row_candidates[1:] if c != positive]
        num_duplicate_positives += len(row_candidates) - 1 - len(negatives)
        candidates.append(np.asarray([positive, *negatives], dtype=np.int64))

    if missing_files:
        path, where = next(iter(missing_files.items()))
        more = f" ({len(missing_files) - 1} more missing)" if len(missing_files) > 1 else ""
        raise MMEBDataError(
            f"Dataset {name!r}, {where}: image file not found: {path}{more}. Check --image-root / image_root "
            f"(now {image_root!r})."
        )
    items = [None] * len(item_index)
    for key, index in item_index.items():
        items[index] = key
    return PreparedDataset(items, np.asarray(queries, dtype=np.int64), candidates, num_duplicate_positives)
