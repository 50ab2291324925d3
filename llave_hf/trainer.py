"""`ContrastiveTrainer`: the `Trainer` that trains LLaVE embedding models with the hardness-weighted loss."""

from dataclasses import dataclass, field

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

from .grad_cache import grad_cache_backward
from .hub import HubPublishMixin, TokenRedactingArgumentsMixin
from .loss import hardness_weighted_contrastive_loss


logger = logging.get_logger(__name__)

DIAGNOSTICS = ("positive_cosine", "hardest_negative_cosine", "cosine_gap", "top1_accuracy", "mean_hardness_weight")


@dataclass
class ContrastiveTrainingArguments(TokenRedactingArgumentsMixin, TrainingArguments):
    """`TrainingArguments` plus the LLaVE loss and what the released code lacks (defaults: the released recipe).

    Pickled copies (`training_args.bin`, pushed with checkpoints) carry no `hub_token`.
    """

    loss_alpha: float = field(
        default=9.0, metadata={"help": "Hardness weight α: each negative's logit gets + α·stopgrad(s). 0 = InfoNCE."}
    )
    loss_temperature: float = field(default=0.02, metadata={"help": "Softmax temperature τ (logit scale 1/τ)."})
    symmetric_loss: bool = field(
        default=True, metadata={"help": "Average query→target and target→query (released); False: the paper's one."}
    )
    gather_across_devices: bool = field(
        default=True, metadata={"help": "Use every process's embeddings as negatives (differentiable all-gather)."}
    )
    mask_false_negatives: bool = field(
        default=False,
        metadata={"help": "Exclude candidates whose content equals the positive (e.g. repeated class labels)."},
    )
    hardness_normalization: str = field(
        default="none",
        metadata={
            "help": "'none' (released) or 'mean': weights normalised to mean 1 over each row's negatives, which "
            "removes the unnormalised form's degenerate minimum.",
            "choices": ["none", "mean"],
        },
    )
    grad_cache_chunk_size: int = field(
        default=0, metadata={"help": "GradCache: encode in chunks of this many rows (0 = off). Not with DeepSpeed."}
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder (LLaVE does)."})
    collapse_gap_threshold: float = field(
        default=1e-3,
        metadata={"help": "Warn of collapse when positives and hardest negatives are this close and all alike."},
    )
    # The collator needs the raw columns (LLAVE.md §6: Trainer drops them otherwise).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False: the collator reads raw columns."})
    # An uneven last batch would be padded with repeats of the first rows (false negatives once gathered) or hang.
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete batch."})

    def __post_init__(self):
        super().__post_init__()
        if self.hardness_normalization not in ("none", "mean"):
            raise ValueError(f"hardness_normalization must be 'none' or 'mean', got {self.hardness_normalization!r}.")
        if self.loss_temperature <= 0:
            raise ValueError(f"loss_temperature must be positive, got {self.loss_temperature}.")
        if self.grad_cache_chunk_size < 0:
            raise ValueError(f"grad_cache_chunk_size must be >= 0, got {self.grad_cache_chunk_size}.")
        if self.grad_cache_chunk_size and self.deepspeed:
            raise ValueError(
                "GradCache (grad_cache_chunk_size > 0) does not run under DeepSpeed: its engine steps on every "
                "backward and ZeRO partitions the gradients that GradCache accumulates chunk by chunk. Use DDP "
                "(optionally with gradient checkpointing) for GradCache, or DeepSpeed without it."
            )
        # A text-only batch leaves the projector (and a frozen tower's unused layers) without gradients.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
        if self.activation_checkpointing and self.activation_checkpointing_kwargs is None:
            # Reentrant checkpointing breaks with find_unused_parameters and with frozen inputs.
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
            self.gradient_checkpointing_kwargs = self.activation_checkpointing_kwargs  # the deprecated alias mirrors it


def freeze_vision_tower(model) -> int:
    """Freezes the vision encoder but not the projector; returns the number of frozen parameters."""
    backbone = model.backbone
    if hasattr(backbone, "vision_tower"):  # LLaVA, LLaVA-OneVision: the projector is a sibling module
        modules = [backbone.vision_tower]
    elif hasattr(backbone, "visual"):  # Qwen2-VL: the projector ("merger") lives inside `visual`
        modules = [module for name, module in backbone.visual.named_children() if name != "merger"]
    else:
        return 0
    frozen = 0
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


class ContrastiveTrainer(HubPublishMixin, Trainer):
    """`Trainer` whose loss is LLaVE's hardness-weighted contrastive loss.

    Batches come from `llave_hf.data.ContrastiveCollator`: queries, targets and hard negatives in one processor
    batch, encoded in ONE forward of the wrapped model (DDP forbids two per step), then gathered across processes and
    scored. With `grad_cache_chunk_size > 0` the step runs through GradCache. Logs the mean positive cosine, the mean
    hardest-negative cosine, their gap, in-batch top-1 accuracy and the mean hardness weight, and warns on collapse.
    With `--push_to_hub`, every push carries our model card, the modeling files and the inference handler
    (`HubPublishMixin`; `hub_card_kwargs=` feeds the card).
    """

    def __init__(self, *args, train_sampler=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ContrastiveTrainingArguments):
            raise TypeError("ContrastiveTrainer needs ContrastiveTrainingArguments.")
        if self.args.n_gpu > 1:
            # nn.DataParallel would split the rows and the images of a batch independently of each other.
            raise ValueError(
                f"{self.args.n_gpu} GPUs in one process: launch one process per GPU with `accelerate launch` or "
                "`torchrun` (the gather across devices needs it too)."
            )
        self.train_sampler = train_sampler
        if self.args.freeze_vision_tower:
            frozen = freeze_vision_tower(self.model)
            logger.info(f"Froze {frozen:,} vision-tower parameters.")
        # compute_loss returns a per-batch mean, so the Trainer must scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._diagnostic_sums = torch.zeros(len(DIAGNOSTICS) + 1, dtype=torch.float64)
        self._collapse_warned = False

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:  # e.g. llave_hf.data.ModalityLengthGroupedSampler
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    # --------------------------------------------------------------------------------------------------------------
    # checkpoints

    def _load_weights(self, checkpoint: str, model=None) -> None:
        # transformers 5 saves the backbone's weights under their legacy names (`save_pretrained` reverts its weight
        # conversions), which Trainer's non-strict `load_state_dict` silently skips: a resumed run would restart the
        # language model from scratch. `from_pretrained` renames them back; the load is strict.
        model = model if model is not None else self.model
        loaded = type(model).from_pretrained(checkpoint, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_weights(resume_from_checkpoint, model)

    def _load_best_model(self):
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_best_model()
        self._load_weights(self.state.best_model_checkpoint)

    # --------------------------------------------------------------------------------------------------------------
    # loss

    def _loss(self, embeddings: torch.Tensor, batch: dict) -> torch.Tensor:
        """The contrastive loss of one collator batch from its rows' embeddings (queries, targets, negatives)."""
        size, negatives = batch["num_queries"], batch["num_negatives"]
        query, target = embeddings[:size], embeddings[size : 2 * size]
        hard_negatives = embeddings[2 * size :].view(size, negatives, -1) if negatives else None
        mask = self.args.mask_false_negatives
        loss, diagnostics = hardness_weighted_contrastive_loss(
            query,
            target,
            alpha=self.args.loss_alpha,
            temperature=self.args.loss_temperature,
            symmetric=self.args.symmetric_loss,
            hard_negatives=hard_negatives,
            query_ids=batch["query_ids"] if mask else None,
            target_ids=batch["target_ids"] if mask else None,
            hard_negative_ids=batch.get("negative_ids") if mask and negatives else None,
            hardness_normalization=self.args.hardness_normalization,
            gather_across_devices=self.args.gather_across_devices and self.args.world_size > 1,
            return_diagnostics=True,
        )
        values = torch.stack([diagnostics[name].detach().double().cpu() for name in DIAGNOSTICS])
        if self.model.training and torch.isfinite(values).all():  # NaN when no row had a negative
            self._diagnostic_sums += torch.cat([values, values.new_ones(1)])
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        embeddings = model(**inputs["inputs"]).embeddings
        loss = self._loss(embeddings, inputs)
        return (loss, {"embeddings": embeddings}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.args.grad_cache_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError("GradCache does not run under DeepSpeed (see grad_cache_chunk_size).")
        model.train()
        inputs = self._prepare_inputs(inputs)
        steps = self.current_gradient_accumulation_steps
        backbone_config = self.accelerator.unwrap_model(model).config.backbone_config
        with self.compute_loss_context_manager():
            loss = grad_cache_backward(
                model,
                inputs["inputs"],
                self.args.grad_cache_chunk_size,
                loss_fn=lambda embeddings: self._loss(embeddings, inputs) / steps,
                backward=self.accelerator.backward,
                image_token_id=getattr(backbone_config, "image_token_id", None),
                no_sync=self.accelerator.no_sync,
                sync_last_chunk=self.accelerator.sync_gradients,
            )
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation loss without labels: the contrastive loss of the eval batch."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # --------------------------------------------------------------------------------------------------------------
    # logging

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the diagnostics averaged since the last one, over all processes
            sums = self._diagnostic_sums.to(self.args.device)
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            if sums[-1] > 0:  # steps whose rows all lacked negatives (NaN diagnostics) were not counted
                means = (sums[:-1] / sums[-1]).tolist()
                logs.update({name: round(value, 4) for name, value in zip(DIAGNOSTICS, means)})
                positive, gap = logs["positive_cosine"], logs["cosine_gap"]
                collapsed = abs(gap) < self.args.collapse_gap_threshold and abs(positive) > 0.9
                logs["collapse"] = float(collapsed)
                if collapsed and not self._collapse_warned:
                    logger.warning(
                        f"Embeddings look collapsed at step {self.state.global_step}: positive cosine {positive:.3f},"
                        f" gap to the hardest negative {gap:.4f}. With the unnormalised hardness weights this is the "
                        "degenerate minimum of the loss; try hardness_normalization='mean' or a pretrained start."
                    )
                    self._collapse_warned = True
            self._diagnostic_sums.zero_()
        super().log(logs, *args, **kwargs)
