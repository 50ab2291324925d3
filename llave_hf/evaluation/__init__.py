# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""MMEB evaluation: per-dataset Precision@1 over each query's own candidate list, the paper's aggregates and the
positive / hardest-negative similarity diagnostics.

- `mmeb`: the 36 MMEB datasets, their meta-tasks and IND/OOD split, `aggregate_mmeb`.
- `data`: loading and validation of MMEB-eval-format data.
- `evaluator`: `MMEBEvaluator` (encoding, scoring, resuming from stored results).
- `results`: `EvaluationResults` / `DatasetResult` and their JSON layout.
- `report`: the Markdown summary and the similarity histogram.
- `video`: zero-shot text-video retrieval (MSR-VTT 1k-A, MSVD), `VideoRetrievalEvaluator`.

The `llave-eval` command is `llave_hf.cli.evaluate`; `llave-eval-video` is `llave_hf.cli.evaluate_video`.
"""

from .data import REQUIRED_COLUMNS, MMEBDataError
from .evaluator import MMEBEvaluator
from .mmeb import (
    AGGREGATE_KEYS,
    MMEB_DATASETS,
    MMEB_HUB_ID,
    MMEB_META_TASKS,
    AggregateKey,
    Distribution,
    MetaTask,
    MMEBAggregate,
    aggregate_mmeb,
)
from .report import format_summary, save_similarity_histogram
from .video import (
    VIDEO_QUERY_INSTRUCTION,
    VIDEO_TARGET_TEXT,
    VideoRetrievalData,
    VideoRetrievalEvaluator,
    load_msrvtt,
    load_msvd,
    video_retrieval_metrics,
)
from .results import DatasetCounts, DatasetResult, EvaluationResults, RunSignature, SimilarityStats


__all__ = [
    "AGGREGATE_KEYS",
    "MMEB_DATASETS",
    "MMEB_HUB_ID",
    "MMEB_META_TASKS",
    "REQUIRED_COLUMNS",
    "AggregateKey",
    "DatasetCounts",
    "DatasetResult",
    "Distribution",
    "EvaluationResults",
    "MMEBAggregate",
    "MMEBDataError",
    "MMEBEvaluator",
    "MetaTask",
    "RunSignature",
    "SimilarityStats",
    "VIDEO_QUERY_INSTRUCTION",
    "VIDEO_TARGET_TEXT",
    "VideoRetrievalData",
    "VideoRetrievalEvaluator",
    "load_msrvtt",
    "load_msvd",
    "video_retrieval_metrics",
    "aggregate_mmeb",
    "format_summary",
    "save_similarity_histogram",
]
