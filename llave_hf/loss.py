r"""Hardness-weighted contrastive loss of LLaVE.

Reference: Lan et al., "LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive
Learning", Findings of EMNLP 2025, arXiv 2503.04812 (BibTeX in `CITATION`).

For query ``q_i`` with positive target ``t_i`` and candidates ``c_j`` (every target, optionally gathered from all
K processes, then the hard negatives), ``s_ij = <q_i, c_j>`` (cosine, embeddings are L2-normalised), ``τ`` the
temperature and ``sg`` the stop-gradient:

    L_i = -log( e^{s_ii/τ} / Z_i ),   Z_i = e^{s_ii/τ} + Σ_{j≠i} w_ij e^{s_ij/τ},   w_ij = exp(α · sg(s_ij))

(paper Eq. 5; Eq. 8 is the same sum running over the negatives of all devices). It is a cross-entropy whose
negative logits are ``s_ij/τ + α·sg(s_ij)`` while the positive logit stays ``s_ii/τ``. As ``w_ij`` is detached,
the gradient keeps the InfoNCE form with each negative re-weighted by its hardness (paper Eq. 6-7):

    ∂L_i/∂s_ij = (1/τ) · w_ij e^{s_ij/τ} / Z_i                  (negative j ≠ i)
    ∂L_i/∂s_ii = -(1/τ) · Σ_{j≠i} w_ij e^{s_ij/τ} / Z_i

so harder negatives (larger ``s_ij``) are pushed away harder. ``α = 0`` is plain InfoNCE.

Degenerate minimum of the unnormalised form. The raw weights ``w_ij ∈ [e^-α, e^α]`` can shrink the whole negative
mass by up to ``e^-α``. Put every query at a unit vector ``u`` and every target at ``-u`` (N pairs, no hard
negatives): each ``s_ij = -1``, positives included, so ``Z_i = e^{-1/τ} · (1 + (N-1)·e^-α)`` and, in both
directions, ``L_i = log(1 + (N-1)·e^-α) ≈ (N-1)·e^-α``: a small loss that discriminates nothing, which training
from random initialisation can fall into. ``hardness_normalization="mean"`` divides the weights by their row
mean (all ``e^-α`` here, so they become 1) and the same configuration costs ``log N``, as under InfoNCE.
"""

import math
import numbers
from dataclasses import dataclass, fields
from enum import Enum
from typing import ClassVar

import torch
import torch.nn.functional as F

from .distributed import all_gather_no_grad, all_gather_with_grad, get_rank_and_world_size


__all__ = [
    "CITATION",
    "ContrastiveLossOutput",
    "HardnessNormalization",
    "LossDiagnostics",
    "hardness_weighted_contrastive_loss",
    "matryoshka_contrastive_loss",
]

CITATION = """\
@inproceedings{lan2025llave,
  title         = {{LLaVE}: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive Learning},
  author        = {Lan, Zhibin and Niu, Liqiang and Meng, Fandong and Zhou, Jie and Su, Jinsong},
  booktitle     = {Findings of the Association for Computational Linguistics: EMNLP 2025},
  year          = {2025},
  eprint        = {2503.04812},
  archivePrefix = {arXiv}
}
"""


class HardnessNormalization(str, Enum):
    """How the hardness weights ``exp(α·s_ij)`` are scaled (see `hardness_weighted_contrastive_loss`)."""

    NONE = "none"  # the released form: raw weights
    MEAN = "mean"  # divided by their mean over each row's negatives

    def __str__(self) -> str:  # "mean", not "HardnessNormalization.MEAN", in logs and model cards
        return self.value


