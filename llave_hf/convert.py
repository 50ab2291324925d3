# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Convert the released LLaVE checkpoints (LLaVA-NeXT code layout) into HF-native [`LlaveEmbeddingModel`] folders.

    llave-convert SRC DST [--dtype float32|bfloat16]

SRC is a released LLaVE folder (LLaVE-0.5B, -2B, -7B): `config.json` with the LLaVA-NeXT `mm_*` keys and the Qwen2
language model's fields, safetensors weights (one file, or shards with `model.safetensors.index.json`), and the Qwen
tokenizer. DST receives a `LlaveEmbeddingModel` over transformers' `LlavaOnevisionModel` (safetensors), its
`LlaveProcessor` and the modeling files, so that `AutoModel.from_pretrained(DST, trust_remote_code=True)` and
`AutoProcessor.from_pretrained(DST, trust_remote_code=True)` load it without this package.

What the conversion reproduces of the released image path (see `llava/model/llava_arch.py`,
`llava/model/multimodal_encoder/siglip_encoder.py` and `llava/mm_utils.py` in LLaVA-VL/LLaVA-NeXT):

- Vision features. The released SigLIP tower is stored with its last layer already removed and its features are the
  output of the last stored layer, without `post_layernorm` and without the head. The converted vision config has
  the stored number of layers and `vision_feature_layer=-1`: transformers' SigLIP records `hidden_states[-1]` before
  `post_layernorm` (its `post_layernorm` weights are kept but never reach the features), and `vision_use_head=False`.
  `mm_vision_select_layer` (-2) and `mm_vision_select_feature` ("patch") are ignored, as the released SigLIP tower
  ignores them: reading them as CLIP settings would drop one more layer. Heads, epsilon and activation cannot be read
  off the weight shapes; they are SigLIP-so400m-patch14-384's, the tower of every LLaVE model (a warning names any
  other SigLIP tower; non-SigLIP towers are refused).
- Projector `mlp2x_gelu` = Linear, exact GELU, Linear: `multi_modal_projector` with `projector_hidden_act="gelu"`.
- anyres: `image_grid_pinpoints` are [width, height] pairs in the released config and (height, width) in
  transformers; they are swapped, in the same order (so ties resolve alike). `--image_grid_pinpoints` replaces them
  (config and image processor alike), e.g. `"(1x1),...,(2x2)"` when converting a backbone to train with LLaVE's
  tiling: a base model such as Aquila-VL-2B carries its own, larger grids. The image processor uses SigLIP's
  normalisation (mean = std = 0.5), bicubic resizing and tiles of the tower's image size; the base view comes first,
  then the tiles row-major, and `image_newline` follows every row of the unpadded grid, never the base view.
