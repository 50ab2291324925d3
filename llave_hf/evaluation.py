# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""MMEB evaluation: per-dataset Precision@1 over each query's own candidate list, the paper's aggregates, the
positive / hardest-negative similarity diagnostics, a Trainer callback and the `llave-eval` command.

The evaluator only needs an `encode(texts=..., images=..., batch_size=..., show_progress_bar=False)` callable
returning one embedding per item (a `LlaveEmbeddingModel`, whose `encode` does exactly that, or any function with
that signature), so it works for any embedding model and for fake encoders in tests.
"""

import argparse
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, TrainerCallback
from transformers.utils import logging

from .metrics import retrieval_metrics, similarity_stats, split_positive_negative


logger = logging.get_logger(__name__)

MMEB_META_TASKS = ("Classification", "VQA", "Retrieval", "Grounding")
# (meta-task, IND/OOD) -> MMEB-eval subset names, in the paper's order.
_MMEB_LAYOUT = {
    ("Classification", "IND"): ("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"),
    ("Classification", "OOD"): ("Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    ("VQA", "IND"): ("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"),
    ("VQA", "OOD"): ("ScienceQA", "VizWiz", "GQA", "TextVQA"),
    ("Retrieval", "IND"): (
        "VisDial",
        "CIRR",
        "VisualNews_t2i",
        "VisualNews_i2t",
        "MSCOCO_t2i",
        "MSCOCO_i2t",
        "NIGHTS",
        "WebQA",
    ),  # fmt: skip
    ("Retrieval", "OOD"): ("FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"),
    ("Grounding", "IND"): ("MSCOCO",),
    ("Grounding", "OOD"): ("RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
}
# The 36 MMEB-eval datasets: name -> (meta-task, "IND" or "OOD").
MMEB_DATASETS: dict[str, tuple[str, str]] = {
    name: (meta_task, split) for (meta_task, split), names in _MMEB_LAYOUT.items() for name in names
}

MMEB_HUB_ID = "TIGER-Lab/MMEB-eval"
REQUIRED_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")
AGGREGATE_KEYS = (*MMEB_META_TASKS, "IND", "OOD", "Overall")


class MMEBDataError(ValueError):
    """Malformed evaluation data; the message names the dataset, the row and, for images, the file."""


def aggregate_mmeb(scores: Mapping[str, float]) -> dict:
    """MMEB aggregates: unweighted means over the scored datasets of each meta-task, of IND, of OOD and overall.

    Datasets outside the 36 of MMEB (e.g. a custom "Emoji_t2i") never enter an aggregate: they are returned
    under `"other"` so that a partial or extended run cannot be mistaken for an MMEB number. A group without any
    scored dataset is `None`; `"num_datasets"` says how many datasets each mean covers. Units are those of
    `scores` (fractions or percentages).
    """
    groups = {key: [] for key in AGGREGATE_KEYS}
    other = {}
    for name, score in scores.items():
        if name not in MMEB_DATASETS:
            other[name] = score
            continue
        meta_task, split = MMEB_DATASETS[name]
        for key in (meta_task, split, "Overall"):
            groups[key].append(score)
    result = {key: (sum(values) / len(values) if values else None) for key, values in groups.items()}
    result["num_datasets"] = {key: len(values) for key, values in groups.items()}
    result["other"] = other
    return result


def _is_local(data) -> bool:
    return isinstance(data, (str, os.PathLike)) and os.path.isdir(data)


def _local_file(directory: str, name: str) -> str | None:
    for extension in (".parquet", ".jsonl"):
        path = os.path.join(directory, name + extension)
        if os.path.isfile(path):
            return path
    return None


def _mmeb_order(names) -> list[str]:
    """MMEB datasets in the paper's order, then the others alphabetically."""
    rank = {name: i for i, name in enumerate(MMEB_DATASETS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def _check_columns(dataset: str, columns, row: int | None = None):
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        where = f"Dataset {dataset!r}" + (f", row {row}" if row is not None else "")
        raise MMEBDataError(f"{where}: missing column(s) {missing} (MMEB-eval format needs {list(REQUIRED_COLUMNS)}).")


def _source_id(path) -> str:
    """A local folder as an absolute path (the same folder from another working directory is the same source)."""
    return os.path.abspath(path) if os.path.isdir(path) else str(path)


def _model_id(model) -> str:
    """The model in a run signature: its checkpoint path or Hub id, else a hash of its config."""
    owner = getattr(model, "__self__", model)  # a bound `model.encode`
    config = getattr(owner, "config", None)
    if config is None:
        # A bare encode callable: its name is all there is to tell it apart.
        return getattr(owner, "__qualname__", type(owner).__qualname__)
    if config.name_or_path:
        return _source_id(config.name_or_path)
    # Built in memory, never saved: the config is the closest thing to an identity (same config, same id).
    return "config sha256:" + hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:16]


def _json_safe(value):
    """NaN -> None so that the JSON files stay standard."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _write_json(path: str, value):
    # Write-then-rename: an interrupted run never leaves a truncated file that resuming would take as finished.
    tmp_path = path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(_json_safe(value), f, indent=2, ensure_ascii=False)
    os.replace(tmp_path, path)


def save_similarity_histogram(path: str, positive, hardest_negative, negatives, title: str = ""):
    """PNG histogram of positive vs (hardest) negative similarities, written with matplotlib's Agg canvas."""
    # The object-oriented API leaves pyplot and the user's global backend untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hardest_negative = hardest_negative[~np.isnan(hardest_negative)]
    series = [
        (negatives, "all negatives", "tab:gray"),
        (hardest_negative, "hardest negative", "tab:red"),
        (positive, "positive", "tab:blue"),
    ]
    bins = np.histogram_bin_edges(np.concatenate([values for values, _, _ in series]), bins=60)
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for values, label, color in series:
        if values.size:
            label = f"{label} (mean {values.mean():.3f})"
            axes.hist(values, bins=bins, density=True, alpha=0.5, color=color, label=label)
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@dataclass
class _PreparedDataset:
    """Validated, deduplicated items of one dataset: `items[k] = (text or None, image path or None)`, each query's
    item index and each query's candidate item indices (ground truth first)."""

    items: list[tuple[str | None, str | None]]
    queries: np.ndarray
    candidates: list[np.ndarray]
    num_duplicate_positives: int


class MMEBEvaluator:
    r"""
    Scores an embedding model on datasets in MMEB-eval format: columns `qry_text`, `qry_img_path`, `tgt_text`
    (list) and `tgt_img_path` (parallel list), ground truth at index 0 of each candidate list. Texts keep the MMEB
    `<|image_1|>` placeholder (the processor swaps it); an empty text or image path means "no text"/"no image".

    Every distinct (text, image) item of a dataset, query or candidate, is encoded once. Each query is scored by
    cosine against its own candidate list; candidates identical to the ground truth (same text and image) are
    dropped from that list, as they are the same answer. Ties are broken pessimistically (see
    `llave_hf.metrics`). Each dataset is fully validated before any of it is encoded.

    Args:
        data (`str` or `Mapping`): a local folder holding `<Name>.parquet` or `<Name>.jsonl` per dataset; a Hub
            dataset id loaded as `load_dataset(data, <Name>, split=split)` (e.g. "TIGER-Lab/MMEB-eval"); or a
            mapping name -> rows (a `datasets.Dataset`, a list of dicts or a dict of columns).
        datasets (`"all"` or list of `str`): names to score. `"all"` means every file of a local folder (MMEB ones
            in the paper's order first), every key of a mapping, or the 36 MMEB datasets for a Hub id.
        image_root (`str`, *optional*): folder that relative image paths start from. Defaults to the data folder
            for local data and to the working directory otherwise.
        split (`str`): split of Hub datasets.
        output_dir (`str`, *optional*): where `<Name>.json` (scores, counts, diagnostics, run signature),
            `<Name>_similarity.png`, `summary.md` and `summary.json` go. Datasets whose JSON is already there are not
            evaluated again: their stored results are reused if the JSON's run signature (see `run_signature`)
            matches this run's. A JSON of another run (other model, data, split, `max_queries` or `image_root`)
            raises a `ValueError` before anything is encoded, rather than being silently reused or overwritten.
        batch_size (`int`): items per `encode` call.
        max_queries (`int`, *optional*): score only the first `max_queries` rows of each dataset.
        k_values (`Sequence[int]`): Recall@k cut-offs reported beside Precision@1.
        histograms (`bool`): write the similarity histogram PNGs when `output_dir` is set. Needs matplotlib (the
            `eval` extra), checked here so that a run fails before encoding rather than after its first dataset.
        show_progress_bar (`bool`): one tqdm bar per dataset.
        keep_in_memory (`bool`): keep the validated datasets between `evaluate` calls (for repeated evaluation
            during training); otherwise each call reloads them.

    Example:

    ```python
    >>> evaluator = MMEBEvaluator("mmeb_eval/", datasets=["ImageNet-1K", "MSCOCO_t2i"], output_dir="results/")
    >>> results = evaluator.evaluate(model)  # a LlaveEmbeddingModel, or any `encode(texts=, images=, ...)` callable
    >>> results["datasets"]["ImageNet-1K"]["scores"]["precision@1"], results["aggregate"]["Overall"]
    ```
    """

    def __init__(
        self,
        data: str | Mapping,
        datasets: str | Sequence[str] = "all",
        image_root: str | None = None,
        split: str = "test",
        output_dir: str | None = None,
        batch_size: int = 32,
        max_queries: int | None = None,
        k_values: Sequence[int] = (1, 5, 10),
        histograms: bool = True,
        show_progress_bar: bool = True,
        keep_in_memory: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be positive, got {max_queries}.")
        if histograms and output_dir is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ImportError(
                    "Similarity histograms need matplotlib: `pip install llave-hf[eval]`, or pass histograms=False "
                    "(`llave-eval --no-histograms`)."
                ) from None
        self.data = data
        self.image_root = image_root if image_root is not None else (str(data) if _is_local(data) else os.getcwd())
        self.split = split
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.max_queries = max_queries
        self.k_values = tuple(k_values)
        self.histograms = histograms
        self.show_progress_bar = show_progress_bar
        self.keep_in_memory = keep_in_memory
        self.dataset_names = self._resolve_names(datasets)
        self._prepared: dict[str, _PreparedDataset] = {}

    def _resolve_names(self, datasets) -> list[str]:
        if isinstance(datasets, str):
            datasets = [datasets]
        if isinstance(self.data, Mapping):
            available = list(self.data)
        elif _is_local(self.data):
            stems = (os.path.splitext(f) for f in os.listdir(self.data))
            available = _mmeb_order({stem for stem, extension in stems if extension in (".parquet", ".jsonl")})
        else:
            available = None  # a Hub id: any subset name may exist
        if not datasets:
            raise ValueError("No dataset to evaluate: pass 'all' or a list of names.")
        if list(datasets) == ["all"]:
            names = available if available is not None else list(MMEB_DATASETS)
            if not names:
                raise MMEBDataError(f"No dataset found in {self.data!r} (expected <Name>.parquet or <Name>.jsonl).")
            return names
        if available is not None:
            missing = [name for name in datasets if name not in available]
            if missing:
                raise MMEBDataError(f"Dataset(s) {missing} not found in {self.data!r}; available: {available}.")
        return list(datasets)

    # ---- loading and validation ----

    def _load_rows(self, name: str) -> list[dict]:
        n = self.max_queries
        if isinstance(self.data, Mapping):
            source = self.data[name]
        elif _is_local(self.data):
            path = _local_file(self.data, name)
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

            source = load_dataset(self.data, name, split=self.split)

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

    def _resolve_image(self, path) -> str | None:
        if path is None or path == "":
            return None
        return path if os.path.isabs(path) else os.path.join(self.image_root, path)

    def prepare(self, name: str) -> _PreparedDataset:
        """Loads and validates dataset `name` (raising `MMEBDataError` naming the row) and deduplicates its items."""
        if name in self._prepared:
            return self._prepared[name]
        rows = self._load_rows(name)
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
            image = self._resolve_image(image_path)
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
                f"(now {self.image_root!r})."
            )
        items = [None] * len(item_index)
        for key, index in item_index.items():
            items[index] = key
        prepared = _PreparedDataset(items, np.asarray(queries, dtype=np.int64), candidates, num_duplicate_positives)
        if self.keep_in_memory:
            self._prepared[name] = prepared
        return prepared

    # ---- encoding and scoring ----

    def run_signature(self, model) -> dict:
        """What must match for stored results to be reused: model, data source, split, `max_queries`, `image_root`.

        The model is its `config.name_or_path` (checkpoint folder or Hub id), a hash of its config when it has no
        path, or its name for a bare encode callable.
        """
        return {
            "model": _model_id(model),
            "data": "in-memory mapping" if isinstance(self.data, Mapping) else _source_id(self.data),
            "split": self.split,
            "max_queries": self.max_queries,
            "image_root": os.path.abspath(self.image_root),
        }

    def _embed(self, name: str, items, encode: Callable) -> np.ndarray:
        # Image items first, then longest texts first: batch-mates pad little.
        order = sorted(
            range(len(items)), key=lambda i: (items[i][1] is not None, len(items[i][0] or "")), reverse=True
        )
        embeddings = None
        with tqdm(total=len(items), desc=name, unit="item", disable=not self.show_progress_bar) as progress:
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                with torch.no_grad():
                    output = encode(
                        texts=[items[i][0] for i in indices],
                        images=[items[i][1] for i in indices],
                        batch_size=self.batch_size,
                        show_progress_bar=False,
                    )
                output = torch.as_tensor(output).float().cpu().numpy()
                if output.shape[0] != len(indices):
                    raise ValueError(f"Dataset {name!r}: encode returned {len(output)} rows for {len(indices)} items.")
                if embeddings is None:
                    embeddings = np.empty((len(items), output.shape[1]), dtype=np.float32)
                embeddings[indices] = output
                progress.update(len(indices))
        # Cosine similarity, as MMEB, whatever the model's own normalisation.
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def _score(embeddings: np.ndarray, queries: np.ndarray, candidates, chunk_size: int = 64) -> list[np.ndarray]:
        """Cosine of each query against its own candidates; one dense product per chunk of queries."""
        scores = []
        for start in range(0, len(queries), chunk_size):
            chunk = candidates[start : start + chunk_size]
            union = np.unique(np.concatenate(chunk))
            similarities = embeddings[queries[start : start + chunk_size]] @ embeddings[union].T
            scores.extend(similarities[i, np.searchsorted(union, c)] for i, c in enumerate(chunk))
        return scores

    def evaluate_dataset(self, name: str, model, processor=None) -> dict:
        """Scores one dataset and returns its result (also written to `output_dir` when set); `model` and `processor`
        as in `evaluate`."""
        encode = _encode_function(model, processor)
        prepared = self.prepare(name)
        embeddings = self._embed(name, prepared.items, encode)
        scores = self._score(embeddings, prepared.queries, prepared.candidates)
        metrics = retrieval_metrics(scores, k_values=self.k_values)
        positive, hardest, negatives = split_positive_negative(scores)
        meta_task, split = MMEB_DATASETS.get(name, (None, None))
        num_candidates = np.asarray([len(c) for c in prepared.candidates])
        result = {
            "dataset": name,
            "meta_task": meta_task,
            "split": split,
            "scores": {key: value for key, value in metrics.items() if key != "num_queries"},
            "similarity": similarity_stats(scores),
            "counts": {
                "num_queries": metrics["num_queries"],
                "num_candidates": int(num_candidates.sum()),
                "min_candidates": int(num_candidates.min()),
                "max_candidates": int(num_candidates.max()),
                "num_encoded_items": len(prepared.items),
                "num_duplicate_positives": prepared.num_duplicate_positives,
                "num_tied_top": int(np.sum(positive == hardest)),
                "max_queries": self.max_queries,
            },
            "histogram": f"{name}_similarity.png" if self.output_dir is not None and self.histograms else None,
            "run": self.run_signature(model),
        }
        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)
            # Scores first: they are the costly part, and a failing plot must not lose them.
            _write_json(os.path.join(self.output_dir, f"{name}.json"), result)
            if self.histograms:
                title = f"{name}: P@1 {100 * metrics['precision@1']:.1f}, gap {result['similarity']['gap']:.3f}"
                save_similarity_histogram(
                    os.path.join(self.output_dir, result["histogram"]), positive, hardest, negatives, title
                )
        return result

    def _load_finished(self, model) -> dict:
        """Stored results of this run's datasets; raises on any written by another run, before anything is encoded."""
        if self.output_dir is None:
            return {}
        signature = self.run_signature(model)
        finished = {}
        for name in self.dataset_names:
            path = os.path.join(self.output_dir, f"{name}.json")
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
            stored = result.get("run") or {}
            differences = [
                f"{key}: {stored.get(key)!r} there, {value!r} now"
                for key, value in signature.items()
                if stored.get(key) != value
            ]
            if differences:
                raise ValueError(
                    f"{path} holds results of another run ({'; '.join(differences)}). Use a new output folder "
                    f"(--output / output_dir) to keep both, or delete the file to evaluate {name} again with these "
                    "settings."
                )
            logger.warning(f"Skipping {name}: results already in {path} (delete it to evaluate again).")
            finished[name] = result
        return finished

    def evaluate(self, model, processor=None) -> dict:
        """Scores every dataset; returns `{"datasets": {name: result}, "aggregate": aggregate_mmeb(P@1 per dataset)}`.

        Args:
            model: an object with an `encode` method (e.g. `LlaveEmbeddingModel`) or an `encode` callable itself.
            processor (*optional*): passed to `model.encode(processor=...)`.
        """
        _encode_function(model, processor)  # fails on a wrong `model` before any work
        finished = self._load_finished(model)
        results = {
            name: finished[name] if name in finished else self.evaluate_dataset(name, model, processor)
            for name in self.dataset_names
        }
        output = {
            "datasets": results,
            "aggregate": aggregate_mmeb({name: r["scores"]["precision@1"] for name, r in results.items()}),
        }
        if self.output_dir is not None:
            _write_json(os.path.join(self.output_dir, "summary.json"), output)
            with open(os.path.join(self.output_dir, "summary.md"), "w", encoding="utf-8") as f:
                f.write(format_summary(output))
        return output


