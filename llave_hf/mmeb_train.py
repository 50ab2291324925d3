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

import itertools
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, LargeList, List, Value, concatenate_datasets, load_dataset
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

__all__ = ["MMEB_TRAIN_SUBSETS", "NEGATIVE_COLUMNS", "REQUIRED_COLUMNS", "load_mmeb_train", "row_negatives"]


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


def _surrogate_column(line: bytes) -> str | None:
    """The key of a JSON line whose value holds the bytes that are not UTF-8, if it can be told."""
    try:
        record = json.loads(line.decode("utf-8", "surrogateescape"))  # bad bytes become lone surrogates
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values):
            return key
    return None


def _check_json_file(path: str) -> int | None:
    """Rows of a JSON-lines file (None for a `.json` file, which may hold one array), checked to be UTF-8 text.

    `datasets` loads bytes that are not UTF-8 without a word and fails only when a row is read, i.e. mid-training
    in a dataloader worker (a `UnicodeDecodeError` that `skip_bad_samples` cannot catch).
    """
    lines_are_rows = path.endswith(".jsonl")
    rows = 0  # non-blank lines so far
    with open(path, "rb") as file:
        for line_number, line in enumerate(file, start=1):
            try:
                rows += bool(line.decode("utf-8").strip())
            except UnicodeDecodeError as error:
                column = _surrogate_column(line)
                where = f"{path}, line {line_number}" + (f" (row {rows})" if lines_are_rows else "")
                where += f", column {column!r}" if column else ""
                raise ValueError(
                    f"{where}: bytes {error.object[error.start : error.end]!r} at byte {error.start} of the line are "
                    "not UTF-8. Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                ) from None
    if not rows:
        raise ValueError(f"{path}: empty file, no rows.")
    return rows if lines_are_rows else None


def _check_file(path: str) -> int | None:
    """Rows of a local file, read cheaply (parquet metadata, JSON lines; None when unknown); raises naming the file
    when it is empty, unreadable or not UTF-8."""
    if _LOCAL_FORMATS[Path(path).suffix] == "json":
        return _check_json_file(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for files that are not parquet
        raise ValueError(f"{path}: not a readable parquet file ({error}).") from None
    if not parquet.metadata.num_rows:
        raise ValueError(f"{path}: empty file, no rows.")
    # Types from the schema, per file: shards of one subset with different types would fail to load together.
    schema = parquet.schema_arrow
    for column in (*REQUIRED_COLUMNS, *NEGATIVE_COLUMNS):
        if column in schema.names and not _valid_arrow_type(schema.field(column).type, column):
            for index, value in enumerate(parquet.read(columns=[column]).column(0).to_pylist()):
                if not _valid_value(value, column):
                    raise ValueError(_type_error(f"{path}, row {index}", column, value))
    return parquet.metadata.num_rows


def _valid_arrow_type(arrow_type: pa.DataType, column: str) -> bool:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type):
        return True
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    return column in NEGATIVE_COLUMNS and is_list and _valid_arrow_type(arrow_type.value_type, "")


def _row_in_files(index: int, files: list[str], rows_per_file: list[int | None]) -> str:
    """`<file>, row <r>` (and the line of a JSON-lines file) of the `index`-th row of `files` loaded together."""
    if None in rows_per_file:  # a .json file: rows are not lines
        return f"{', '.join(files)}, row {index}"
    for path, rows in zip(files, rows_per_file):
        if index < rows:
            if not path.endswith(".jsonl"):
                return f"{path}, row {index}"
            with open(path, "rb") as file:  # blank lines hold no row
                lines = (number for number, line in enumerate(file, start=1) if line.strip())
                return f"{path}, line {next(itertools.islice(lines, index, None))} (row {index})"
        index -= rows
    raise AssertionError("the row is in none of the files")


def _load_local(files: list[str], cache_dir: str | None) -> Dataset:
    formats = {_LOCAL_FORMATS[Path(file).suffix] for file in files}
    if len(formats) > 1:
        raise ValueError(f"Mixed file formats in one subset: {files}.")
    rows_per_file = [_check_file(file) for file in files]
    file_format = formats.pop()
    try:
        dataset = load_dataset(file_format, data_files=files, split="train", cache_dir=cache_dir)
    except Exception as error:
        if file_format == "json":
            _diagnose_json(files)  # raises naming the line when it finds the cause
        raise ValueError(f"{', '.join(files)}: `datasets` cannot load it: {error}") from error
    return _check_and_normalise(dataset, ", ".join(files), lambda index: _row_in_files(index, files, rows_per_file))


def _diagnose_json(files: list[str]) -> None:
    """Finds why `datasets` failed on JSON-lines files (its errors name no line: a line that is not JSON, or a
    value of the wrong type among those of a column), and raises naming the file, the line and the column."""
    for path in files:
        if not path.endswith(".jsonl"):
            continue
        row = 0
        with open(path, encoding="utf-8") as file:  # UTF-8 was checked
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {line_number} (row {row})"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where}: not valid JSON ({error.msg} at character {error.pos + 1}).") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
                for column in (*REQUIRED_COLUMNS, *NEGATIVE_COLUMNS):
                    if not _valid_value(record.get(column), column):
                        raise ValueError(_type_error(where, column, record[column]))
                row += 1


