# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""LLaVE embedding model: a large multimodal model whose last token's final hidden state is the embedding.

Lan et al., "LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive Learning",
Findings of EMNLP 2025 (arXiv 2503.04812).

This file travels inside every checkpoint (``trust_remote_code``): it imports only torch, transformers, PIL and
its sibling files.
"""

import itertools
import numbers
import os
from collections.abc import Iterator, Mapping, Sized
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoProcessor, PreTrainedModel
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging

from .backbones import backbone_family
from .configuration_llave import LlaveEmbeddingConfig
from .pipeline_llave import LLAVE_CUSTOM_PIPELINES  # imported here, the file also travels with the modeling files
from .processing_llave import DEFAULT_MAX_IMAGE_PIXELS, Video, load_image, parallel_size


logger = logging.get_logger(__name__)

_PROGRESS_BAR_MIN_ITEMS = 256
ConvertTo = Literal["tensor", "numpy", "list"]


class NonFiniteEmbeddingError(RuntimeError):
    """The model produced a NaN or infinite embedding: a fault of the model (its weights or numerics), not of the
    input. Bad input raises `ValueError`, `TypeError` or `FileNotFoundError` instead."""


@dataclass
class LlaveEmbeddingOutput(ModelOutput):
    r"""
    embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The pooled (and, with `config.normalize`, L2-normalised) embeddings, in float32.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
        The backbone's final hidden states, right-aligned (padding after the tokens), when
        `output_hidden_states=True`.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def align_right(attention_mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Moves every row's tokens to the front (padding after them), keeping their order.

    With padding after the tokens, causal attention never sees it and default position ids count from the first
    token, so an item's embedding does not depend on the padding side or on its batch-mates.
    """
    order = torch.argsort((attention_mask == 0).to(torch.int8), dim=1, stable=True)
    return tuple(tensor.gather(1, order) for tensor in (attention_mask, *tensors))


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden) over right-aligned rows: the last token, or the mean of the tokens."""
    if pooling == "last":
        last = attention_mask.sum(dim=1) - 1
        return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def length_sub_batches(lengths: list[int], overhead_tokens: int) -> list[list[int]]:
    """Splits rows into sub-batches of similar length: the partition minimising the tokens computed,
    `sum(rows x longest row)`, plus `overhead_tokens` per sub-batch. Returns row indices, ascending in each
    sub-batch, longest sub-batch first.

    Exact: over rows sorted by length an optimal partition cuts the sorted order into runs, found here by
    dynamic programming in O(rows^2).
    """
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    size = len(order)
    best, cut = [0] * (size + 1), [size] * (size + 1)  # best[k]: cost of the rows order[k:]
    for k in reversed(range(size)):
        # on a tie, the fewer sub-batches (the larger `end`)
        cost, end = min(
            (overhead_tokens + (end - k) * lengths[order[k]] + best[end], -end) for end in range(k + 1, size + 1)
        )
        best[k], cut[k] = cost, -end
    groups, k = [], 0
    while k < size:
        groups.append(sorted(order[k : cut[k]]))
        k = cut[k]
    return groups


class LlaveEmbeddingPreTrainedModel(PreTrainedModel):
    config_class = LlaveEmbeddingConfig
    base_model_prefix = "llave"
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        # The backbone initialises its own modules the way its architecture prescribes.
        self.backbone._init_weights(module)


class LlaveEmbeddingModel(LlaveEmbeddingPreTrainedModel):
    r"""
    LLaVE embedding model over a transformers backbone (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, LLaVA or a Qwen2
    language model). The embedding of an item is the final hidden state of its last non-padding token
    (`config.pooling="last"`), L2-normalised (`config.normalize`), so cosine similarity is a dot product.

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("<org>/llave-2b", trust_remote_code=True)
    >>> queries = model.encode(texts=["a dog on a beach"])
    >>> images = model.encode(images=["dog.jpg"], instruction="<|image_1|> Represent the given image.")
    >>> scores = queries @ images.T
    ```
    """

    def __init__(self, config: LlaveEmbeddingConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        self._no_split_modules = self.backbone._no_split_modules
        self.processor = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.backbone.set_input_embeddings(value)

    @property
    def backbone_family(self):
        """The backbone's entry in the family table (`backbones.BACKBONES`)."""
        return backbone_family(self.config.backbone_config)

    @property
    def vision_tower(self) -> nn.Module | None:
        """The backbone's vision encoder (`None` for text-only backbones)."""
        path = self.backbone_family.vision_tower
        return self.backbone.get_submodule(path) if path is not None else None

    def freeze_vision_tower(self) -> int:
        """Freezes the vision encoder but not the projector (LLaVE trains the projector and the language model);
        returns the number of parameters frozen (their full size under DeepSpeed ZeRO-3, which partitions them)."""
        frozen = 0
        for parameter in self.backbone_family.frozen_tower_parameters(self.backbone):
            parameter.requires_grad_(False)
            frozen += getattr(parameter, "ds_numel", 0) or parameter.numel()
        return frozen

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> LlaveEmbeddingOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Prompts from [`LlaveProcessor`], padded on either side.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for tokens, 0 for padding.
        pixel_values (`torch.Tensor`, *optional*):
            Images of the items that have one, in item order: `(num_images, num_tiles, 3, H, W)` for
            LLaVA-OneVision, flattened patches `(num_patches, C*T*P*P)` for Qwen2-VL, `(num_images, 3, H, W)` for
            LLaVA.
        image_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            LLaVA-OneVision: each image's original (height, width).
        image_grid_thw (`torch.LongTensor` of shape `(num_images, 3)`, *optional*):
            Qwen2-VL: each image's patch grid.
        mm_token_type_ids (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            Qwen2-VL: 1 at image tokens, 2 at video tokens, 0 elsewhere.
        pixel_values_videos (`torch.Tensor`, *optional*):
            Videos of the items that have one, in item order: their frames stacked `(total_frames, 3, H, W)` for
            LLaVA-OneVision, flattened patches `(num_patches, C*T*P*P)` for Qwen-VL backbones.
        video_num_frames (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            LLaVA-OneVision: each video's number of frames.
        video_grid_thw (`torch.LongTensor` of shape `(num_videos, 3)`, *optional*):
            Qwen-VL: each video's patch grid.
        second_per_grid_ts (`torch.Tensor` of shape `(num_videos,)`, *optional*):
            Qwen2.5-VL: seconds spanned by each video's temporal patch.
        """
        family = self.backbone_family
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        given = {
            "pixel_values": pixel_values,
            "image_sizes": image_sizes,
            "image_grid_thw": image_grid_thw,
            "mm_token_type_ids": mm_token_type_ids,
            "pixel_values_videos": pixel_values_videos,
            "video_num_frames": video_num_frames,
            "video_grid_thw": video_grid_thw,
            "second_per_grid_ts": second_per_grid_ts,
        }
        token_names = [name for name in family.token_inputs if given[name] is not None]
        attention_mask, input_ids, *token_tensors = align_right(
            attention_mask, input_ids, *(given[name] for name in token_names)
        )
        backbone_inputs = dict(zip(token_names, token_tensors))
        if pixel_values is not None:
            if "pixel_values" not in family.image_inputs:
                raise ValueError(f"{family.model_type} is a text-only backbone: it takes no pixel_values.")
            backbone_inputs.update((name, given[name]) for name in family.image_inputs if given[name] is not None)
            backbone_inputs["pixel_values"] = pixel_values.to(self.dtype)
        if pixel_values_videos is not None:
            if not family.takes_videos:
                raise ValueError(f"{family.model_type} has no video path: it takes no pixel_values_videos.")
            backbone_inputs.update((name, given[name]) for name in family.video_inputs if given[name] is not None)
            backbone_inputs["pixel_values_videos"] = pixel_values_videos.to(self.dtype)
            if family.video_layout == "frames":
                backbone_inputs = self._encode_stacked_frames(backbone_inputs)

        # Extra tensors (e.g. position_ids) and video inputs would need cutting by rows too: those calls stay padded.
        # So do calls under DeepSpeed ZeRO-3, whose partitioned weights need every process to run the same modules
        # equally often.
        groups = None
        extra_tensors = any(isinstance(value, torch.Tensor) for value in kwargs.values())
        videos = pixel_values_videos is not None
        if self.config.sub_batching and not extra_tensors and not videos and not is_deepspeed_zero3_enabled():
            groups = self._sub_batches(input_ids, attention_mask)
        if groups is None:
            outputs = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **backbone_inputs, **kwargs
            )
            hidden_states = outputs.last_hidden_state
            embeddings = pool(hidden_states, attention_mask, self.config.pooling).float()
        else:
            embeddings, hidden_states = self._forward_sub_batches(
                groups, input_ids, attention_mask, backbone_inputs, output_hidden_states, kwargs
            )
        if self.config.normalize:
            embeddings = F.normalize(embeddings, dim=-1)
        return LlaveEmbeddingOutput(
            embeddings=embeddings, last_hidden_state=hidden_states if output_hidden_states else None
        )

    def _sub_batches(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple] | None:
        """`[(rows, length, images)]` per sub-batch (`config.sub_batching`), or `None` when one padded call is
        as cheap. `images` are the indices of the sub-batch's images among the batch's, in row order."""
        family = self.backbone_family
        lengths = attention_mask.sum(dim=1)
        if family.multimodal:
            image_token = getattr(self.config.backbone_config, family.image_token_attr)
            has_image = (input_ids == image_token).any(dim=1)
            lengths, has_image = torch.stack([lengths, has_image.to(lengths.dtype)]).tolist()  # one host sync
        else:
            lengths, has_image = lengths.tolist(), [0] * len(input_ids)
        groups = length_sub_batches(lengths, self.config.sub_batch_overhead_tokens)
        if len(groups) == 1:
            return None
        image_index = [count - flag for count, flag in zip(itertools.accumulate(has_image), has_image)]
        return [
            (rows, max(lengths[row] for row in rows), [image_index[row] for row in rows if has_image[row]])
            for rows in groups
        ]

    def _forward_sub_batches(self, groups, input_ids, attention_mask, backbone_inputs, output_hidden_states, kwargs):
        """Pooled embeddings (in row order) and, when asked, the right-aligned hidden states of the sub-batches."""
        family = self.backbone_family
        token_names = [name for name in family.token_inputs if name in backbone_inputs]
        pooled, hidden_parts = [], []
        for rows, length, images in groups:
            index = torch.tensor(rows, device=input_ids.device)
            inputs = {name: backbone_inputs[name][index, :length] for name in token_names}
            if images:
                inputs.update(family.select_images(backbone_inputs, images))
            mask = attention_mask[index, :length]
            hidden = self.backbone(
                input_ids=input_ids[index, :length], attention_mask=mask, use_cache=False, **inputs, **kwargs
            ).last_hidden_state
            pooled.append(pool(hidden, mask, self.config.pooling).float())
            hidden_parts.append((index, hidden))
        order = torch.tensor([row for rows, _, _ in groups for row in rows], device=input_ids.device)
        embeddings = torch.cat(pooled)[torch.argsort(order)]
        hidden_states = None
        if output_hidden_states:
            first = hidden_parts[0][1]
            hidden_states = first.new_zeros(*input_ids.shape, first.shape[-1])
            for index, hidden in hidden_parts:
                hidden_states[index, : hidden.shape[1]] = hidden
        return embeddings, hidden_states

    def _encode_stacked_frames(self, inputs: dict) -> dict:
        """Backbone inputs with the vision features precomputed (`mm_encoder_outputs`), for videos whose frames are
        stacked: the backbone's video path takes a `(videos, frames, 3, H, W)` tensor, so videos of different
        lengths go through its `get_video_features` in groups of equal length, and its features of each video (frame
        features pooled 2x2, then a newline) are joined in item order. Images in the same batch then need their
        features precomputed too (the backbone takes pixels or features, not both)."""
        inputs = dict(inputs)
        frames = inputs.pop("pixel_values_videos")
        counts = inputs.pop("video_num_frames").tolist()
        videos = torch.split(frames, counts)
        features = [None] * len(videos)
        for count in sorted(set(counts)):
            group = [index for index, n in enumerate(counts) if n == count]
            output = self.backbone.get_video_features(torch.stack([videos[i] for i in group]), return_dict=True)
            for index, video_features in zip(group, output.pooler_output):
                features[index] = video_features
        encoder_outputs = {"video": BaseModelOutputWithPooling(pooler_output=torch.cat(features)[None])}
        if inputs.get("pixel_values") is not None:
            image_inputs = {name: inputs.pop(name) for name in self.backbone_family.image_inputs if name in inputs}
            encoder_outputs["image"] = self.backbone.get_image_features(**image_inputs, return_dict=True)
        inputs["mm_encoder_outputs"] = encoder_outputs
        return inputs

    # ------------------------------------------------------------------------------------------------------------
    # encode

    def get_processor(self):
        """The processor `encode` uses: `self.processor`, or the one saved beside the weights."""
        if self.processor is None:
            source = self.config.name_or_path
            if not source:
                raise ValueError("No processor: pass `processor=` to encode() or set `model.processor`.")
            # Run the checkpoint's processing code only if the model itself came from the checkpoint's code.
            remote = type(self).__module__.startswith("transformers_modules")
            self.processor = AutoProcessor.from_pretrained(source, trust_remote_code=remote)
        return self.processor

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also saves `self.processor` (when set), so that the folder, or a `push_to_hub`, can `encode` on its own.

        The config names the LLaVE pipeline (`pipeline_llave.py`, saved beside the modeling files) for
        `pipeline("feature-extraction", ..., trust_remote_code=True)`: transformers' own would skip the LLaVE prompt
        and pooling."""
        self.config.custom_pipelines = LLAVE_CUSTOM_PIPELINES
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.processor is not None and kwargs.get("is_main_process", True):
            self.processor.save_pretrained(save_directory)

    def encode(
        self,
        texts: str | list[str | None] | None = None,
        images=None,
        videos=None,
        instruction: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to: ConvertTo = "tensor",
        processor=None,
        item_names: list[str] | None = None,
        distributed: bool = False,
        truncate_dim: int | None = None,
    ):
        r"""
        Embeds texts, images, videos, or image+text and video+text pairs.

        Args:
            texts (`str` or `list`, *optional*): one text or a list; an entry may be `None` (image-only item).
            images (*optional*): one image or a list parallel to `texts`: PIL images or file paths; an entry may be
                `None` (text-only item).
            videos (*optional*): one video or a list parallel to `texts`: video file paths (decoded with PyAV,
                about 3 frames per second, at most 32), lists of frames (PIL images or paths) or `Video`s; an entry
                may be `None`. An item has an image or a video, not both. Backbones without a video path (LLaVA,
                text-only) refuse videos.
            instruction (`str`, *optional*): prepended to every text, e.g. `"Find an image that matches: "`. MMEB-style
                `<|image_1|>` marks where the image goes (default: before the text, followed by a newline).
            batch_size (`int`): items per forward pass. Items are sorted by length so that batches pad little;
                results come back in input order.
            show_progress_bar (`bool`, *optional*): defaults to showing a bar from 256 items on.
            convert_to (`str`): `"tensor"` (float32 CPU tensor), `"numpy"` or `"list"`.
            processor (*optional*): overrides `model.processor`.
            item_names (`list[str]`, *optional*): what error messages call each item (default `"item <index>"`),
                e.g. the positions in a request that a server received.
            distributed (`bool`): under `torch.distributed` (`accelerate launch`, `torchrun`), each process encodes
                its share of the items (every `world_size`-th of the length-sorted items, so shares cost alike) and
                all embeddings are gathered: every process must call `encode` with the same items and gets all
                embeddings back. A bad item raises on every process. Under DeepSpeed ZeRO-3, whose partitioned
                weights need every process to run the same forwards, each process encodes everything.
            truncate_dim (`int`, *optional*): keep the first `truncate_dim` dimensions (re-normalised when
                `config.normalize`): Matryoshka embeddings. Meaningful at the dimensions the model was trained for,
                `config.matryoshka_dims`; others give a warning.

        Returns:
            `(num_items, hidden_size)` embeddings (L2-normalised when `config.normalize`), one row per item, in input
            order; `(num_items, truncate_dim)` with `truncate_dim`.

        Raises:
            `ValueError` (or `FileNotFoundError`, `TypeError`) naming the item for bad input: empty inputs, lists of
            different lengths, items with neither text nor image nor video, missing or unreadable image or video
            files, videos without frames or over the processor's `video_max_length` even at one frame. `TypeError`
            for a generator, set or mapping instead of a list, and for a `batch_size` that is not an int.
            `NonFiniteEmbeddingError` (a `RuntimeError`: the model's fault, not the input's) naming the item for a
            NaN or infinite embedding. Texts longer than the processor's `max_length` are truncated with a warning
            naming the item.
        """
        if convert_to not in get_args(ConvertTo):
            raise ValueError(f"convert_to must be 'tensor', 'numpy' or 'list', got {convert_to!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be a positive int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        batch_size = int(batch_size)
        if truncate_dim is not None:
            if not 1 <= truncate_dim <= self.config.hidden_size:
                raise ValueError(f"truncate_dim must be in [1, {self.config.hidden_size}], got {truncate_dim}.")
            trained = self.config.matryoshka_dims or [self.config.hidden_size]
            if truncate_dim not in trained:
                logger.warning_once(f"truncate_dim={truncate_dim}: this model was trained at dimensions {trained}.")
        processor = processor if processor is not None else self.get_processor()
        # Lists (or one item): a generator has no length and is read once, a set or a mapping has no order that
        # the returned rows could follow.
        for argument, value in (("texts", texts), ("images", images)):
            unordered_or_once = isinstance(value, (Iterator, Mapping, AbstractSet, bytes))
            if unordered_or_once or (argument == "texts" and value is not None and not isinstance(value, Sized)):
                raise TypeError(
                    f"`{argument}` must be a list (or one item), got {type(value).__name__}; e.g. pass "
                    f"list({argument})."
                )
        texts = [texts] if isinstance(texts, str) else texts
        images = [images] if images is not None and not isinstance(images, (list, tuple)) else images
        videos = [videos] if isinstance(videos, (str, os.PathLike, Video)) else videos
        if texts is None and images is None and videos is None:
            raise ValueError("encode() needs `texts`, `images` or both, or `videos`.")
        size = parallel_size({"texts": texts, "images": images, "videos": videos})
        if size == 0:
            raise ValueError("encode() got empty inputs.")
        texts = list(texts) if texts is not None else [None] * size
        images = list(images) if images is not None else [None] * size
        videos = list(videos) if videos is not None else [None] * size
        if item_names is None:
            item_names = [f"item {index}" for index in range(size)]
        elif len(item_names) != size:
            raise ValueError(f"`item_names` has {len(item_names)} names for {size} items.")
        for name, text, image, video in zip(item_names, texts, images, videos):
            if text is None and image is None and video is None:
                raise ValueError(f"{name}: neither text nor image nor video.")
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name}: a text must be a string or None, got {type(text).__name__}.")

        max_pixels = getattr(processor, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
        # Longest first (images count as long): batch-mates pad little, and a too-large batch fails at once.
        order = sorted(
            range(size),
            key=lambda i: (videos[i] is not None, images[i] is not None, len(texts[i] or "")),
            reverse=True,
        )
        world, rank = 1, 0
        if distributed and dist.is_available() and dist.is_initialized() and not is_deepspeed_zero3_enabled():
            world, rank = dist.get_world_size(), dist.get_rank()
        show = show_progress_bar if show_progress_bar is not None else size >= _PROGRESS_BAR_MIN_ITEMS
        show = show and rank == 0
        from tqdm.auto import tqdm  # transformers depends on tqdm

        embeddings = torch.empty(size, self.config.hidden_size, dtype=torch.float32)
        was_training = self.training
        self.eval()  # no dropout: an item's embedding must not depend on the call
        # ZeRO-3 gathers partitioned weights in hooks that inference-mode tensors break (evaluation mid-training).
        no_grad = torch.no_grad() if is_deepspeed_zero3_enabled() else torch.inference_mode()
        local = order[rank::world]
        failure = None
        try:
            for start in tqdm(range(0, len(local), batch_size), desc="Encoding", disable=not show, unit="batch"):
                indices = local[start : start + batch_size]
                names = [item_names[i] for i in indices]
                # Opened one batch at a time: a call holds at most `batch_size` decoded images.
                batch_images = [
                    load_image(images[i], name, max_pixels) if images[i] is not None else None
                    for i, name in zip(indices, names)
                ]
                batch_videos = [videos[i] for i in indices]
                inputs = processor(
                    text=[texts[i] for i in indices],
                    images=batch_images,
                    videos=batch_videos if any(video is not None for video in batch_videos) else None,
                    instruction=instruction,
                    item_names=names,
                ).to(self.device)
                with no_grad:
                    batch_embeddings = self(**inputs).embeddings.float().cpu()
                bad = (~torch.isfinite(batch_embeddings).all(dim=1)).nonzero().flatten().tolist()
                if bad:
                    raise NonFiniteEmbeddingError(f"non-finite embedding for {', '.join(names[b] for b in bad)}.")
                embeddings[indices] = batch_embeddings
        except Exception as error:
            if world == 1:
                raise
            failure = error  # raised below, after every process has heard of it (or the others would hang)
        finally:
            self.train(was_training)
        if world > 1:
            self._gather_shares(embeddings, order, world, failure)

        if truncate_dim is not None and truncate_dim < embeddings.shape[1]:
            embeddings = embeddings[:, :truncate_dim]
            embeddings = F.normalize(embeddings, dim=-1) if self.config.normalize else embeddings.contiguous()
        if convert_to == "numpy":
            return embeddings.numpy()
        if convert_to == "list":
            return embeddings.tolist()
        return embeddings

    def _gather_shares(self, embeddings: torch.Tensor, order: list[int], world: int, failure: Exception | None):
        """Fills `embeddings` (all items) with every process's share, `order[rank::world]`; raises on every process
        when any failed."""
        failures = [None] * world
        dist.all_gather_object(failures, None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        failed = [(rank, message) for rank, message in enumerate(failures) if message is not None]
        if failed:
            raise RuntimeError(f"encode failed on process {failed[0][0]}: {failed[0][1]}")
        # NCCL gathers only device tensors; gloo takes CPU ones.
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        shares = [order[rank::world] for rank in range(world)]
        mine = embeddings.new_zeros(len(shares[0]), embeddings.shape[1])  # shares differ by at most one item
        mine[: len(shares[dist.get_rank()])] = embeddings[shares[dist.get_rank()]]
        parts = [torch.empty_like(mine, device=device) for _ in range(world)]
        dist.all_gather(parts, mine.to(device))
        for share, part in zip(shares, parts):
            embeddings[share] = part[: len(share)].cpu()


__all__ = [
    "LlaveEmbeddingModel",
    "LlaveEmbeddingOutput",
    "LlaveEmbeddingPreTrainedModel",
    "NonFiniteEmbeddingError",
    "align_right",
    "length_sub_batches",
    "pool",
]
