"""End to end: `train.py` with the presets on tiny models and the on-disk MMEB fixture, in one and two processes."""

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchrun import torchrun
import yaml
from mmeb_fixtures import draw, make_mmeb_fixture
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
    TrainerCallback,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from llave_hf import LlaveEmbeddingModel, LlaveProcessor
from llave_hf.cli.train import load_model_and_processor, main, parse_args
from llave_hf.collator import ContrastiveCollator
from llave_hf.mmeb_train import MMEB_TRAIN_SUBSETS, load_mmeb_train
from llave_hf.run_plan import prompt_length_summary
from llave_hf.testing import tiny_backbone_config, tiny_model_and_processor, tiny_processor, tiny_tokenizer


ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "training_args"
TINY = str(PRESETS / "tiny-cpu.yaml")


@pytest.fixture
def fixture(tmp_path):
    return make_mmeb_fixture(tmp_path / "mmeb", num_colours=4)  # 16 rows: 8 image queries, 8 text queries


def _overrides(fixture, output_dir, **values) -> list[str]:
    values = {
        "train_data": fixture["data"],
        "image_root": fixture["image_root"],
        "output_dir": output_dir,
        "per_device_train_batch_size": 8,
        "lr_scheduler_type": "constant",  # independent of max_steps, so that an interrupted run can be resumed
        "warmup_steps": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        **values,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def _losses(log_history) -> list[float]:
    return [entry["loss"] for entry in log_history if "loss" in entry]


def _preset_with(tmp_path, **values) -> str:
    """The tiny preset with another model source."""
    config = {k: v for k, v in yaml.safe_load(Path(TINY).read_text()).items() if k != "tiny_backbone"}
    path = tmp_path / f"{next(iter(values))}.yaml"
    path.write_text(yaml.safe_dump({**config, **values}))
    return str(path)


def _save_backbone(path: Path) -> LlavaOnevisionForConditionalGeneration:
    """A tiny pretrained LLaVA-OneVision checkpoint as on the Hub: a generation model, tokenizer, image processor."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    source = LlavaOnevisionForConditionalGeneration(tiny_backbone_config("llava_onevision", tokenizer))
    source.save_pretrained(path)
    tokenizer.save_pretrained(path)
    tiny_processor("llava_onevision", tokenizer).image_processor.save_pretrained(path)
    return source


def _torchrun(arguments: list[str], script: Path = ROOT / "train.py", preset: str = TINY, timeout: int = 600) -> str:
    return torchrun(script, preset, *arguments, timeout=timeout, cwd=ROOT, env={"DS_ACCELERATOR": "cpu"})


# ------------------------------------------------------------------------------------------------------------------
# presets and arguments


def test_every_preset_parses():
    for preset in sorted(PRESETS.glob("*.yaml")):
        model_args, data_args, training_args = parse_args([str(preset)])
        assert training_args.remove_unused_columns is False, preset.name
        if not torch.accelerator.is_available():
            assert not training_args.bf16 and not training_args.tf32  # float32 on CPU
        if training_args.deepspeed:
            config = json.loads((ROOT / training_args.deepspeed).read_text())
            assert config["zero_optimization"]["stage"] == 3
    zero3 = json.loads((PRESETS / "deepspeed" / "zero3.json").read_text())["zero_optimization"]
    assert zero3["stage3_gather_16bit_weights_on_model_save"] is True
    assert json.loads((PRESETS / "deepspeed" / "zero2.json").read_text())["zero_optimization"]["stage"] == 2
    for name in ("single_node_8gpu", "multi_node"):
        config = yaml.safe_load((PRESETS / "accelerate" / f"{name}.yaml").read_text())
        assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 8 * config["num_machines"]


def test_2b_preset_is_the_papers_recipe():
    """The paper's Table 5 recipe: MMEB-train `original`, 20 subsets x the first 50K rows, alpha 9, temperature 0.02,
    lr 1e-5 (7B: 5e-6), cosine schedule, warmup ratio 0.03, 1 epoch, batch 4 per device x 8 GPUs x 8 accumulation
    steps, bf16, DeepSpeed ZeRO-3, frozen vision tower, max length 4096."""
    raw = yaml.safe_load((PRESETS / "llave-2b.yaml").read_text())
    model_args, data_args, args = parse_args([str(PRESETS / "llave-2b.yaml")])
    gpus = 8
    assert args.per_device_train_batch_size * gpus * args.gradient_accumulation_steps == 256
    assert args.per_device_train_batch_size * gpus == 32  # candidates per loss
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps) == (1e-5, "cosine", 0.03)
    assert (args.weight_decay, args.num_train_epochs, args.optim.value) == (0.0, 1, "adamw_torch")
    assert raw["bf16"] is True and raw["tf32"] is True  # bf16 + TF32 on the GPUs
    assert args.activation_checkpointing and args.freeze_vision_tower and args.loss_gather_across_devices
    assert json.loads((ROOT / args.deepspeed).read_text())["zero_optimization"]["stage"] == 3
    assert (args.loss_alpha, args.loss_temperature, args.loss_symmetric) == (9.0, 0.02, True)
    assert (args.loss_hardness_normalization, args.loss_mask_false_negatives) == ("none", False)
    assert (data_args.train_data, data_args.split, data_args.max_rows_per_subset) == (
        "TIGER-Lab/MMEB-train",
        "original",
        50000,
    )
    assert data_args.subsets is None and len(MMEB_TRAIN_SUBSETS) == 20  # all 20 subsets: 662K pairs
    assert (data_args.max_length, data_args.num_hard_negatives, data_args.group_by_modality_length) == (4096, 0, True)
    seven = parse_args([str(PRESETS / "llave-7b.yaml")])[2]
    assert seven.learning_rate == 5e-6 and yaml.safe_load((PRESETS / "llave-7b.yaml").read_text())["tf32"] is False


# The released training command (LLaVE's README), flag by flag, as our presets' keys; README.md's table gives the
# flags that have no key of their own (architecture, prompt, video) and why.
RELEASED_COMMAND = {
    "deepspeed": "training_args/deepspeed/zero3.json",  # --deepspeed scripts/zero3.json
    "train_data": "TIGER-Lab/MMEB-train",  # --data_path
    "max_rows_per_subset": 50000,  # --num_sample_per_subset
    "group_by_modality_length": True,
    "image_grid_pinpoints": "(1x1),...,(2x2)",
    "freeze_vision_tower": True,  # --mm_tunable_parts mm_mlp_adapter,mm_language_model
    "bf16": True,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 8,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 1,
    "weight_decay": 0.0,
    "warmup_steps": 0.03,  # --warmup_ratio 0.03
    "lr_scheduler_type": "cosine",
    "max_length": 4096,  # --model_max_length
    "activation_checkpointing": True,  # --gradient_checkpointing
    "dataloader_num_workers": 4,
    "torch_compile": True,
    "torch_compile_backend": "inductor",
    "dataloader_drop_last": True,
    "loss_alpha": 9.0,  # --alpha 9
}


@pytest.mark.parametrize("preset", ["llave-0.5b", "llave-2b", "llave-7b"])
def test_presets_follow_the_released_command_line(preset):
    raw = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
    assert {key: raw.get(key) for key in RELEASED_COMMAND} == RELEASED_COMMAND
    # Table 5: lr 1e-5 and bf16 + TF32, except 7B: 5e-6 and bf16 only (Ascend NPUs)
    assert (raw["learning_rate"], raw["tf32"]) == ((5e-6, False) if preset == "llave-7b" else (1e-5, True))
    _, data_args, _ = parse_args([str(PRESETS / f"{preset}.yaml")])
    assert data_args.subsets is None and MMEB_TRAIN_SUBSETS == (  # --subset_name: the 20, in the released order
        "ImageNet_1K", "HatefulMemes", "SUN397", "N24News", "VOC2007", "OK-VQA", "A-OKVQA", "DocVQA",
        "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "NIGHTS", "WebQA", "VisualNews_i2t",
        "VisualNews_t2i", "MSCOCO_t2i", "MSCOCO_i2t", "MSCOCO",
    )  # fmt: skip


def test_command_line_overrides_yaml_and_bad_configurations(tmp_path):
    model_args, data_args, args = parse_args(
        [TINY, "--learning_rate", "0.5", "--subsets", "A", "B", "--tiny_backbone", "qwen2"]
    )
    assert (args.learning_rate, data_args.subsets, model_args.tiny_backbone) == (0.5, ["A", "B"], "qwen2")
    assert args.per_device_train_batch_size == yaml.safe_load(Path(TINY).read_text())["per_device_train_batch_size"]
    (tmp_path / "bad.yaml").write_text("tiny_backbone: qwen2\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="Unknown configuration keys: learning_rat"):
        parse_args([str(tmp_path / "bad.yaml")])
    # a preset that is not a mapping of argument names: the file, line and column, not a TypeError
    for text, message in (
        ("- tiny_backbone: qwen2\n- learning_rate: 0.1\n", r"bad.yaml, line 1, column 1: a preset is .* got a list"),
        ("# a comment\ntiny_backbone\n", r"bad.yaml, line 2, column 1: a preset is a mapping .* got a str"),
        ("tiny_backbone: qwen2\n3: 0.1\n", r"bad.yaml, line 2, column 1: '3' is not an argument name"),
    ):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ValueError, match=message):
            parse_args([str(tmp_path / "bad.yaml")])
    (tmp_path / "empty.yaml").write_text("")
    assert parse_args([str(tmp_path / "empty.yaml"), "--tiny_backbone", "qwen2"])[0].tiny_backbone == "qwen2"
    with pytest.raises(ValueError, match="exactly one of"):
        parse_args([TINY, "--model_name_or_path", "somewhere"])
    args = parse_args([TINY, "--eval_data", "heldout", "--eval_every_n_steps", "7"])[2]
    assert (args.eval_strategy, args.eval_steps) == ("steps", 7)
    assert parse_args([TINY])[2].eval_strategy == "no"


# ------------------------------------------------------------------------------------------------------------------
# one process


def test_tiny_preset_learns_and_saves_loadable_checkpoints(fixture, tmp_path):
    output_dir = tmp_path / "out"
    trainer = main([TINY, *_overrides(fixture, output_dir, max_steps=12, save_strategy="steps", save_steps=4)])
    losses = _losses(trainer.state.log_history)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses  # the easy fixture is learnt
    assert trainer.state.log_history[-1]["skipped_samples"] == 0
    assert {"checkpoint-8", "checkpoint-12"} <= set(os.listdir(output_dir))
    assert not (output_dir / "checkpoint-4").exists()  # save_total_limit: 2

    checkpoint = output_dir / "checkpoint-12"
    model = AutoModel.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert isinstance(model, LlaveEmbeddingModel) and isinstance(processor, LlaveProcessor)
    texts = ["a red square", "<|image_1|> Represent the given image."]
    images = [None, str(fixture["image_root"] / "images" / "red_square.png")]
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    torch.testing.assert_close(
        model.encode(texts=texts, images=images), trained.encode(texts=texts, images=images, processor=processor)
    )


def test_interrupted_and_resumed_run_equals_uninterrupted_run(fixture, tmp_path):
    """4 steps per epoch: interrupted mid-epoch 0, resumed through epoch 1, with the modality/length sampler."""
    common = dict(per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="steps", save_steps=3)
    main([TINY, *_overrides(fixture, tmp_path / "full", max_steps=6, **common)])
    main([TINY, *_overrides(fixture, tmp_path / "split", max_steps=3, **common)])
    resumed = main(
        [
            TINY,
            *_overrides(
                fixture,
                tmp_path / "split",
                max_steps=6,
                resume_from_checkpoint=tmp_path / "split" / "checkpoint-3",
                **common,
            ),
        ]
    )
    assert resumed.state.global_step == 6
    full = load_file(tmp_path / "full" / "model.safetensors")
    split = load_file(tmp_path / "split" / "model.safetensors")
    at_interruption = load_file(tmp_path / "split" / "checkpoint-3" / "model.safetensors")
    assert any(not torch.allclose(full[name], at_interruption[name], atol=1e-4) for name in full), "vacuous test"
    for name, value in full.items():
        torch.testing.assert_close(split[name], value, rtol=0, atol=1e-5, msg=name)


def test_backbone_then_checkpoint_sources(fixture, tmp_path):
    """--backbone_name_or_path wraps a pretrained backbone (a generation checkpoint, as on the Hub); the result
    trains on with --model_name_or_path."""
    source = _save_backbone(tmp_path / "backbone")
    preset = _preset_with(tmp_path, backbone_name_or_path=str(tmp_path / "backbone"))
    trainer = main([preset, *_overrides(fixture, tmp_path / "wrapped", max_steps=1, learning_rate=0.0)])
    trained = trainer.accelerator.unwrap_model(trainer.model)
    expected = {f"backbone.{name}": value for name, value in source.model.state_dict().items()}
    assert trained.state_dict().keys() == expected.keys()
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)  # lr 0: the loaded weights

    preset = _preset_with(tmp_path, model_name_or_path=str(tmp_path / "wrapped"))
    trainer = main([preset, *_overrides(fixture, tmp_path / "continued", max_steps=1)])
    assert torch.isfinite(torch.tensor(_losses(trainer.state.log_history))).all()


# ------------------------------------------------------------------------------------------------------------------
# two processes (gloo on CPU)


@pytest.mark.slow
def test_two_processes_with_gradient_checkpointing_and_a_bad_image(fixture, tmp_path):
    """Gathering needs equal batches on both processes: a skipped row is replaced, and the run does not hang."""
    (fixture["image_root"] / "images" / "red_square.png").unlink()  # row 0's query, row 8's target
    output_dir = tmp_path / "ddp"
    overrides = dict(per_device_train_batch_size=4, max_steps=3, activation_checkpointing="true", skip_bad_samples="true")
    _torchrun(_overrides(fixture, output_dir, **overrides))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    losses = _losses(state["log_history"])
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert state["log_history"][0]["epoch"] == 0.5  # 2 steps per epoch: 16 rows in batches of 2 x 4
    assert state["log_history"][-1]["skipped_samples"] >= 2  # summed over the processes; epoch 0 sees both rows
    assert isinstance(AutoModel.from_pretrained(output_dir), LlaveEmbeddingModel)


@pytest.mark.slow
def test_deepspeed_zero2_on_cpu_equals_ddp(fixture, tmp_path):
    """ZeRO-2 in float32 shards optimizer state and gradients only: its SGD steps must equal DDP's on the same data.
    SGD without clipping: Adam's first step, and clipping to a norm the gradient exceeds, would both hide a gradient
    scaled by any factor."""
    pytest.importorskip("deepspeed")
    steps = dict(per_device_train_batch_size=4, max_steps=2, optim="sgd", learning_rate=1e-3, max_grad_norm=0.0)
    _torchrun(_overrides(fixture, tmp_path / "ddp", **steps))
    output_dir = tmp_path / "zero2"
    deepspeed = PRESETS / "deepspeed" / "zero2.json"
    _torchrun(
        _overrides(fixture, output_dir, **steps, deepspeed=deepspeed, save_strategy="steps", save_steps=2),
        timeout=900,  # the first run compiles a DeepSpeed C++ op
    )
    losses = _losses(json.loads((output_dir / "trainer_state.json").read_text())["log_history"])
    ddp_losses = _losses(json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())["log_history"])
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ddp_losses), rtol=1e-5, atol=1e-6)
    assert (output_dir / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own checkpoint: it really ran
    assert isinstance(AutoModel.from_pretrained(output_dir / "checkpoint-2"), LlaveEmbeddingModel)
    ddp, zero2 = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(output_dir / "model.safetensors")
    initial = tiny_model_and_processor("llava_onevision", seed=42)[0].state_dict()  # the tiny preset's seed
    change = max((ddp[name] - value).abs().max().item() for name, value in initial.items() if name in ddp)
    assert change > 1e-3, f"training moved the parameters by {change:.1e}: the comparison would be vacuous"
    assert zero2.keys() == ddp.keys()
    for name, value in ddp.items():
        torch.testing.assert_close(zero2[name], value, rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_deepspeed_zero3_wraps_a_pretrained_backbone(fixture, tmp_path):
    """ZeRO-3 partitions weights at construction: the backbone source must build its model under it."""
    pytest.importorskip("deepspeed")
    source = _save_backbone(tmp_path / "backbone")
    # On GPUs the training arguments start DeepSpeed's process group; on CPU (gloo) zero.Init needs it started here.
    script = tmp_path / "zero3_train.py"
    script.write_text(
        "import deepspeed\ndeepspeed.init_distributed('gloo')\nfrom llave_hf.cli.train import main\nmain()\n"
    )
    output_dir = tmp_path / "zero3"
    deepspeed = PRESETS / "deepspeed" / "zero3.json"
    output = _torchrun(
        _overrides(
            fixture, output_dir, per_device_train_batch_size=4, max_steps=1, learning_rate=0.0, deepspeed=deepspeed,
            log_level="info",
        ),
        script=script,
        preset=_preset_with(tmp_path, backbone_name_or_path=str(tmp_path / "backbone")),
    )  # fmt: skip
    # ZeRO-3 partitions the weights (numel() is 0): the frozen tower is counted by its full size, ds_numel
    tower = sum(parameter.numel() for parameter in source.model.vision_tower.parameters())
    assert f"Froze {tower:,} vision-tower parameters" in output, output[-3000:]
    trained = AutoModel.from_pretrained(
        output_dir
    )  # gathered from the shards (stage3_gather_16bit_weights_on_model_save)
    for name, value in source.model.state_dict().items():
        torch.testing.assert_close(trained.backbone.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_held_out_p_at_1_is_logged_during_training(fixture, tmp_path):
    """--eval_data: P@1 on a held-out MMEB-eval set reaches the trainer's logs (its evaluator), and the callbacks
    given to main see them."""
    from datasets import Dataset

    rows = fixture["subsets"]["ToyT2I"]
    eval_dir = tmp_path / "heldout"
    eval_dir.mkdir()
    Dataset.from_list(
        [
            {"qry_text": row["qry"], "qry_img_path": "", "tgt_text": [row["pos_text"]] * 2,
             "tgt_img_path": [row["pos_image_path"], row["neg_image_path"]]}
            for row in rows
        ]
    ).to_parquet(str(eval_dir / "ToyT2I.parquet"))  # fmt: skip
    arguments = _overrides(fixture, tmp_path / "out", max_steps=2, eval_data=eval_dir, eval_every_n_steps=1)
    class Recorder(TrainerCallback):
        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    recorder = Recorder()
    trainer = main([TINY, *arguments, "--eval_image_root", str(fixture["image_root"])], callbacks=[recorder])
    logged = [entry["eval_ToyT2I_p@1"] for entry in trainer.state.log_history if "eval_ToyT2I_p@1" in entry]
    assert len(logged) == 2 and all(0.0 <= value <= 1.0 for value in logged)
    assert [entry["eval_ToyT2I_p@1"] for entry in recorder.logs if "eval_ToyT2I_p@1" in entry] == logged


# ------------------------------------------------------------------------------------------------------------------
# the presets at full scale, on the meta device (no weights)


def _save_onevision_0_5b_architecture(path: Path) -> None:
    """llava-onevision-qwen2-0.5b-ov-hf's architecture as on the Hub (config and image processor, no weights):
    Qwen2-0.5B, SigLIP-so400m (26 layers, 384-px tiles of 27x27 patches) and transformers' default anyres grids of
    up to 6x6 tiles. Its tokenizer here is the tiny one: token counts of the text differ from Qwen's."""
    tokenizer = tiny_tokenizer()
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16, image_size=384,
        patch_size=14, vision_use_head=False,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
    )  # fmt: skip
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        architectures=["LlavaOnevisionForConditionalGeneration"],
    )
    assert len(config.image_grid_pinpoints) == 36  # up to 6x6 tiles
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    LlavaOnevisionImageProcessorPil(image_grid_pinpoints=config.image_grid_pinpoints).save_pretrained(path)


