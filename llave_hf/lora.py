# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""LoRA fine-tuning of LLaVE embedding models through PEFT: which modules get adapters, and how a run is saved.

By default the adapters go on the language model's attention and MLP projections (never the vision tower, which
LLaVE keeps frozen) and the vision-to-language projector is trained in full (PEFT's `modules_to_save`), as the full
recipe trains it. A run is saved either merged (a plain `LlaveEmbeddingModel` folder) or as adapter files on top of
the LLaVE checkpoint it started from; both load with `AutoModel.from_pretrained` (the adapter needs `peft`).
"""

import re
from dataclasses import dataclass, field
from enum import Enum

from transformers.utils import logging


logger = logging.get_logger(__name__)

# The projections of the Qwen2/Qwen2.5 language models of every supported family.
LANGUAGE_MODEL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSave(str, Enum):
    MERGED = "merged"
    ADAPTER = "adapter"

    def __str__(self) -> str:
        return self.value


@dataclass
class LoraArguments:
    """LoRA settings of `train.py` (`lora_r: 0`, the default, trains the full model)."""

    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = full fine-tuning (no LoRA)."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scaling α (default: 2 × lora_r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Names of the language-model linear layers that get adapters (default: "
            f"{' '.join(LANGUAGE_MODEL_PROJECTIONS)}). The vision tower never does."
        },
    )
    lora_train_projector: bool = field(
        default=True, metadata={"help": "Train the vision-to-language projector in full, as the full recipe does."}
    )
    lora_save: LoraSave = field(
        default=LoraSave.MERGED,
        metadata={
            "help": "'merged': the final model is a plain LlaveEmbeddingModel folder. 'adapter': adapter files on "
            "top of --model_name_or_path (a LLaVE checkpoint), with our card and code."
        },
    )

    def __post_init__(self):
        self.lora_save = LoraSave(self.lora_save)
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_r and self.lora_alpha is None:
            self.lora_alpha = 2.0 * self.lora_r

    @property
    def lora_enabled(self) -> bool:
        return self.lora_r > 0


def lora_target_pattern(model, names: list[str] | tuple[str, ...] = LANGUAGE_MODEL_PROJECTIONS) -> str:
    """A PEFT `target_modules` regex (matched against full module names): linear layers called `names` anywhere in
    the backbone except inside the vision tower."""
    tower = model.backbone_family.vision_tower
    outside_tower = rf"(?!backbone\.{re.escape(tower)}\.)" if tower else ""
    return rf"^{outside_tower}.*\.({'|'.join(re.escape(name) for name in names)})$"


def apply_lora(model, args: LoraArguments):
    """Wraps `model` (a `LlaveEmbeddingModel`) into a `peft.PeftModel` with LoRA adapters as `args` says; every other
    parameter is frozen except the projector's with `lora_train_projector`."""
    from peft import LoraConfig, get_peft_model

    names = tuple(args.lora_target_modules or LANGUAGE_MODEL_PROJECTIONS)
    pattern = lora_target_pattern(model, names)
    if not any(re.match(pattern, name) for name, _ in model.named_modules()):
        raise ValueError(f"No language-model module is called any of {list(names)}: nothing would get an adapter.")
    projector = [f"backbone.{path}" for path in model.backbone_family.projector] if args.lora_train_projector else []
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=pattern,
        modules_to_save=projector or None,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in peft_model.parameters())
    logger.info(f"LoRA r={args.lora_r}: {trainable:,} trainable parameters of {total:,}.")
    return peft_model


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
