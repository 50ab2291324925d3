# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""Human-readable views of evaluation results: the Markdown summary (`summary.md`, printed by `llave-eval`) and the
positive vs negative similarity histogram of a dataset."""

import math

import numpy as np

from .mmeb import AGGREGATE_KEYS, mmeb_order
from .results import EvaluationResults


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _cosine(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def format_summary(results: EvaluationResults) -> str:
    """Markdown tables of evaluation results: one row per dataset, then the MMEB aggregates (%)."""
    datasets = results.datasets
    # Recall@1 is P@1 (one relevant candidate per query): only the other cut-offs get a column.
    recall_ks = [k for k in next(iter(datasets.values())).recall_at_k if k != 1]
    header = ["Dataset", "Meta-task", "Split", "P@1", *[f"R@{k}" for k in recall_ks], "MRR"]
    header += ["cos pos", "cos hardest neg", "gap", "queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in mmeb_order(datasets):
        result = datasets[name]
        similarity = result.similarity
        cells = [name, result.meta_task or "other", result.split or "-", _percent(result.precision_at_1)]
        cells += [_percent(result.recall_at_k.get(k)) for k in recall_ks] + [_percent(result.mrr)]
        cells += [_cosine(value) for value in (similarity.positive_mean, similarity.hardest_negative_mean)]
        cells += [_cosine(similarity.gap), str(result.counts.num_queries)]
        lines.append("| " + " | ".join(cells) + " |")

    # A query whose only candidate is its ground truth scores 1 whatever the model: say how many there are.
    single = [(name, datasets[name].counts) for name in mmeb_order(datasets)]
    single = [(name, counts) for name, counts in single if counts.num_single_candidate]
    if single:
        note = (
            "Queries left with the ground truth as their only candidate (duplicates of it are dropped) count as "
            "right whatever the model:"
        )
        lines += ["", note]
        lines += [f"- {name}: {counts.num_single_candidate} of {counts.num_queries} queries" for name, counts in single]

    aggregate = results.aggregate
    lines += ["", "MMEB aggregates (P@1, %; unweighted mean over the scored datasets, count in brackets):", ""]
    lines += ["| " + " | ".join(AGGREGATE_KEYS) + " |", "|" + "---|" * len(AGGREGATE_KEYS)]
    cells = [f"{_percent(aggregate.means[key])} ({aggregate.num_datasets[key]})" for key in AGGREGATE_KEYS]
    lines.append("| " + " | ".join(cells) + " |")
    if aggregate.other:
        lines += ["", f"Not in MMEB, left out of the aggregates: {', '.join(sorted(aggregate.other))}."]
    return "\n".join(lines) + "\n"


def save_similarity_histogram(
    path: str, positive: np.ndarray, hardest_negative: np.ndarray, negatives: np.ndarray, title: str = ""
):
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