# Image tokens of LLaVA-OneVision per image (height x width): the checkpoints' 6x6 grids, and LLaVE's 2x2
ANYRES_TOKENS = {
    (480, 640): (2929, 2929), (1024, 1024): (7371, 3699), (2000, 1500): (7332, 2943), (3000, 800): (8019, 1593)
}  # fmt: skip


def _image_tokens(processor) -> list[int]:
    images = [Image.new("RGB", (width, height)) for height, width in ANYRES_TOKENS]
    outputs = [processor.image_processor([image], return_tensors="pt") for image in images]
    return [processor.family.count_image_tokens(processor, output) for output in outputs]


@pytest.mark.parametrize("preset", ["llave-0.5b", "llave-2b", "llave-7b"])
def test_presets_tile_images_as_the_released_recipe(tmp_path, preset):
    """'(1x1),...,(2x2)': grids of at most 2x2 tiles of 384 px, in the config the model reads and the image processor
    that tiles and counts tokens, whatever the backbone carries."""
    _save_onevision_0_5b_architecture(tmp_path / "backbone")
    model_args, data_args, training_args = parse_args([str(PRESETS / f"{preset}.yaml")])
    assert model_args.image_grid_pinpoints == "(1x1),...,(2x2)"
    source = dataclasses.replace(model_args, model_name_or_path=None, backbone_name_or_path=str(tmp_path / "backbone"))
    model, processor = load_model_and_processor(source, training_args, data_args.max_length, empty_weights=True)
    assert model.device.type == "meta"
    grids = [[384, 384], [768, 384], [384, 768], [768, 768]]
    assert processor.image_processor.image_grid_pinpoints == grids
    assert model.config.backbone_config.image_grid_pinpoints == model.backbone.config.image_grid_pinpoints == grids
    assert [count for [count] in _image_tokens(processor)] == [released for _, released in ANYRES_TOKENS.values()]
    if preset == "llave-0.5b":  # the backbone's own tiling, for contrast
        default = load_model_and_processor(
            dataclasses.replace(source, image_grid_pinpoints=None), training_args, 4096, empty_weights=True
        )[1]
        assert [count for [count] in _image_tokens(default)] == [six for six, _ in ANYRES_TOKENS.values()]