@dataclass(frozen=True, eq=False)
class LossDiagnostics:
    """Detached 0-dim float tensors describing this process's query→target rows, on the loss's device.

    Rows without any unmasked negative are left out of the negative statistics, which are NaN when no row has
    one. Reading a value on the host (``.item()``) waits for the device: accumulate `stack()` on the device and
    read it when logging.
    """

    positive_cosine: torch.Tensor  # mean s_ii
    hardest_negative_cosine: torch.Tensor  # mean over rows of the largest unmasked negative cosine
    cosine_gap: torch.Tensor  # mean per-row difference of the two (the paper's Table 1 diagnostic)
    top1_accuracy: torch.Tensor  # share of rows whose positive beats every unmasked candidate
    # mean over unmasked negatives of the weight the loss applies: exp(α·s_ij), divided by its row mean under
    # "mean" normalisation (then 1 by construction; the raw weights reach e^α ≈ 8103 at α = 9)
    mean_hardness_weight: torch.Tensor
    # mean over rows of the share of the gradient on the negatives' logits (∂L_i/∂s_ij ∝ w_ij e^{s_ij/τ}, j ≠ i)
    # that goes to the ceil(10%) most similar ones: ≈ 0.1 when all negatives count alike, 1 when the hardest take all
    hard_negative_gradient_share: torch.Tensor

    NAMES: ClassVar[tuple[str, ...]]  # the field names in order, set below from the fields themselves

    def stack(self) -> torch.Tensor:
        """The values in `NAMES` order, as one ``(len(NAMES),)`` tensor on their device."""
        return torch.stack([getattr(self, name) for name in self.NAMES])


LossDiagnostics.NAMES = tuple(field.name for field in fields(LossDiagnostics))


@dataclass(frozen=True, eq=False)
class ContrastiveLossOutput:
    """The scalar loss (with gradient) and its detached diagnostics."""

    loss: torch.Tensor
    diagnostics: LossDiagnostics