- Tokens. The released code splices an image in at the sentinel id -200, which no tokenizer emits; transformers'
  classes need real tokens, so `<image>` (and `<video>`, so that the video id cannot collide with a real token) are
  added as special tokens when the tokenizer lacks them. The released loader also adds `<im_patch>` unless
  `mm_use_im_patch_token` is false (the key defaults to true), so it is added the same way and every id the released
  model sees is kept. Rows are appended to the embeddings (zeros) only when the tokenizer outgrows them: the image
  rows are overwritten by image features before the language model sees them, and `<im_patch>` never occurs in a
  prompt. Embedding rows beyond the tokenizer (Qwen's padded vocabularies) are kept.
- `lm_head` is dropped (and logged): it scores next tokens, and an embedding model pools hidden states and never
  calls it. Checkpoints with `tie_word_embeddings` (LLaVE-0.5B) may store none at all; either way the flag is kept in
  the backbone config as released.

Every released key is mapped; an unknown key, a missing weight or a shape mismatch raises an error naming them.

Known mismatch: unpadding. The released `unpad_image` computes the unpadded size with `int()`, transformers (model and
processor alike) with `int(round(x, 7))`. They differ when the exact size is a whole number that floating point lands
just below, and the token count changes when the padding parity flips: with LLaVA-OneVision's pinpoints (1x1 to 6x6
tiles of 384 px, 27 patches a side) 140 of the 5.3M image sizes up to 2304x2304, e.g. 423x47 or 820x369 (width x
height). For those images the converted model keeps two rows (or columns) of features more than the released one
(before the anyres_max downsizing) and its embedding differs; every other size matches. No processor or config
setting changes this rounding (it is hard-coded in `unpad_image` and in the processor's token count), so the converter
cannot reproduce it; [`released_unpad_mismatch`] tells whether an image size is affected, so callers can warn.
"""

import argparse
import json
import logging as python_logging
import math
import re
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AddedToken, AutoTokenizer, LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
from transformers.image_processing_utils import select_best_resolution
from transformers.image_utils import PILImageResampling
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.utils import logging

from .modeling.configuration_llave import LlaveEmbeddingConfig
from .modeling.modeling_llave import LlaveEmbeddingModel
from .processors import build_processor, set_image_grid_pinpoints


logger = logging.get_logger(__name__)

# Released key (regex) -> `LlavaOnevisionModel` key; the embedding model holds the backbone under `backbone.`.
KEY_MAPPING = (
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "vision_tower."),
    (r"^model\.mm_projector\.0\.", "multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"language_model.\1."),
)
# Released keys an embedding model has no use for, with the reason.
DROPPED_KEYS = {"lm_head.weight": "the LM head scores next tokens; the embedding pools hidden states instead"}

# The released settings this converter reproduces; anything else is another architecture.
REQUIRED_SETTINGS = {
    "architectures": ["LlavaQwenForCausalLM"],
    "mm_projector_type": "mlp2x_gelu",
    "mm_patch_merge_type": "spatial_unpad",
}
VISION_TOWER = "siglip-so400m-patch14-384"
# SigLIP-so400m settings that the weight shapes do not tell.
VISION_TOWER_SETTINGS = {"num_attention_heads": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]
# Qwen2 fields of the released config (the rest are LLaVA-NeXT's own); `rope_theta` becomes `rope_parameters`.
TEXT_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "rope_theta",
    "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id",
    "eos_token_id", "tie_word_embeddings",
)  # fmt: skip
IMAGE_TOKEN, VIDEO_TOKEN, IM_PATCH_TOKEN = "<image>", "<video>", "<im_patch>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_original_checkpoint(src: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The released `config.json` and every tensor of the safetensors weights of `src`."""
    src = Path(src)
    config = json.loads((src / "config.json").read_text())
    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{src}: no model.safetensors nor model.safetensors.index.json.")
    state_dict = {}
    for name in files:
        with safe_open(src / name, framework="pt") as shard:
            for key in shard.keys():
                state_dict[key] = shard.get_tensor(key)
    return config, state_dict


def check_original_config(config: dict):
    """Raises `NotImplementedError` for released settings whose forward this converter does not reproduce."""
    wrong = {key: config.get(key) for key, value in REQUIRED_SETTINGS.items() if config.get(key) != value}
    if not re.fullmatch(r"anyres_max_\d+", str(config.get("image_aspect_ratio"))):
        wrong["image_aspect_ratio"] = config.get("image_aspect_ratio")
    # the released builder picks its SigLIP tower by this test
    if "siglip" not in str(config.get("mm_vision_tower")):
        wrong["mm_vision_tower"] = config.get("mm_vision_tower")
    elif Path(config["mm_vision_tower"]).name != VISION_TOWER:
        logger.warning(
            f"mm_vision_tower is {config['mm_vision_tower']!r}: assuming {VISION_TOWER}'s {VISION_TOWER_SETTINGS}."
        )
    if config.get("mm_use_im_start_end"):
        wrong["mm_use_im_start_end"] = True
    if wrong:
        raise NotImplementedError(
            f"Unsupported released settings {wrong}; this converter reproduces {REQUIRED_SETTINGS}, "
            f"image_aspect_ratio 'anyres_max_<N>', a SigLIP tower and no image start/end tokens."
        )


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released keys -> `LlavaOnevisionModel` keys; raises on keys that are neither mapped nor knowingly dropped."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        if key in DROPPED_KEYS:
            logger.info(f"Dropping {key}: {DROPPED_KEYS[key]}.")
            continue
        for pattern, replacement in KEY_MAPPING:
            new_key, found = re.subn(pattern, replacement, key)
            if found:
                converted[new_key] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"Unknown keys in the released checkpoint ({len(unknown)}): {', '.join(sorted(unknown))}")
    return converted


