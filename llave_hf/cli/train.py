# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Train a LLaVE embedding model.

    accelerate launch train.py training_args/llave-2b.yaml [--key value ...]
    torchrun --nproc_per_node 8 train.py training_args/llave-2b.yaml
    llave-train training_args/tiny-cpu.yaml --max_steps 20
    python -m llave_hf.cli.train training_args/tiny-cpu.yaml

The YAML file holds `ModelArguments` (with the `LoraArguments` fields: `--lora_r 16` trains LoRA adapters, see
`llave_hf.lora`), `DataArguments` and `ContrastiveTrainingArguments` fields; command-line values override it. The
model comes from one of `--model_name_or_path` (a LLaVE checkpoint), `--backbone_name_or_path` (a pretrained
backbone of a supported family, wrapped into a new `LlaveEmbeddingModel`) or `--tiny_backbone` (a tiny random model,
for CPU runs). The processor is saved beside every checkpoint, so that checkpoints load with `AutoModel` and
`AutoProcessor`. With `--eval_data`, an `MMEBEvaluator` on held-out MMEB-eval-format data runs every
`--eval_every_n_steps` steps and its P@1 (`eval_<dataset>_p@1`) is logged.
"""

import logging as python_logging
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import yaml
from accelerate import init_empty_weights
from transformers import (
    AutoConfig,
    AutoModel,
    AutoProcessor,
    HfArgumentParser,
    IntervalStrategy,
    TrainerCallback,
    set_seed,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config
from transformers.utils import logging

from ..collator import ContrastiveCollator
from ..evaluation import MMEBEvaluator
from ..lora import LoraArguments, LoraSave, apply_lora
from ..mmeb_train import load_mmeb_train
from ..modeling.configuration_llave import LlaveEmbeddingConfig
from ..modeling.modeling_llave import LlaveEmbeddingModel
from ..modeling.processing_llave import DEFAULT_MAX_IMAGE_PIXELS, LlaveProcessor
from ..processors import load_processor, set_image_grid_pinpoints
from ..run_plan import RunPlan, prompt_length_summary
from ..sampler import ModalityLengthGroupedSampler
from ..testing import FAMILIES, tiny_model_and_processor
from ..trainer import ContrastiveTrainer
from ..trainer_config import ContrastiveTrainingArguments


logger = logging.get_logger(__name__)


@dataclass
class ModelArguments(LoraArguments):
    """Where the model comes from (exactly one of the three sources), and LoRA (`LoraArguments`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A LLaVE checkpoint (LlaveEmbeddingModel folder or Hub id) to train further."}
    )
    backbone_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained backbone of a supported family (llave_hf.SUPPORTED_BACKBONES, transformers layout) "
            "wrapped into a new LlaveEmbeddingModel, with its tokenizer and image processor."
        },
    )
    tiny_backbone: str | None = field(
        default=None,
        metadata={"help": "A tiny random model of this family (for CPU runs).", "choices": list(FAMILIES)},
    )
    pooling: str = field(
        default="last", metadata={"help": "Pooling of a new model (not a checkpoint).", "choices": ["last", "mean"]}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "e.g. 'sdpa' or 'flash_attention_2' (the paper used FlashAttention)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code from the checkpoint's repository."})
    image_grid_pinpoints: str | None = field(
        default=None,
        metadata={
            "help": "anyres grids, set in the backbone config and the image processor together: the released "
            "notation '(1x1),...,(2x2)' (LLaVE: grids of at most 2x2 tiles) or [height, width] pixel pairs as JSON. "
            "Default: the model's own (LLaVA-OneVision checkpoints carry up to 6x6 tiles)."
        },
    )

    def __post_init__(self):
        sources = [self.model_name_or_path, self.backbone_name_or_path, self.tiny_backbone]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("Give exactly one of --model_name_or_path, --backbone_name_or_path and --tiny_backbone.")
        super().__post_init__()
        if self.lora_enabled and self.lora_save == LoraSave.ADAPTER and not self.model_name_or_path:
            # An adapter loads on top of its base model's files: a tiny or a freshly wrapped backbone has none.
            raise ValueError("--lora_save adapter needs --model_name_or_path (a LLaVE checkpoint); use --lora_save merged.")


