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


def rows_with_images(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(batch,) bool: which rows hold an image (its tokens)."""
    return (input_ids == image_token_id).any(dim=1)


def slice_rows(inputs: dict, start: int, end: int, image_token_id: int | None) -> dict:
    """The rows ``[start, end)`` of a processor batch, with the image tensors of exactly those rows.

    Image tensors are laid out per image in row order: batch-first (LLaVA-OneVision, LLaVA: one entry per image,
    with `image_sizes` beside) or flattened patches (Qwen2-VL: `image_grid_thw` says how many patches each image
    has).
    """
    sliced = {key: value[start:end] for key, value in inputs.items() if key in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in inputs:
        sliced["mm_token_type_ids"] = inputs["mm_token_type_ids"][start:end]
    if inputs.get("pixel_values") is None:
        return sliced
    has_image = rows_with_images(inputs["input_ids"], image_token_id)
    first, last = int(has_image[:start].sum()), int(has_image[:end].sum())
    if first == last:
        return sliced
    if "image_grid_thw" in inputs:
        patches = inputs["image_grid_thw"].prod(dim=1).cumsum(0)
        offsets = torch.cat([patches.new_zeros(1), patches])
        sliced["pixel_values"] = inputs["pixel_values"][int(offsets[first]) : int(offsets[last])]
        sliced["image_grid_thw"] = inputs["image_grid_thw"][first:last]
    else:
        sliced["pixel_values"] = inputs["pixel_values"][first:last]
        if "image_sizes" in inputs:
            sliced["image_sizes"] = inputs["image_sizes"][first:last]
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
    image_token_id: int | None = None,
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
        image_token_id: the backbone's image token, to find each row's image.
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
            chunks.append(model(**slice_rows(inputs, start, end, image_token_id)).embeddings)
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
            chunk = model(**slice_rows(inputs, start, end, image_token_id)).embeddings
            backward(torch.sum(chunk * gradients[start:end]))
    after.restore()  # the next step draws the same numbers as after an uncached step
    return loss.detach()