def hardness_weighted_contrastive_loss(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 9.0,
    temperature: float = 0.02,
    symmetric: bool = True,
    hard_negatives: torch.Tensor | None = None,
    query_ids: torch.Tensor | None = None,
    target_ids: torch.Tensor | None = None,
    hard_negative_ids: torch.Tensor | None = None,
    hardness_normalization: HardnessNormalization | str = HardnessNormalization.NONE,
    gather_across_devices: bool = False,
    check_finite: bool = True,
) -> ContrastiveLossOutput:
    r"""LLaVE's hardness-weighted InfoNCE (see the module docstring for the formula and its gradient).

    The defaults reproduce the released training code: ``α = 9``, ``τ = 0.02`` (logit scale 50), unnormalised
    weights, symmetric loss ``(CE(query→target) + CE(target→query)) / 2``, no false-negative masking.

    Args:
        query (`torch.Tensor` of shape `(batch, dim)`):
            L2-normalised query embeddings of this process (not re-normalised here).
        target (`torch.Tensor` of shape `(batch, dim)`):
            L2-normalised target embeddings; ``target[i]`` is the positive of ``query[i]``.
        alpha (`float`, defaults to 9.0):
            Hardness strength α: negative j of row i is weighted by ``exp(α·s_ij)``. 0 gives InfoNCE. A negative α
            is accepted (for experiments) and inverts the weighting: the hardest negatives count least, the
            opposite of LLaVE; `ContrastiveTrainingArguments` refuses it.
        temperature (`float`, defaults to 0.02):
            Temperature τ (fixed, not learned).
        symmetric (`bool`, defaults to `True`):
            Average the query→target and target→query losses (released code). `False` is the paper's
            query→target form.
        hard_negatives (`torch.Tensor` of shape `(batch, n, dim)`, *optional*):
            Extra L2-normalised candidates, used in the query→target direction only. Every query scores every
            row's hard negatives (of every process once gathered), not just its own.
        query_ids, target_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            Content ids (equal ids = identical content) used to mask false negatives: pairs ``(i, j)``, ``j ≠ i``,
            with ``target_ids[j] == target_ids[i]`` (the same target, e.g. the class label "Yes" twice) or
            ``query_ids[j] == query_ids[i]`` (the same query, so ``t_j`` answers ``q_i`` too) are excluded from
            both directions. The relation is symmetric, so target→query uses the same mask as
            query→target. `None` (default) masks nothing, as released; there identical targets get the
            LARGEST weights. Ids are best passed on the embeddings' device.
        hard_negative_ids (`torch.LongTensor` of shape `(batch, n)`, *optional*):
            Content ids of the hard negatives; one equal to a row's ``target_ids`` is excluded from that row.
            Requires ``target_ids``.
        hardness_normalization (`HardnessNormalization` or `str`, defaults to `"none"`):
            `"none"` (released): raw weights ``exp(α·s) ∈ [e^-α, e^α]``. ``"mean"``: weights divided by their
            mean over each row's unmasked negatives, i.e. the negative logits become
            ``s_ij/τ + α·sg(s_ij) - log(mean_j exp(α·sg(s_ij)))``. Trade-off: the raw form has the degenerate
            minimum described in the module docstring (every ``s = -1``, loss ≈ ``(N-1)·e^-α``); ``"mean"``
            removes it and keeps the relative hardness among negatives, but no longer discounts easy batches,
            so the positive's effective temperature relative to the negatives differs from the released recipe.
        gather_across_devices (`bool`, defaults to `False`):
            All-gather queries, targets, hard negatives and ids WITH gradient from every process; this
            process's B rows are scored against all gathered columns (query→target columns
            ``[all K·B targets; all K·B·n hard negatives]``, target→query columns ``[all K·B queries]``) with
            labels ``arange(B) + B·rank``. The loss is not multiplied by the world size: DDP's gradient
            average makes a K-process step equal to one process on the concatenated batch (see
            `llave_hf.distributed`). Every process must pass the same shapes. No-op in a single process.
        check_finite (`bool`, defaults to `True`):
            Raise a `ValueError` naming the first row of ``query``, ``target`` or ``hard_negatives`` that holds
            NaN or inf. The check reads a flag on the host, i.e. waits for the device; with `False` the loss
            never synchronises with the host (a non-finite input then gives a NaN loss), so a training loop can
            check the loss when it logs instead.

    Returns:
        `ContrastiveLossOutput`: ``loss``, the scalar loss, in float32 for half-precision inputs (logits reach
        ±(1/τ + α), which overflows float16/bfloat16) and in the input dtype otherwise; ``diagnostics``, a
        `LossDiagnostics` in the same dtype.
    """
    _check_inputs(query, target, hard_negatives, query_ids, target_ids, hard_negative_ids)
    if check_finite:
        _check_finite(query, target, hard_negatives)
    normalization = _check_options(alpha, temperature, hardness_normalization)
    dtype = torch.promote_types(query.dtype, torch.float32)
    device = query.device
    query, target = query.to(dtype), target.to(dtype)
    if hard_negatives is not None:
        hard_negatives = hard_negatives.to(dtype)
    # non_blocking: a blocking host-to-device copy would wait for the device.
    query_ids, target_ids, hard_negative_ids = (
        None if ids is None else ids.to(device, non_blocking=True)
        for ids in (query_ids, target_ids, hard_negative_ids)
    )
    batch_size = query.shape[0]

    rank = 0
    all_queries, all_targets, all_hard_negatives = query, target, hard_negatives
    all_query_ids, all_target_ids, all_hard_negative_ids = query_ids, target_ids, hard_negative_ids
    if gather_across_devices:
        rank, _ = get_rank_and_world_size()
        all_queries, all_targets = all_gather_with_grad(query), all_gather_with_grad(target)
        if hard_negatives is not None:
            all_hard_negatives = all_gather_with_grad(hard_negatives)
        all_query_ids, all_target_ids, all_hard_negative_ids = (
            None if ids is None else all_gather_no_grad(ids) for ids in (query_ids, target_ids, hard_negative_ids)
        )
    labels = torch.arange(batch_size, device=device) + batch_size * rank

    similarity = query @ all_targets.T  # (B, K·B)
    if all_hard_negatives is not None:
        # Concatenating the scores rather than the candidates avoids copying (K·B·(1+n), D) embeddings.
        similarity = torch.cat([similarity, query @ all_hard_negatives.flatten(0, 1).T], dim=1)  # (B, K·B·(1+n))
    false_negatives = _false_negative_mask(
        labels,
        query_ids,
        target_ids,
        all_query_ids,
        all_target_ids,
        all_hard_negative_ids,
        num_hard_negatives=similarity.shape[1] - all_targets.shape[0],
    )
    loss = _weighted_cross_entropy(similarity, labels, false_negatives, alpha, temperature, normalization)

    if symmetric:
        reverse_similarity = target @ all_queries.T  # (B, K·B)
        reverse_false_negatives = None if false_negatives is None else false_negatives[:, : all_queries.shape[0]]
        reverse_loss = _weighted_cross_entropy(
            reverse_similarity, labels, reverse_false_negatives, alpha, temperature, normalization
        )
        loss = (loss + reverse_loss) / 2

    diagnostics = _diagnostics(similarity.detach(), labels, false_negatives, alpha, temperature, normalization)
    return ContrastiveLossOutput(loss, diagnostics)