@dataclass
class DataArguments:
    """MMEB-train-format training data."""

    train_data: str = field(
        default="TIGER-Lab/MMEB-train",
        metadata={"help": "Hub dataset id (one config per subset) or a local .parquet/.jsonl file or folder."},
    )
    subsets: list[str] | None = field(default=None, metadata={"help": "Subsets to train on (default: all)."})
    split: str = field(default="original", metadata={"help": "MMEB-train split; LLaVE trains on 'original'."})
    max_rows_per_subset: int | None = field(
        default=None, metadata={"help": "First N rows of each subset (LLaVE: 50000)."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder the image paths are relative to."})
    allow_absolute_image_paths: bool = field(
        default=False,
        metadata={
            "help": "Trust the data's image paths: absolute ones and those leading out of --image_root (or "
            "--eval_image_root) are used as given instead of being bad rows."
        },
    )
    num_hard_negatives: int = field(
        default=0, metadata={"help": "Hard negatives per query from neg_text/neg_image_path (LLaVE: 0)."}
    )
    max_length: int = field(default=4096, metadata={"help": "Maximum tokens per prompt (longer texts are truncated)."})
    max_image_pixels: int | None = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={"help": "Images with more pixels (width x height) are bad rows, found from their header before "
                  "decoding (saved with the processor)."},
    )
    skip_bad_samples: bool = field(
        default=False,
        metadata={
            "help": "Replace bad rows (missing or unreadable images, empty items, a prompt the processor cannot fit "
            "into max_length, ...) by other rows instead of stopping; see ContrastiveCollator."
        },
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={"help": "Micro-batches of one query modality (image/text) and similar length, as LLaVE."},
    )
    batch_mining: bool = field(
        default=False,
        metadata={
            "help": "B3 batch mining (llave_hf.batch_mining): a teacher embeds the queries once, and each global "
            "batch holds mutually similar rows (within one query modality with --group_by_modality_length). "
            "Needs pip install 'llave-hf[mining]'."
        },
    )
    batch_mining_teacher: str | None = field(
        default=None,
        metadata={"help": "The LLaVE checkpoint (folder or Hub id) whose embeddings mine the batches (default: the "
                  "model being trained, as it starts)."},
    )
    batch_mining_skip_ranks: int = field(
        default=3, metadata={"help": "Each row's nearest rows never share its batch (likely false negatives)."}
    )
    batch_mining_neighbors: int = field(
        default=10, metadata={"help": "Nearest rows per row (after the skipped ones) in the graph that is partitioned."}
    )
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "Held-out data in MMEB-eval format (Hub id or folder): its P@1 is logged every "
            "eval_every_n_steps steps."
        },
    )
    eval_image_root: str | None = field(default=None, metadata={"help": "Folder the eval image paths start from."})
    eval_max_queries: int | None = field(default=None, metadata={"help": "Score only the first N queries per set."})
    eval_every_n_steps: int = field(default=500, metadata={"help": "Run the held-out evaluation every N steps."})
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "Print the run's plan and exit: rows per subset, optimizer steps, candidates per loss, prompt "
            "lengths of a sample (image sizes from headers), parameters, memory per GPU. No weights are loaded."
        },
    )
    dry_run_num_processes: int | None = field(
        default=None, metadata={"help": "Processes (GPUs) to plan for (default: this launch's)."}
    )
    dry_run_sample_rows: int = field(default=1000, metadata={"help": "Rows whose prompt lengths the plan reports."})

    def __post_init__(self):
        self.train_data = os.path.expanduser(self.train_data)
        if self.image_root is not None:
            self.image_root = os.path.expanduser(self.image_root)


