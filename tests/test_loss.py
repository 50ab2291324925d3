"""`hardness_weighted_contrastive_loss` against a loop-by-loop reference of the paper's Eq. 5-7 (arXiv 2503.04812)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from llave_hf.loss import (
    CITATION,
    ContrastiveLossOutput,
    HardnessNormalization,
    LossDiagnostics,
    hardness_weighted_contrastive_loss,
)


BATCH, NUM_HARD_NEGATIVES, DIM, TAU = 6, 3, 8, 0.02
# Equal ids = equal content: targets 0/2 and 1/4 are the same (class labels), queries 0/3 are the same.
QUERY_IDS = torch.tensor([10, 11, 12, 10, 13, 14])
TARGET_IDS = torch.tensor([0, 1, 0, 2, 1, 3])
HARD_NEGATIVE_IDS = torch.tensor([[1, 5, 6], [7, 1, 0], [8, 9, 2], [2, 10, 11], [12, 3, 13], [14, 15, 16]])


def make_batch(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64), dim=-1)
    target = F.normalize(query + 0.8 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64), dim=-1)
    # Hard negatives near their row's target so that hardness weights vary widely.
    noise = torch.randn(BATCH, NUM_HARD_NEGATIVES, DIM, generator=generator, dtype=torch.float64)
    hard_negatives = F.normalize(target[:, None, :] + noise, dim=-1)
    target[2], target[4], query[3] = target[0], target[1], query[0]
    return query.to(dtype), target.to(dtype), hard_negatives.to(dtype)


def reference_loss(
    query,
    target,
    *,
    alpha,
    temperature,
    symmetric,
    hard_negatives=None,
    query_ids=None,
    target_ids=None,
    hard_negative_ids=None,
    normalization="none",
):
    """Paper Eq. 5 term by term: L_i = -log(e^{s_ii/τ} / (e^{s_ii/τ} + Σ_j w_ij e^{s_ij/τ})), w_ij = e^{α sg(s_ij)}.

    Candidates of query i: every target, then every row's hard negatives. A pair (i, j) is a false negative when
    the targets or the queries share an id; a hard negative is one when its id is row i's target id.
    """
    n = query.shape[0]

    def same_pair(i, j):
        same_target = target_ids is not None and int(target_ids[i]) == int(target_ids[j])
        same_query = query_ids is not None and int(query_ids[i]) == int(query_ids[j])
        return same_target or same_query

    def row_loss(anchor, positive, negatives):
        s_pos = torch.dot(anchor, positive)
        sims = [torch.dot(anchor, negative) for negative in negatives]
        weights = [torch.exp(alpha * s.detach()) for s in sims]
        if normalization == "mean" and weights:
            mean_weight = sum(weights) / len(weights)
            weights = [w / mean_weight for w in weights]
        z = torch.exp(s_pos / temperature)
        for w, s in zip(weights, sims):
            z = z + w * torch.exp(s / temperature)
        return -(s_pos / temperature - torch.log(z))

    forward_losses = []
    for i in range(n):
        negatives = [target[j] for j in range(n) if j != i and not same_pair(i, j)]
        if hard_negatives is not None:
            for k in range(n):
                for m in range(hard_negatives.shape[1]):
                    if hard_negative_ids is None or int(hard_negative_ids[k, m]) != int(target_ids[i]):
                        negatives.append(hard_negatives[k, m])
        forward_losses.append(row_loss(query[i], target[i], negatives))
    loss = sum(forward_losses) / n
    if symmetric:
        backward_losses = []
        for i in range(n):
            negatives = [query[j] for j in range(n) if j != i and not same_pair(i, j)]
            backward_losses.append(row_loss(target[i], query[i], negatives))
        loss = (loss + sum(backward_losses) / n) / 2
    return loss


def values_of(diagnostics):
    return [getattr(diagnostics, name) for name in LossDiagnostics.NAMES]


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize(
    "symmetric, alpha, use_hard_negatives, masking, normalization",
    list(itertools.product([True, False], [0.0, 9.0], [False, True], [False, True], ["none", "mean"])),
)
def test_matches_loop_reference(symmetric, alpha, use_hard_negatives, masking, normalization):
    query, target, hard_negatives = make_batch()
    hard_negatives = hard_negatives if use_hard_negatives else None
    ids = {}
    if masking:
        ids = {"query_ids": QUERY_IDS, "target_ids": TARGET_IDS}
        if use_hard_negatives:
            ids["hard_negative_ids"] = HARD_NEGATIVE_IDS
    options = dict(alpha=alpha, temperature=TAU, symmetric=symmetric, **ids)

    q, t, h = leaves(query, target, hard_negatives)
    loss = hardness_weighted_contrastive_loss(
        q, t, hard_negatives=h, hardness_normalization=normalization, **options
    ).loss
    loss.backward()
    rq, rt, rh = leaves(query, target, hard_negatives)
    expected = reference_loss(rq, rt, hard_negatives=rh, normalization=normalization, **options)
    expected.backward()

    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    for got, want in ((q, rq), (t, rt), (h, rh)):
        if got is not None:
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("symmetric", [True, False])
def test_alpha_zero_is_infonce(symmetric):
    query, target, hard_negatives = make_batch(torch.float32)
    labels = torch.arange(BATCH)
    candidates = torch.cat([target, hard_negatives.flatten(0, 1)])
    expected = F.cross_entropy(query @ candidates.T / TAU, labels)
    if symmetric:
        expected = (expected + F.cross_entropy(target @ query.T / TAU, labels)) / 2
    loss = hardness_weighted_contrastive_loss(
        query, target, alpha=0.0, temperature=TAU, symmetric=symmetric, hard_negatives=hard_negatives
    ).loss
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_gradient_on_similarities_follows_paper_eq_6_7():
    # With query = identity, s_ij = <e_i, t_j> = target[j, i]: the target's gradient IS dL/ds (transposed).
    alpha, n = 9.0, DIM
    query = torch.eye(n, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    target = F.normalize(torch.randn(n, n, generator=generator, dtype=torch.float64), dim=-1).requires_grad_(True)
    loss = hardness_weighted_contrastive_loss(query, target, alpha=alpha, temperature=TAU, symmetric=False).loss
    loss.backward()
    grad_similarity = target.grad.T

    s = target.detach().T
    expected = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        pushes = [0.0 if j == i else math.exp(alpha * s[i, j]) * math.exp(s[i, j] / TAU) for j in range(n)]
        z = math.exp(s[i, i] / TAU) + sum(pushes)
        for j in range(n):
            if j != i:
                expected[i, j] = pushes[j] / z / TAU / n  # negative; the loss averages the n rows
        expected[i, i] = -sum(pushes) / z / TAU / n  # positive
    torch.testing.assert_close(grad_similarity, expected, rtol=1e-9, atol=1e-12)


def test_half_precision_inputs_are_computed_in_float32():
    query, target, hard_negatives = make_batch(torch.float32)
    q, t, h = leaves(query.bfloat16(), target.bfloat16(), hard_negatives.bfloat16())
    options = dict(hard_negatives=h, target_ids=TARGET_IDS)
    output = hardness_weighted_contrastive_loss(q, t, **options)
    loss = output.loss
    loss.backward()
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in values_of(output.diagnostics))
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()

    expected = hardness_weighted_contrastive_loss(
        q.detach().float(), t.detach().float(), **{**options, "hard_negatives": h.detach().float()}
    ).loss
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    reference = reference_loss(
        q.detach().double(),
        t.detach().double(),
        alpha=9.0,
        temperature=TAU,
        symmetric=True,
        hard_negatives=h.detach().double(),
        target_ids=TARGET_IDS,
    )
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)


def test_masking_repeated_labels():
    # Four queries, all answered by the same label: with masking every pair is a positive, nothing is left to
    # contrast, so the loss is exactly 0 in both directions; without it the duplicates get the largest weights.
    generator = torch.Generator().manual_seed(2)
    query = F.normalize(torch.randn(4, DIM, generator=generator), dim=-1)
    label = F.normalize(torch.randn(1, DIM, generator=generator), dim=-1)
    target = label.expand(4, DIM)
    same = torch.zeros(4, dtype=torch.long)
    assert hardness_weighted_contrastive_loss(query, target, target_ids=same).loss == 0
    assert hardness_weighted_contrastive_loss(query, target, target_ids=same, hardness_normalization="mean").loss == 0
    unmasked = hardness_weighted_contrastive_loss(query, target, symmetric=False).loss
    # Each row's duplicates score exactly like its positive but carry w = e^{α s}: L_i = log(1 + 3 e^{α s_i}).
    scores = (query @ label[0]).tolist()
    expected = sum(math.log(1 + 3 * math.exp(9.0 * s)) for s in scores) / 4
    torch.testing.assert_close(unmasked.item(), expected, rtol=1e-5, atol=1e-6)


def test_mean_normalization_removes_the_degenerate_minimum():
    # All queries at u, all targets at -u: every s = -1, nothing is discriminated (the degenerate minimum derived
    # in the docstring of `llave_hf.loss`).
    u = F.normalize(torch.arange(1.0, DIM + 1, dtype=torch.float64), dim=0)
    query, target = u.expand(BATCH, DIM), -u.expand(BATCH, DIM)
    raw = hardness_weighted_contrastive_loss(query, target).loss
    normalized = hardness_weighted_contrastive_loss(query, target, hardness_normalization="mean").loss
    torch.testing.assert_close(raw.item(), math.log1p((BATCH - 1) * math.exp(-9.0)), rtol=1e-9, atol=0)
    torch.testing.assert_close(normalized.item(), math.log(BATCH), rtol=1e-9, atol=0)


def hardest_gradient_share(negatives: list[float], alpha: float, temperature: float) -> float:
    """Loop reference: of a row's negative gradient magnitudes w e^{s/τ} (Z_i cancels), the share of the
    ceil(10%) most similar negatives."""
    ranked = sorted(negatives, reverse=True)
    magnitudes = [math.exp(alpha * s + s / temperature) for s in ranked]
    return sum(magnitudes[: math.ceil(len(ranked) / 10)]) / sum(magnitudes)


def test_hard_negative_gradient_share_by_hand():
    # One query, its positive (column 0) and 11 negatives: ceil(11 / 10) = 2 of them are the hardest. The most
    # similar one (0.9) has the same content as the positive and is masked: the hardest are then 0.5 and 0.4.
    scores = [0.95, 0.9, 0.5, 0.4] + [0.1 - 0.05 * k for k in range(9)]
    similarity = torch.tensor([scores], dtype=torch.float64)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    target = torch.stack([similarity[0], (1 - similarity[0] ** 2).sqrt()], dim=1)  # unit vectors with <q, t_j> = s_j
    ids = torch.tensor([0, 0] + list(range(1, 12)))
    # the 12 extra candidates as hard negatives of the single row
    for alpha in (0.0, 9.0):
        output = hardness_weighted_contrastive_loss(
            query, target[:1], hard_negatives=target[None, 1:], temperature=0.1, alpha=alpha,
            target_ids=ids[:1], hard_negative_ids=ids[None, 1:], symmetric=False,
        )  # fmt: skip
        negatives = scores[2:]  # 11 unmasked
        scale = 1 / 0.1 + alpha  # w e^{s/τ} = e^{(1/τ + α) s}
        expected = (math.exp(scale * 0.5) + math.exp(scale * 0.4)) / sum(math.exp(scale * s) for s in negatives)
        torch.testing.assert_close(output.diagnostics.hard_negative_gradient_share.item(), expected, rtol=1e-12, atol=0)
    # by hand at α = 0, τ = 0.1: (e^5 + e^4) / (e^5 + e^4 + e^1 + e^0.5 + e^0 + ... + e^-3) ≈ 0.9674
    assert 0.9674 < hardest_gradient_share(negatives, alpha=0.0, temperature=0.1) < 0.9675


def test_hard_negative_gradient_share_is_the_autograd_gradient_share_and_grows_with_alpha():
    """The closed form against ∂L/∂s from autograd, on the query→target direction; α = 9 concentrates the gradient
    on the hardest negatives more than InfoNCE on the same similarities."""
    query, target, hard_negatives = make_batch(torch.float64)
    shares = {}
    for alpha in (0.0, 9.0):
        candidates = torch.cat([target, hard_negatives.flatten(0, 1)])
        similarity = (query @ candidates.T).requires_grad_(True)
        # the query→target loss through its similarity matrix: the same candidates as the loss scores
        logits = similarity / TAU + torch.where(torch.eye(BATCH, len(candidates), dtype=torch.bool), 0.0,
                                                alpha * similarity.detach())  # fmt: skip
        F.cross_entropy(logits, torch.arange(BATCH)).backward()
        similarity, gradient = similarity.detach(), similarity.grad.clone()
        expected = []
        for i in range(BATCH):
            magnitudes = [(float(similarity[i, j]), float(gradient[i, j])) for j in range(len(candidates)) if j != i]
            assert all(g > 0 for _, g in magnitudes)
            ranked = [g for _, g in sorted(magnitudes, reverse=True)]
            expected.append(sum(ranked[: math.ceil(len(ranked) / 10)]) / sum(ranked))
        output = hardness_weighted_contrastive_loss(query, target, hard_negatives=hard_negatives, alpha=alpha)
        shares[alpha] = output.diagnostics.hard_negative_gradient_share.item()
        torch.testing.assert_close(shares[alpha], sum(expected) / BATCH, rtol=1e-9, atol=0)
    assert shares[9.0] > shares[0.0]


@pytest.mark.parametrize("normalization", ["none", "mean"])
def test_diagnostics_match_loops(normalization):
    query, target, hard_negatives = make_batch(torch.float32)
    output = hardness_weighted_contrastive_loss(
        query.clone().requires_grad_(True),
        target,
        hard_negatives=hard_negatives,
        query_ids=QUERY_IDS,
        target_ids=TARGET_IDS,
        hard_negative_ids=HARD_NEGATIVE_IDS,
        hardness_normalization=normalization,
    )
    assert isinstance(output, ContrastiveLossOutput) and isinstance(output.diagnostics, LossDiagnostics)
    assert output.loss.requires_grad
    diagnostics = output.diagnostics
    assert all(not value.requires_grad and value.ndim == 0 for value in values_of(diagnostics))

    positives, hardest, weights, shares, correct = [], [], [], [], 0
    for i in range(BATCH):
        positive = float(query[i] @ target[i])
        negatives = [
            float(query[i] @ target[j])
            for j in range(BATCH)
            if j != i and TARGET_IDS[j] != TARGET_IDS[i] and QUERY_IDS[j] != QUERY_IDS[i]
        ]
        negatives += [
            float(query[i] @ hard_negatives[k, m])
            for k in range(BATCH)
            for m in range(NUM_HARD_NEGATIVES)
            if HARD_NEGATIVE_IDS[k, m] != TARGET_IDS[i]
        ]
        positives.append(positive)
        hardest.append(max(negatives))
        row_weights = [math.exp(9.0 * s) for s in negatives]  # as the loss applies them (reference_loss)
        if normalization == "mean":
            row_weights = [w / (sum(row_weights) / len(row_weights)) for w in row_weights]
        weights += row_weights
        shares.append(hardest_gradient_share(negatives, alpha=9.0, temperature=TAU))
        correct += positive > max(negatives)
    expected = {
        "positive_cosine": sum(positives) / BATCH,
        "hardest_negative_cosine": sum(hardest) / BATCH,
        "cosine_gap": sum(p - h for p, h in zip(positives, hardest)) / BATCH,
        "top1_accuracy": correct / BATCH,
        "mean_hardness_weight": sum(weights) / len(weights),
        "hard_negative_gradient_share": sum(shares) / BATCH,
    }
    assert 0 < expected["top1_accuracy"] < 1, "the batch should have both ranked and misranked rows"
    assert tuple(expected) == LossDiagnostics.NAMES
    # weights normalised to mean 1 over each row average 1 over all pairs; the raw ones are not
    if normalization == "mean":
        assert expected["mean_hardness_weight"] == pytest.approx(1.0)
    else:
        assert expected["mean_hardness_weight"] > 10
    for key, value in expected.items():
        torch.testing.assert_close(getattr(diagnostics, key).item(), value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"query": torch.zeros(BATCH, DIM + 1)}, ValueError, "same shape"),
        ({"query": torch.zeros(DIM)}, ValueError, r"\(batch, dim\)"),
        ({"hard_negatives": torch.zeros(BATCH, NUM_HARD_NEGATIVES, DIM + 1)}, ValueError, "hard_negatives must be"),
        ({"hard_negatives": torch.zeros(BATCH, DIM)}, ValueError, "hard_negatives must be"),
        ({"hardness_normalization": "softmax"}, ValueError, "hardness_normalization"),
        ({"hardness_normalization": None}, ValueError, "hardness_normalization"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"target_ids": TARGET_IDS[:-1]}, ValueError, "target_ids must have shape"),
        ({"target_ids": TARGET_IDS.float()}, TypeError, "integer"),
        ({"hard_negative_ids": HARD_NEGATIVE_IDS, "target_ids": None}, ValueError, "pass target_ids"),
        ({"hard_negatives": None, "hard_negative_ids": HARD_NEGATIVE_IDS}, ValueError, "without hard_negatives"),
        ({"query": torch.zeros(BATCH, DIM, dtype=torch.long)}, TypeError, "floating point"),
    ],
)
def test_rejects_bad_inputs(change, error, match):
    query, target, hard_negatives = make_batch(torch.float32)
    inputs = {**dict(query=query, target=target, hard_negatives=hard_negatives, target_ids=TARGET_IDS), **change}
    with pytest.raises(error, match=match):
        hardness_weighted_contrastive_loss(inputs.pop("query"), inputs.pop("target"), **inputs)


@pytest.mark.parametrize(
    "name, index, match",
    [
        ("query", (2,), "query row 2"),
        ("target", (4,), "target row 4"),
        ("hard", (1, 2), r"hard_negatives\[1, 2\] \(row 1, hard negative 2\)"),
    ],
)
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_embeddings_name_the_row(name, index, match, bad_value):
    query, target, hard_negatives = make_batch(torch.float32)
    {"query": query, "target": target, "hard": hard_negatives}[name][index + (3,)] = bad_value
    with pytest.raises(ValueError, match=match):
        hardness_weighted_contrastive_loss(query, target, hard_negatives=hard_negatives)


def test_diagnostics_names_are_the_fields_and_stack_follows_them():
    assert LossDiagnostics.NAMES == (
        "positive_cosine",
        "hardest_negative_cosine",
        "cosine_gap",
        "top1_accuracy",
        "mean_hardness_weight",
        "hard_negative_gradient_share",
    )
    query, target, hard_negatives = make_batch(torch.float32)
    diagnostics = hardness_weighted_contrastive_loss(query, target, hard_negatives=hard_negatives).diagnostics
    stacked = diagnostics.stack()
    assert stacked.shape == (len(LossDiagnostics.NAMES),) and stacked.device == query.device
    assert len(set(stacked.tolist())) == len(LossDiagnostics.NAMES), "distinct values, so the order is tested"
    torch.testing.assert_close(stacked, torch.stack(values_of(diagnostics)), rtol=0, atol=0)


def test_diagnostics_leave_out_rows_without_negatives():
    # Row 0 shares its target with row 1 and its query with rows 2 and 3: nothing is left to contrast it with.
    query_ids, target_ids = torch.tensor([7, 8, 7, 7]), torch.tensor([0, 0, 1, 1])
    query, target, _ = make_batch(torch.float64)
    query, target = query[:4], target[:4]
    diagnostics = hardness_weighted_contrastive_loss(
        query, target, query_ids=query_ids, target_ids=target_ids
    ).diagnostics

    s = query @ target.T
    negatives = {1: [2, 3], 2: [1], 3: [1]}  # row -> its unmasked negative columns; row 0 has none
    hardest = {i: max(float(s[i, j]) for j in columns) for i, columns in negatives.items()}
    weights = [math.exp(9.0 * float(s[i, j])) for i, columns in negatives.items() for j in columns]
    expected = {
        "positive_cosine": float(s.diagonal().mean()),
        "hardest_negative_cosine": sum(hardest.values()) / 3,
        "cosine_gap": sum(float(s[i, i]) - h for i, h in hardest.items()) / 3,
        # a row without negatives counts as ranked: nothing beats its positive
        "top1_accuracy": (1 + sum(float(s[i, i]) > h for i, h in hardest.items())) / 4,
        "mean_hardness_weight": sum(weights) / len(weights),
        "hard_negative_gradient_share": sum(
            hardest_gradient_share([float(s[i, j]) for j in columns], alpha=9.0, temperature=TAU)
            for i, columns in negatives.items()
        )
        / 3,
    }
    for name, value in expected.items():
        torch.testing.assert_close(getattr(diagnostics, name).item(), value, rtol=1e-12, atol=1e-12, msg=name)

    # No row with a negative at all: the negative statistics are NaN (0 / 0), the others stay defined.
    same = torch.zeros(4, dtype=torch.long)
    empty = hardness_weighted_contrastive_loss(query, target, target_ids=same).diagnostics
    for name in ("hardest_negative_cosine", "cosine_gap", "mean_hardness_weight", "hard_negative_gradient_share"):
        assert math.isnan(getattr(empty, name).item()), name
    assert empty.top1_accuracy.item() == 1.0 and math.isfinite(empty.positive_cosine.item())


class HostSyncSpy(TorchDispatchMode):
    """Records the ops that make the host wait for a CUDA device: scalar reads and data-dependent output shapes.

    Running the loss on CPU under this mode shows what would synchronise on CUDA.
    """

    SYNCING = frozenset(
        {"aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select", "aten.unique"}
    )

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name().split(".")[0]
        indices = args[1] if name in ("aten::index", "aten::index_put", "aten::index_put_") else ()
        boolean_index = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        if name.replace("::", ".") in self.SYNCING or boolean_index:
            self.syncs.append(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("normalization", ["none", "mean"])
def test_check_finite_false_computes_the_same_without_host_sync(normalization):
    query, target, hard_negatives = make_batch(torch.float32)
    options = dict(
        hard_negatives=hard_negatives,
        query_ids=QUERY_IDS,
        target_ids=TARGET_IDS,
        hard_negative_ids=HARD_NEGATIVE_IDS,
        hardness_normalization=normalization,
    )
    checked = hardness_weighted_contrastive_loss(query, target, **options)
    with HostSyncSpy() as spy:
        unchecked = hardness_weighted_contrastive_loss(query, target, check_finite=False, **options)
    assert spy.syncs == []
    torch.testing.assert_close(unchecked.loss, checked.loss, rtol=0, atol=0)
    torch.testing.assert_close(unchecked.diagnostics.stack(), checked.diagnostics.stack(), rtol=0, atol=0)

    with HostSyncSpy() as spy:  # the spy does see the finiteness check's read
        hardness_weighted_contrastive_loss(query, target, **options)
    assert spy.syncs

    query[2, 3] = float("nan")  # without the check, a non-finite input gives a NaN loss instead of an error
    assert torch.isnan(hardness_weighted_contrastive_loss(query, target, check_finite=False, **options).loss)


def test_hardness_normalization_accepts_the_enum_and_its_strings():
    query, target, _ = make_batch(torch.float64)
    for option in HardnessNormalization:
        by_enum = hardness_weighted_contrastive_loss(query, target, hardness_normalization=option).loss
        by_string = hardness_weighted_contrastive_loss(query, target, hardness_normalization=option.value).loss
        torch.testing.assert_close(by_enum, by_string, rtol=0, atol=0)
    assert hardness_weighted_contrastive_loss(query, target).loss == by_enum.new_tensor(
        hardness_weighted_contrastive_loss(query, target, hardness_normalization="none").loss.item()
    )


def test_citation_is_the_llave_paper():
    assert CITATION.startswith("@inproceedings{lan2025llave,") and CITATION.count("{") == CITATION.count("}")
    assert "eprint        = {2503.04812}" in CITATION and "EMNLP 2025" in CITATION