def test_dry_run_plans_the_tiny_preset_without_training(fixture, tmp_path):
    output_dir = tmp_path / "out"
    arguments = _overrides(fixture, output_dir, per_device_train_batch_size=4, num_train_epochs=2)
    plan = main([TINY, *arguments, "--max_steps", "-1", "--dry_run", "--dry_run_num_processes", "2"])
    assert not output_dir.exists()  # nothing trained, nothing saved
    assert plan.rows_per_subset == {"ToyI2T": 8, "ToyT2I": 8}
    # 16 rows in steps of 4 per device x 2 processes, no accumulation, 2 epochs; each query sees 4 x 2 targets
    assert (plan.steps_per_epoch, plan.optimizer_steps, plan.candidates_per_loss) == (2, 4, 8)
    model, processor = tiny_model_and_processor("llava_onevision", seed=42)
    tower = sum(p.numel() for p in model.backbone.vision_tower.parameters())
    assert (plan.frozen_parameters, plan.trainable_parameters) == (tower, model.num_parameters() - tower)
    # the prompt lengths from image headers are those of the processed batch (every row: the sample is the data)
    rows = load_mmeb_train(fixture["data"])
    batch = ContrastiveCollator(processor, image_root=fixture["image_root"])(list(rows))
    assert sorted(plan.sample.lengths) == sorted(batch.inputs["attention_mask"].sum(dim=1).tolist())
    trainable = model.num_parameters() - tower
    assert plan.zero_stage == 0 and plan.memory_per_gpu == {"DDP (float32 weights, AdamW)": 4 * tower + 16 * trainable}


