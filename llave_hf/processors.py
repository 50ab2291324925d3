# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`LlaveProcessor`s for the supported backbone families, read off the backbone's config and the family table.

Image processors are transformers' PIL classes: the stock LLaVA-OneVision and Qwen2-VL processors insist on a video
processor, which needs torchvision.
"""

import json
import re
from collections.abc import Sequence

import transformers
from transformers import AutoTokenizer, PretrainedConfig

from .modeling.backbones import backbone_family
from .modeling.processing_llave import LlaveProcessor, LlaveTextProcessor


# LLaVA-NeXT's range notation, e.g. "(1x1),...,(2x2)": grids from the first to the last (columns x rows) of tiles.
_GRID_RANGE = re.compile(r"\((\d+)x(\d+)\)")


def parse_image_grid_pinpoints(value: str | Sequence[Sequence[int]], tile_size: int) -> list[list[int]]:
    """
    anyres grids as transformers' `image_grid_pinpoints`: (height, width) pixel pairs.

    Args:
        value: the released training command's notation `"(1x1),...,(2x2)"` (every grid from the first to the last
            count of tiles, written columns x rows as LLaVA-NeXT does: `(1x2)` is one tile wide and two high), or
            (height, width) pixel pairs, as a list or its JSON text (`"[[384, 384], [768, 384]]"`).
        tile_size: the tile side in pixels (the vision tower's input size; 384 for SigLIP-so400m).

    `"(1x1),...,(2x2)"` with 384-px tiles gives `[[384, 384], [768, 384], [384, 768], [768, 768]]`, LLaVE's grids
    of at most 2x2 tiles in the released order (which breaks ties alike).
    """
    if isinstance(value, str):
        grids = _GRID_RANGE.findall(value)
        if grids:
            (first_columns, first_rows), (last_columns, last_rows) = grids[0], grids[-1]
            return [
                [rows * tile_size, columns * tile_size]
                for columns in range(int(first_columns), int(last_columns) + 1)
                for rows in range(int(first_rows), int(last_rows) + 1)
            ]
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"image_grid_pinpoints {value!r} is neither '(1x1),...,(2x2)' nor a JSON list of [height, width]."
            ) from error
    if not isinstance(value, Sequence) or not all(isinstance(pair, Sequence) and len(pair) == 2 for pair in value):
        raise ValueError(f"image_grid_pinpoints must be [height, width] pixel pairs, got {value!r}.")
    return [[int(height), int(width)] for height, width in value]


def set_image_grid_pinpoints(
    backbone_configs: Sequence[PretrainedConfig], image_processor, value: str | Sequence[Sequence[int]]
) -> list[list[int]]:
    """Sets anyres tiling (`parse_image_grid_pinpoints`'s `value`) in every given backbone config and the image
    processor together, and returns the pixel pairs; a clear error for a family that does not tile."""
    family = backbone_family(backbone_configs[0])
    pinpoints = parse_image_grid_pinpoints(value, family.tile_size(backbone_configs[0]))
    for config in backbone_configs:
        family.set_image_grid_pinpoints(config, image_processor, pinpoints)
    return pinpoints


def build_processor(
    backbone_config: PretrainedConfig, tokenizer, image_processor=None, *, max_length: int = 4096
) -> LlaveProcessor:
    """
    The `LlaveProcessor` of a backbone: its image tokens, their start/end tokens and the family's settings (image
    tokens per tile, anyres setting) come from `backbone_config`, as the family table says.

    Args:
        backbone_config: the backbone's config (a model type in `SUPPORTED_BACKBONES`).
        tokenizer: the backbone's tokenizer.
        image_processor: a PIL image processor of the family (`BackboneFamily.image_processor_class`); `None` for a
            text-only backbone.
        max_length: maximum tokens per prompt.
    """
    family = backbone_family(backbone_config)
    if not family.multimodal:
        return LlaveTextProcessor(tokenizer=tokenizer, backbone_type=family.model_type, max_length=max_length)
    if image_processor is None:
        raise ValueError(f"A {family.model_type} backbone needs an image processor ({family.image_processor_class}).")

    def token(attribute: str | None) -> str:
        return tokenizer.convert_ids_to_tokens(getattr(backbone_config, attribute)) if attribute else ""

    return LlaveProcessor(
        image_processor,
        tokenizer,
        backbone_type=family.model_type,
        image_token=token(family.image_token_attr),
        video_token=token(family.video_token_attr) if family.takes_videos else "",
        image_start_token=token(family.image_start_token_attr),
        image_end_token=token(family.image_end_token_attr),
        max_length=max_length,
        **family.processor_settings(backbone_config),
    )


def load_processor(
    name_or_path: str, backbone_config: PretrainedConfig, *, max_length: int = 4096, **kwargs
) -> LlaveProcessor:
    """The `LlaveProcessor` of a pretrained backbone checkpoint: its tokenizer and its image processor settings, read
    into the family's PIL image processor. `kwargs` go to `from_pretrained` (e.g. `revision`, `cache_dir`)."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    family = backbone_family(backbone_config)
    image_processor = None
    if family.image_processor_class is not None:
        image_processor = getattr(transformers, family.image_processor_class).from_pretrained(name_or_path, **kwargs)
    return build_processor(backbone_config, tokenizer, image_processor, max_length=max_length)


__all__ = ["build_processor", "load_processor", "parse_image_grid_pinpoints", "set_image_grid_pinpoints"]
