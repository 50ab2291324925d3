import math

import numpy as np
import pytest
import torch

from llave_hf.metrics import (
    RETRIEVAL_METRIC_PATH,
    ground_truth_ranks,
    retrieval_metrics,
    similarity_stats,
    split_positive_negative,
)


# q0 right; q1 loses to 0.8; q2 ties its negative at 0.5 and counts as wrong (pessimistic).
SCORES = [[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.5, 0.5, 0.1]]


def test_ranks_and_metrics_by_hand():
    assert ground_truth_ranks(SCORES).tolist() == [1, 2, 2]
    metrics = retrieval_metrics(SCORES, k_values=(1, 2, 5))
    assert metrics["precision@1"] == pytest.approx(1 / 3)
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@2"] == 1.0
    assert metrics["recall@5"] == 1.0  # k beyond the 3 candidates: always a hit
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert metrics["num_queries"] == 3


def test_tensor_and_array_inputs_agree():
    expected = retrieval_metrics(SCORES)
    assert retrieval_metrics(np.asarray(SCORES)) == expected
    assert retrieval_metrics(torch.tensor(SCORES)) == expected
    assert retrieval_metrics([torch.tensor(row) for row in SCORES]) == expected


def test_labels_and_ties_away_from_index_zero():
    assert ground_truth_ranks([[0.1, 0.9], [0.3, 0.2]], labels=[1, 1]).tolist() == [1, 2]
    assert ground_truth_ranks([[0.7, 0.7, 0.2]], labels=1).tolist() == [2]
    assert ground_truth_ranks([[0.7, 0.7, 0.2]], labels=0).tolist() == [2]


def test_collapsed_scores_get_no_credit():
    # An argmax that lets index 0 win would give 100% here.
    metrics = retrieval_metrics(np.zeros((4, 5)), k_values=(1, 5))
    assert metrics["precision@1"] == 0.0
    assert metrics["recall@5"] == 1.0
    assert metrics["mrr"] == pytest.approx(1 / 5)


def test_ragged_candidate_lists():
    scores = [[0.5], [0.1, 0.2, 0.3, 0.4]]  # ranks 1 (no negatives) and 4
    metrics = retrieval_metrics(scores, k_values=(3, 4))
    assert metrics["precision@1"] == 0.5
    assert metrics["recall@3"] == 0.5
    assert metrics["recall@4"] == 1.0
    assert metrics["mrr"] == pytest.approx((1 + 1 / 4) / 2)

    stats = similarity_stats(scores)
    assert stats["positive_mean"] == pytest.approx(0.3)
    assert stats["hardest_negative_mean"] == pytest.approx(0.4)  # only the second query has negatives
    assert stats["negative_mean"] == pytest.approx(0.3)
    assert stats["gap"] == pytest.approx(0.1 - 0.4)


def test_similarity_stats_by_hand():
    stats = similarity_stats(SCORES)
    assert stats["positive_mean"] == pytest.approx((0.9 + 0.2 + 0.5) / 3)
    assert stats["hardest_negative_mean"] == pytest.approx((0.3 + 0.8 + 0.5) / 3)
    assert stats["negative_mean"] == pytest.approx((0.1 + 0.3 + 0.8 + 0.1 + 0.5 + 0.1) / 6)
    assert stats["gap"] == pytest.approx((0.6 - 0.6 + 0.0) / 3)

    positive, hardest, negatives = split_positive_negative([[0.9, 0.1, 0.3], [0.4]])
    np.testing.assert_allclose(positive, [0.9, 0.4])
    assert hardest[0] == 0.3 and math.isnan(hardest[1])
    np.testing.assert_allclose(negatives, [0.1, 0.3])

    single = similarity_stats([[0.4], [0.6]])
    assert single["positive_mean"] == pytest.approx(0.5)
    assert math.isnan(single["hardest_negative_mean"]) and math.isnan(single["gap"])


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([[0.1, 0.2], []], None, "Query 1 has no candidates"),
        ([[0.1, float("nan")]], None, "query 0 contain NaN"),
        ([[0.1, 0.2], [0.3]], [0, 1], "index 1 of query 1 is outside its 1 candidates"),
        ([], None, "No queries"),
        ([[[0.1]]], None, "2-D array or a sequence of 1-D arrays"),
    ],
)
def test_bad_inputs(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(scores, labels)


def test_bad_k():
    with pytest.raises(ValueError, match="k must be >= 1"):
        retrieval_metrics(SCORES, k_values=(0,))


def test_evaluate_module_loads_offline():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(RETRIEVAL_METRIC_PATH, keep_in_memory=True)
    results = metric.compute(predictions=[[0.5], [0.1, 0.2, 0.3, 0.4]], references=[0, 0], k_values=[3, 4])
    assert results["precision@1"] == 0.5
    assert results["recall@3"] == 0.5 and results["recall@4"] == 1.0
    assert results["mrr"] == pytest.approx(0.625)
    assert results["gap"] == pytest.approx(-0.3)

    # Batches accumulate; references need not be 0.
    metric.add_batch(predictions=[[0.9, 0.1]], references=[0])
    metric.add_batch(predictions=[[0.1, 0.2, 0.3]], references=[1])
    results = metric.compute()
    assert results["precision@1"] == 0.5
    assert results["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert results["num_queries"] == 2