def test_dry_run_plans_the_full_0_5b_architecture_on_the_meta_device(fixture, tmp_path, capsys):
    """The 0.5B preset on 8 GPUs with LLaVA-OneVision-0.5B's full architecture, built without weights."""
    _save_onevision_0_5b_architecture(tmp_path / "backbone")
    preset = _preset_with(tmp_path, **{
        **yaml.safe_load((PRESETS / "llave-0.5b.yaml").read_text()), "backbone_name_or_path": str(tmp_path / "backbone"),
        "log_level": "warning",
    })  # fmt: skip
    arguments = ["--train_data", fixture["data"], "--image_root", fixture["image_root"], "--output_dir", tmp_path]
    plan = main([preset, *map(str, arguments), "--dry_run", "--dry_run_num_processes", "8"])
    # SigLIP-so400m without its last layer (26 layers), counted by hand: frozen
    width, mlp, layers, patch = 1152, 4304, 26, 14
    tower = 3 * patch * patch * width + width + 729 * width + 2 * width
    tower += layers * (4 * (width * width + width) + 4 * width + 2 * width * mlp + mlp + width)
    # Qwen2-0.5B (tied embeddings, 2 key/value heads of 64), the projector and image_newline: trained
    hidden, kv, ffn, vocab = 896, 128, 4864, 151936
    layer = 2 * hidden * hidden + hidden + 2 * (hidden * kv + kv) + 3 * hidden * ffn + 2 * hidden
    language = vocab * hidden + 24 * layer
    trained = language + hidden + (width * hidden + hidden + hidden * hidden + hidden) + hidden
    assert (plan.frozen_parameters, plan.trainable_parameters) == (tower, trained) == (397_747_744, 495_870_464)
    assert plan.largest_layer_parameters == vocab * hidden  # the embeddings: ZeRO-3 gathers them whole
    assert plan.zero_stage == 3 and plan.candidates_per_loss == 32  # 4 per device x 8 GPUs
    assert plan.per_device_batch * plan.num_processes * plan.accumulation_steps == 256
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    expected = estimate_zero3_model_states_mem_needs(tower + trained, vocab * hidden, 8, 1, cpu_offload=False)[1]
    assert plan.memory_per_gpu["ZeRO-3"] == expected == 4 * vocab * hidden + 18 * (tower + trained) // 8
    printed = capsys.readouterr().out
    assert "Optimizer steps" in printed and "trainable 495,870,464, frozen 397,747,744" in printed
    # the fixture's 32-px images are upscaled to one 384-px tile: base view, tile and newlines, 1,485 image tokens
    assert max(plan.sample.lengths) == 1485 + 30 and plan.sample.too_long_rows == 0  # + template and text: 30


