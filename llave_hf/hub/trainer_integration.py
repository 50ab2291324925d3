# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Publishing from a `Trainer`: `HubPublishMixin` makes every push carry our card and files,
`TokenRedactingArgumentsMixin` keeps `--hub_token` out of the pickled arguments, and `training_settings` is the
card's training table."""

import dataclasses
import json
import os
import pickle
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainingArguments
from transformers.integrations import is_deepspeed_zero3_enabled

from .model_card import final_training_diagnostics, render_model_card, training_data_summary, widget_examples
from .publish import write_hub_files


def _deepspeed_setting(deepspeed) -> str | bool:
    """The ZeRO stage of a DeepSpeed config (dict or JSON file), else the file's base name: cards are public, and a
    local path may tell about the machine it ran on."""
    if not deepspeed:
        return False
    config = deepspeed
    if isinstance(deepspeed, str):
        try:
            with open(deepspeed, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError):
            config = None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    if stage is not None:
        return f"ZeRO-{stage}"
    return os.path.basename(deepspeed) if isinstance(deepspeed, str) else True


def training_settings(args: TrainingArguments) -> dict[str, Any]:
    """The settings of a run worth a model card: optimisation, batch and precision, plus every field a
    `TrainingArguments` subclass adds (the loss settings of `ContrastiveTrainingArguments`). Never a token."""
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    settings = {
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "optim": str(getattr(args.optim, "value", args.optim)),
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": args.world_size,
        "total_train_batch_size": effective_batch,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "tf32": args.tf32,
        "gradient_checkpointing": args.gradient_checkpointing,
        "deepspeed": _deepspeed_setting(args.deepspeed),
        "seed": args.seed,
    }
    base_fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    settings.update(
        (field.name, getattr(args, field.name))
        for field in dataclasses.fields(args)
        if field.name not in base_fields and not field.name.endswith("_token")
    )
    return settings


class TokenRedactingArgumentsMixin:
    """Mixin for `TrainingArguments` subclasses (`class Args(TokenRedactingArgumentsMixin, TrainingArguments)`):
    pickles carry no `*_token` value.

    The Trainer saves `torch.save(args)` as `training_args.bin` in every checkpoint and in the folder it pushes, so a
    `--hub_token` would land on the Hub; `to_dict` and `__str__` already hide tokens, pickling did not.
    """

    def __getstate__(self):
        return {key: None if key.endswith("_token") else value for key, value in self.__dict__.items()}


class HubPublishMixin:
    """Mixin for `Trainer` subclasses (`class MyTrainer(HubPublishMixin, Trainer)`): with `--push_to_hub`, every push
    (at the end and on each save) carries our model card, the current modeling files, `handler.py` and
    `requirements.txt` beside the weights, config and processor the Trainer pushes.

    The Trainer's `push_to_hub` writes its own card right before uploading: `create_model_card` writes ours instead.
    Its mid-training pushes copy only config and weights into `output_dir`: a callback on `on_push_begin` writes the
    rest there first. `processing_class` must be the `LlaveProcessor` (the Trainer saves it beside the weights).

    Args (keyword, besides the Trainer's):
        hub_card_kwargs (`dict`, *optional*): `LlaveModelCardData` fields (`base_model`, `datasets`, `license`,
            `eval_results`, ...); `create_model_card`'s arguments override them.
    """

    def __init__(self, *args, hub_card_kwargs: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub_card_kwargs = dict(hub_card_kwargs or {})
        if self.args.hub_token is not None and pickle.loads(pickle.dumps(self.args)).hub_token is not None:
            raise ValueError(
                "hub_token would be saved in training_args.bin and pushed to the Hub. Log in instead (`hf auth login` "
                "or the HF_TOKEN environment variable), or make the arguments class a TokenRedactingArgumentsMixin."
            )
        self.add_callback(_HubFilesCallback(self))

    def hub_training_settings(self) -> dict[str, Any]:
        """The card's training table; override to add settings that are not `TrainingArguments` fields."""
        return training_settings(self.args)

    def prepare_hub_files(self, **card_overrides: Any) -> None:
        """Writes the card, modeling files, handler and requirements into `args.output_dir` (main process only)."""
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        lora = None
        if hasattr(model, "get_base_model"):  # a PEFT model: the card and code are the base model's
            peft_config = model.peft_config[model.active_adapter]
            lora = {
                name: str(getattr(peft_config, name))
                for name in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")
            }
            model = model.get_base_model()
        card_data = {
            "repo_id": self.hub_model_id or self.args.hub_model_id,
            "lora": lora,
            "training_data": training_data_summary(self.train_dataset),
            "training_diagnostics": final_training_diagnostics(self.state.log_history),
            **self.hub_card_kwargs,
            **card_overrides,
        }
        if "widget" not in card_data:
            # One process alone cannot run a forward pass over parameters sharded across processes.
            sharded = is_deepspeed_zero3_enabled() or self.is_fsdp_enabled
            card_data["widget"] = None if sharded else widget_examples(model, self.processing_class)
        card = render_model_card(model, training_args=self.hub_training_settings(), **card_data)
        write_hub_files(self.args.output_dir, model, card, prompts=card_data.get("prompts"))

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Writes our card (not the Trainer's generic one) and the files that go with it into `args.output_dir`."""
        overrides = {
            "language": language,
            "license": license,
            "tags": [tags] if isinstance(tags, str) else tags,
            "model_name": model_name,
            "base_model": finetuned_from,
            "datasets": dataset,
        }
        self.prepare_hub_files(**{key: value for key, value in overrides.items() if value is not None})


class _HubFilesCallback(TrainerCallback):
    """Before every push (`Trainer.push_to_hub` and the mid-training `_push_from_checkpoint`), writes our files."""

    def __init__(self, trainer: HubPublishMixin):
        self.trainer = trainer

    def on_push_begin(self, args, state, control, **kwargs):
        self.trainer.prepare_hub_files()
