# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Publishing LLaVE embedding models to the Hugging Face Hub.

A published repository holds the safetensors weights, the config with `auto_map` and the modeling files (so that
`AutoModel.from_pretrained(repo, trust_remote_code=True)` works without llave-hf), the processor, our model card
(README.md), the Inference Endpoints `handler.py` and its `requirements.txt`. Three ways to get there:

- `save_for_hub(model, processor, folder)` writes such a folder; `push_to_hub(model, processor, repo_id)` pushes one.
- `HubPublishMixin` makes a `Trainer` subclass's pushes (`--push_to_hub`, also the ones on every save) carry the
  same files: the Trainer's own pushes would replace our card with its generic one and, mid-training, upload only
  config and weights beside whatever (possibly stale) code the output folder holds.
- `TokenRedactingArgumentsMixin` keeps `--hub_token` out of the `training_args.bin` that the Trainer pushes.

The token is only ever handed to `huggingface_hub`; it is never logged or written.
"""

import dataclasses
import glob
import importlib.resources
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import transformers
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from transformers import TrainerCallback, TrainingArguments
from transformers.dynamic_module_utils import custom_object_save
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging

from . import modeling
from .evaluation import AGGREGATE_KEYS, MMEB_DATASETS, MMEB_HUB_ID, aggregate_mmeb


logger = logging.get_logger(__name__)

# `feature-extraction` and not `image-feature-extraction` or `sentence-similarity`: the model maps any item (text,
# image, or both) to one vector, which is exactly that task's contract (`{"inputs": ...}` -> embeddings, as our
# handler answers, so `InferenceClient.feature_extraction` works on an endpoint). `image-feature-extraction` would
# announce image-only inputs, and `sentence-similarity` a text-only, pairwise-score API (source_sentence/sentences)
# that this model does not serve.
PIPELINE_TAG = "feature-extraction"
DEFAULT_TAGS = ("llave", "multimodal-embedding", "vision-language", "retrieval", "mmeb")
# The installed `llave_hf.hub_cards` package (the source tree's `hub_cards/`, mapped in setup.cfg).
TEMPLATE_PATH = Path(str(importlib.resources.files("llave_hf.hub_cards") / "llave_model_card.md"))
HANDLER_PATH = Path(modeling.__file__).resolve().parent / "handler.py"
# Widget inputs (text, title). A custom-code model gets no live widget, so the card shows precomputed outputs.
DEFAULT_WIDGET_TEXTS = (
    ("A dog catching a frisbee on the beach.", "Caption"),
    ("Find me an everyday image that matches the given caption: a red double-decker bus in the rain", "Query"),
)
# Root files of these kinds are what a save writes; left over from an earlier push they would contradict this one.
_SAVED_SUFFIXES = (".py", ".json", ".safetensors", ".bin", ".txt", ".jinja", ".model")


def _num_parameters(model) -> int:
    # Under DeepSpeed ZeRO-3 the local parameters are empty shards; `ds_numel` holds their full size.
    return sum(getattr(parameter, "ds_numel", 0) or parameter.numel() for parameter in model.parameters())


def _format_count(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def _mmeb_scores(eval_results: Mapping) -> dict[str, float]:
    """Precision@1 per dataset (fractions) from `MMEBEvaluator.evaluate` results or a plain {dataset: P@1} mapping."""
    if "datasets" in eval_results:
        return {name: result["scores"]["precision@1"] for name, result in eval_results["datasets"].items()}
    return dict(eval_results)


def _model_index(scores: Mapping[str, float]) -> list[EvalResult]:
    """`model-index` entries: P@1 (%) of each MMEB dataset and of every non-empty MMEB aggregate."""
    common = dict(task_type=PIPELINE_TAG, task_name="Multimodal embedding", dataset_type=MMEB_HUB_ID)
    results = [
        EvalResult(
            **common,
            dataset_name=f"MMEB {name}",
            dataset_config=name,
            dataset_split="test",
            metric_type="precision_at_1",
            metric_name="Precision@1 (%)",
            metric_value=round(100 * score, 1),
        )
        for name, score in scores.items()
        if name in MMEB_DATASETS
    ]
    aggregate = aggregate_mmeb(scores)
    results += [
        EvalResult(
            **common,
            dataset_name="MMEB",
            metric_type=f"precision_at_1_{key.lower()}",
            metric_name=f"{key} Precision@1 (%)",
            metric_value=round(100 * aggregate[key], 1),
        )
        for key in AGGREGATE_KEYS
        if aggregate[key] is not None
    ]
    return results


def _evaluation_tables(scores: Mapping[str, float]) -> tuple[list[dict], list[dict]]:
    """Rows of the card's evaluation table (MMEB order, then other datasets) and its aggregate row."""
    names = [name for name in MMEB_DATASETS if name in scores] + sorted(set(scores) - set(MMEB_DATASETS))
    rows = []
    for name in names:
        meta_task, split = MMEB_DATASETS.get(name, ("other", "-"))
        rows.append({"name": name, "meta_task": meta_task, "split": split, "value": f"{100 * scores[name]:.1f}"})
    aggregate = aggregate_mmeb(scores)
    aggregates = [
        {"name": key, "value": f"{100 * aggregate[key]:.1f}", "count": aggregate["num_datasets"][key]}
        for key in AGGREGATE_KEYS
        if aggregate[key] is not None
    ]
    return rows, aggregates


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