# ------------------------------------------------------------------------------------------------------------------
# the data summary: prompt lengths from image headers


def test_rows_over_max_length_are_counted_from_image_headers_like_the_collator_sees_them(fixture, monkeypatch, caplog):
    images = fixture["image_root"] / "images"
    draw("red", "square", size=64).save(images / "red_square.png")  # a 2x2 grid of 32-px tiles: more image tokens
    (images / "green_circle.png").unlink()  # a row's query, another row's target
    rows = list(load_mmeb_train(fixture["data"]))
    processor = tiny_processor("llava_onevision")
    # the 64-px image's template and image tokens exceed it; the other images' prompts exceed it only with their text
    processor.max_length = 60
    expected = Counter()
    for row in rows:  # the reference: what the collator does with each row
        caplog.clear()
        try:
            with caplog.at_level("WARNING"):
                ContrastiveCollator(processor, image_root=fixture["image_root"])([row])
        except FileNotFoundError:
            expected["unreadable"] += 1
        except ValueError as error:
            assert "template and image tokens alone" in str(error)
            expected["too_long"] += 1
        else:
            expected["truncated"] += "text truncated" in caplog.text
    assert expected == {"unreadable": 2, "too_long": 2, "truncated": 12}

    # header reads only: decoding any pixels fails the test
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("pixels decoded"))
    summary = prompt_length_summary(processor, load_mmeb_train(fixture["data"]), fixture["image_root"], chunk_rows=5)
    found = {"unreadable": summary.unreadable_rows, "too_long": summary.too_long_rows}
    assert {**found, "truncated": summary.truncated_rows} == dict(expected)
    assert summary.rows == 16 and len(summary.lengths) == 2 * (16 - 2)


def test_the_data_summary_never_opens_images_outside_the_image_root(tmp_path, monkeypatch):
    """A path the collator refuses (leading out of the image root, or absolute) makes its row unreadable in the summary
    too, and its file is never opened; with allow_absolute_image_paths both are read, as the collator would."""
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    draw("red", "square").save(root / "images" / "inside.png")
    draw("blue", "circle").save(tmp_path / "outside.png")
    row = {"qry": "<|image_1|> a query", "pos_text": "a target", "pos_image_path": ""}
    rows = [
        {**row, "qry_image_path": "images/inside.png"},
        {**row, "qry_image_path": "../outside.png"},
        {**row, "qry_image_path": str(tmp_path / "outside.png")},
    ]
    opened = []
    image_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *args: opened.append(os.path.basename(path)) or image_open(path))
    processor = tiny_processor("llava_onevision")
    summary = prompt_length_summary(processor, rows, root)
    assert (summary.unreadable_rows, len(summary.lengths), opened) == (2, 2, ["inside.png"])
    trusted = prompt_length_summary(processor, rows, root, allow_absolute_image_paths=True)
    assert (trusted.unreadable_rows, len(trusted.lengths)) == (0, 6)
