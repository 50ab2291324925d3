# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""What llave-hf knows about each backbone family, in one table: `BACKBONES`, keyed by the backbone config's
`model_type`.

The model, the processor, GradCache's row slicing and the trainer's tower freezing read every per-family fact from
here; nothing else branches on the family. Adding a family means one `BackboneFamily` entry, plus what is truly its
own (a token-count rule if no existing one fits, and a tiny config in `llave_hf.testing`).

This file travels inside every checkpoint (``trust_remote_code``): it imports only torch, transformers and the
standard library.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from transformers.image_processing_utils import select_best_resolution
from transformers.image_utils import SizeDict
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize


# ---------------------------------------------------------------------------------------------------------------------
# image-token counts: how many copies of the image token an image expands to, from the image processor's outputs


def count_anyres_tokens(processor, outputs) -> list[int]:
    """LLaVA-OneVision's anyres tiling: the base view, the unpadded grid of tiles and one newline per grid row,
    pooled down when the grid exceeds `anyres_max_N` tiles (transformers' `LlavaOnevisionModel` feature layout)."""
    per_side = int(math.sqrt(processor.num_image_tokens))
    tile_height = processor.image_processor.size["height"]
    tile_width = processor.image_processor.size["width"]
    max_tiles = int(processor.vision_aspect_ratio.removeprefix("anyres_max_"))
    counts = []
    for height, width in outputs["image_sizes"].tolist():
        best_height, best_width = select_best_resolution(
            [height, width], processor.image_processor.image_grid_pinpoints
        )
        grid_height = per_side * (best_height // tile_height)
        grid_width = per_side * (best_width // tile_width)
        # unpad: drop the rows/columns that only hold the letterbox padding
        if width / height > grid_width / grid_height:
            new_height = int(round(height * (grid_width / width), 7))
            grid_height -= 2 * ((grid_height - new_height) // 2)
        else:
            new_width = int(round(width * (grid_height / height), 7))
            grid_width -= 2 * ((grid_width - new_width) // 2)
        unpadded, newlines = grid_height * grid_width, grid_height
        ratio = math.sqrt(grid_height * grid_width / (max_tiles * per_side**2))
        if ratio > 1.1:
            unpadded = int(grid_height // ratio) * int(grid_width // ratio)
            newlines = int(grid_height // ratio)
        counts.append(processor.num_image_tokens + unpadded + newlines)
    return counts


def count_merged_patch_tokens(processor, outputs) -> list[int]:
    """Qwen-VL families: one token per `merge_size x merge_size` block of the image's patch grid."""
    merge = processor.image_processor.merge_size**2
    return [int(grid.prod()) // merge for grid in outputs["image_grid_thw"]]


def count_fixed_tokens(processor, outputs) -> list[int]:
    """LLaVA: every image is resized to one tile and yields the same number of features."""
    return [processor.num_image_tokens] * len(outputs["pixel_values"])


# the same counts from image sizes alone ((height, width) pairs, e.g. read from file headers): no pixels decoded


def count_anyres_tokens_from_sizes(processor, sizes: list[tuple[int, int]]) -> list[int]:
    return count_anyres_tokens(processor, {"image_sizes": torch.tensor(sizes, dtype=torch.long).view(-1, 2)})


def count_merged_patch_tokens_from_sizes(processor, sizes: list[tuple[int, int]]) -> list[int]:
    image_processor = processor.image_processor
    merge = image_processor.merge_size**2
    return [image_processor.get_number_of_image_patches(height, width, {}) // merge for height, width in sizes]


def count_fixed_tokens_from_sizes(processor, sizes: list[tuple[int, int]]) -> list[int]:
    return [processor.num_image_tokens] * len(sizes)


# ---------------------------------------------------------------------------------------------------------------------
# videos: token counts before processing, and frames -> the backbone's video inputs.
# A count rule is `(processor, num_frames, frame_height, frame_width) -> (temporal steps, tokens per step)`: the
# processor writes one block of video tokens, or, for families with frame timestamps, one block per step.


def count_pooled_frame_tokens(processor, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """LLaVA-OneVision: each frame is one tile whose features are pooled 2x2 by bilinear interpolation (ceil of half
    the patch grid per side, `LlavaOnevisionModel.apply_pooling`), then one newline feature ends the video."""
    per_side = math.ceil(math.isqrt(processor.num_image_tokens) / 2)
    return 1, num_frames * per_side**2 + 1


def count_merged_video_tokens(processor, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """Qwen-VL families: frames resized as the image processor resizes an image (`smart_resize`), grouped by
    `temporal_patch_size` (the last frame repeated to fill a group), one token per `merge_size x merge_size` block."""
    image_processor = processor.image_processor
    factor = image_processor.patch_size * image_processor.merge_size
    resized_height, resized_width = smart_resize(
        height, width, factor=factor, min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )  # fmt: skip
    return -(-num_frames // image_processor.temporal_patch_size), (resized_height // factor) * (resized_width // factor)


def _frame_arrays(image_processor, frames, size: SizeDict) -> torch.Tensor:
    """(frames, C, H, W): each frame resized, rescaled and normalised by the image processor's own PIL operations."""
    arrays = []
    for frame in frames:
        array = image_processor.process_image(frame, do_convert_rgb=True)
        array = image_processor.resize(array, size=size, resample=image_processor.resample)
        array = image_processor.rescale(array, image_processor.rescale_factor)
        array = image_processor.normalize(array, image_processor.image_mean, image_processor.image_std)
        arrays.append(torch.from_numpy(array))
    return torch.stack(arrays).float()


def process_resized_frames(processor, video) -> dict:
    """LLaVA-OneVision: every frame resized to one tile (no anyres tiling, no padding: the image processor's base
    view, which is what transformers' video processor computes too)."""
    image_processor = processor.image_processor
    size = SizeDict(height=image_processor.size["height"], width=image_processor.size["width"])
    frames = _frame_arrays(image_processor, video.frames, size)
    return {"pixel_values_videos": frames, "video_num_frames": torch.tensor([len(frames)])}


def process_patchified_frames(processor, video) -> dict:
    """Qwen-VL families: each frame through the image processor (resize, rescale, normalise, patchify; an image's
    patch repeats it `temporal_patch_size` times), then consecutive frames paired into the temporal patches, as
    transformers' video processor lays them out; an odd last group is filled by repeating the last frame. Frames are
    sized by the image processor's `min_pixels`/`max_pixels`, not by the stock video processor's own budget (that
    class needs torchvision)."""
    image_processor = processor.image_processor
    temporal = image_processor.temporal_patch_size
    outputs = image_processor(video.frames, return_tensors="pt")
    grids = outputs["image_grid_thw"]
    patches = outputs["pixel_values"].view(len(video.frames), int(grids[0].prod()), 3, temporal, -1)[:, :, :, 0]
    frames = list(patches)
    frames += frames[-1:] * (-len(frames) % temporal)
    steps = [torch.stack(frames[start : start + temporal], dim=2) for start in range(0, len(frames), temporal)]
    pixel_values = torch.cat([step.flatten(1) for step in steps])
    grid = torch.tensor([[len(steps), int(grids[0, 1]), int(grids[0, 2])]])
    # Qwen2.5-VL's M-RoPE spaces temporal positions by the seconds each temporal patch spans
    seconds = temporal / video.sampled_fps
    return {"pixel_values_videos": pixel_values, "video_grid_thw": grid, "second_per_grid_ts": torch.tensor([seconds])}


# ---------------------------------------------------------------------------------------------------------------------
# processor settings read off a backbone config


def _siglip_patches(config) -> dict:
    """LLaVA-OneVision: SigLIP has no CLS token, so every patch of a tile is a feature."""
    vision = config.vision_config
    return {
        "num_image_tokens": (vision.image_size // vision.patch_size) ** 2,
        "vision_aspect_ratio": config.vision_aspect_ratio,
    }


def _siglip_tile_size(config) -> int:
    """LLaVA-OneVision: anyres tiles are the vision tower's input size (384 px for SigLIP-so400m)."""
    return config.vision_config.image_size


def _clip_patches(config) -> dict:
    """LLaVA's CLIP tower: the "default" feature strategy drops the CLS token, "full" keeps it."""
    vision = config.vision_config
    cls_token = int(config.vision_feature_select_strategy == "full")
    return {"num_image_tokens": (vision.image_size // vision.patch_size) ** 2 + cls_token}


@dataclass(frozen=True)
class BackboneFamily:
    """The facts of one backbone family.

    Attributes:
        model_type: the backbone config's `model_type`.
        image_inputs: the backbone's forward arguments that carry images (one entry per image, in row order).
        token_inputs: per-token tensors the processor adds beside `input_ids` (aligned with them).
        image_layout: how `pixel_values` hold the images: `"per_image"` (batch-first, one entry per image) or
            `"patches"` (flattened patches; `image_grid_thw` says how many belong to each image).
        image_processor_class: the transformers PIL image processor class (no torchvision needed).
        image_token_attr, video_token_attr: the config attributes holding the image and video token ids.
        image_start_token_attr, image_end_token_attr: the config attributes of the tokens around an image's tokens.
        count_image_tokens: `(processor, image_processor_outputs) -> [tokens per image]`.
        count_image_tokens_from_sizes: `(processor, [(height, width)]) -> [tokens per image]`, the same counts
            without the pixels (sizes read from image file headers, for data summaries and run plans).
        processor_settings: `backbone_config -> dict` of `LlaveProcessor` settings the family needs.
        vision_tower: the module path of the vision encoder inside the backbone.
        projector: module paths of the vision-to-language projector (kept trainable when the tower is frozen; for
            Qwen-VL families they live inside the tower).
        anyres_tile_size: `backbone_config -> tile side in pixels` for families that tile images on a grid chosen
            among `image_grid_pinpoints` ((height, width) pixel pairs, multiples of the tile), held by both the
            backbone config (the model's feature layout) and the image processor (the tiling); `None` otherwise.
        video_inputs: the inputs that carry videos (empty: the family has no video path and refuses videos).
        video_layout: how `pixel_values_videos` hold the videos: `"frames"` (the frames of all videos, stacked;
            `video_num_frames` says how many belong to each video) or `"patches"` (flattened patches;
            `video_grid_thw` says how many belong to each video).
        process_video: `(processor, Video) -> {name: tensor}`: one video's inputs (batch dimension of 1 for the
            per-video tensors).
        count_video_tokens: `(processor, num_frames, height, width) -> (temporal steps, video tokens per step)`.
        video_timestamps: each temporal step's tokens are a block of their own, preceded by its time as text
            (`"<1.5 seconds>"`), as Qwen3-VL's processor writes videos.
    """

    model_type: str
    image_inputs: tuple[str, ...] = ()
    token_inputs: tuple[str, ...] = ()
    image_layout: Literal["per_image", "patches"] = "per_image"
    image_processor_class: str | None = None
    image_token_attr: str | None = None
    video_token_attr: str | None = None
    image_start_token_attr: str | None = None
    image_end_token_attr: str | None = None
    count_image_tokens: Callable | None = None
    count_image_tokens_from_sizes: Callable | None = None
    processor_settings: Callable[[object], dict] = lambda config: {}
    vision_tower: str | None = None
    projector: tuple[str, ...] = ()
    anyres_tile_size: Callable[[object], int] | None = None
    video_inputs: tuple[str, ...] = ()
    video_layout: Literal["frames", "patches"] | None = None
    process_video: Callable | None = None
    count_video_tokens: Callable | None = None
    video_timestamps: bool = False

    @property
    def multimodal(self) -> bool:
        return self.vision_tower is not None

    @property
    def takes_videos(self) -> bool:
        return bool(self.video_inputs)

    def slice_videos(self, inputs, first: int, last: int) -> dict:
        """The video inputs of videos `[first, last)` (in row order) of a processor batch."""
        sizes = inputs["video_num_frames"] if self.video_layout == "frames" else inputs["video_grid_thw"].prod(dim=1)
        offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        sliced = {"pixel_values_videos": inputs["pixel_values_videos"][int(offsets[first]) : int(offsets[last])]}
        sliced.update((name, inputs[name][first:last]) for name in self.video_inputs if name != "pixel_values_videos")
        return sliced

    def slice_images(self, inputs, first: int, last: int) -> dict:
        """The image inputs of images `[first, last)` (in row order) of a processor batch."""
        if self.image_layout == "patches":
            patches = inputs["image_grid_thw"].prod(dim=1).cumsum(0)
            offsets = torch.cat([patches.new_zeros(1), patches])
            return {
                "pixel_values": inputs["pixel_values"][int(offsets[first]) : int(offsets[last])],
                "image_grid_thw": inputs["image_grid_thw"][first:last],
            }
        return {name: inputs[name][first:last] for name in self.image_inputs if name in inputs}

    def select_images(self, inputs, indices: list[int]) -> dict:
        """The image inputs of the images at `indices` (ascending image indices, in row order) of a processor batch;
        runs of consecutive images are cut in one slice."""
        runs = []
        for index in indices:
            if runs and runs[-1][1] == index:
                runs[-1][1] = index + 1
            else:
                runs.append([index, index + 1])
        parts = [self.slice_images(inputs, first, last) for first, last in runs]
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def tile_size(self, backbone_config) -> int:
        """The side of an anyres tile in pixels; a clear error for a family that does not tile images."""
        if self.anyres_tile_size is None:
            raise ValueError(f"{self.model_type} backbones do not tile images: image_grid_pinpoints does not apply.")
        return self.anyres_tile_size(backbone_config)

    def set_image_grid_pinpoints(self, backbone_config, image_processor, pinpoints: list[list[int]]) -> None:
        """Sets the anyres grids to `pinpoints` ((height, width) pixel pairs) in the backbone config and the image
        processor together: the processor's tiling and token count and the model's feature layout must agree."""
        tile = self.tile_size(backbone_config)
        pinpoints = [[int(height), int(width)] for height, width in pinpoints]
        if not pinpoints or any(side <= 0 or side % tile for pair in pinpoints for side in pair):
            raise ValueError(
                f"image_grid_pinpoints must be (height, width) multiples of the {tile}-px tile, got {pinpoints}."
            )
        if image_processor is not None and image_processor.size.get("height") != tile:
            raise ValueError(f"The image processor's tiles are {image_processor.size}, the vision tower's {tile} px.")
        backbone_config.image_grid_pinpoints = pinpoints
        if image_processor is not None:
            image_processor.image_grid_pinpoints = pinpoints

    def frozen_tower_parameters(self, backbone: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The vision encoder's parameters, without the projector's."""
        if self.vision_tower is None:
            return []
        projector = {
            id(parameter) for path in self.projector for parameter in backbone.get_submodule(path).parameters()
        }
        tower = backbone.get_submodule(self.vision_tower)
        return [parameter for parameter in tower.parameters() if id(parameter) not in projector]


_LLAVA_ONEVISION = BackboneFamily(
    model_type="llava_onevision",
    image_inputs=("pixel_values", "image_sizes"),
    image_processor_class="LlavaOnevisionImageProcessorPil",
    image_token_attr="image_token_id",
    video_token_attr="video_token_id",
    count_image_tokens=count_anyres_tokens,
    count_image_tokens_from_sizes=count_anyres_tokens_from_sizes,
    processor_settings=_siglip_patches,
    vision_tower="vision_tower",
    projector=("multi_modal_projector",),
    anyres_tile_size=_siglip_tile_size,
    video_inputs=("pixel_values_videos", "video_num_frames"),
    video_layout="frames",
    process_video=process_resized_frames,
    count_video_tokens=count_pooled_frame_tokens,
)
_QWEN2_VL = BackboneFamily(
    model_type="qwen2_vl",
    image_inputs=("pixel_values", "image_grid_thw"),
    # 1 at image tokens, 2 at video tokens: M-RoPE positions need it (transformers 5 requires it with images)
    token_inputs=("mm_token_type_ids",),
    image_layout="patches",
    image_processor_class="Qwen2VLImageProcessorPil",
    image_token_attr="image_token_id",
    video_token_attr="video_token_id",
    image_start_token_attr="vision_start_token_id",
    image_end_token_attr="vision_end_token_id",
    count_image_tokens=count_merged_patch_tokens,
    count_image_tokens_from_sizes=count_merged_patch_tokens_from_sizes,
    vision_tower="visual",
    projector=("visual.merger",),
    video_inputs=("pixel_values_videos", "video_grid_thw"),
    video_layout="patches",
    process_video=process_patchified_frames,
    count_video_tokens=count_merged_video_tokens,
)

BACKBONES: dict[str, BackboneFamily] = {
    family.model_type: family
    for family in (
        _LLAVA_ONEVISION,
        _QWEN2_VL,
        replace(_QWEN2_VL, model_type="qwen2_5_vl", video_inputs=(*_QWEN2_VL.video_inputs, "second_per_grid_ts")),
        # Qwen3-VL's deepstack mergers feed vision features into early language layers: projector, not tower
        replace(
            _QWEN2_VL,
            model_type="qwen3_vl",
            projector=("visual.merger", "visual.deepstack_merger_list"),
            video_timestamps=True,
        ),
        BackboneFamily(
            model_type="llava",
            image_inputs=("pixel_values",),
            image_processor_class="LlavaImageProcessorPil",
            image_token_attr="image_token_id",
            count_image_tokens=count_fixed_tokens,
            count_image_tokens_from_sizes=count_fixed_tokens_from_sizes,
            processor_settings=_clip_patches,
            vision_tower="vision_tower",
            projector=("multi_modal_projector",),
        ),
        BackboneFamily(model_type="qwen2"),  # text-only
    )
}
SUPPORTED_BACKBONES = tuple(BACKBONES)


def backbone_family(config_or_model_type) -> BackboneFamily:
    """The family of a backbone config (or of a `model_type` string); a clear error for an unsupported one."""
    model_type = getattr(config_or_model_type, "model_type", config_or_model_type)
    if model_type not in BACKBONES:
        raise ValueError(
            f"Unsupported backbone model_type {model_type!r}; expected one of {', '.join(SUPPORTED_BACKBONES)}."
        )
    return BACKBONES[model_type]


__all__ = ["BACKBONES", "SUPPORTED_BACKBONES", "BackboneFamily", "backbone_family"]
