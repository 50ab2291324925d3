# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Plain-torch reimplementation of the released LLaVE forward (LLaVA-NeXT code), as the conversion tests' reference.

It reads the released tensors by their released names and shares no code with transformers' modeling or image
processing: PIL for the images, torch ops for the networks. What it follows, from LLaVA-VL/LLaVA-NeXT:
`mm_utils.process_anyres_image` (select_best_resolution on (width, height), resize_and_pad_image, divide_to_patches,
base view first), `SigLipImageProcessor`, `SigLipVisionTower` (stored layers, `hidden_states[-1]`, no post-layernorm),
the `mlp2x_gelu` projector, `prepare_inputs_labels_for_multimodal` for anyres_max + spatial_unpad (unpad with `int()`,
bilinear downsizing past max tiles, `image_newline` after each row, base view first), `tokenizer_image_token`, and
the Qwen2 decoder; the embedding is the last token's final hidden state, L2-normalised.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


IMAGE_TOKEN_INDEX = -200
PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n\n<|im_end|>\n"
)


# ---------------------------------------------------------------------------------------------------------------
# inputs


def released_prompt(text: str, has_image: bool) -> str:
    """MMEB's `<|image_1|>` at the start becomes `<image>` in place; otherwise the image goes first, then "\n"."""
    if has_image:
        if text.startswith("<|image_1|>"):
            text = "<image>" + text[len("<|image_1|>") :]
        else:
            text = "<image>\n" + text.replace("<|image_1|>", "").strip()
    return PROMPT.format(text)


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += [IMAGE_TOKEN_INDEX] + chunk
    return ids


def select_best_resolution(original_size, possible_resolutions):
    original_width, original_height = original_size
    best_fit, max_effective, min_wasted = None, 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (width, height)
    return best_fit


def resize_and_pad_image(image: Image.Image, target_resolution) -> Image.Image:
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_width, new_height = min(math.ceil(original_width * scale_h), target_width), target_height
    resized = image.resize((new_width, new_height), Image.BICUBIC)  # PIL's default filter for RGB
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas


