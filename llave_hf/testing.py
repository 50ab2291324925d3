"""Tiny random LLaVE models of every supported backbone family, built offline.

Tests, the demo and the CPU preset use these: hidden size 64, 2 layers, 32x32 images, and a byte-level BPE
tokenizer trained on the spot with `tokenizers`, carrying the Qwen special tokens. Nothing touches the network.
"""

from collections.abc import Iterable
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaOnevisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .modeling.backbones import SUPPORTED_BACKBONES
from .modeling.configuration_llave import LlaveEmbeddingConfig
from .modeling.modeling_llave import LlaveEmbeddingModel
from .modeling.processing_llave import LLAVE_PROMPT_TEMPLATE, LlaveProcessor
from .processors import build_processor


SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<video>",
]
IMAGE_SIZE = 32
HIDDEN_SIZE = 64
_CORPUS = [
    LLAVE_PROMPT_TEMPLATE,
    "Represent the given image for classification. Represent the given image with the following question:",
    "Find me an everyday image that matches the given caption. Find an image caption describing the given image.",
    "a photo of a dog cat bird car tree house red green blue yellow smiling face with heart eyes flag of france",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 , . ? ! : ; ' \" ( ) - emoji",
]


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _as_transformers_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        padding_side="right",  # saved only when given to the constructor
        extra_special_tokens={"image_token": "<image>"},
    )


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the Qwen special tokens, trained offline on `texts` (deterministic)."""
    return _as_transformers_tokenizer(_train_bpe(texts, vocab_size))


@lru_cache(maxsize=None)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    return _train_bpe(_CORPUS * 4, vocab_size).to_str()


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the Qwen special tokens, trained on a small fixed corpus (deterministic)."""
    return _as_transformers_tokenizer(Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)))


def _text_config(tokenizer, **overrides) -> Qwen2Config:
    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    values.update(overrides)
    return Qwen2Config(**values)


def _siglip_vision_config(image_size: int, patch_size: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, vision_use_head=False,
    )  # fmt: skip


def _grid_pinpoints(image_size: int) -> list[list[int]]:
    """anyres grids of 1x1 to 2x2 tiles, as LLaVE's (1x1)...(2x2) of 384-px tiles."""
    return [[image_size * rows, image_size * columns] for rows in (1, 2) for columns in (1, 2)]


def _tiny_llava_onevision(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    return LlavaOnevisionConfig(
        vision_config=_siglip_vision_config(image_size, patch_size),
        text_config=_text_config(tokenizer, **text_overrides),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=grid_pinpoints or _grid_pinpoints(image_size),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def _tiny_llava(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8, projection_dim=32,
        ),  # fmt: skip
        text_config=_text_config(tokenizer, **text_overrides),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def _qwen_vl_config(family: str, tokenizer, text_overrides: dict, vision: dict, **rope):
    """A tiny Qwen-VL-family config: M-RoPE text model, the Qwen vision tokens."""
    text = _text_config(tokenizer, **text_overrides).to_dict()
    text.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], **rope})
    token_id = tokenizer.convert_tokens_to_ids
    return AutoConfig.for_model(
        family,
        text_config={**text, "model_type": f"{family}_text"},
        vision_config=vision,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )


_QWEN_VISION = dict(depth=2, num_heads=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)