def _read_preset(path: str) -> dict:
    """The argument values of a YAML preset; raises naming the file, line and column unless it is a mapping of
    argument names (a list or a bare string would otherwise fail as a `TypeError` about keyword arguments)."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    preset = yaml.safe_load(text)
    if preset is None:  # an empty file
        return {}
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(preset, dict):
        mark = node.start_mark
        raise ValueError(
            f"{path}, line {mark.line + 1}, column {mark.column + 1}: a preset is a mapping of argument names to "
            f"values (e.g. `learning_rate: 1.0e-5`), got a {type(preset).__name__} ({str(preset)[:60]!r})."
        )
    for key_node, _ in node.value:
        if key_node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"):  # `1.0: x`, `[a]: x`, ...
            mark = key_node.start_mark
            raise ValueError(
                f"{path}, line {mark.line + 1}, column {mark.column + 1}: {key_node.value!r} is not an argument name."
            )
    return preset


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, ContrastiveTrainingArguments]:
    """Parses `[config.yaml] [--key value ...]`: the YAML values are defaults that command-line values override.

    Without an accelerator (GPU, NPU, ...), bf16 and tf32 default to off (float32 training) and so does torch_compile
    (inductor's C++ code generation takes minutes even for the tiny test models on CPU), whatever the YAML says.
    With `--eval_data`, evaluation runs every `--eval_every_n_steps` steps (`eval_strategy="steps"`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, ContrastiveTrainingArguments))
    if argv and argv[0].endswith((".yaml", ".yml")):
        parser.set_defaults(**_read_preset(argv.pop(0)))
    if not torch.accelerator.is_available():
        parser.set_defaults(bf16=False, tf32=None, torch_compile=False, torch_compile_backend=None)
    arguments = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if len(arguments) > 3:  # keys of the YAML file that no argument class has
        raise ValueError(f"Unknown configuration keys: {', '.join(sorted(vars(arguments[3])))}.")
    model_args, data_args, training_args = arguments
    if data_args.eval_data:
        training_args.eval_strategy, training_args.eval_steps = IntervalStrategy.STEPS, data_args.eval_every_n_steps
    return model_args, data_args, training_args


def _wrap_backbone(backbone) -> LlaveEmbeddingModel:
    """A new `LlaveEmbeddingModel` around a loaded backbone."""
    config = LlaveEmbeddingConfig(backbone_config=backbone.config)
    if is_deepspeed_zero3_enabled():
        # ZeRO-3 partitions weights as they are created (meta weights would break it): `_from_config` builds (and
        # initialises) a partitioned placeholder backbone, replaced below.
        model = LlaveEmbeddingModel._from_config(config)
    else:
        with init_empty_weights():  # no second copy of the weights in memory
            model = LlaveEmbeddingModel(config)
    model.backbone = backbone
    return model


@contextmanager
def _without_zero3(training_args):
    """ZeRO-3 off while a model is built on the meta device: zero.Init would partition its weights at construction
    (and needs the process group)."""
    if not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(training_args.hf_deepspeed_config)


def _empty_model(name_or_path: str, trust_remote_code: bool, **kwargs):
    """The model a checkpoint's config describes, on the meta device: no weights read, no memory taken."""
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code, **kwargs)


def load_model_and_processor(model_args: ModelArguments, training_args, max_length: int, empty_weights: bool = False):
    """The model to train and its processor, from the source `model_args` names; with `empty_weights`, the model is
    built on the meta device from the source's config (for `--dry_run`: sizes without the weights)."""
    with _without_zero3(training_args) if empty_weights else nullcontext():
        model, processor = _load_model_and_processor(model_args, training_args, empty_weights)
    if model_args.image_grid_pinpoints:
        _set_image_grid_pinpoints(model, processor, model_args.image_grid_pinpoints)
    processor.max_length = max_length
    model.processor = processor
    return model, processor


def _load_model_and_processor(model_args: ModelArguments, training_args, empty_weights: bool):
    if model_args.tiny_backbone:
        model, processor = tiny_model_and_processor(model_args.tiny_backbone, seed=training_args.seed)
        model.config.pooling = model_args.pooling
    else:
        # DeepSpeed holds bf16 weights itself; DDP mixed precision needs float32 master weights.
        dtype = torch.bfloat16 if training_args.deepspeed and training_args.bf16 else torch.float32
        kwargs = dict(dtype=dtype, trust_remote_code=model_args.trust_remote_code)
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        load = partial(_empty_model, **kwargs) if empty_weights else partial(AutoModel.from_pretrained, **kwargs)
        if model_args.model_name_or_path:
            model = load(model_args.model_name_or_path)
            processor = AutoProcessor.from_pretrained(
                model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
            )
            if not isinstance(processor, LlaveProcessor):
                raise ValueError(
                    f"{model_args.model_name_or_path} holds no LlaveProcessor (got {type(processor).__name__}): "
                    "is it a LLaVE checkpoint? For a backbone use --backbone_name_or_path."
                )
        else:
            model = _wrap_backbone(load(model_args.backbone_name_or_path))
            model.config.pooling = model_args.pooling
            processor = load_processor(
                model_args.backbone_name_or_path,
                model.config.backbone_config,
                trust_remote_code=model_args.trust_remote_code,
            )
    return model, processor