def siglip_preprocess(image: Image.Image, size: int) -> torch.Tensor:
    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
    return torch.from_numpy(((pixels - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32))


def process_anyres_image(image: Image.Image, grid_pinpoints, size: int) -> torch.Tensor:
    """(1 + tiles, 3, size, size): the whole image squashed to one tile, then the tiles row-major."""
    padded = resize_and_pad_image(image, select_best_resolution(image.size, grid_pinpoints))
    tiles = [
        padded.crop((left, top, left + size, top + size))
        for top in range(0, padded.size[1], size)
        for left in range(0, padded.size[0], size)
    ]
    base = image.resize((size, size), Image.BICUBIC)
    return torch.stack([siglip_preprocess(view, size) for view in [base] + tiles])


# ---------------------------------------------------------------------------------------------------------------
# networks


def _linear(weights, prefix, x, bias=True):
    return F.linear(x, weights[f"{prefix}.weight"], weights[f"{prefix}.bias"] if bias else None)


def _rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class ReleasedLlave:
    """The released LLaVE forward over the released tensors `weights` and `config.json` dict `config`.

    `vision_heads` is the tower's head count (from the SigLIP checkpoint's own config in the released code).
    """

    def __init__(self, weights: dict[str, torch.Tensor], config: dict, vision_heads: int):
        self.w = {key: tensor.float() for key, tensor in weights.items()}
        self.config = config
        self.vision_heads = vision_heads
        self.tower = "model.vision_tower.vision_tower.vision_model"
        patch_weight = self.w[f"{self.tower}.embeddings.patch_embedding.weight"]
        self.patch_size = patch_weight.shape[-1]
        self.per_side = math.isqrt(self.w[f"{self.tower}.embeddings.position_embedding.weight"].shape[0])
        self.image_size = self.per_side * self.patch_size
        self.vision_layers = len({k.split(".")[6] for k in self.w if k.startswith(f"{self.tower}.encoder.layers.")})

    def siglip(self, pixels: torch.Tensor) -> torch.Tensor:
        w, p = self.w, self.tower
        x = F.conv2d(pixels, w[f"{p}.embeddings.patch_embedding.weight"], w[f"{p}.embeddings.patch_embedding.bias"],
                     stride=self.patch_size)  # fmt: skip
        x = x.flatten(2).transpose(1, 2) + w[f"{p}.embeddings.position_embedding.weight"]
        batch, length, width = x.shape
        heads, head_dim = self.vision_heads, width // self.vision_heads
        for i in range(self.vision_layers):
            layer = f"{p}.encoder.layers.{i}"
            h = F.layer_norm(x, (width,), w[f"{layer}.layer_norm1.weight"], w[f"{layer}.layer_norm1.bias"], eps=1e-6)
            q, k, v = (
                _linear(w, f"{layer}.self_attn.{name}_proj", h).view(batch, length, heads, head_dim).transpose(1, 2)
                for name in ("q", "k", "v")
            )
            attention = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, dim=-1) @ v
            x = x + _linear(w, f"{layer}.self_attn.out_proj", attention.transpose(1, 2).reshape(batch, length, width))
            h = F.layer_norm(x, (width,), w[f"{layer}.layer_norm2.weight"], w[f"{layer}.layer_norm2.bias"], eps=1e-6)
            h = F.gelu(_linear(w, f"{layer}.mlp.fc1", h), approximate="tanh")
            x = x + _linear(w, f"{layer}.mlp.fc2", h)
        return x  # no post_layernorm, no head

    def image_features(self, pixels: torch.Tensor, image_size) -> torch.Tensor:
        """(tokens, hidden) of one image: `pixels` from `process_anyres_image`; `image_size` is (width, height)."""
        features = _linear(
            self.w, "model.mm_projector.2", F.gelu(_linear(self.w, "model.mm_projector.0", self.siglip(pixels)))
        )
        base, tiles = features[0], features[1:]
        unit = self.per_side
        grid_width, grid_height = (
            side // self.image_size for side in select_best_resolution(image_size, self.config["image_grid_pinpoints"])
        )
        tiles = tiles.view(grid_height, grid_width, unit, unit, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
        tiles = self.unpad(tiles, image_size)
        max_tiles = int(self.config["image_aspect_ratio"].removeprefix("anyres_max_"))
        _, height, width = tiles.shape
        times = math.sqrt(height * width / (max_tiles * unit**2))
        if times > 1.1:
            tiles = F.interpolate(tiles[None], [int(height // times), int(width // times)], mode="bilinear")[0]
        newline = self.w["model.image_newline"][:, None, None].expand(*tiles.shape[:-1], 1)
        tiles = torch.cat((tiles, newline), dim=-1).flatten(1, 2).transpose(0, 1)
        return torch.cat((base, tiles), dim=0)

    @staticmethod
    def unpad(tensor: torch.Tensor, original_size) -> torch.Tensor:
        original_width, original_height = original_size
        current_height, current_width = tensor.shape[1:]
        if original_width / original_height > current_width / current_height:
            new_height = int(original_height * (current_width / original_width))
            padding = (current_height - new_height) // 2
            return tensor[:, padding : current_height - padding, :]
        new_width = int(original_width * (current_height / original_height))
        padding = (current_width - new_width) // 2
        return tensor[:, :, padding : current_width - padding]

    def qwen2(self, x: torch.Tensor) -> torch.Tensor:
        w, c = self.w, self.config
        length, hidden = x.shape
        heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        head_dim = hidden // heads
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None]
        cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
        causal = torch.full((length, length), float("-inf")).triu(1)
        for i in range(c["num_hidden_layers"]):
            layer = f"model.layers.{i}"
            h = _rms_norm(x, w[f"{layer}.input_layernorm.weight"], c["rms_norm_eps"])
            q = _linear(w, f"{layer}.self_attn.q_proj", h).view(length, heads, head_dim).transpose(0, 1)
            k = _linear(w, f"{layer}.self_attn.k_proj", h).view(length, kv_heads, head_dim).transpose(0, 1)
            v = _linear(w, f"{layer}.self_attn.v_proj", h).view(length, kv_heads, head_dim).transpose(0, 1)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
            attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal, dim=-1) @ v
            x = x + _linear(
                w, f"{layer}.self_attn.o_proj", attention.transpose(0, 1).reshape(length, hidden), bias=False
            )
            h = _rms_norm(x, w[f"{layer}.post_attention_layernorm.weight"], c["rms_norm_eps"])
            gate = F.silu(_linear(w, f"{layer}.mlp.gate_proj", h, bias=False))
            x = x + _linear(
                w, f"{layer}.mlp.down_proj", gate * _linear(w, f"{layer}.mlp.up_proj", h, bias=False), bias=False
            )
        return _rms_norm(x, w["model.norm.weight"], c["rms_norm_eps"])

    @torch.no_grad()
    def embed(self, text: str, tokenizer, image: Image.Image | None = None) -> torch.Tensor:
        """The released embedding of one item: `text` in MMEB form (may start with `<|image_1|>`), optional image."""
        ids = tokenizer_image_token(released_prompt(text, image is not None), tokenizer)
        pieces, start = [], 0
        for position in [i for i, token in enumerate(ids) if token == IMAGE_TOKEN_INDEX]:
            pieces.append(self.w["model.embed_tokens.weight"][ids[start:position]])
            pixels = process_anyres_image(image, self.config["image_grid_pinpoints"], self.image_size)
            pieces.append(self.image_features(pixels, image.size))
            start = position + 1
        pieces.append(self.w["model.embed_tokens.weight"][ids[start:]])
        return F.normalize(self.qwen2(torch.cat(pieces))[-1], dim=-1)