def _tiny_qwen2_vl(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    vision = dict(_QWEN_VISION, embed_dim=32, hidden_size=HIDDEN_SIZE, mlp_ratio=2)
    return _qwen_vl_config("qwen2_vl", tokenizer, text_overrides, vision)


def _tiny_qwen2_5_vl(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    vision = dict(
        _QWEN_VISION, hidden_size=32, out_hidden_size=HIDDEN_SIZE, intermediate_size=64, window_size=16,
        fullatt_block_indexes=[1],
    )  # fmt: skip
    return _qwen_vl_config("qwen2_5_vl", tokenizer, text_overrides, vision)


def _tiny_qwen3_vl(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    # A learned 8x8 position grid (interpolated to each image) and one deepstack layer; head_dim is explicit in
    # Qwen3's text config.
    vision = dict(
        _QWEN_VISION, hidden_size=32, out_hidden_size=HIDDEN_SIZE, intermediate_size=64, num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    )  # fmt: skip
    overrides = {"head_dim": HIDDEN_SIZE // 4, **text_overrides}
    return _qwen_vl_config("qwen3_vl", tokenizer, overrides, vision, mrope_interleaved=True)


def _tiny_qwen2(tokenizer, image_size, patch_size, grid_pinpoints, text_overrides):
    return _text_config(tokenizer, **text_overrides)


def _qwen_vl_image_processor(image_size, grid_pinpoints):
    return Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=64 * 64, patch_size=4, merge_size=2, temporal_patch_size=2
    )


def _llava_onevision_image_processor(image_size, grid_pinpoints):
    return LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_grid_pinpoints=grid_pinpoints or _grid_pinpoints(image_size),
        image_mean=[0.5, 0.5, 0.5],  # SigLIP normalisation, as LLaVE
        image_std=[0.5, 0.5, 0.5],
    )


def _llava_image_processor(image_size, grid_pinpoints):
    return LlavaImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


# Each family's tiny backbone: (config builder, PIL image processor builder or None for text-only).
_TINY_BUILDERS = {
    "llava_onevision": (_tiny_llava_onevision, _llava_onevision_image_processor),
    "qwen2_vl": (_tiny_qwen2_vl, _qwen_vl_image_processor),
    "qwen2_5_vl": (_tiny_qwen2_5_vl, _qwen_vl_image_processor),
    "qwen3_vl": (_tiny_qwen3_vl, _qwen_vl_image_processor),
    "llava": (_tiny_llava, _llava_image_processor),
    "qwen2": (_tiny_qwen2, None),
}
FAMILIES = SUPPORTED_BACKBONES  # every supported family has a tiny backbone: the tests run each


def _builders(family: str):
    if family not in _TINY_BUILDERS:
        raise ValueError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}.")
    return _TINY_BUILDERS[family]


def tiny_backbone_config(
    family: str, tokenizer, *, image_size: int = IMAGE_SIZE, patch_size: int = 8, grid_pinpoints=None, **text_overrides
):
    """Config of a tiny random backbone of `family` (one of `FAMILIES`).

    `image_size`, `patch_size` and `grid_pinpoints` (default: 1x1 to 2x2 tiles) shape the LLaVA-OneVision tower and
    its anyres tiling; `text_overrides` go to the language model's config.
    """
    return _builders(family)[0](tokenizer, image_size, patch_size, grid_pinpoints, text_overrides)


def tiny_image_processor(family: str, *, image_size: int = IMAGE_SIZE, grid_pinpoints=None):
    """The PIL image processor of `tiny_backbone_config(family)` (`None` for the text-only family); `image_size` and
    `grid_pinpoints` as given to it (LLaVA-OneVision)."""
    build = _builders(family)[1]
    return build(image_size, grid_pinpoints) if build is not None else None


def tiny_processor(family: str, tokenizer=None, max_length: int = 512) -> LlaveProcessor:
    """An offline `LlaveProcessor` matching `tiny_backbone_config(family)`."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = tiny_backbone_config(family, tokenizer)
    return build_processor(config, tokenizer, tiny_image_processor(family), max_length=max_length)


def tiny_model_and_processor(family: str = "llava_onevision", seed: int = 0, **config_overrides):
    """A tiny random `LlaveEmbeddingModel` of `family` (float32, eval mode) and its processor.

    `config_overrides` go to the language model's config (e.g. `attention_dropout=0.1` for RNG tests).
    """
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlaveEmbeddingConfig(backbone_config=tiny_backbone_config(family, tokenizer, **config_overrides))
    model = LlaveEmbeddingModel._from_config(config).eval()  # _from_config: also under DeepSpeed ZeRO-3
    processor = tiny_processor(family, tokenizer)
    model.processor = processor
    return model, processor
