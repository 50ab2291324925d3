# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`ContrastiveTrainingArguments`: the arguments of `llave_hf.trainer.ContrastiveTrainer`."""

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .hub import TokenRedactingArgumentsMixin
from .loss import HardnessNormalization


__all__ = ["ContrastiveTrainingArguments"]


@dataclass
class ContrastiveTrainingArguments(TokenRedactingArgumentsMixin, TrainingArguments):
    r"""
    `TrainingArguments` plus LLaVE's loss and what the released training code lacks. The defaults are the released
    recipe (`llave_hf.loss.hardness_weighted_contrastive_loss` documents the loss).

    Parameters:
        > Loss

        loss_alpha (`float`, defaults to `9.0`):
            Hardness strength α: negative j of query i is weighted by `exp(α · stopgrad(s_ij))`. 0 gives InfoNCE.
            Must be >= 0: a negative α would weight the hardest negatives least, the opposite of LLaVE (a sign slip
            that trains without any other symptom); `hardness_weighted_contrastive_loss` still takes one.
        loss_alpha_warmup_steps (`int`, defaults to `0`):
            Ramp α linearly from 0 to `loss_alpha` over the first N optimizer steps: the optimizer step that starts
            after `global_step` completed ones trains with `loss_alpha · min(1, global_step / N)`, i.e. step 1 with 0,
            step k with `loss_alpha · (k-1)/N`, step N+1 onwards with `loss_alpha` (the convention of the learning
            rate's linear warm-up). Derived from `global_step`, so a resumed run uses the same α per step. Logged as
            `loss_alpha`. Evaluation always uses `loss_alpha`. 0 = off.
        loss_temperature (`float`, defaults to `0.02`):
            Softmax temperature τ (logit scale 1/τ), fixed.
        loss_symmetric (`bool`, defaults to `True`):
            Average the query→target and target→query losses (released code); `False` is the paper's query→target
            loss.
        loss_gather_across_devices (`bool`, defaults to `True`):
            Score each process's queries against the targets of every process (differentiable all-gather). No-op in
            a single process.
        loss_mask_false_negatives (`bool`, defaults to `False`):
            Exclude candidates whose content equals the positive (e.g. a class label "Yes" repeated in a batch),
            by the batch's content ids. The released code masks nothing.
        loss_hardness_normalization (`HardnessNormalization` or `str`, defaults to `"none"`):
            `"none"` (released): raw weights. `"mean"`: weights normalised to mean 1 over each row's negatives,
            which removes the unnormalised form's degenerate minimum (a risk when training from random
            initialisation).

        matryoshka_dims (`list[int]`, *optional*):
            Matryoshka training: the loss is summed over the embeddings truncated to each of these dimensions (and
            re-normalised), e.g. `[1536, 512, 256, 64]`, so that `encode(truncate_dim=d)` works for each. The
            saved config records them (`matryoshka_dims`), and the model card shows them.
        matryoshka_weights (`list[float]`, *optional*):
            One weight per Matryoshka dimension (default: all 1).

        > Training

        grad_cache_chunk_size (`int`, defaults to `0`):
            GradCache: encode each batch in chunks of this many rows, so the batch (and the negatives each query
            sees) can exceed what fits in memory; 0 = off. DDP only, not DeepSpeed.
        freeze_vision_tower (`bool`, defaults to `True`):
            Freeze the vision encoder (not the projector), as LLaVE does.
        collapse_gap_threshold (`float`, defaults to `1e-3`):
            Warn of collapsed embeddings when the logged positive cosine exceeds 0.9 and the gap to the hardest
            negative is below this.

        > Changed defaults

        remove_unused_columns (`bool`, defaults to `False`):
            The Trainer would drop the dataset columns that the model's `forward` does not take (all of the raw
            MMEB-train columns) before the collator sees them.
        dataloader_drop_last (`bool`, defaults to `True`):
            An uneven last batch would be padded with repeats of the first rows (false negatives once gathered) or
            hang the gather.
        ddp_find_unused_parameters (`bool`, defaults to `True`):
            A text-only batch leaves the projector (and a frozen tower's unused layers) without gradients.
        activation_checkpointing_kwargs (`dict`, defaults to `{"use_reentrant": False}` with activation
            checkpointing): reentrant checkpointing breaks with `find_unused_parameters` and with frozen inputs.

    Pickled copies (`training_args.bin`, pushed with checkpoints) carry no `hub_token`. The batches must not be split or
    dispatched by accelerate (`accelerator_config`'s `split_batches`, `dispatch_batches`): slicing a batch's rows
    would break its query/target/negative layout (`llave_hf.collator.ContrastiveBatch`).
    """

    loss_alpha: float = field(
        default=9.0,
        metadata={"help": "Hardness weight α >= 0: each negative's logit gets + α·stopgrad(s). 0 = InfoNCE."},
    )
    loss_alpha_warmup_steps: int = field(
        default=0, metadata={"help": "Ramp α linearly from 0 to loss_alpha over this many optimizer steps (0 = off)."}
    )
    loss_temperature: float = field(default=0.02, metadata={"help": "Softmax temperature τ (logit scale 1/τ)."})
    loss_symmetric: bool = field(
        default=True, metadata={"help": "Average query→target and target→query (released); False: the paper's one."}
    )
    loss_gather_across_devices: bool = field(
        default=True, metadata={"help": "Use every process's embeddings as negatives (differentiable all-gather)."}
    )
    loss_mask_false_negatives: bool = field(
        default=False,
        metadata={"help": "Exclude candidates whose content equals the positive (e.g. repeated class labels)."},
    )
    loss_hardness_normalization: HardnessNormalization | str = field(
        default=HardnessNormalization.NONE,
        metadata={
            "help": "'none' (released) or 'mean': weights normalised to mean 1 over each row's negatives, which "
            "removes the unnormalised form's degenerate minimum."
        },
    )
    matryoshka_dims: list[int] | None = field(
        default=None, metadata={"help": "Also train the embeddings truncated to these dimensions (Matryoshka)."}
    )
    matryoshka_weights: list[float] | None = field(
        default=None, metadata={"help": "One loss weight per Matryoshka dimension (default: all 1)."}
    )
    grad_cache_chunk_size: int = field(
        default=0, metadata={"help": "GradCache: encode in chunks of this many rows (0 = off). Not with DeepSpeed."}
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder (LLaVE does)."})
    collapse_gap_threshold: float = field(
        default=1e-3,
        metadata={"help": "Warn of collapse when positives and hardest negatives are this close and all alike."},
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False: the collator reads raw columns."})
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete batch."})

    def __post_init__(self):
        super().__post_init__()
        try:
            self.loss_hardness_normalization = HardnessNormalization(self.loss_hardness_normalization)
        except ValueError:
            choices = ", ".join(repr(member.value) for member in HardnessNormalization)
            raise ValueError(
                f"loss_hardness_normalization must be one of {choices}, got {self.loss_hardness_normalization!r}."
            ) from None
        if not (math.isfinite(self.loss_alpha) and self.loss_alpha >= 0):
            raise ValueError(
                f"loss_alpha must be a finite number >= 0, got {self.loss_alpha}. A negative α weights each negative "
                "by exp(α·s), largest for the least similar ones: the hardest negatives would count least, the "
                "opposite of LLaVE's hardness weighting. (hardness_weighted_contrastive_loss accepts it for "
                "experiments.)"
            )
        if self.loss_alpha_warmup_steps < 0:
            raise ValueError(f"loss_alpha_warmup_steps must be >= 0, got {self.loss_alpha_warmup_steps}.")
        if self.loss_temperature <= 0:
            raise ValueError(f"loss_temperature must be positive, got {self.loss_temperature}.")
        if self.matryoshka_dims is not None:
            if not self.matryoshka_dims or any(dim < 1 for dim in self.matryoshka_dims):
                raise ValueError(f"matryoshka_dims must be positive dimensions, got {self.matryoshka_dims}.")
            if len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
                raise ValueError(f"matryoshka_dims repeats a dimension: {self.matryoshka_dims}.")
        if self.matryoshka_weights is not None and len(self.matryoshka_weights) != len(self.matryoshka_dims or ()):
            raise ValueError(
                f"matryoshka_weights needs one weight per matryoshka_dims entry, got {self.matryoshka_weights} for "
                f"{self.matryoshka_dims}."
            )
        if self.grad_cache_chunk_size < 0:
            raise ValueError(f"grad_cache_chunk_size must be >= 0, got {self.grad_cache_chunk_size}.")
        if self.grad_cache_chunk_size and self.deepspeed:
            raise ValueError(
                "GradCache (grad_cache_chunk_size > 0) does not run under DeepSpeed: its engine steps on every "
                "backward and ZeRO partitions the gradients that GradCache accumulates chunk by chunk. Use DDP "
                "(optionally with gradient checkpointing) for GradCache, or DeepSpeed without it."
            )
        accelerator = self.accelerator_config
        if accelerator.split_batches or accelerator.dispatch_batches:
            raise ValueError(
                "accelerator_config split_batches and dispatch_batches must stay off: accelerate would slice a "
                "contrastive batch's rows and break its query/target/negative layout."
            )
        # accelerate would dispatch the batches of an IterableDataset by default
        accelerator.dispatch_batches = False
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
        if self.activation_checkpointing and self.activation_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
            self.gradient_checkpointing_kwargs = self.activation_checkpointing_kwargs  # the deprecated alias mirrors it

    def loss_alpha_at(self, global_step: int) -> float:
        """The α of the optimizer step that starts after `global_step` completed steps (`loss_alpha_warmup_steps`)."""
        if not self.loss_alpha_warmup_steps:
            return self.loss_alpha
        return self.loss_alpha * min(1.0, global_step / self.loss_alpha_warmup_steps)