def _weighted_cross_entropy(
    similarity: torch.Tensor,
    labels: torch.Tensor,
    false_negatives: torch.Tensor | None,
    alpha: float,
    temperature: float,
    normalization: HardnessNormalization,
) -> torch.Tensor:
    """Cross-entropy over ``s/τ + log w`` for negatives and ``s/τ`` for the positive; masked entries -> -inf.

    similarity: (B, C), labels: (B,) column of each row's positive, false_negatives: (B, C) bool or None.
    """
    if alpha == 0:
        logits = similarity / temperature
    else:
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        log_weights = alpha * similarity.detach()  # log w_ij, no gradient through the weights
        if normalization is HardnessNormalization.MEAN:
            excluded = _non_negatives(similarity, labels, false_negatives)
            log_weights -= _log_mean_exp(log_weights, excluded).unsqueeze(1)
        log_weights[rows, labels] = 0.0  # the positive's logit is untouched (w_ii = 1)
        # In place on the detached buffer: one (B, C) pass more than InfoNCE, no extra allocation.
        logits = log_weights.add_(similarity, alpha=1 / temperature)
    if false_negatives is not None:
        logits.masked_fill_(false_negatives, float("-inf"))
    return F.cross_entropy(logits, labels)


def _non_negatives(
    similarity: torch.Tensor, labels: torch.Tensor, false_negatives: torch.Tensor | None
) -> torch.Tensor:
    """(B, C) bool: each row's positive and masked false negatives, i.e. the columns that are not negatives."""
    excluded = torch.zeros_like(similarity, dtype=torch.bool)
    excluded[torch.arange(similarity.shape[0], device=similarity.device), labels] = True
    if false_negatives is not None:
        excluded |= false_negatives
    return excluded


