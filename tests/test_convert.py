# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`llave-convert`: a tiny checkpoint in the released LLaVA-NeXT layout, converted and checked weight by weight and
against a plain-torch reimplementation of the released forward (`released_llave.py`)."""

import json

import pytest
import torch
from released_llave import ReleasedLlave, process_anyres_image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoProcessor,
    AutoTokenizer,
    LlavaOnevisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from llave_hf.convert import convert_llave_checkpoint, main, released_unpad_mismatch


TOWER = "model.vision_tower.vision_tower.vision_model"
VISION_HIDDEN, VISION_INTERMEDIATE, VISION_LAYERS, IMAGE_SIZE, PATCH = 32, 48, 2, 32, 8
VISION_HEADS = 16  # SigLIP-so400m's, which the converter assumes
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
# [width, height] pairs as in the released configs; lopsided (4x2 but no 2x4 tiles), so that a missed swap shows
PINPOINTS = [
    [w * IMAGE_SIZE, h * IMAGE_SIZE] for w, h in [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2), (3, 3), (4, 3), (4, 4)]
]
# 0.5B-like: tied lm_head not stored, no <im_patch>, one spare row. 7B-like: lm_head stored, mm_use_im_patch_token
# absent (so true), padded vocabulary; its tokenizer already has <image>.
VARIANTS = {
    "0.5b": dict(tie=True, lm_head=False, im_patch=False, image_in_vocab=False, extra_rows=1),
    "7b": dict(tie=False, lm_head=True, im_patch=None, image_in_vocab=True, extra_rows=8),
}
CORPUS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
    "Represent the given image with the following question: what is red? A photo of a dog on the beach.",
    "a red car and a blue house; find an everyday image that matches the given caption.",
]


def train_tokenizer(image_in_vocab: bool) -> PreTrainedTokenizerFast:
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<image>"] if image_in_vocab else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def original_weights(rows: int, lm_head: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    weights = {
        f"{TOWER}.embeddings.patch_embedding.weight": randn(VISION_HIDDEN, 3, PATCH, PATCH),
        f"{TOWER}.embeddings.patch_embedding.bias": randn(VISION_HIDDEN),
        f"{TOWER}.embeddings.position_embedding.weight": randn((IMAGE_SIZE // PATCH) ** 2, VISION_HIDDEN),
        # random, so that applying it (which the released forward does not) would show
        f"{TOWER}.post_layernorm.weight": 1 + randn(VISION_HIDDEN),
        f"{TOWER}.post_layernorm.bias": randn(VISION_HIDDEN),
        "model.mm_projector.0.weight": randn(HIDDEN, VISION_HIDDEN),
        "model.mm_projector.0.bias": randn(HIDDEN),
        "model.mm_projector.2.weight": randn(HIDDEN, HIDDEN),
        "model.mm_projector.2.bias": randn(HIDDEN),
        "model.image_newline": randn(HIDDEN, scale=1.0),
        "model.embed_tokens.weight": randn(rows, HIDDEN, scale=1.0),
        "model.norm.weight": 1 + randn(HIDDEN),
    }
    square = (VISION_HIDDEN, VISION_HIDDEN)
    vision_linears = {f"self_attn.{name}_proj": square for name in ("q", "k", "v", "out")}
    vision_linears |= {
        "mlp.fc1": (VISION_INTERMEDIATE, VISION_HIDDEN),
        "mlp.fc2": (VISION_HIDDEN, VISION_INTERMEDIATE),
    }
    for i in range(VISION_LAYERS):
        layer = f"{TOWER}.encoder.layers.{i}"
        for name, shape in vision_linears.items():
            weights[f"{layer}.{name}.weight"] = randn(*shape)
            weights[f"{layer}.{name}.bias"] = randn(shape[0])
        for norm in ("layer_norm1", "layer_norm2"):
            weights[f"{layer}.{norm}.weight"] = 1 + randn(VISION_HIDDEN)
            weights[f"{layer}.{norm}.bias"] = randn(VISION_HIDDEN)
    kv = KV_HEADS * HIDDEN // HEADS
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        for name, shape in [("q_proj", (HIDDEN, HIDDEN)), ("k_proj", (kv, HIDDEN)), ("v_proj", (kv, HIDDEN))]:
            weights[f"{layer}.self_attn.{name}.weight"] = randn(*shape)
            weights[f"{layer}.self_attn.{name}.bias"] = randn(shape[0])
        weights[f"{layer}.self_attn.o_proj.weight"] = randn(HIDDEN, HIDDEN)
        weights[f"{layer}.mlp.gate_proj.weight"] = randn(INTERMEDIATE, HIDDEN)
        weights[f"{layer}.mlp.up_proj.weight"] = randn(INTERMEDIATE, HIDDEN)
        weights[f"{layer}.mlp.down_proj.weight"] = randn(HIDDEN, INTERMEDIATE)
        weights[f"{layer}.input_layernorm.weight"] = 1 + randn(HIDDEN)
        weights[f"{layer}.post_attention_layernorm.weight"] = 1 + randn(HIDDEN)
    if lm_head:
        weights["lm_head.weight"] = randn(rows, HIDDEN)
    return weights


def original_config(spec: dict, tokenizer, rows: int) -> dict:
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        "alpha": 9,  # LLaVE's training settings travel in its config
        "logit_scale": 50,
        "attention_dropout": 0.0,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "image_aspect_ratio": "anyres_max_9",
        "image_crop_resolution": None,
        "image_grid_pinpoints": PINPOINTS,
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 1024,
        "max_window_layers": LAYERS,
        "mm_hidden_size": VISION_HIDDEN,
        "mm_newline_position": "one_token",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_mlp_adapter,mm_language_model",
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": spec["tie"],
        "tokenizer_model_max_length": 4096,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_sliding_window": False,
        "vision_tower_pretrained": None,
        "vocab_size": rows,
    }
    if spec["im_patch"] is not None:
        config["mm_use_im_patch_token"] = spec["im_patch"]
    return config


def make_original_checkpoint(folder, variant: str, edit=None):
    """Writes a tiny released-layout checkpoint (two shards + index) and returns its (config, weights).

    `edit(weights, config)` may alter them before they are written.
    """
    spec = VARIANTS[variant]
    tokenizer = train_tokenizer(spec["image_in_vocab"])
    rows = len(tokenizer) + spec["extra_rows"]
    weights, config = original_weights(rows, spec["lm_head"]), original_config(spec, tokenizer, rows)
    if edit:
        edit(weights, config)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shards = {"model-00001-of-00002.safetensors": {}, "model-00002-of-00002.safetensors": {}}
    for key, tensor in weights.items():
        shards[f"model-0000{1 if key.startswith('model.layers') else 2}-of-00002.safetensors"][key] = tensor
    for name, tensors in shards.items():
        save_file(tensors, folder / name, metadata={"format": "pt"})
    weight_map = {key: name for name, tensors in shards.items() for key in tensors}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return config, weights


def load_source_tokenizer(folder):
    # the released config.json is no transformers config; the tokenizer is Qwen2's
    return AutoTokenizer.from_pretrained(folder, config=Qwen2Config())


def load_converted(folder):
    """The converted model as `AutoModel` loads it: transformers may store some keys under legacy names on disk."""
    return AutoModel.from_pretrained(folder, trust_remote_code=True).eval()


def expected_key(released_key: str) -> str:
    renames = [
        (f"{TOWER}.", "vision_tower."),
        ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
        ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
        ("model.image_newline", "image_newline"),
        ("model.", "language_model."),
    ]
    for old, new in renames:
        if released_key.startswith(old):
            return "backbone." + new + released_key[len(old) :]
    raise AssertionError(released_key)


@pytest.fixture(scope="module", params=list(VARIANTS))
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    config, weights = make_original_checkpoint(root / "original", request.param)
    if request.param == "7b":
        main([str(root / "original"), str(root / "converted"), "--dtype", "float32"])
    else:
        convert_llave_checkpoint(root / "original", root / "converted")
    return request.param, root / "original", root / "converted", config, weights


def test_every_weight_lands_in_place(converted):
    variant, src, dst, config, weights = converted
    saved = load_converted(dst).state_dict()
    expected = {expected_key(key): tensor for key, tensor in weights.items() if key != "lm_head.weight"}
    assert sorted(saved) == sorted(expected)
    source_tokenizer, tokenizer = load_source_tokenizer(src), AutoTokenizer.from_pretrained(dst)
    for key, tensor in expected.items():
        if key.endswith("embed_tokens.weight"):
            rows = tensor.shape[0]
            assert saved[key].shape[0] == max(rows, len(tokenizer))
            assert torch.equal(saved[key][:rows], tensor) and not saved[key][rows:].any()
        else:
            assert saved[key].dtype == torch.float32 and torch.equal(saved[key], tensor), key

    backbone = json.loads((dst / "config.json").read_text())["backbone_config"]
    vision = backbone["vision_config"]
    assert (vision["num_hidden_layers"], vision["num_attention_heads"]) == (VISION_LAYERS, VISION_HEADS)
    assert (vision["image_size"], vision["patch_size"], vision["vision_use_head"]) == (IMAGE_SIZE, PATCH, False)
    assert (backbone["vision_feature_layer"], backbone["vision_feature_select_strategy"]) == (-1, "full")
    assert backbone["image_grid_pinpoints"] == [[h, w] for w, h in PINPOINTS]
    assert backbone["image_token_index"] == tokenizer.convert_tokens_to_ids("<image>")
    assert backbone["text_config"]["tie_word_embeddings"] == config["tie_word_embeddings"]
    assert backbone["text_config"]["vocab_size"] == saved["backbone.language_model.embed_tokens.weight"].shape[0]

    # Every released token keeps its id; <im_patch> is added as the released loader does, <image> reused if present.
    source_vocab = source_tokenizer.get_vocab()
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in source_vocab} == source_vocab
    assert ("<im_patch>" in tokenizer.get_vocab()) == (variant == "7b")
    if "<image>" in source_vocab:
        assert backbone["image_token_index"] == source_vocab["<image>"]


def test_embeddings_match_released_forward(converted, make_image):
    _, src, dst, config, weights = converted
    model = load_converted(dst)
    processor = AutoProcessor.from_pretrained(dst, trust_remote_code=True)
    reference = ReleasedLlave(weights, config, vision_heads=VISION_HEADS)
    source_tokenizer = load_source_tokenizer(src)
    items = [
        ("A photo of a dog on the beach.", None),
        # 100x45 (width x height): 2 rows of 4 tiles, unpadded rows
        (
            "<|image_1|> Represent the given image with the following question: what is red?",
            make_image(45, 100, seed=1),
        ),
        # 41x76: 3x3 tiles, unpadded columns (with unswapped pinpoints: 4 rows of 2 tiles)
        ("<|image_1|> Represent the given image.", make_image(76, 41, seed=2)),
        # 130x120: 4x4 tiles, unpadded, then downsized past anyres_max_9; the image moves to the front
        ("a red car", make_image(120, 130, seed=3)),
    ]
    for text, image in items:
        inputs = processor(text=[text], images=[image])
        if image is not None:
            assert released_unpad_mismatch(image.size[::-1], model.config.backbone_config) is None
            pixels = process_anyres_image(image, config["image_grid_pinpoints"], IMAGE_SIZE)
            torch.testing.assert_close(inputs["pixel_values"][0], pixels, atol=1e-6, rtol=0)
        with torch.no_grad():
            embedding = model(**inputs).embeddings[0]
        torch.testing.assert_close(embedding, reference.embed(text, source_tokenizer, image), atol=1e-6, rtol=0)


def test_released_unpad_mismatch_is_detected(converted, make_image):
    _, _, dst, config, weights = converted
    backbone_config = AutoConfig.from_pretrained(dst, trust_remote_code=True).backbone_config
    # 110x88 selects 3 rows of 4 tiles (12x16 patches): the unpadded width is 15 exactly, 14.999... in floating point.
    assert released_unpad_mismatch((88, 110), backbone_config) == ((12, 14), (12, 16))
    image = make_image(88, 110, seed=3)
    pixels = process_anyres_image(image, config["image_grid_pinpoints"], IMAGE_SIZE)
    released = ReleasedLlave(weights, config, vision_heads=VISION_HEADS).image_features(pixels, image.size).shape[0]
    assert released == (IMAGE_SIZE // PATCH) ** 2 + 12 * (14 + 1)

    model = load_converted(dst)
    processor = AutoProcessor.from_pretrained(dst, trust_remote_code=True)
    inputs = processor(text=["a photo"], images=[image])
    tokens = int((inputs["input_ids"] == backbone_config.image_token_index).sum())
    with torch.no_grad():
        features = model.backbone.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output[0]
    assert features.shape[0] == tokens != released

    # The released configuration: SigLIP-so400m at 384 px and LLaVA-OneVision's 1x1..6x6 pinpoints.
    so400m = SiglipVisionConfig(image_size=384, patch_size=14, num_hidden_layers=26, vision_use_head=False)
    onevision = LlavaOnevisionConfig(vision_config=so400m)
    assert released_unpad_mismatch((47, 423), onevision) == ((5, 54), (7, 54))
    assert released_unpad_mismatch((768, 1024), onevision) is None


def _add_zeros(*names):
    return lambda weights, config: weights.update({name: torch.zeros(1) for name in names})


def _drop(*names):
    return lambda weights, config: [weights.pop(name) for name in names]


BAD_CHECKPOINTS = {
    "unknown-keys": (
        _add_zeros("model.mm_projector.1.weight", "model.vision_resampler.x"),
        ValueError,
        ["model.mm_projector.1.weight", "model.vision_resampler.x"],
    ),
    # mapped by its prefix, but the model has no such weight
    "unexpected-key": (_add_zeros(f"{TOWER}.head.probe"), ValueError, ["backbone.vision_tower.head.probe"]),
    "missing-keys": (
        _drop(f"{TOWER}.post_layernorm.bias", "model.layers.1.mlp.up_proj.weight"),
        ValueError,
        ["backbone.vision_tower.post_layernorm.bias", "backbone.language_model.layers.1.mlp.up_proj.weight"],
    ),
    "wrong-shape": (
        lambda weights, config: weights.update({"model.image_newline": torch.zeros(HIDDEN + 1)}),
        ValueError,
        ["backbone.image_newline"],
    ),
    "projector": (
        lambda weights, config: config.update(mm_projector_type="linear"),
        NotImplementedError,
        ["mm_projector_type"],
    ),
    "vision-tower": (
        lambda weights, config: config.update(mm_vision_tower="openai/clip-vit-large-patch14-336"),
        NotImplementedError,
        ["mm_vision_tower"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoints_raise_naming_the_culprits(tmp_path, case):
    edit, error, names = BAD_CHECKPOINTS[case]
    make_original_checkpoint(tmp_path / "original", "0.5b", edit)
    with pytest.raises(error) as raised:
        convert_llave_checkpoint(tmp_path / "original", tmp_path / "converted")
    assert all(name in str(raised.value) for name in names), str(raised.value)


def test_cli_bfloat16_and_refuses_non_empty_destination(tmp_path):
    _, weights = make_original_checkpoint(tmp_path / "original", "0.5b")
    main([str(tmp_path / "original"), str(tmp_path / "converted"), "--dtype", "bfloat16"])
    newline = load_converted(tmp_path / "converted").backbone.image_newline
    assert newline.dtype == torch.bfloat16 and torch.equal(newline, weights["model.image_newline"].bfloat16())
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(FileExistsError):
        main([str(tmp_path / "original"), str(tmp_path / "converted")])


def test_image_grid_pinpoints_replace_the_released_tiling_in_config_and_processor(tmp_path):
    """A base model's own grids (here up to 4x4 tiles) give way to LLaVE's training tiling, in both places."""
    make_original_checkpoint(tmp_path / "original", "0.5b")
    main([str(tmp_path / "original"), str(tmp_path / "converted"), "--image_grid_pinpoints", "(1x1),...,(2x2)"])
    expected = [[IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE] * 2]
    assert expected != [[height, width] for width, height in PINPOINTS]
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["backbone_config"]["image_grid_pinpoints"] == expected
    processor = AutoProcessor.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    assert processor.image_processor.image_grid_pinpoints == expected
    with pytest.raises(ValueError, match="multiples of the 32-px tile"):
        convert_llave_checkpoint(tmp_path / "original", tmp_path / "bad", image_grid_pinpoints=[[32, 40]])
