"""GradCache: contrastive steps over batches larger than memory allows.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (RepL4NLP 2021). The loss of
a contrastive batch depends on every embedding at once, but the encoder's graph does not have to be kept for all of
them:

1. encode the batch in chunks of rows without a graph, remembering each chunk's RNG state;
2. compute the loss (and the gather across processes) on the detached embeddings and backpropagate to them only:
   this gives ``g = ∂L/∂e`` for every row;
3. re-encode each chunk with a graph, replaying its RNG state (so dropout masks match step 1), and backpropagate
   the surrogate ``<e, g>``, whose parameter gradient is exactly the chunk's share of ``∂L/∂θ``.

Peak activation memory is that of one chunk; compute is about one extra forward pass.
"""

import contextlib

import torch

from .modeling.backbones import backbone_family


def rows_with_images(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(batch,) bool: which rows hold an image (its tokens)."""
    return (input_ids == image_token_id).any(dim=1)


def slice_rows(inputs: dict, start: int, end: int, backbone_config) -> dict:
    """The rows ``[start, end)`` of a processor batch, with the image and video inputs of exactly those rows.

    Image (video) inputs hold one image (video) per row that has one, in row order; how to cut them is the family's
    (`BackboneFamily.slice_images`, `slice_videos`).
    """
    family = backbone_family(backbone_config)
    sliced = {key: inputs[key][start:end] for key in ("input_ids", "attention_mask", *family.token_inputs) if key in inputs}
    for pixels, token_attr, cut in (
        ("pixel_values", family.image_token_attr, family.slice_images),
        ("pixel_values_videos", family.video_token_attr, family.slice_videos),
    ):
        if inputs.get(pixels) is None:
            continue
        has_visual = rows_with_images(inputs["input_ids"], getattr(backbone_config, token_attr))
        first, last = int(has_visual[:start].sum()), int(has_visual[:end].sum())
        if first < last:
            sliced.update(cut(inputs, first, last))
    return sliced


class _RandomState:
    """The CPU and current-device RNG states, captured and restored (what dropout draws from)."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self):
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def grad_cache_backward(
    model,
    inputs: dict,
    chunk_size: int,
    loss_fn,
    backward,
    *,
    backbone_config,
    no_sync=None,
    sync_last_chunk: bool = True,
) -> torch.Tensor:
    """Runs one GradCache step: the parameters' gradients end up as if `loss_fn` was backpropagated uncached.

    Args:
        model: the (possibly DDP-wrapped) embedding model; `model(**rows).embeddings` embeds rows.
        inputs: a processor batch (see `slice_rows`).
        chunk_size: rows per chunk.
        loss_fn: `embeddings (rows, dim) -> scalar loss`; it may gather across processes.
        backward: `tensor -> None` running the backward pass (e.g. `accelerator.backward`).
        backbone_config: the backbone's config (`model.config.backbone_config`): its family says how to cut the
            image inputs by rows.
        no_sync: `model -> context manager` suppressing DDP's gradient all-reduce, used for every chunk but the
            last (which syncs when `sync_last_chunk`).

    Returns:
        The detached loss.
    """
    rows = inputs["input_ids"].shape[0]
    bounds = [(start, min(start + chunk_size, rows)) for start in range(0, rows, chunk_size)]
    states, chunks = [], []
    with torch.no_grad():
        for start, end in bounds:
            states.append(_RandomState())
            chunks.append(model(**slice_rows(inputs, start, end, backbone_config)).embeddings)
    embeddings = torch.cat(chunks).detach().requires_grad_()
    loss = loss_fn(embeddings)
    # The loss's graph holds no parameters, so a plain autograd backward suffices (the gather's backward runs
    # its collectives on every process alike).
    loss.backward()
    gradients = embeddings.grad

    after = _RandomState()
    for index, ((start, end), state) in enumerate(zip(bounds, states)):
        state.restore()
        last = index == len(bounds) - 1
        context = no_sync(model) if no_sync is not None and not (last and sync_last_chunk) else contextlib.nullcontext()
        with context:
            chunk = model(**slice_rows(inputs, start, end, backbone_config)).embeddings
            backward(torch.sum(chunk * gradients[start:end]))
    after.restore()  # the next step draws the same numbers as after an uncached step
    return loss.detach()
