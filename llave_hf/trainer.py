# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""`ContrastiveTrainer`: the `Trainer` that trains LLaVE embedding models with the hardness-weighted loss."""

from collections.abc import Callable
from functools import partial

import torch
from accelerate.utils import DistributedType
from transformers import Trainer
from transformers.utils import logging

from .checkpoints import latest_complete_checkpoint
from .collator import ContrastiveBatch
from .grad_cache import grad_cache_backward
from .hub import HubPublishMixin
from .lora import is_peft_model
from .loss import (
    HardnessNormalization,
    LossDiagnostics,
    hardness_weighted_contrastive_loss,
    matryoshka_contrastive_loss,
)
from .modeling.modeling_llave import NonFiniteEmbeddingError
from .trainer_config import ContrastiveTrainingArguments


__all__ = ["ContrastiveTrainer"]

logger = logging.get_logger(__name__)

# The training totals accumulated on the device between two logs: the diagnostics' sums, then these two counts.
_STEPS_COUNTED, _NONFINITE_ROWS = len(LossDiagnostics.NAMES), len(LossDiagnostics.NAMES) + 1


class ContrastiveTrainer(HubPublishMixin, Trainer):
    """
    `Trainer` whose loss is LLaVE's hardness-weighted contrastive loss.

    Batches are `llave_hf.collator.ContrastiveBatch`es (e.g. from `ContrastiveCollator`): queries, targets and hard
    negatives in one processor batch, encoded in ONE forward of the wrapped model (DDP forbids two per step), then
    gathered across processes and scored. With `grad_cache_chunk_size > 0` the step runs through GradCache.

    Training logs add the loss's diagnostics (`LossDiagnostics.NAMES`: positive and hardest-negative cosine, their
    gap, in-batch top-1 accuracy, mean hardness weight, share of the gradient on the hardest 10% of negatives),
    averaged since the previous log, `collapse`, with a warning when the embeddings look collapsed, and `loss_alpha`,
    the α of the last step (`loss_alpha_warmup_steps` ramps it). They stay on the device between logs (no host sync per step), as
    does a count of non-finite embedding rows: if there were any, the log raises `NonFiniteEmbeddingError` naming
    the steps.

    With `--push_to_hub`, every push carries our model card, the modeling files and the inference handler
    (`HubPublishMixin`; `hub_card_kwargs=` feeds the card).

    Args:
        model, args, data_collator, train_dataset, eval_dataset, processing_class: as `Trainer`'s; `args` must be a
            `ContrastiveTrainingArguments`. `eval_dataset` (rows for `data_collator`) gives `eval_loss`.
        evaluator (*optional*): a callable `evaluator(model, processor=None)` returning results with
            `metrics(prefix)`, e.g. `llave_hf.evaluation.MMEBEvaluator`. `evaluate()` runs it on the unwrapped model
            in eval mode (on every process, so that sharded models stay in step) and adds its metrics, prefixed
            `eval_` (`eval_ImageNet-1K_p@1`, usable as `metric_for_best_model="ImageNet-1K_p@1"`). It needs no
            `eval_dataset`: `eval_strategy="steps"` with an evaluator alone runs just the evaluator. With a dict of
            eval datasets it runs with each.
        train_sampler (*optional*): the training sampler, e.g. `llave_hf.sampler.ModalityLengthGroupedSampler`.
        **kwargs: the remaining `Trainer` arguments and `hub_card_kwargs`.
    """

    def __init__(
        self,
        model=None,
        args: ContrastiveTrainingArguments | None = None,
        data_collator: Callable[[list], ContrastiveBatch] | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        *,
        evaluator: Callable | None = None,
        train_sampler=None,
        **kwargs,
    ):
        if not isinstance(args, ContrastiveTrainingArguments):
            raise TypeError(f"ContrastiveTrainer needs ContrastiveTrainingArguments, got {type(args).__name__}.")
        if args.n_gpu > 1:
            # nn.DataParallel would split the rows and the images of a batch independently of each other.
            raise ValueError(
                f"{args.n_gpu} GPUs in one process: launch one process per GPU with `accelerate launch` or "
                "`torchrun` (the gather across devices needs it too)."
            )
        evaluator_only = eval_dataset is None and evaluator is not None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            # Trainer refuses an eval_strategy without an eval_dataset; the evaluator is enough here
            eval_dataset=() if evaluator_only else eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if evaluator_only:
            self.eval_dataset = None
        self.evaluator = evaluator
        self.train_sampler = train_sampler
        if self.args.freeze_vision_tower:
            logger.info(f"Froze {self.model.freeze_vision_tower():,} vision-tower parameters.")
        if self.args.matryoshka_dims:
            config = self.model.config  # a PEFT model's is its base model's
            if max(self.args.matryoshka_dims) > config.hidden_size:
                raise ValueError(
                    f"matryoshka_dims {self.args.matryoshka_dims} exceed the embedding size {config.hidden_size}."
                )
            config.matryoshka_dims = sorted(self.args.matryoshka_dims, reverse=True)  # saved with the model
        # compute_loss returns a per-batch mean, so the Trainer must scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._train_totals: torch.Tensor | None = None  # on the device; see _accumulate
        self._totals_first_step = 0
        self._collapse_warned = False

    def get_train_dataloader(self):
        dataloader = super().get_train_dataloader()
        try:
            num_batches = len(dataloader)
        except TypeError:  # an iterable dataset: its length is unknown
            return dataloader
        if num_batches == 0:
            # With drop_last, the Trainer would run 0 steps, exit normally and save the untrained model.
            args, batch_size = self.args, self._train_batch_size
            raise ValueError(
                f"{len(self.train_dataset)} training rows, fewer than one global batch: per_device_train_batch_size="
                f"{batch_size} x {args.world_size} process(es) = {batch_size * args.world_size} rows, and "
                f"dataloader_drop_last={args.dataloader_drop_last} drops incomplete batches: no training step "
                "would run. Use more rows, a smaller batch or fewer processes."
            )
        return dataloader

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    # --------------------------------------------------------------------------------------------------------------
    # batches: a ContrastiveBatch, not the dict of model inputs the Trainer expects

    def _prepare_inputs(self, inputs: ContrastiveBatch) -> ContrastiveBatch:
        # As Trainer's: DeepSpeed takes floating-point inputs (pixel values) in its own dtype.
        dtype = self.accelerator.state.deepspeed_plugin.hf_ds_config.dtype() if self.is_deepspeed_enabled else None
        return inputs.to(self.args.device, dtype=dtype)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> None:
        return None  # the loss is a mean per batch (Trainer counts label tokens otherwise)

    def _track_num_input_tokens(self, inputs: ContrastiveBatch) -> None:
        super()._track_num_input_tokens(inputs.inputs)

    def floating_point_ops(self, inputs: ContrastiveBatch) -> int:
        return super().floating_point_ops(inputs.inputs)

    # --------------------------------------------------------------------------------------------------------------
    # checkpoints

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """As `Trainer.train`; `resume_from_checkpoint=True` resumes from the newest COMPLETE checkpoint of
        `output_dir`, skipping (with a warning saying why) any newer one a crash left half-written."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = latest_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint to resume from in {self.args.output_dir}.")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _load_weights(self, checkpoint: str, model=None) -> None:
        # transformers 5 saves the backbone's weights under their legacy names (`save_pretrained` reverts its weight
        # conversions), which Trainer's non-strict `load_state_dict` silently skips: a resumed run would restart the
        # language model from scratch. `from_pretrained` renames them back; the load is strict.
        model = model if model is not None else self.model
        loaded = type(model).from_pretrained(checkpoint, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # PEFT checkpoints hold adapters under their live names; the Trainer loads those itself.
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or is_peft_model(model if model is not None else self.model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_weights(resume_from_checkpoint, model)

    def _load_best_model(self):
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or is_peft_model(self.model):
            return super()._load_best_model()
        self._load_weights(self.state.best_model_checkpoint)

    # --------------------------------------------------------------------------------------------------------------
    # loss

    def _loss(self, embeddings: torch.Tensor, batch: ContrastiveBatch) -> torch.Tensor:
        """The contrastive loss of one batch from the embeddings of its rows."""
        query, target, hard_negatives = batch.split(embeddings)
        args, mask = self.args, self.args.loss_mask_false_negatives
        loss_fn = hardness_weighted_contrastive_loss
        if args.matryoshka_dims:
            loss_fn = partial(matryoshka_contrastive_loss, dims=args.matryoshka_dims, weights=args.matryoshka_weights)
        # The scheduled α in training (global_step: the optimizer steps completed before this micro-batch's step)
        alpha = args.loss_alpha_at(self.state.global_step) if self.model.training else args.loss_alpha
        output = loss_fn(
            query,
            target,
            alpha=alpha,
            temperature=args.loss_temperature,
            symmetric=args.loss_symmetric,
            hard_negatives=hard_negatives,
            query_ids=batch.query_ids if mask else None,
            target_ids=batch.target_ids if mask else None,
            hard_negative_ids=batch.negative_ids if mask else None,
            hardness_normalization=args.loss_hardness_normalization,
            gather_across_devices=args.loss_gather_across_devices and args.world_size > 1,
            check_finite=False,  # checked on the device, read when logging
        )
        if self.model.training:
            self._accumulate(embeddings.detach(), output.diagnostics)
        return output.loss

    def _accumulate(self, embeddings: torch.Tensor, diagnostics: LossDiagnostics) -> None:
        """Adds a training step's diagnostics and its count of non-finite embedding rows to the totals, on the device.

        A step whose diagnostics are NaN (no row had a negative) adds nothing to the sums and is not counted.
        """
        values = diagnostics.stack().float()
        counted = torch.isfinite(values).all()
        nonfinite_rows = (~torch.isfinite(embeddings).all(dim=-1)).sum()
        step = torch.cat([torch.where(counted, values, 0.0), torch.stack([counted.float(), nonfinite_rows.float()])])
        if self._train_totals is None:
            self._train_totals = step
            self._totals_first_step = self.state.global_step + 1  # the optimizer step this micro-batch belongs to
        else:
            self._train_totals += step

    def compute_loss(self, model, inputs: ContrastiveBatch, return_outputs=False, num_items_in_batch=None):
        embeddings = model(**inputs.inputs).embeddings
        loss = self._loss(embeddings, inputs)
        return (loss, {"embeddings": embeddings}) if return_outputs else loss

    def training_step(self, model, inputs: ContrastiveBatch, num_items_in_batch=None):
        if not self.args.grad_cache_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError("GradCache does not run under DeepSpeed (see grad_cache_chunk_size).")
        model.train()
        inputs = self._prepare_inputs(inputs)
        steps = self.current_gradient_accumulation_steps
        with self.compute_loss_context_manager():
            loss = grad_cache_backward(
                model,
                inputs.inputs,
                self.args.grad_cache_chunk_size,
                loss_fn=lambda embeddings: self._loss(embeddings, inputs) / steps,
                backward=self.accelerator.backward,
                backbone_config=self.accelerator.unwrap_model(model).config.backbone_config,
                no_sync=self.accelerator.no_sync,
                sync_last_chunk=self.accelerator.sync_gradients,
            )
        return loss

    def prediction_step(self, model, inputs: ContrastiveBatch, prediction_loss_only, ignore_keys=None):
        """Evaluation loss without labels: the contrastive loss of the eval batch."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # --------------------------------------------------------------------------------------------------------------
    # evaluation

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate` plus the evaluator's metrics; with no eval dataset, the evaluator only."""
        if self.evaluator is None or eval_dataset is not None or self.eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # see evaluation_loop
        metrics = self._evaluator_metrics(metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.evaluator is not None and description == "Evaluation":  # not `predict`
            # merged before the Trainer logs the metrics and hands them to callbacks (on_evaluate)
            output.metrics.update(self._evaluator_metrics(metric_key_prefix))
        return output

    def _evaluator_metrics(self, prefix: str) -> dict[str, float]:
        """Runs the evaluator on the unwrapped model in eval mode (every process runs it: sharded models stay in
        step), restores the model's mode, and returns its metrics under `prefix`."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            results = self.evaluator(model, processor=self.processing_class)
        finally:
            model.train(was_training)
        return results.metrics(prefix=f"{prefix}_")

    # --------------------------------------------------------------------------------------------------------------
    # logging

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log, after `global_step` steps: the last one ran from global_step - 1
            logs["loss_alpha"] = self.args.loss_alpha_at(max(self.state.global_step - 1, 0))
            if self._train_totals is not None:
                logs.update(self._training_diagnostics())
        super().log(logs, *args, **kwargs)

    def _training_diagnostics(self) -> dict[str, float]:
        """The diagnostics averaged since the previous log over all processes, and the collapse flag; resets them.

        Raises `NonFiniteEmbeddingError` if any process saw a non-finite embedding since the previous log.
        """
        totals = self._train_totals
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        totals = totals.tolist()  # the one device-to-host sync, once per log
        first_step, self._train_totals = self._totals_first_step, None
        if totals[_NONFINITE_ROWS]:
            raise NonFiniteEmbeddingError(
                f"{int(totals[_NONFINITE_ROWS])} non-finite (NaN or inf) training embedding row(s) between steps "
                f"{first_step} and {self.state.global_step}, summed over processes (checked at each log, every "
                "logging_steps). Check those steps' data, the learning rate and the precision (fp16 overflows)."
            )
        steps = totals[_STEPS_COUNTED]
        if not steps:  # every step lacked negatives (NaN diagnostics)
            return {}
        diagnostics = {name: round(total / steps, 4) for name, total in zip(LossDiagnostics.NAMES, totals)}
        positive, gap = diagnostics["positive_cosine"], diagnostics["cosine_gap"]
        collapsed = abs(gap) < self.args.collapse_gap_threshold and abs(positive) > 0.9
        if collapsed and not self._collapse_warned:
            logger.warning(
                f"Embeddings look collapsed at step {self.state.global_step}: positive cosine {positive:.3f}, gap to "
                f"the hardest negative {gap:.4f}. {self._collapse_advice()}"
            )
            self._collapse_warned = True
        return {**diagnostics, "collapse": float(collapsed)}

    def _collapse_advice(self) -> str:
        """What to try against collapse, given the loss options of this run."""
        args = self.args
        if args.loss_alpha > 0 and args.loss_hardness_normalization is HardnessNormalization.NONE:
            return (
                "With the unnormalised hardness weights this is the degenerate minimum of the loss; try "
                "loss_hardness_normalization='mean' or a pretrained start."
            )
        # Neither InfoNCE (α = 0) nor mean-normalised weights have that minimum: the cause lies elsewhere.
        options = f"loss_alpha={args.loss_alpha}, loss_hardness_normalization='{args.loss_hardness_normalization}'"
        return (
            f"The loss ({options}) has no degenerate minimum there; check the learning rate, a pretrained start, "
            "and repeated targets (loss_mask_false_negatives)."
        )
