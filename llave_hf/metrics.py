# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""Retrieval metrics and similarity statistics computed from query x candidate score matrices.

Every query has exactly one relevant candidate (its ground-truth index, 0 by default as in MMEB), so
Precision@1 equals Recall@1 and the reciprocal rank is `1 / rank` of that candidate.

Ties are broken pessimistically: a negative scoring *equal to* the ground truth ranks above it, i.e.
`rank = 1 + #{negatives with score >= positive score}`. This is deterministic, independent of candidate order
and cannot reward a collapsed encoder. The MMEB reference (`np.argmax`) instead lets the lowest index win,
which favours the ground truth at index 0: a model that embeds everything to the same vector scores 100% there
and 0% here. With float embeddings exact ties come almost only from identical inputs, and `MMEBEvaluator`
drops exact duplicates of the ground truth from a candidate list, so on real models the two rules agree up to
exact ties between different inputs (counted as `num_tied_top` in its outputs).
"""

import os
from collections.abc import Sequence

import numpy as np


# Local path of the `evaluate` module wrapping these metrics: `evaluate.load(RETRIEVAL_METRIC_PATH)`.
RETRIEVAL_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_metrics", "llave_retrieval")


def _as_padded_scores(scores) -> np.ndarray:
    """(n_queries, max_candidates) float64 array; ragged rows (one 1-D array per query) are padded with NaN."""
    if hasattr(scores, "detach"):  # torch tensor, possibly bf16 / on an accelerator
        scores = scores.detach().float().cpu().numpy()
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        padded = scores.astype(np.float64)
        rows = list(padded)
    else:
        rows = [np.asarray(r.detach().float().cpu() if hasattr(r, "detach") else r, dtype=np.float64) for r in scores]
        if any(row.ndim != 1 for row in rows):
            raise ValueError("`scores` must be a 2-D array or a sequence of 1-D arrays (one per query).")
        padded = np.full((len(rows), max((len(row) for row in rows), default=0)), np.nan)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = row
    if len(rows) == 0:
        raise ValueError("No queries to score.")
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise ValueError(f"Query {i} has no candidates.")
        if np.isnan(row).any():
            raise ValueError(f"Scores of query {i} contain NaN.")
    return padded


def _as_labels(labels, num_candidates: np.ndarray) -> np.ndarray:
    labels = np.broadcast_to(np.asarray(0 if labels is None else labels, dtype=np.int64), num_candidates.shape)
    bad = np.flatnonzero((labels < 0) | (labels >= num_candidates))
    if bad.size:
        i = bad[0]
        raise ValueError(f"Ground-truth index {labels[i]} of query {i} is outside its {num_candidates[i]} candidates.")
    return labels


def _prepare(scores, labels):
    """Padded scores, positive score per query and the mask of real negatives."""
    padded = _as_padded_scores(scores)
    negative_mask = ~np.isnan(padded)
    labels = _as_labels(labels, negative_mask.sum(axis=1))
    rows = np.arange(len(padded))
    negative_mask[rows, labels] = False
    return padded, padded[rows, labels], negative_mask


def ground_truth_ranks(scores, labels=None) -> np.ndarray:
    """1-based rank of each query's ground-truth candidate, ties broken pessimistically (see module docstring).

    Args:
        scores: `(n_queries, n_candidates)` array or tensor, or a sequence of 1-D arrays when queries have
            candidate lists of different lengths. Higher is better.
        labels: ground-truth candidate index per query: `None` (all 0, the MMEB layout), an int, or a sequence.
    """
    padded, positive, negative_mask = _prepare(scores, labels)
    return 1 + ((padded >= positive[:, None]) & negative_mask).sum(axis=1)


def retrieval_metrics(scores, labels=None, k_values: Sequence[int] = (1, 5, 10)) -> dict:
    """Precision@1, Recall@k and MRR (fractions in [0, 1]) plus the query count.

    Recall@k with k at least a query's number of candidates is 1 for that query (its positive is always retrieved).
    """
    return rank_metrics(ground_truth_ranks(scores, labels), k_values)


def rank_metrics(ranks: np.ndarray, k_values: Sequence[int] = (1, 5, 10)) -> dict:
    """`retrieval_metrics` from the 1-based ranks of the ground truths (`ground_truth_ranks`)."""
    if any(k < 1 for k in k_values):
        raise ValueError(f"k must be >= 1, got {list(k_values)}.")
    metrics = {"precision@1": float(np.mean(ranks == 1))}
    metrics.update({f"recall@{k}": float(np.mean(ranks <= k)) for k in k_values})
    metrics["mrr"] = float(np.mean(1.0 / ranks))
    metrics["num_queries"] = len(ranks)
    return metrics


def split_positive_negative(scores, labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive score per query, hardest-negative score per query (NaN for a query with a single candidate) and
    the flat array of every negative score."""
    padded, positive, negative_mask = _prepare(scores, labels)
    hardest = np.where(negative_mask, padded, -np.inf).max(axis=1)
    hardest[~negative_mask.any(axis=1)] = np.nan
    return positive, hardest, padded[negative_mask]


def similarity_stats(scores, labels=None) -> dict:
    """Paper Table 1 diagnostic: mean score of the positives, of each query's hardest negative, and their gap.

    With L2-normalised embeddings the scores are cosines. `negative_mean` averages every negative of every
    query (hardness weighting should push it towards 0). Queries without negatives (a single candidate) are
    left out of the negative statistics and of the gap; those means are NaN when no query has negatives.
    """
    positive, hardest, negatives = split_positive_negative(scores, labels)
    has_negatives = ~np.isnan(hardest)
    nan = float("nan")
    return {
        "positive_mean": float(positive.mean()),
        "hardest_negative_mean": float(hardest[has_negatives].mean()) if has_negatives.any() else nan,
        "negative_mean": float(negatives.mean()) if negatives.size else nan,
        "gap": float((positive - hardest)[has_negatives].mean()) if has_negatives.any() else nan,
    }
