# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""What a training run will do, known before it runs: prompt lengths from image headers (`prompt_length_summary`:
how many rows exceed `max_length` under the chosen tiling) and `llave-train --dry_run`'s plan (`RunPlan`).

Image sizes come from file headers (PIL opens a file without decoding its pixels), and the image tokens from the
family table's count rule on those sizes, so that the whole of MMEB-train can be checked at start-up.
"""

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import torch
from PIL import Image, UnidentifiedImageError

from .image_paths import ImagePathError, resolve_image_path
from .mmeb_train import row_negatives


__all__ = ["PromptLengthSummary", "RunPlan", "image_size_from_header", "prompt_length_summary"]


def image_size_from_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) from an image file's header, without decoding the pixels; `None` when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError):
        return None


@dataclass
class PromptLengthSummary:
    """Prompt lengths of the items (query, target, hard negatives) of some training rows, in tokens.

    Attributes:
        rows: rows looked at.
        max_length: the processor's limit.
        lengths: each item's prompt length before truncation.
        truncated_rows: rows with an item over `max_length` whose text can be cut to fit (a warning when trained).
        too_long_rows: rows whose template and image tokens alone leave no room within `max_length` (an error
            when trained, a skipped row with `skip_bad_samples`).
        unreadable_rows: rows with an image file that is missing, has no readable header, or lies outside the image
            root (the collator refuses those rows too).
    """

    rows: int
    max_length: int
    lengths: list[int] = field(default_factory=list)
    truncated_rows: int = 0
    too_long_rows: int = 0
    unreadable_rows: int = 0

    def percentiles(self, points=(0, 50, 90, 99, 100)) -> dict[int, int]:
        if not self.lengths:
            return {}
        ordered = sorted(self.lengths)
        return {point: ordered[min(len(ordered) - 1, math.ceil(point / 100 * len(ordered)) - 1 if point else 0)]
                for point in points}  # fmt: skip

    def describe(self) -> str:
        spread = ", ".join(
            f"{'min' if p == 0 else 'max' if p == 100 else f'p{p}'} {v:,}" for p, v in self.percentiles().items()
        )
        return (
            f"{self.rows:,} rows, {len(self.lengths):,} prompts: {spread} tokens; over max_length={self.max_length:,}: "
            f"{self.too_long_rows:,} rows by template and image tokens alone (errors; skipped with skip_bad_samples), "
            f"{self.truncated_rows:,} rows with a text to truncate; {self.unreadable_rows:,} rows with an unreadable "
            "image"
        )


def prompt_length_summary(
    processor,
    rows,
    image_root: str | os.PathLike | None = None,
    num_hard_negatives: int = 0,
    chunk_rows: int = 1024,
    allow_absolute_image_paths: bool = False,
) -> PromptLengthSummary:
    """
    Prompt lengths of MMEB-train `rows` (a `datasets.Dataset` or a list of row dicts), their images' sizes read from
    the file headers.

    Args:
        processor: the model's `LlaveProcessor` (its tiling and `max_length`).
        rows: MMEB-train rows (`qry`, `qry_image_path`, `pos_text`, `pos_image_path`, negatives).
        image_root: the folder the image paths are relative to.
        num_hard_negatives: hard negatives per row that training uses.
        chunk_rows: rows whose prompts are tokenized in one call.
        allow_absolute_image_paths: trust the data's image paths, as the collator's option of that name; otherwise a
            path leading out of `image_root` makes its row unreadable and its file is never opened.
    """
    summary = PromptLengthSummary(rows=len(rows), max_length=processor.max_length)
    for start in range(0, len(rows), chunk_rows):
        chunk = _row_dicts(rows, start, start + chunk_rows)
        _add_rows(summary, processor, chunk, start, image_root, num_hard_negatives, allow_absolute_image_paths)
    return summary


def _row_dicts(rows, start: int, stop: int) -> list[dict]:
    if isinstance(rows, list):
        return rows[start:stop]
    columns = rows[start:stop]  # a Dataset slice: one read per column
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _add_rows(
    summary: PromptLengthSummary,
    processor,
    rows: list[dict],
    first_row: int,
    image_root,
    num_hard_negatives: int,
    allow_absolute_image_paths: bool,
):
    texts, sizes, row_of_item = [], [], []
    for index, row in enumerate(rows):
        items = [(row["qry"], row["qry_image_path"]), (row["pos_text"], row["pos_image_path"])]
        items += row_negatives(row)[:num_hard_negatives]
        name = f"row {first_row + index}"
        try:
            paths = [
                resolve_image_path(path, image_root, name, allow_absolute_image_paths) if path else path
                for _, path in items
            ]
        except ImagePathError:
            summary.unreadable_rows += 1
            continue
        row_sizes = [image_size_from_header(path) if path else None for path in paths]
        if any(path and size is None for path, size in zip(paths, row_sizes)):
            summary.unreadable_rows += 1
            continue
        try:  # what the collator checks: text or image, the placeholder only with an image
            for (text, _), size in zip(items, row_sizes):
                processor.format_text(text or None, size is not None)
        except ValueError:
            summary.unreadable_rows += 1
            continue
        texts += [text or None for text, _ in items]
        sizes += row_sizes
        row_of_item += [index] * len(items)
    if not texts:
        return
    too_long, truncated = set(), set()
    for row, (length, fixed) in zip(row_of_item, processor.prompt_lengths(texts, sizes)):
        summary.lengths.append(length)
        if length > processor.max_length:  # the processor needs room for one token of text
            (too_long if fixed >= processor.max_length else truncated).add(row)
    summary.too_long_rows += len(too_long)
    summary.truncated_rows += len(truncated - too_long)


def _parameter_counts(model: torch.nn.Module) -> tuple[int, int, int]:
    """(trainable, frozen, largest layer's own) parameters; full sizes under ZeRO-3, which partitions them."""
    trainable = frozen = 0
    for parameter in model.parameters():
        size = getattr(parameter, "ds_numel", 0) or parameter.numel()
        trainable, frozen = (trainable + size, frozen) if parameter.requires_grad else (trainable, frozen + size)
    largest = max(
        sum(getattr(p, "ds_numel", 0) or p.numel() for p in module.parameters(recurse=False))
        for module in model.modules()
    )
    return trainable, frozen, largest


@dataclass
class RunPlan:
    """What `llave-train` will do with its arguments: printed by `--dry_run`.

    Attributes:
        rows_per_subset: training rows per subset after filtering.
        num_processes: processes (GPUs) the plan is for.
        per_device_batch, accumulation_steps, epochs: as configured.
        steps_per_epoch, optimizer_steps, warmup_steps: optimizer steps (`max_steps` when set).
        candidates_per_loss: targets and hard negatives each query is scored against in one loss.
        sample: prompt lengths of a sample of rows (`PromptLengthSummary`).
        trainable_parameters, frozen_parameters, largest_layer_parameters: parameter counts.
        zero_stage: DeepSpeed ZeRO stage (0 without DeepSpeed).
        memory_per_gpu: model-state bytes per GPU by setting (DeepSpeed's estimators for ZeRO-2/3).
    """

    rows_per_subset: dict[str, int]
    num_processes: int
    per_device_batch: int
    accumulation_steps: int
    epochs: float
    steps_per_epoch: int
    optimizer_steps: int
    warmup_steps: int
    candidates_per_loss: int
    sample: PromptLengthSummary
    trainable_parameters: int
    frozen_parameters: int
    largest_layer_parameters: int
    zero_stage: int
    memory_per_gpu: dict[str, int]

    @classmethod
    def build(
        cls, model, processor, dataset, training_args, *, num_processes: int, image_root=None,
        num_hard_negatives: int = 0, sample_rows: int = 1000, zero_stage: int = 0,
        allow_absolute_image_paths: bool = False,
    ) -> "RunPlan":  # fmt: skip
        """The plan for `model` (on any device, meta included), `dataset` (MMEB-train rows) and `training_args`."""
        args = training_args
        per_step = args.per_device_train_batch_size * num_processes
        batches = len(dataset) // per_step if args.dataloader_drop_last else math.ceil(len(dataset) / per_step)
        steps_per_epoch = max(batches // args.gradient_accumulation_steps, 1)
        steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        gathered = args.loss_gather_across_devices and num_processes > 1
        candidates = (per_step if gathered else args.per_device_train_batch_size) * (1 + num_hard_negatives)
        indices = sorted(random.Random(args.seed).sample(range(len(dataset)), min(sample_rows, len(dataset))))
        sample = prompt_length_summary(
            processor, dataset.select(indices), image_root, num_hard_negatives,
            allow_absolute_image_paths=allow_absolute_image_paths,
        )  # fmt: skip
        trainable, frozen, largest = _parameter_counts(model)
        return cls(
            rows_per_subset=dict(Counter(dataset["subset"])),
            num_processes=num_processes,
            per_device_batch=args.per_device_train_batch_size,
            accumulation_steps=args.gradient_accumulation_steps,
            epochs=args.num_train_epochs,
            steps_per_epoch=steps_per_epoch,
            optimizer_steps=steps,
            warmup_steps=args.get_warmup_steps(steps),
            candidates_per_loss=candidates,
            sample=sample,
            trainable_parameters=trainable,
            frozen_parameters=frozen,
            largest_layer_parameters=largest,
            zero_stage=zero_stage,
            memory_per_gpu=_memory_per_gpu(trainable + frozen, trainable, largest, num_processes, zero_stage),
        )

    def describe(self) -> str:
        subsets = "\n".join(f"    {name:<24}{count:>10,}" for name, count in self.rows_per_subset.items())
        memory = "\n".join(f"    {name:<44}{size / 2**30:>8.1f} GiB" for name, size in self.memory_per_gpu.items())
        total = self.trainable_parameters + self.frozen_parameters
        return "\n".join(
            [
                f"Training rows: {sum(self.rows_per_subset.values()):,} in {len(self.rows_per_subset)} subsets",
                subsets,
                f"Batches: {self.per_device_batch} per device x {self.num_processes} processes x "
                f"{self.accumulation_steps} accumulation steps = "
                f"{self.per_device_batch * self.num_processes * self.accumulation_steps} rows per optimizer step",
                f"Optimizer steps: {self.optimizer_steps:,} ({self.steps_per_epoch:,} per epoch, {self.epochs:g} "
                f"epochs), warmup {self.warmup_steps:,}",
                f"Candidates each loss sees: {self.candidates_per_loss:,} per query (accumulation adds none)",
                f"Prompt lengths (a sample of {self.sample.rows:,} rows, image sizes from headers): "
                + self.sample.describe(),
                f"Parameters: {total:,}; trainable {self.trainable_parameters:,}, frozen {self.frozen_parameters:,}",
                f"Memory per GPU for parameters, gradients and optimizer states (activations come on top; "
                f"ZeRO stage {self.zero_stage}):",
                memory,
            ]
        )


def _memory_per_gpu(total: int, trainable: int, largest: int, gpus: int, zero_stage: int) -> dict[str, int]:
    """Model-state bytes per GPU. ZeRO-2/3: DeepSpeed's estimators, which count every parameter as trained (an upper
    bound with a frozen tower). Without DeepSpeed: fp32 weights (4 bytes), and gradients (4) and AdamW's two states
    (8) for the trainable ones, on every GPU."""
    if zero_stage == 0:
        return {"DDP (float32 weights, AdamW)": 4 * total + 12 * trainable}
    nodes = gpus // 8 if gpus > 8 and gpus % 8 == 0 else 1
    per_node = gpus // nodes
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        settings = {"ZeRO-3": (False, False), "ZeRO-3, optimizer offloaded": (True, False)}
        settings["ZeRO-3, optimizer and parameters offloaded"] = (True, True)
        return {
            name: estimate_zero3_model_states_mem_needs(
                total, largest, per_node, nodes, cpu_offload=offload, cpu_offload_params=params
            )[1]
            for name, (offload, params) in settings.items()
        }
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    return {
        name: estimate_zero2_model_states_mem_needs(total, per_node, nodes, cpu_offload=offload)[1]
        for name, offload in {"ZeRO-2": False, "ZeRO-2, optimizer offloaded": True}.items()
    }