def convert_vision_config(state_dict: dict[str, torch.Tensor], mm_hidden_size: int) -> SiglipVisionConfig:
    """SigLIP config of the stored tower, read off the converted weights (`vision_tower.*`)."""
    needed = ["patch_embedding.weight", "position_embedding.weight"]
    needed = [f"vision_tower.embeddings.{key}" for key in needed] + ["vision_tower.encoder.layers.0.mlp.fc1.weight"]
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f"Missing vision tower weights: {', '.join(missing)}")
    hidden_size, num_channels, patch_size, _ = state_dict["vision_tower.embeddings.patch_embedding.weight"].shape
    num_positions = state_dict["vision_tower.embeddings.position_embedding.weight"].shape[0]
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"vision_tower\.encoder\.layers\.(\d+)\.", key))}
    if math.isqrt(num_positions) ** 2 != num_positions or layers != set(range(len(layers))):
        raise ValueError(
            f"Vision tower with {num_positions} positions and layers {sorted(layers)}: not a SigLIP tower."
        )
    if hidden_size != mm_hidden_size:
        raise ValueError(f"mm_hidden_size is {mm_hidden_size} but the vision tower's width is {hidden_size}.")
    return SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=state_dict["vision_tower.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(layers),  # as stored: the last layer is already gone
        num_channels=num_channels,
        image_size=math.isqrt(num_positions) * patch_size,
        patch_size=patch_size,
        vision_use_head=False,
        **VISION_TOWER_SETTINGS,
    )


def prepare_tokenizer(src: str | Path, original_config: dict):
    """The released tokenizer with the tokens the released loader adds and those transformers' classes need."""
    # SRC's config.json is LLaVA-NeXT's, not a transformers config: name the language model's family instead.
    # A released LLaVE tokenizer is Qwen2's: nothing from SRC's folder is run (no prompt either).
    tokenizer = AutoTokenizer.from_pretrained(src, config=Qwen2Config(), trust_remote_code=False)
    if original_config.get("mm_use_im_patch_token", True):
        tokenizer.add_tokens([IM_PATCH_TOKEN], special_tokens=True)
    added = [AddedToken(token, special=True, normalized=False) for token in (IMAGE_TOKEN, VIDEO_TOKEN)]
    tokenizer.add_tokens(added, special_tokens=True)  # tokens already present are kept as they are
    return tokenizer


def convert_config(
    original_config: dict, vision_config: SiglipVisionConfig, tokenizer, vocab_size: int, image_grid_pinpoints=None
):
    """`LlaveEmbeddingConfig` over a `LlavaOnevisionConfig` equivalent to the released config; `image_grid_pinpoints`
    (`llave_hf.processors.parse_image_grid_pinpoints`'s notation) replaces the released grids."""
    tile = vision_config.image_size
    pinpoints = original_config["image_grid_pinpoints"]
    if not all(len(pair) == 2 and pair[0] % tile == 0 and pair[1] % tile == 0 for pair in pinpoints):
        raise ValueError(f"image_grid_pinpoints must be [width, height] multiples of {tile}, got {pinpoints}.")
    text_kwargs = {key: original_config[key] for key in TEXT_CONFIG_KEYS if original_config.get(key) is not None}
    text_config = Qwen2Config(**{**text_kwargs, "vocab_size": vocab_size})
    backbone_config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[height, width] for width, height in pinpoints],
        vision_aspect_ratio=original_config["image_aspect_ratio"],
    )
    if image_grid_pinpoints is not None:
        set_image_grid_pinpoints([backbone_config], None, image_grid_pinpoints)
    return LlaveEmbeddingConfig(backbone_config=backbone_config, pooling="last", normalize=True)


def build_image_processor(backbone_config: LlavaOnevisionConfig) -> LlavaOnevisionImageProcessorPil:
    """The released image preprocessing: SigLIP normalisation, bicubic resizing, anyres tiles of the tower's size."""
    size = backbone_config.vision_config.image_size
    return LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size},
        image_grid_pinpoints=backbone_config.image_grid_pinpoints,
        image_mean=SIGLIP_MEAN_STD,
        image_std=SIGLIP_MEAN_STD,
        resample=PILImageResampling.BICUBIC,
    )


