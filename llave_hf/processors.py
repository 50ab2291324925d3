# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`LlaveProcessor`s for the supported backbone families, read off the backbone's config and the family table.

Image processors are transformers' PIL classes: the stock LLaVA-OneVision and Qwen2-VL processors insist on a video
processor, which needs torchvision.
"""

import transformers
from transformers import AutoTokenizer, PretrainedConfig

from .modeling.backbones import backbone_family
from .modeling.processing_llave import LlaveProcessor, LlaveTextProcessor


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


__all__ = ["build_processor", "load_processor"]