def _log_mean_exp(values: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log(mean exp(values))`` over non-excluded entries; 0 for a row with none (nothing to rescale)."""
    count = (~excluded).sum(1)
    log_sum = torch.logsumexp(values.masked_fill(excluded, float("-inf")), dim=1)
    log_mean = log_sum - count.clamp_min(1).to(values.dtype).log()
    return torch.where(count > 0, log_mean, torch.zeros_like(log_mean))


def _false_negative_mask(
    labels: torch.Tensor,
    query_ids: torch.Tensor | None,
    target_ids: torch.Tensor | None,
    all_query_ids: torch.Tensor | None,
    all_target_ids: torch.Tensor | None,
    all_hard_negative_ids: torch.Tensor | None,
    num_hard_negatives: int,
) -> torch.Tensor | None:
    """(B, K·B + K·B·n) bool: candidates that share content with the row's positive pair, positive excluded."""
    if query_ids is None and target_ids is None:
        return None
    in_batch = None
    if target_ids is not None:
        in_batch = target_ids[:, None] == all_target_ids[None, :]
    if query_ids is not None:
        same_query = query_ids[:, None] == all_query_ids[None, :]
        in_batch = same_query if in_batch is None else in_batch | same_query
    if all_hard_negative_ids is not None:
        hard = target_ids[:, None] == all_hard_negative_ids.flatten()[None, :]
    else:  # hard negatives without ids cannot be recognised as duplicates
        hard = in_batch.new_zeros(in_batch.shape[0], num_hard_negatives)
    mask = torch.cat([in_batch, hard], dim=1)
    mask[torch.arange(mask.shape[0], device=mask.device), labels] = False
    return mask


@torch.no_grad()
def _diagnostics(
    similarity: torch.Tensor,
    labels: torch.Tensor,
    false_negatives: torch.Tensor | None,
    alpha: float,
    temperature: float,
    normalization: HardnessNormalization,
) -> LossDiagnostics:
    """`LossDiagnostics` of the query→target similarity (B, C) of this process.

    Masked sums rather than boolean indexing: indexing by a mask has a data-dependent shape, which would wait for
    the device. Likewise each row's count of hardest negatives is compared with ranks on the device, not sliced.
    """
    positive = similarity[torch.arange(similarity.shape[0], device=similarity.device), labels]
    excluded = _non_negatives(similarity, labels, false_negatives)
    negatives_per_row = (~excluded).sum(dim=1)
    has_negative = negatives_per_row > 0
    rows_with_negative = has_negative.sum()  # 0 makes the negative statistics 0/0 = NaN
    hardest = similarity.masked_fill(excluded, float("-inf")).max(dim=1).values  # -inf without negatives
    log_weights = alpha * similarity
    if normalization is HardnessNormalization.MEAN:  # the weights as `_weighted_cross_entropy` applies them
        log_weights -= _log_mean_exp(log_weights, excluded).unsqueeze(1)
    # The negatives' logits as the loss has them (before log_weights is exponentiated in place below); the
    # softmax over a row's negatives alone is each one's share of the row's negative gradient (Z_i cancels).
    negative_logits = (log_weights + similarity / temperature).masked_fill_(excluded, float("-inf"))
    by_hardness = similarity.masked_fill(excluded, float("-inf")).argsort(dim=1, descending=True, stable=True)
    gradient_shares = negative_logits.gather(1, by_hardness).softmax(dim=1)  # NaN for a row without negatives
    num_hardest = (negatives_per_row + 9) // 10  # ceil(10%), at least 1 for a row with a negative
    ranks = torch.arange(similarity.shape[1], device=similarity.device)
    hardest_share = (gradient_shares * (ranks < num_hardest[:, None])).sum(dim=1)
    weights = log_weights.exp_().masked_fill_(excluded, 0.0)
    return LossDiagnostics(
        positive_cosine=positive.mean(),
        hardest_negative_cosine=torch.where(has_negative, hardest, 0.0).sum() / rows_with_negative,
        cosine_gap=torch.where(has_negative, positive - hardest, 0.0).sum() / rows_with_negative,
        top1_accuracy=(positive > hardest).to(similarity.dtype).mean(),
        mean_hardness_weight=weights.sum() / negatives_per_row.sum(),
        hard_negative_gradient_share=torch.where(has_negative, hardest_share, 0.0).sum() / rows_with_negative,
    )


def _check_options(
    alpha: float, temperature: float, normalization: HardnessNormalization | str
) -> HardnessNormalization:
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
    try:
        return HardnessNormalization(normalization)
    except ValueError:
        choices = [option.value for option in HardnessNormalization]
        raise ValueError(f"hardness_normalization must be one of {choices}, got {normalization!r}.") from None


def _check_inputs(query, target, hard_negatives, query_ids, target_ids, hard_negative_ids) -> None:
    """Shapes and dtypes: metadata only, no device work."""
    if query.ndim != 2 or query.shape != target.shape:
        raise ValueError(
            f"query and target must both be (batch, dim) with the same shape, got {tuple(query.shape)} and "
            f"{tuple(target.shape)}."
        )
    batch_size, dim = query.shape
    if batch_size == 0:
        raise ValueError("query and target are empty: the batch needs at least one pair.")
    if not (query.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"query and target must be floating point, got {query.dtype} and {target.dtype}.")
    if hard_negatives is not None and (
        hard_negatives.ndim != 3 or hard_negatives.shape[0] != batch_size or hard_negatives.shape[2] != dim
    ):
        raise ValueError(
            f"hard_negatives must be (batch={batch_size}, n, dim={dim}), got {tuple(hard_negatives.shape)}."
        )
    if hard_negative_ids is not None and hard_negatives is None:
        raise ValueError("hard_negative_ids were given without hard_negatives.")
    if hard_negative_ids is not None and target_ids is None:
        raise ValueError("hard_negative_ids are compared with target_ids: pass target_ids too.")
    expected_id_shapes = {
        "query_ids": (batch_size,),
        "target_ids": (batch_size,),
        "hard_negative_ids": None if hard_negatives is None else tuple(hard_negatives.shape[:2]),
    }
    for name, ids in (("query_ids", query_ids), ("target_ids", target_ids), ("hard_negative_ids", hard_negative_ids)):
        if ids is None:
            continue
        if tuple(ids.shape) != expected_id_shapes[name]:
            raise ValueError(f"{name} must have shape {expected_id_shapes[name]}, got {tuple(ids.shape)}.")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer content ids, got {ids.dtype}.")


def _check_finite(query: torch.Tensor, target: torch.Tensor, hard_negatives: torch.Tensor | None) -> None:
    """Raise a `ValueError` naming the first non-finite row; one device-to-host sync when all are finite."""
    named = [("query", query), ("target", target)]
    if hard_negatives is not None:
        named.append(("hard_negatives", hard_negatives))
    # A vector's sum is finite iff all its entries are (a float32 sum of unit-norm entries cannot overflow);
    # reducing first is several times cheaper than an element-wise isfinite on (B, n, D) hard negatives.
    finite_per_vector = [
        torch.isfinite(tensor.sum(dim=-1, dtype=torch.promote_types(tensor.dtype, torch.float32)))
        for _, tensor in named
    ]
    if bool(torch.stack([finite.all() for finite in finite_per_vector]).all()):
        return
    for (name, _), finite in zip(named, finite_per_vector):  # locate the culprit only on failure
        if not bool(finite.all()):
            row, *slot = (int(i) for i in (~finite).nonzero()[0])
            where = f" row {row}" if not slot else f"[{row}, {slot[0]}] (row {row}, hard negative {slot[0]})"
            raise ValueError(f"{name}{where} contains NaN or inf; the encoder output is not finite.")


def matryoshka_contrastive_loss(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    dims: list[int] | tuple[int, ...],
    weights: list[float] | tuple[float, ...] | None = None,
    hard_negatives: torch.Tensor | None = None,
    **loss_kwargs,
) -> ContrastiveLossOutput:
    r"""Matryoshka representation learning (Kusupati et al., NeurIPS 2022) with LLaVE's loss:
    ``Σ_d w_d · L(q[:, :d], t[:, :d])``, each truncation re-normalised, so that the first ``d`` dimensions of an
    embedding are a usable embedding on their own (``encode(truncate_dim=d)``).

    Args:
        query, target, hard_negatives: as `hardness_weighted_contrastive_loss`'s (L2-normalised).
        dims: the trained dimensions, e.g. `(1536, 512, 256, 64)`; the full size may be among them.
        weights: one per dimension (default: all 1).
        **loss_kwargs: the other arguments of `hardness_weighted_contrastive_loss` (alpha, temperature, ids, ...).

    Returns:
        `ContrastiveLossOutput` with the weighted sum as loss and the diagnostics of the largest dimension.
    """
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} dimensions.")
    size = query.shape[-1]
    if not dims or any(not 1 <= dim <= size for dim in dims):
        raise ValueError(f"Matryoshka dimensions must be in [1, {size}] (the embedding size), got {list(dims)}.")

    def truncated(embeddings: torch.Tensor | None, dim: int) -> torch.Tensor | None:
        if embeddings is None or dim == size:
            return embeddings
        return F.normalize(embeddings[..., :dim], dim=-1)

    total, largest = None, None
    for dim, weight in sorted(zip(dims, weights), reverse=True):
        output = hardness_weighted_contrastive_loss(
            truncated(query, dim), truncated(target, dim), hard_negatives=truncated(hard_negatives, dim), **loss_kwargs
        )
        total = weight * output.loss if total is None else total + weight * output.loss
        largest = largest or output
    return ContrastiveLossOutput(loss=total, diagnostics=largest.diagnostics)
