# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`LlaveProcessor`s for the supported backbone families, read off the backbone's config.

Image processors are transformers' PIL classes: the stock LLaVA-OneVision and Qwen2-VL processors insist on a video
processor, which needs torchvision.
"""

from transformers import AutoTokenizer, PretrainedConfig
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .modeling.configuration_llave import SUPPORTED_BACKBONES
from .modeling.processing_llave import LlaveProcessor, LlaveTextProcessor


IMAGE_PROCESSOR_CLASSES = {
    "llava_onevision": LlavaOnevisionImageProcessorPil,
    "llava": LlavaImageProcessorPil,
    "qwen2_vl": Qwen2VLImageProcessorPil,
    "qwen2_5_vl": Qwen2VLImageProcessorPil,
}


def build_processor(
    backbone_config: PretrainedConfig, tokenizer, image_processor=None, *, max_length: int = 4096
) -> LlaveProcessor:
    """
    The `LlaveProcessor` of a backbone: image tokens, their count per tile or image and the anyres setting come from
    `backbone_config`.

    Args:
        backbone_config: the backbone's config (a model type in `SUPPORTED_BACKBONES`).
        tokenizer: the backbone's tokenizer.
        image_processor: a PIL image processor of the family (see `IMAGE_PROCESSOR_CLASSES`); `None` for Qwen2.
        max_length: maximum tokens per prompt.
    """
    family = backbone_config.model_type
    if family not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"Unsupported backbone model_type {family!r}; expected one of {', '.join(SUPPORTED_BACKBONES)}."
        )
    if family == "qwen2":
        return LlaveTextProcessor(tokenizer=tokenizer, max_length=max_length)
    if image_processor is None:
        raise ValueError(f"A {family} backbone needs an image processor ({IMAGE_PROCESSOR_CLASSES[family].__name__}).")
    token = tokenizer.convert_ids_to_tokens
    common = dict(tokenizer=tokenizer, max_length=max_length, image_token=token(backbone_config.image_token_id))
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return LlaveProcessor(
            image_processor,
            backbone_type="qwen2_vl",
            image_start_token=token(backbone_config.vision_start_token_id),
            image_end_token=token(backbone_config.vision_end_token_id),
            **common,
        )
    vision = backbone_config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    if family == "llava_onevision":  # SigLIP has no CLS token: every patch is a feature
        return LlaveProcessor(
            image_processor,
            backbone_type="llava_onevision",
            num_image_tokens=patches,
            vision_aspect_ratio=backbone_config.vision_aspect_ratio,
            **common,
        )
    # LLaVA's CLIP tower: the "default" feature strategy drops the CLS token, "full" keeps it
    cls_token = int(backbone_config.vision_feature_select_strategy == "full")
    return LlaveProcessor(image_processor, backbone_type="llava", num_image_tokens=patches + cls_token, **common)


def load_processor(
    name_or_path: str, backbone_config: PretrainedConfig, *, max_length: int = 4096, **kwargs
) -> LlaveProcessor:
    """The `LlaveProcessor` of a pretrained backbone checkpoint: its tokenizer and its image processor settings, read
    into the family's PIL image processor. `kwargs` go to `from_pretrained` (e.g. `revision`, `cache_dir`)."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    image_processor_class = IMAGE_PROCESSOR_CLASSES.get(backbone_config.model_type)
    image_processor = image_processor_class.from_pretrained(name_or_path, **kwargs) if image_processor_class else None
    return build_processor(backbone_config, tokenizer, image_processor, max_length=max_length)


__all__ = ["IMAGE_PROCESSOR_CLASSES", "build_processor", "load_processor"]
