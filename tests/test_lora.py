"""LoRA through PEFT: which modules train, GradCache and two processes give the gradients of one plain step, resume
is exact, and merged and adapter saves load with `AutoModel`."""

import os
from pathlib import Path

import pytest
import torch
from torchrun import torchrun
import yaml
from mmeb_fixtures import make_mmeb_fixture
from safetensors.torch import load_file
from trainer_fixtures import TinyCollator, rows, tiny_training_args
from transformers import AutoModel

from llave_hf import LlaveEmbeddingModel
from llave_hf.cli.train import main
from llave_hf.grad_cache import grad_cache_backward
from llave_hf.loss import hardness_weighted_contrastive_loss
from llave_hf.lora import LoraArguments, apply_lora
from llave_hf.testing import tiny_model_and_processor
from llave_hf.trainer import ContrastiveTrainer


ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "training_args" / "tiny-cpu.yaml")
WORKER = os.path.join(os.path.dirname(__file__), "distributed_workers", "trainer_worker.py")


def lora_model(model, rank: int = 4, **settings):
    """`model` with LoRA adapters (no dropout) whose B matrices are random, not zero: gradients then reach A too."""
    peft_model = apply_lora(model, LoraArguments(lora_r=rank, lora_dropout=0.0, **settings))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return peft_model


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl"])
def test_adapters_on_language_model_projections_projector_in_full(family):
    model, _ = tiny_model_and_processor(family, seed=0)
    tower = f".backbone.{model.backbone_family.vision_tower}."
    names = list(_trainable(lora_model(model)))
    lora = [name for name in names if ".lora_" in name]
    assert lora and all(tower not in name for name in lora)
    for projection in ("q_proj", "v_proj", "down_proj"):
        assert any(f".{projection}.lora_A." in name for name in lora), projection
    projector = [name for name in names if ".lora_" not in name]
    assert projector and all(".modules_to_save." in name for name in projector)

    model, _ = tiny_model_and_processor(family, seed=0)
    names = list(_trainable(lora_model(model, lora_target_modules=["q_proj"], lora_train_projector=False)))
    assert names and all(".q_proj.lora_" in name for name in names)
    with pytest.raises(ValueError, match="nothing would get an adapter"):
        lora_model(tiny_model_and_processor(family, seed=0)[0], lora_target_modules=["no_such_layer"])


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl"])
def test_grad_cache_with_lora_equals_one_uncached_step(family):
    model, processor = tiny_model_and_processor(family, seed=0)
    model = lora_model(model)
    model.train()
    inputs = TinyCollator(processor)(rows(6, negatives=1)).inputs

    def loss_fn(embeddings):
        hard = embeddings[12:].view(6, 1, -1)
        return hardness_weighted_contrastive_loss(embeddings[:6], embeddings[6:12], hard_negatives=hard).loss

    loss_fn(model(**inputs).embeddings).backward()
    expected = {name: parameter.grad.clone() for name, parameter in _trainable(model).items()}
    assert all(gradient.abs().sum() > 0 for gradient in expected.values())  # A, B and the projector all learn
    model.zero_grad()
    config = model.get_base_model().config.backbone_config
    grad_cache_backward(model, inputs, 4, loss_fn, torch.Tensor.backward, backbone_config=config)
    for name, parameter in _trainable(model).items():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_lora(tmp_path):
    """SGD (not Adam, which would hide a gradient scaled by the number of processes), with and without GradCache."""
    torchrun(WORKER, tmp_path, "ddp:llava_onevision:3:0:0:4", "gc:llava_onevision:3:2:0:4")

    model, processor = tiny_model_and_processor("llava_onevision", seed=0)
    model = lora_model(model)
    initial = {name: value.detach().clone() for name, value in _trainable(model).items()}
    args = tiny_training_args(str(tmp_path / "one"), per_device_train_batch_size=6, optim="sgd")
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=rows(6 * args.max_steps, negatives=1),
        data_collator=TinyCollator(processor),
        processing_class=processor,
    )
    trainer.train()
    one = {name: value.detach() for name, value in trainer.model.state_dict().items()}
    assert any(not torch.allclose(one[name], value, atol=1e-6) for name, value in initial.items()), "vacuous"
    for run in ("ddp", "gc"):
        two = torch.load(tmp_path / f"{run}.pt")["params"]
        assert two.keys() == one.keys()
        for name, value in one.items():
            torch.testing.assert_close(two[name], value, rtol=0, atol=1e-5, msg=f"{run}: {name}")