def training_settings(args: TrainingArguments) -> dict:
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


def widget_examples(model, processor=None, examples: Sequence[tuple[str, str]] = DEFAULT_WIDGET_TEXTS) -> list[dict]:
    """Widget entries `{"text", "example_title", "output"}` whose output shows the start of each text's embedding."""
    if not examples:
        return []
    was_training = model.training
    model.eval()  # no dropout in the shown outputs, even mid-training
    try:
        embeddings = model.encode(texts=[text for text, _ in examples], processor=processor, convert_to="list")
    finally:
        model.train(was_training)
    return [
        {
            "text": text,
            "example_title": title,
            "output": {"text": f"[{', '.join(f'{value:.4f}' for value in vector[:6])}, ...] ({len(vector)} dims)"},
        }
        for (text, title), vector in zip(examples, embeddings)
    ]


def render_model_card(
    model,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    license: str = "apache-2.0",
    language: str | list[str] | None = "en",
    tags: Sequence[str] | None = None,
    training_args: Mapping | None = None,
    eval_results: Mapping | None = None,
    widget: list[dict] | None = None,
    template_path: str | os.PathLike = TEMPLATE_PATH,
) -> ModelCard:
    """The model card (README.md) of a LLaVE embedding model.

    Args:
        model: the `LlaveEmbeddingModel` (its config gives the backbone, embedding size and pooling).
        repo_id: the Hub repository, used in the usage snippets.
        model_name: the card's title and `model-index` name (defaults to the repository's name).
        base_model, datasets, license, language, tags: card metadata (`tags` add to `DEFAULT_TAGS`).
        training_args: the training and loss settings actually used (name -> value), shown as a table; see
            `training_settings`.
        eval_results: MMEB Precision@1 as fractions: `MMEBEvaluator.evaluate` results or {dataset: P@1}. Feeds the
            evaluation table and the `model-index` metadata.
        widget: widget entries (see `widget_examples`).
    """
    config = model.config
    repo_id = repo_id or "<namespace>/<model>"
    model_name = model_name or repo_id.split("/")[-1]
    scores = _mmeb_scores(eval_results) if eval_results else {}
    eval_rows, aggregates = _evaluation_tables(scores) if scores else ([], [])
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        base_model=base_model,
        datasets=datasets,
        language=language,
        license=license,
        tags=[*DEFAULT_TAGS, *(tags or ())],
        model_name=model_name if scores else None,  # only `model-index` uses it
        eval_results=_model_index(scores) or None,
        widget=widget or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        embedding_dim=config.hidden_size,
        backbone_type=config.backbone_config.model_type,
        multimodal=getattr(config.backbone_config, "vision_config", None) is not None,
        pooling=config.pooling,
        normalize=config.normalize,
        num_parameters=_format_count(_num_parameters(model)),
        training_args={key: value for key, value in (training_args or {}).items() if not key.endswith("_token")},
        eval_rows=eval_rows,
        aggregates=aggregates,
    )