def _log_prompt_lengths(processor, train_dataset, data_args: DataArguments) -> None:
    """The data summary's prompt lengths under the chosen tiling, from image headers (no pixels decoded)."""
    summary = prompt_length_summary(
        processor,
        train_dataset,
        data_args.image_root,
        data_args.num_hard_negatives,
        allow_absolute_image_paths=data_args.allow_absolute_image_paths,
    )
    logger.info(f"Prompt lengths: {summary.describe()}.")
    if summary.too_long_rows:
        logger.warning(
            f"{summary.too_long_rows:,} training rows have more template and image tokens than "
            f"max_length={processor.max_length:,}: each stops the run (or is skipped with --skip_bad_samples)."
        )


def _set_image_grid_pinpoints(model: LlaveEmbeddingModel, processor, value) -> None:
    """The tiling in the saved config, the backbone's own config and the image processor alike."""
    if model.backbone_family.anyres_tile_size is None:
        logger.warning(f"image_grid_pinpoints ignored: {model.config.backbone_config.model_type} backbones do not tile.")
        return
    configs = {id(config): config for config in (model.config.backbone_config, model.backbone.config)}
    pinpoints = set_image_grid_pinpoints(list(configs.values()), processor.image_processor, value)
    logger.info(f"anyres grids (height, width): {pinpoints}")


def _sampler_seed(training_args: ContrastiveTrainingArguments) -> int:
    """The seed of the batch order: `data_seed` when given, as the Trainer's own sampler, else `seed`."""
    return training_args.data_seed if training_args.data_seed is not None else training_args.seed


def _set_log_level(training_args: ContrastiveTrainingArguments) -> None:
    """transformers' verbosity and, when `--log_level` (or `--log_level_replica`) asks for one, the same level for
    llave_hf's loggers, which live outside its hierarchy (else their info messages, the data summary and the frozen
    parameters among them, would never show). A "passive" run leaves them as the caller set them up."""
    level = training_args.get_process_log_level()
    logging.set_verbosity(level)
    asked = training_args.log_level if training_args.should_log else training_args.log_level_replica
    if asked == "passive":
        return
    package_logger = python_logging.getLogger("llave_hf")
    package_logger.setLevel(level)
    if not package_logger.handlers and not python_logging.getLogger().handlers:  # no handler set up by the caller
        handler = python_logging.StreamHandler()
        handler.setFormatter(python_logging.Formatter("[llave_hf] %(message)s"))
        package_logger.addHandler(handler)


def _load_train_data(data_args: DataArguments):
    return load_mmeb_train(
        data_args.train_data,
        subsets=data_args.subsets,
        split=data_args.split,
        max_rows_per_subset=data_args.max_rows_per_subset,
        require_negatives=data_args.num_hard_negatives,
    )


def _batch_mining_sampler(model, model_args: ModelArguments, data_args: DataArguments, training_args, dataset):
    """The `BatchMiningSampler` of the training rows, mined from the teacher's query embeddings on this process's
    device (every process encodes a share and mines the same batches)."""
    from ..batch_mining import BatchMiningSampler

    teacher = model
    if data_args.batch_mining_teacher:
        with _without_zero3(training_args):  # the teacher only encodes: whole on every process
            teacher = AutoModel.from_pretrained(
                data_args.batch_mining_teacher, trust_remote_code=model_args.trust_remote_code
            )
        teacher.processor = AutoProcessor.from_pretrained(
            data_args.batch_mining_teacher, trust_remote_code=model_args.trust_remote_code
        )
        teacher.processor.max_length = data_args.max_length
    elif is_deepspeed_zero3_enabled():
        raise ValueError("--batch_mining under ZeRO-3 needs --batch_mining_teacher (the model's weights are "
                         "partitioned until training starts).")
    device = next(teacher.parameters()).device
    teacher.to(training_args.device)
    seed = _sampler_seed(training_args)
    try:
        return BatchMiningSampler.from_teacher(
            teacher,
            dataset,
            training_args.per_device_train_batch_size,
            training_args.world_size,
            seed,
            image_root=data_args.image_root,
            allow_absolute_image_paths=data_args.allow_absolute_image_paths,
            by_modality=data_args.group_by_modality_length,
            encode_batch_size=training_args.per_device_eval_batch_size,
            skip_ranks=data_args.batch_mining_skip_ranks,
            num_neighbors=data_args.batch_mining_neighbors,
        )
    finally:
        if teacher is model:
            model.to(device)
        else:
            del teacher