def _encode_function(model, processor=None) -> Callable:
    if hasattr(model, "encode"):
        return functools.partial(model.encode, processor=processor) if processor is not None else model.encode
    if callable(model) and not isinstance(model, torch.nn.Module):
        return model
    raise TypeError(f"Expected a model with `encode` or an encode callable, got {type(model).__name__}.")


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _cosine(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_summary(results: dict) -> str:
    """Markdown tables of `MMEBEvaluator.evaluate` results: one row per dataset, then the MMEB aggregates (%)."""
    datasets = results["datasets"]
    first_scores = next(iter(datasets.values()))["scores"]
    recall_keys = [key for key in first_scores if key.startswith("recall@") and key != "recall@1"]
    header = ["Dataset", "Meta-task", "Split", "P@1", *[key.replace("recall", "R") for key in recall_keys], "MRR"]
    header += ["cos pos", "cos hardest neg", "gap", "queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in _mmeb_order(datasets):
        result = datasets[name]
        scores, similarity = result["scores"], result["similarity"]
        cells = [name, result["meta_task"] or "other", result["split"] or "-", _percent(scores["precision@1"])]
        cells += [_percent(scores.get(key)) for key in recall_keys] + [_percent(scores["mrr"])]
        cells += [_cosine(similarity[key]) for key in ("positive_mean", "hardest_negative_mean", "gap")]
        cells.append(str(result["counts"]["num_queries"]))
        lines.append("| " + " | ".join(cells) + " |")

    aggregate = results["aggregate"]
    lines += ["", "MMEB aggregates (P@1, %; unweighted mean over the scored datasets, count in brackets):", ""]
    lines += ["| " + " | ".join(AGGREGATE_KEYS) + " |", "|" + "---|" * len(AGGREGATE_KEYS)]
    counts = aggregate["num_datasets"]
    lines.append("| " + " | ".join(f"{_percent(aggregate[key])} ({counts[key]})" for key in AGGREGATE_KEYS) + " |")
    if aggregate["other"]:
        lines += ["", f"Not in MMEB, left out of the aggregates: {', '.join(sorted(aggregate['other']))}."]
    return "\n".join(lines) + "\n"


class RetrievalEvalCallback(TrainerCallback):
    r"""
    Runs an `MMEBEvaluator` on the model being trained and logs `eval_<name>_p@1` per dataset (plus
    `eval_mean_p@1` for several) through `trainer.log`, so every reporting integration sees it.

    Without `every_n_steps` it runs after each of the trainer's own evaluations and also adds its numbers to the
    evaluation metrics, so `metric_for_best_model="<name>_p@1"` works; with `every_n_steps` it runs on its own
    schedule and needs no `eval_dataset`. Only the model's `encode` is used, on the unwrapped model in eval mode
    (training mode is restored afterwards). Every process runs it, which keeps sharded models (ZeRO-3, FSDP) in
    step. Build the evaluator with `output_dir=None` (nothing written) and `keep_in_memory=True` (data loaded
    once), e.g. on a small held-out set with `max_queries`.

    Args:
        evaluator (`MMEBEvaluator`): what to run.
        trainer (`transformers.Trainer`): the trainer whose model is evaluated and whose `log` reports.
        every_n_steps (`int`, *optional*): run every that many optimizer steps instead of on `on_evaluate`.
        processor (*optional*): passed to `model.encode(processor=...)`; by default the model's own.

    Example:

    ```python
    >>> evaluator = MMEBEvaluator(heldout_dir, output_dir=None, max_queries=200, keep_in_memory=True)
    >>> trainer.add_callback(RetrievalEvalCallback(evaluator, trainer, every_n_steps=500))
    ```
    """

    def __init__(self, evaluator: MMEBEvaluator, trainer, every_n_steps: int | None = None, processor=None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}.")
        self.evaluator = evaluator
        self.trainer = trainer
        self.every_n_steps = every_n_steps
        self.processor = processor
        self._last_step, self._last_metrics = None, {}

    def _run(self, state) -> dict[str, float]:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        was_training = model.training
        model.eval()
        try:
            results = self.evaluator.evaluate(model, processor=self.processor)["datasets"]
        finally:
            model.train(was_training)
        metrics = {f"eval_{name}_p@1": result["scores"]["precision@1"] for name, result in results.items()}
        if len(metrics) > 1:
            metrics["eval_mean_p@1"] = sum(metrics.values()) / len(metrics)
        self._last_step, self._last_metrics = state.global_step, metrics
        self.trainer.log(dict(metrics))
        return metrics

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._run(state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.every_n_steps is not None:
            return
        # A dict of eval datasets triggers on_evaluate once per dataset: the model is the same, so run once per step.
        new_metrics = self._last_metrics if state.global_step == self._last_step else self._run(state)
        if metrics is not None:
            metrics.update(new_metrics)


def main(argv: Sequence[str] | None = None):
    """`llave-eval`: scores a model on MMEB (or any data in MMEB-eval format) and prints the summary table."""
    parser = argparse.ArgumentParser(prog="llave-eval", description=main.__doc__)
    parser.add_argument("--model", required=True, help="model folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--data", default=MMEB_HUB_ID, help=f"Hub dataset id or local folder (default {MMEB_HUB_ID})")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths start from")
    parser.add_argument("--datasets", nargs="+", default=["all"], help="'all' or dataset names")
    parser.add_argument(
        "--output",
        required=True,
        help="output folder; datasets already scored there by a run with the same model, data, split, --max-queries "
        "and --image-root are skipped (results of a run with other settings are an error)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-queries", type=int, default=None, help="score only the first N queries per dataset")
    parser.add_argument("--split", default="test", help="split of Hub datasets")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--no-histograms", action="store_true", help="skip the similarity histograms (matplotlib)")
    args = parser.parse_args(argv)

    evaluator = MMEBEvaluator(
        args.data,
        datasets=args.datasets,
        image_root=args.image_root,
        split=args.split,
        output_dir=args.output,
        batch_size=args.batch_size,
        max_queries=args.max_queries,
        histograms=not args.no_histograms,
    )
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=args.dtype).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    results = evaluator.evaluate(model, processor=processor)
    print(format_summary(results), end="")


if __name__ == "__main__":
    main()