def write_hub_files(folder: str | os.PathLike, model, card: ModelCard) -> None:
    """Writes what a push carries beside weights, config and processor: the model's current modeling files,
    `handler.py`, `requirements.txt` and the card as README.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The Trainer's mid-training pushes copy only config and weights into the pushed folder: refresh the code too.
    custom_object_save(model, folder)
    shutil.copyfile(HANDLER_PATH, folder / "handler.py")
    # Inference Endpoints installs this before loading the handler; the modeling files need transformers 5.
    version = transformers.__version__.split(".")
    (folder / "requirements.txt").write_text(f"transformers>={version[0]}.{version[1]}\n", encoding="utf-8")
    card.save(folder / "README.md")


def save_for_hub(
    model,
    processor,
    folder: str | os.PathLike,
    *,
    widget_texts: Sequence[tuple[str, str]] = DEFAULT_WIDGET_TEXTS,
    **card_kwargs,
) -> Path:
    """Writes a complete Hub repository into the empty (or new) `folder`: safetensors weights, config with
    `auto_map`, the modeling files, the processor, README.md, handler.py and requirements.txt.

    `card_kwargs` go to `render_model_card` (`repo_id`, `base_model`, `training_args`, `eval_results`, ...);
    `widget_texts` are the (text, title) widget examples whose outputs the card shows (`()` for none).
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        # Files of an earlier save (other shards, a .bin) would be pushed along and contradict this one.
        raise ValueError(f"{folder} is not empty: save_for_hub writes a complete repository into an empty folder.")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    widget = widget_examples(model, processor, widget_texts)
    write_hub_files(folder, model, render_model_card(model, widget=widget, **card_kwargs))
    return folder


def push_to_hub(
    model,
    processor,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload LLaVE embedding model",
    revision: str | None = None,
    **save_kwargs,
) -> CommitInfo:
    """Creates `repo_id` if needed and pushes `save_for_hub`'s folder to it in one commit.

    `token` defaults to the logged-in one (`HF_TOKEN` or `hf auth login`); `private` applies only when the
    repository is created. Root code, config and weight files of an earlier push that this one does not carry are
    deleted in the same commit (a stale `model.safetensors` would shadow new shards). `save_kwargs` go to
    `save_for_hub` and `render_model_card`.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        save_for_hub(model, processor, folder, repo_id=repo_id, **save_kwargs)
        carried = set(os.listdir(folder))
        stale = [
            glob.escape(path)
            for path in api.list_repo_files(repo_id, revision=revision)
            if "/" not in path and path not in carried and path.endswith(_SAVED_SUFFIXES)
        ]
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            delete_patterns=stale or None,
        )
    logger.info(f"Pushed {repo_id}: {commit.commit_url}")
    return commit


# ----------------------------------------------------------------------------------------------------------------
# Trainer integration


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
        hub_card_kwargs (`dict`, *optional*): `render_model_card` arguments (`base_model`, `datasets`, `license`,
            `eval_results`, ...); `create_model_card`'s arguments override them.
    """

    def __init__(self, *args, hub_card_kwargs: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub_card_kwargs = dict(hub_card_kwargs or {})
        if self.args.hub_token is not None and pickle.loads(pickle.dumps(self.args)).hub_token is not None:
            raise ValueError(
                "hub_token would be saved in training_args.bin and pushed to the Hub. Log in instead (`hf auth login` "
                "or the HF_TOKEN environment variable), or make the arguments class a TokenRedactingArgumentsMixin."
            )
        self.add_callback(_HubFilesCallback(self))

    def hub_training_settings(self) -> dict:
        """The card's training table; override to add settings that are not `TrainingArguments` fields."""
        return training_settings(self.args)

    def prepare_hub_files(self, **card_overrides) -> None:
        """Writes the card, modeling files, handler and requirements into `args.output_dir` (main process only)."""
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        card_kwargs = {
            "repo_id": self.hub_model_id or self.args.hub_model_id,
            **self.hub_card_kwargs,
            **card_overrides,
        }
        if "widget" not in card_kwargs:
            # One process alone cannot run a forward pass over parameters sharded across processes.
            sharded = is_deepspeed_zero3_enabled() or self.is_fsdp_enabled
            card_kwargs["widget"] = None if sharded else widget_examples(model, self.processing_class)
        card = render_model_card(model, training_args=self.hub_training_settings(), **card_kwargs)
        write_hub_files(self.args.output_dir, model, card)

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


__all__ = [
    "DEFAULT_TAGS",
    "DEFAULT_WIDGET_TEXTS",
    "PIPELINE_TAG",
    "HubPublishMixin",
    "TokenRedactingArgumentsMixin",
    "push_to_hub",
    "render_model_card",
    "save_for_hub",
    "training_settings",
    "widget_examples",
    "write_hub_files",
]