def dry_run(model_args: ModelArguments, data_args: DataArguments, training_args) -> RunPlan:
    """The run's plan (`RunPlan`), printed; the model is built on the meta device, no weights are loaded."""
    model, processor = load_model_and_processor(model_args, training_args, data_args.max_length, empty_weights=True)
    if training_args.freeze_vision_tower:
        model.freeze_vision_tower()
    zero_stage = 0
    if training_args.deepspeed:
        zero_stage = int(training_args.hf_deepspeed_config.config.get("zero_optimization", {}).get("stage", 0))
    plan = RunPlan.build(
        model,
        processor,
        _load_train_data(data_args),
        training_args,
        num_processes=data_args.dry_run_num_processes or training_args.world_size,
        image_root=data_args.image_root,
        num_hard_negatives=data_args.num_hard_negatives,
        sample_rows=data_args.dry_run_sample_rows,
        allow_absolute_image_paths=data_args.allow_absolute_image_paths,
        zero_stage=zero_stage,
    )
    print(plan.describe())
    return plan


def main(
    argv: list[str] | None = None, callbacks: list[TrainerCallback] | None = None
) -> ContrastiveTrainer | RunPlan:
    """Trains as configured by `argv` (default: the command line) and returns the trainer; `callbacks` are added to
    the trainer's (e.g. to follow progress). With `--dry_run`, prints and returns the run's plan instead."""
    model_args, data_args, training_args = parse_args(argv)
    # Trainer's remove_unused_columns would drop the raw MMEB columns before the collator sees them.
    training_args.remove_unused_columns = False
    _set_log_level(training_args)
    set_seed(training_args.seed)
    if data_args.dry_run:
        return dry_run(model_args, data_args, training_args)
    try:
        # The arguments come first: under ZeRO-3 they make from_pretrained partition the weights while loading.
        model, processor = load_model_and_processor(model_args, training_args, data_args.max_length)
        processor.max_image_pixels = data_args.max_image_pixels
        if model_args.lora_enabled:
            model = apply_lora(model, model_args)
        with training_args.main_process_first(desc="loading the training data"):
            train_dataset = _load_train_data(data_args)
        if training_args.process_index == 0:
            _log_prompt_lengths(processor, train_dataset, data_args)
        collator = ContrastiveCollator(
            processor,
            num_hard_negatives=data_args.num_hard_negatives,
            image_root=data_args.image_root,
            allow_absolute_image_paths=data_args.allow_absolute_image_paths,
            skip_bad_samples=data_args.skip_bad_samples,
            dataset=train_dataset,
        )
        sampler = None
        if data_args.batch_mining:
            sampler = _batch_mining_sampler(model, model_args, data_args, training_args, train_dataset)
        elif data_args.group_by_modality_length:
            seed = _sampler_seed(training_args)
            sampler = ModalityLengthGroupedSampler.from_dataset(
                train_dataset, training_args.per_device_train_batch_size, training_args.world_size, seed
            )
        evaluator = None
        if data_args.eval_data:
            evaluator = MMEBEvaluator(
                data_args.eval_data,
                image_root=data_args.eval_image_root,
                max_queries=data_args.eval_max_queries,
                output_dir=None,
                keep_in_memory=True,
                show_progress_bar=False,
                allow_absolute_image_paths=data_args.allow_absolute_image_paths,
            )
        trainer = ContrastiveTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            data_collator=collator,
            processing_class=processor,
            evaluator=evaluator,
            train_sampler=sampler,
            callbacks=callbacks,
        )
        resume = training_args.resume_from_checkpoint
        trainer.train(resume_from_checkpoint=True if resume in ("true", "latest") else resume)
        skipped = int(
            trainer.accelerator.reduce(torch.tensor(collator.num_skipped, device=training_args.device), "sum")
        )
        trainer.log({"skipped_samples": skipped})  # into the log history (trainer_state.json) and the reporters
        if skipped:
            logger.warning(f"Skipped {skipped} bad training rows (see the warnings above for which and why).")
        if model_args.lora_enabled and model_args.lora_save == LoraSave.MERGED:
            # Saved (and pushed) as a plain LlaveEmbeddingModel; checkpoints keep the adapters for resuming.
            trainer.model = trainer.model_wrapped = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        trainer.save_model()
        trainer.save_state()
        # Every process leaves together: a rank tearing gloo down while another still writes can abort at exit.
        trainer.accelerator.wait_for_everyone()
        return trainer
    finally:
        # 2-process gloo runs sometimes crash at exit when the process group is left to the interpreter's shutdown
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
