# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""Evaluation results as dataclasses, and their JSON layout (`<Name>.json` per dataset, `summary.json`).

The JSON layout is the one written since the first release: `{"dataset", "meta_task", "split", "scores":
{"precision@1", "recall@<k>"..., "mrr"}, "similarity", "counts", "histogram", "per_query", "run"}` per dataset, NaN
written as null (`per_query` since per-query outcomes are saved; absent in older files). `to_dict` writes it and
`from_dict` reads it, so an output folder written before can still be resumed.
"""

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from .mmeb import Distribution, MetaTask, MMEBAggregate, aggregate_mmeb


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _none_to_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def write_json(path: str, value: dict):
    """Writes `value` to `path` through a temporary file and a rename: an interrupted run never leaves a truncated
    file that resuming would take as finished."""
    tmp_path = path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, allow_nan=False)
    os.replace(tmp_path, path)


@dataclass
class SimilarityStats:
    """The paper's Table 1 diagnostic over one dataset (cosines; see `llave_hf.metrics.similarity_stats`). The
    negative statistics are NaN when no query has a negative."""

    positive_mean: float
    hardest_negative_mean: float
    negative_mean: float
    gap: float

    def to_dict(self) -> dict[str, float | None]:
        return {name: _nan_to_none(value) for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> "SimilarityStats":
        return cls(**{field.name: _none_to_nan(data[field.name]) for field in fields(cls)})


@dataclass
class DatasetCounts:
    """What one dataset's scores cover."""

    num_queries: int
    num_candidates: int  # over all queries, after dropping duplicates of the ground truth
    min_candidates: int
    max_candidates: int
    num_encoded_items: int  # distinct (text, image) items, queries and candidates together
    num_duplicate_positives: int  # candidates identical to their ground truth, dropped
    num_tied_top: int  # queries whose hardest negative scores exactly as the ground truth (counted wrong)
    max_queries: int | None  # the run's cap on queries per dataset
    # queries left with the ground truth as their only candidate (counted right by construction); None in results
    # written before it was counted
    num_single_candidate: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, int | None]) -> "DatasetCounts":
        optional = {"num_single_candidate"}
        return cls(**{f.name: data.get(f.name) if f.name in optional else data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class RunSignature:
    """What must match for stored results to be reused: the model (checkpoint path, Hub id, config hash or encode
    function name), a fingerprint of its weights, the data source, its split, `max_queries` and the image root
    (absolute path). Results written before weights were fingerprinted have none, so they are not reused."""

    model: str | None
    weights: str | None
    data: str | None
    split: str | None
    max_queries: int | None
    image_root: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "RunSignature":
        """Missing keys (or a missing signature) read as `None`, so they never match a real run."""
        data = data or {}
        return cls(**{field.name: data.get(field.name) for field in fields(cls)})

    def differences(self, stored: "RunSignature | None") -> list[str]:
        """`"<field>: <stored> there, <self> now"` for every field that differs from `stored` (no stored signature
        differs in every field)."""
        stored = stored or RunSignature.from_dict(None)
        return [
            f"{field.name}: {getattr(stored, field.name)!r} there, {getattr(self, field.name)!r} now"
            for field in fields(self)
            if getattr(stored, field.name) != getattr(self, field.name)
        ]


@dataclass
class DatasetResult:
    """Scores of one dataset (fractions in [0, 1]) with their diagnostics and provenance.

    Attributes:
        dataset: the dataset's name.
        meta_task, split: its MMEB meta-task and IND/OOD split; `None` for a dataset outside MMEB.
        precision_at_1: share of queries whose ground truth ranks first (the MMEB score).
        recall_at_k: Recall@k per cut-off k.
        mrr: mean reciprocal rank of the ground truth.
        similarity: positive / hardest-negative cosine statistics.
        counts: what the scores cover.
        histogram: file name of the similarity histogram beside the JSON, if one was written.
        per_query: file name of the per-query outcomes beside the JSON (`load_per_query`), if they were written.
        run: the signature of the run that produced it (see `MMEBEvaluator.run_signature`).
    """

    dataset: str
    meta_task: MetaTask | None
    split: Distribution | None
    precision_at_1: float
    recall_at_k: dict[int, float]
    mrr: float
    similarity: SimilarityStats
    counts: DatasetCounts
    histogram: str | None = None
    per_query: str | None = None
    run: RunSignature | None = None

    def to_dict(self) -> dict:
        """The `<Name>.json` layout (JSON-safe: NaN as `None`)."""
        scores = {"precision@1": self.precision_at_1}
        scores.update({f"recall@{k}": value for k, value in self.recall_at_k.items()})
        scores["mrr"] = self.mrr
        return {
            "dataset": self.dataset,
            "meta_task": self.meta_task,
            "split": self.split,
            "scores": scores,
            "similarity": self.similarity.to_dict(),
            "counts": self.counts.to_dict(),
            "histogram": self.histogram,
            "per_query": self.per_query,
            "run": None if self.run is None else self.run.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "DatasetResult":
        """Reads the `<Name>.json` layout."""
        scores = data["scores"]
        prefix = "recall@"
        return cls(
            dataset=data["dataset"],
            meta_task=data.get("meta_task"),
            split=data.get("split"),
            precision_at_1=scores["precision@1"],
            recall_at_k={int(key[len(prefix) :]): value for key, value in scores.items() if key.startswith(prefix)},
            mrr=scores["mrr"],
            similarity=SimilarityStats.from_dict(data["similarity"]),
            counts=DatasetCounts.from_dict(data["counts"]),
            histogram=data.get("histogram"),
            per_query=data.get("per_query"),
            run=None if data.get("run") is None else RunSignature.from_dict(data["run"]),
        )

    def save(self, path: str):
        write_json(path, self.to_dict())

    def load_per_query(self, folder: str | os.PathLike) -> dict[str, np.ndarray]:
        """The per-query outcomes written beside the JSON in `folder`, each an array in the data's row order:
        `rank` (1-based rank of the ground truth, ties counted against it), `positive` (its cosine) and
        `hardest_negative` (the highest cosine of a wrong candidate; NaN for a query without one). Two results of the
        same data can be compared query by query, e.g. for a paired test."""
        if self.per_query is None:
            raise FileNotFoundError(f"No per-query outcomes were written for {self.dataset!r} (no output_dir).")
        with np.load(os.path.join(folder, self.per_query)) as arrays:
            return {name: arrays[name] for name in arrays.files}

    @classmethod
    def load(cls, path: str) -> "DatasetResult":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@dataclass
class EvaluationResults:
    """Results of an `MMEBEvaluator` run: one `DatasetResult` per dataset, in evaluation order.

    Example:

    ```python
    >>> results = evaluator(model)
    >>> results.datasets["ImageNet-1K"].precision_at_1, results.aggregate.overall
    >>> trainer.log(results.metrics(prefix="eval_"))  # {"eval_ImageNet-1K_p@1": ..., "eval_mean_p@1": ...}
    ```
    """

    datasets: dict[str, DatasetResult]

    @property
    def precision_at_1(self) -> dict[str, float]:
        """Precision@1 (fraction) per dataset."""
        return {name: result.precision_at_1 for name, result in self.datasets.items()}

    @property
    def aggregate(self) -> MMEBAggregate:
        """The MMEB aggregates of the per-dataset Precision@1 (datasets outside MMEB under `other`)."""
        return aggregate_mmeb(self.precision_at_1)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat scalars for a logger: `<prefix><dataset>_p@1` per dataset, plus `<prefix>mean_p@1` (the unweighted
        mean over the datasets) when there are several."""
        scores = self.precision_at_1
        metrics = {f"{prefix}{name}_p@1": score for name, score in scores.items()}
        if len(scores) > 1:
            metrics[f"{prefix}mean_p@1"] = sum(scores.values()) / len(scores)
        return metrics

    def to_dict(self) -> dict:
        """The `summary.json` layout: `{"datasets": {name: <Name>.json layout}, "aggregate": {...}}`."""
        return {
            "datasets": {name: result.to_dict() for name, result in self.datasets.items()},
            "aggregate": self.aggregate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "EvaluationResults":
        """Reads the `summary.json` layout (the aggregate is recomputed from the datasets)."""
        return cls({name: DatasetResult.from_dict(result) for name, result in data["datasets"].items()})

    def save(self, path: str):
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> "EvaluationResults":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