def _overrides(fixture, output_dir, **values) -> list[str]:
    values = {
        "train_data": fixture["data"],
        "image_root": fixture["image_root"],
        "output_dir": output_dir,
        "per_device_train_batch_size": 4,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "learning_rate": 0.05,
        "optim": "sgd",
        "lora_r": 4,
        "lora_dropout": 0.0,
        "save_strategy": "steps",
        "save_steps": 2,
        **values,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def test_lora_resume_is_exact_and_merged_and_adapter_saves_load(tmp_path):
    fixture = make_mmeb_fixture(tmp_path / "mmeb", num_colours=4)
    texts = ["a red square", "<|image_1|> Represent the given image."]
    images = [None, str(fixture["image_root"] / "images" / "red_square.png")]

    # merged (the default): interrupted at step 2 and resumed equals uninterrupted
    full = main([TINY, *_overrides(fixture, tmp_path / "full", max_steps=4)])
    main([TINY, *_overrides(fixture, tmp_path / "split", max_steps=2)])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(tmp_path / "split" / "checkpoint-2"))
    resume = tmp_path / "split" / "checkpoint-2"
    main([TINY, *_overrides(fixture, tmp_path / "split", max_steps=4, resume_from_checkpoint=resume)])
    merged_full = load_file(tmp_path / "full" / "model.safetensors")
    merged_split = load_file(tmp_path / "split" / "model.safetensors")
    initial = tiny_model_and_processor("llava_onevision", seed=42)[0].state_dict()
    moved = [name for name, value in initial.items() if not torch.allclose(value, full.model.state_dict()[name])]
    assert moved, "training changed nothing: the comparison would be vacuous"
    assert merged_split.keys() == merged_full.keys()
    for name, value in merged_full.items():
        torch.testing.assert_close(merged_split[name], value, rtol=0, atol=1e-6, msg=name)
    assert not (tmp_path / "full" / "adapter_config.json").exists()
    loaded = AutoModel.from_pretrained(tmp_path / "full")
    assert isinstance(loaded, LlaveEmbeddingModel) and not hasattr(loaded, "peft_config")
    torch.testing.assert_close(loaded.encode(texts=texts, images=images), full.model.eval().encode(texts=texts, images=images))

    # adapter files on top of a LLaVE checkpoint
    preset = {key: value for key, value in yaml.safe_load(Path(TINY).read_text()).items() if key != "tiny_backbone"}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**preset, "model_name_or_path": str(tmp_path / "full")}))
    adapter = main([str(tmp_path / "base.yaml"), *_overrides(fixture, tmp_path / "adapter", max_steps=2, lora_save="adapter")])
    files = set(os.listdir(tmp_path / "adapter"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    loaded = AutoModel.from_pretrained(tmp_path / "adapter")
    assert isinstance(loaded, LlaveEmbeddingModel) and hasattr(loaded, "peft_config")
    trained = adapter.accelerator.unwrap_model(adapter.model).eval()
    torch.testing.assert_close(loaded.encode(texts=texts, images=images), trained.encode(texts=texts, images=images))
    with pytest.raises(ValueError, match="--lora_save adapter needs --model_name_or_path"):
        main([TINY, *_overrides(fixture, tmp_path / "bad", max_steps=1, lora_save="adapter")])