def convert_llave_checkpoint(
    src: str | Path, dst: str | Path, dtype: torch.dtype | None = None, image_grid_pinpoints=None
):
    """Converts the released LLaVE checkpoint in `src` into an HF-native `LlaveEmbeddingModel` folder `dst`.

    Args:
        src: released checkpoint folder (LLaVA-NeXT layout).
        dst: output folder; must not exist or be empty.
        dtype: dtype of the saved weights; defaults to that of the released embeddings.
        image_grid_pinpoints: anyres grids replacing the released ones, in the config and the image processor
            (`"(1x1),...,(2x2)"` or (height, width) pixel pairs, see `llave_hf.processors.parse_image_grid_pinpoints`);
            `None` keeps the released ones.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} is not empty.")
    original_config, original_state_dict = load_original_checkpoint(src)
    check_original_config(original_config)
    state_dict = convert_state_dict(original_state_dict)
    del original_state_dict
    vision_config = convert_vision_config(state_dict, original_config["mm_hidden_size"])

    tokenizer = prepare_tokenizer(src, original_config)
    embeddings = state_dict.get("language_model.embed_tokens.weight")
    if embeddings is None:
        raise ValueError("Missing weight: model.embed_tokens.weight")
    if embeddings.shape[0] < len(tokenizer):
        padding = embeddings.new_zeros(len(tokenizer) - embeddings.shape[0], embeddings.shape[1])
        state_dict["language_model.embed_tokens.weight"] = torch.cat([embeddings, padding])
    vocab_size = max(embeddings.shape[0], len(tokenizer))
    config = convert_config(original_config, vision_config, tokenizer, vocab_size, image_grid_pinpoints)
    dtype = dtype or embeddings.dtype

    with torch.device("meta"):
        model = LlaveEmbeddingModel(config)
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    state_dict = {f"backbone.{key}": tensor.to(dtype) for key, tensor in state_dict.items()}
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"Released weights do not fit the converted config: missing {missing}, unexpected {unexpected}"
        )
    wrong_shapes = [
        f"{key} {tuple(tensor.shape)} != {tuple(expected[key])}"
        for key, tensor in state_dict.items()
        if tensor.shape != expected[key]
    ]
    if wrong_shapes:
        raise ValueError(f"Released weights with the wrong shape: {', '.join(wrong_shapes)}")
    model.load_state_dict(state_dict, strict=True, assign=True)

    # the released code truncates the (image-expanded) inputs to `tokenizer_model_max_length`
    max_length = original_config.get("tokenizer_model_max_length", 4096)
    processor = build_processor(
        config.backbone_config, tokenizer, build_image_processor(config.backbone_config), max_length=max_length
    )
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    logger.info(f"Converted {src} -> {dst}: {sum(t.numel() for t in state_dict.values()):,} parameters, {dtype}.")
    logger.warning(
        "Known deviation: for a few image sizes transformers' unpadding keeps two more rows (or columns) of "
        "image features than the released code; `llave_hf.convert.released_unpad_mismatch` finds them."
    )


def released_unpad_mismatch(image_size, backbone_config: LlavaOnevisionConfig):
    """Whether the released code and transformers unpad an image's feature grid differently.

    Args:
        image_size: the image's original (height, width).
        backbone_config: the converted `LlavaOnevisionConfig`.

    Returns:
        `None` when both agree, else `(released, transformers)`: the unpadded (rows, columns) of each.
    """
    height, width = image_size
    tile, patch = backbone_config.vision_config.image_size, backbone_config.vision_config.patch_size
    best_height, best_width = select_best_resolution((height, width), backbone_config.image_grid_pinpoints)
    rows, columns = best_height // tile * (tile // patch), best_width // tile * (tile // patch)
    # Same expressions as both implementations, so that floating point rounds alike.
    pad_rows = width / height > columns / rows
    exact = height * (columns / width) if pad_rows else width * (rows / height)
    current = rows if pad_rows else columns
    released = current - 2 * ((current - int(exact)) // 2)
    rounded = current - 2 * ((current - int(round(exact, 7))) // 2)
    if released == rounded:
        return None
    return ((released, columns), (rounded, columns)) if pad_rows else ((rows, released), (rows, rounded))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="llave-convert",
        description="Convert a released LLaVE checkpoint (LLaVA-NeXT layout) into an HF-native LlaveEmbeddingModel.",
    )
    parser.add_argument("src", help="released checkpoint folder: config.json, safetensors weights, Qwen tokenizer")
    parser.add_argument("dst", help="output folder (must not exist or be empty)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="dtype of the saved weights (default: as released)"
    )
    parser.add_argument(
        "--image_grid_pinpoints",
        default=None,
        help="anyres grids replacing the checkpoint's: '(1x1),...,(2x2)' (LLaVE's training tiling) or "
        "[height, width] pixel pairs as JSON",
    )
    args = parser.parse_args(argv)
    python_logging.basicConfig(level=python_logging.INFO, format="%(message)s")  # this module's messages only
    convert_llave_checkpoint(
        args.src, args.dst, DTYPES[args.dtype] if args.dtype else None, image_grid_pinpoints=args.image_grid_pinpoints
    )


if __name__ == "__main__":
    main()