def _is_string(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _valid_value(value, column: str) -> bool:
    """A text or image path is a string (empty or None: none); a negative column may hold a list of them."""
    if value is None or isinstance(value, str):
        return True
    return column in NEGATIVE_COLUMNS and isinstance(value, list) and all(_valid_value(v, "") for v in value)


def _check_types(dataset: Dataset, locate) -> None:
    """Raises naming the row and the column of the first value that is not a string (a list of strings for the
    negatives): an int-typed column, an int among the strings of a JSON file, a list of image paths."""
    for column in (*REQUIRED_COLUMNS, *NEGATIVE_COLUMNS):
        if column not in dataset.column_names:
            continue
        feature = dataset.features[column]
        if _is_string(feature) or (isinstance(feature, Value) and feature.dtype == "null"):
            continue
        if column in NEGATIVE_COLUMNS and isinstance(feature, (List, LargeList)) and _is_string(feature.feature):
            continue
        # a mixed column (JSON) or another type: find the first value that is wrong (rows left alone are fine)
        for index, value in enumerate(dataset[column]):
            if not _valid_value(value, column):
                raise ValueError(_type_error(locate(index), column, value))


def _type_error(where: str, column: str, value) -> str:
    expected = "a string or a list of strings" if column in NEGATIVE_COLUMNS else "a string"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{where}, column {column!r}: expected {expected}, got {type(value).__name__} {shown}."


def _check_and_normalise(dataset: Dataset, where: str, locate=None) -> Dataset:
    """Keeps the MMEB-train columns (and `subset`), adds empty negatives when absent, types null columns as strings.

    Raises naming `where` (the files or the Hub subset) for a missing column, and the row (`locate(index)`, by
    default `<where>, row <index>`) and the column for a value of the wrong type.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(missing)}. MMEB-train rows need the columns "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(NEGATIVE_COLUMNS)}); found "
            f"{', '.join(dataset.column_names) or 'none'}."
        )
    _check_types(dataset, locate or (lambda index: f"{where}, row {index}"))
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


def row_negatives(row: dict) -> list[tuple[str, str]]:
    """A row's hard negatives as (text, image path) pairs: MMEB stores one per row, other sources may store lists."""
    texts, paths = row.get("neg_text") or "", row.get("neg_image_path") or ""
    texts = [texts] if isinstance(texts, str) else list(texts)
    paths = [paths] if isinstance(paths, str) else list(paths)
    paths += [""] * (len(texts) - len(paths))
    texts += [""] * (len(paths) - len(texts))
    return [(text or "", path or "") for text, path in zip(texts, paths) if text or path]


def load_mmeb_train(
    source: str | os.PathLike,
    *,
    subsets: list[str] | None = None,
    split: str = "original",
    max_rows_per_subset: int | None = None,
    require_negatives: int = 0,
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
        require_negatives: drop rows with fewer hard negatives than this (`True` counts as 1): training with
            `num_hard_negatives=n` needs `n` per row.
        cache_dir: the `datasets` cache.

    Returns:
        A `Dataset` with the columns `qry`, `qry_image_path`, `pos_text`, `pos_image_path`, `neg_text`,
        `neg_image_path` (empty when the source has none), `subset`, and `row_id` (the row's index in this dataset,
        which error messages name).

    Raises:
        `ValueError` naming the file or subset when a required column is missing, listing the expected columns;
        naming the file (or subset), the row and the column for a value that is not a string (a number, a list of
        image paths; the negative columns may hold lists of strings), and for bytes of a JSON file that are not
        UTF-8; naming the file when it is empty or not readable. All at load time, before any training step.
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
            dataset = _load_local(paths, cache_dir)
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
        before, needed = len(dataset), int(require_negatives)
        dataset = dataset.filter(
            lambda text, path: len(row_negatives({"neg_text": text, "neg_image_path": path})) >= needed,
            input_columns=list(NEGATIVE_COLUMNS),
            desc="Rows with negatives",
        )
        if len(dataset) < before:
            logger.warning(
                f"Dropped {before - len(dataset):,} of {before:,} rows with fewer than {needed} hard negative(s)."
            )
    if len(dataset) == 0:
        raise ValueError(f"No training rows in {os.fspath(source)!r} (subsets: {subsets or 'all'}).")
    counts = Counter(dataset["subset"])
    logger.info(f"MMEB-train: {len(dataset):,} rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return dataset.add_column("row_id", np.arange(len(dataset)))
