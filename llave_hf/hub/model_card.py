# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) of a LLaVE embedding model: what it says, as `LlaveModelCardData`, and its rendering
from the Jinja template `llave_hf/hub_cards/llave_model_card.md`."""

import collections
import dataclasses
import importlib.metadata
import importlib.resources
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation import AGGREGATE_KEYS, MMEB_DATASETS, MMEB_HUB_ID, EvaluationResults, aggregate_mmeb


# `feature-extraction` and not `image-feature-extraction` or `sentence-similarity`: the model maps any item (text,
# image, or both) to one vector, which is exactly that task's contract (`{"inputs": ...}` -> embeddings, as our
# handler answers, so `InferenceClient.feature_extraction` works on an endpoint). `image-feature-extraction` would
# announce image-only inputs, and `sentence-similarity` a text-only, pairwise-score API (source_sentence/sentences)
# that this model does not serve.
PIPELINE_TAG = "feature-extraction"
DEFAULT_TAGS = ("llave", "multimodal-embedding", "vision-language", "retrieval", "mmeb")
# The installed `llave_hf.hub_cards` package (the source tree's `hub_cards/`, mapped in setup.cfg).
TEMPLATE_PATH = Path(str(importlib.resources.files("llave_hf.hub_cards") / "llave_model_card.md"))
# Widget inputs (text, title). A custom-code model gets no live widget, so the card shows precomputed outputs.
DEFAULT_WIDGET_TEXTS = (
    ("A dog catching a frisbee on the beach.", "Caption"),
    ("Find me an everyday image that matches the given caption: a red double-decker bus in the rain", "Query"),
)


def _precision_at_1(eval_results: EvaluationResults | Mapping[str, float]) -> dict[str, float]:
    """Precision@1 per dataset (fractions) of an `EvaluationResults` (its `.precision_at_1`) or a {dataset: P@1}
    mapping."""
    scores = getattr(eval_results, "precision_at_1", eval_results)
    if not isinstance(scores, Mapping):
        kind = type(eval_results).__name__
        raise TypeError(f"eval_results must be an EvaluationResults or a {{dataset: P@1}} mapping, got {kind}.")
    for name, score in scores.items():
        if not isinstance(score, numbers.Real):
            raise TypeError(f"eval_results[{name!r}] must be a Precision@1 fraction, got {type(score).__name__}.")
    return {name: float(score) for name, score in scores.items()}


def _num_parameters(model) -> int:
    # Under DeepSpeed ZeRO-3 the local parameters are empty shards; `ds_numel` holds their full size.
    return sum(getattr(parameter, "ds_numel", 0) or parameter.numel() for parameter in model.parameters())


def _format_count(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


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
    means = aggregate_mmeb(scores).means
    results += [
        EvalResult(
            **common,
            dataset_name="MMEB",
            metric_type=f"precision_at_1_{key.lower()}",
            metric_name=f"{key} Precision@1 (%)",
            metric_value=round(100 * means[key], 1),
        )
        for key in AGGREGATE_KEYS
        if means[key] is not None
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
        {"name": key, "value": f"{100 * aggregate.means[key]:.1f}", "count": aggregate.num_datasets[key]}
        for key in AGGREGATE_KEYS
        if aggregate.means[key] is not None
    ]
    return rows, aggregates


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


def framework_versions() -> dict[str, str]:
    """Versions of the libraries that made (and load) the model, those installed."""
    versions = {}
    for name in ("llave-hf", "transformers", "torch", "accelerate", "datasets", "peft", "sentence-transformers"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def training_data_summary(dataset) -> dict[str, int]:
    """Rows per subset of a training dataset with a `subset` column (MMEB-train), else `{"train": rows}`."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return {}
    if "subset" in getattr(dataset, "column_names", ()):
        return dict(collections.Counter(dataset["subset"]))
    return {"train": len(dataset)}


def final_training_diagnostics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last training log entry's loss and diagnostics, with its step."""
    for entry in reversed(log_history):
        if "loss" in entry:
            return {key: value for key, value in entry.items() if isinstance(value, numbers.Real)}
    return {}


@dataclasses.dataclass
class LlaveModelCardData:
    """What a LLaVE model card says beyond the model itself (whose config gives the backbone, embedding size and
    pooling). All fields are optional; a card without training settings or results says they were not recorded.

    Args:
        repo_id: the Hub repository, used in the usage snippets.
        model_name: the card's title and `model-index` name (defaults to the repository's name).
        base_model, datasets, license, language: card metadata.
        tags: tags added to `DEFAULT_TAGS`.
        training_args: the training and loss settings actually used (name -> value), shown as a table; see
            `training_settings`. `*_token` entries are never shown.
        eval_results: MMEB Precision@1 as fractions: an `EvaluationResults` (its `.precision_at_1`) or a
            {dataset: P@1} mapping. Feeds the evaluation table and the `model-index` metadata.
        widget: widget entries (see `widget_examples`).
        prompts: the instructions sentence-transformers prepends by name (`{"query": ..., "document": ...}` for
            `encode_query` and `encode_document`), written to `config_sentence_transformers.json` and shown in the
            usage snippet.
        training_data: rows per training subset ({subset: rows}), e.g. `training_data_summary(train_dataset)`.
        training_diagnostics: the final logged training values (loss and the loss diagnostics), e.g.
            `final_training_diagnostics(trainer.state.log_history)`.
        lora: the LoRA settings when the model was trained with LoRA adapters (`lora_r`, `lora_alpha`, ...).
    """

    repo_id: str | None = None
    model_name: str | None = None
    base_model: str | list[str] | None = None
    datasets: str | list[str] | None = None
    license: str = "apache-2.0"
    language: str | list[str] | None = "en"
    tags: Sequence[str] | None = None
    training_args: Mapping[str, Any] | None = None
    eval_results: EvaluationResults | Mapping[str, float] | None = None
    widget: list[dict] | None = None
    prompts: Mapping[str, str] | None = None
    training_data: Mapping[str, int] | None = None
    training_diagnostics: Mapping[str, float] | None = None
    lora: Mapping[str, Any] | None = None

    def render(self, model, template_path: str | os.PathLike = TEMPLATE_PATH) -> ModelCard:
        """The card of `model` (a `LlaveEmbeddingModel`), rendered from the Jinja template at `template_path`."""
        config = model.config
        repo_id = self.repo_id or "<namespace>/<model>"
        model_name = self.model_name or repo_id.split("/")[-1]
        scores = _precision_at_1(self.eval_results) if self.eval_results is not None else {}
        eval_rows, aggregates = _evaluation_tables(scores) if scores else ([], [])
        metadata = ModelCardData(
            library_name="transformers",
            pipeline_tag=PIPELINE_TAG,
            base_model=self.base_model,
            datasets=self.datasets,
            language=self.language,
            license=self.license,
            tags=[*DEFAULT_TAGS, *(self.tags or ())],
            model_name=model_name if scores else None,  # only `model-index` uses it
            eval_results=_model_index(scores) or None,
            widget=self.widget or None,
        )
        training_args = self.training_args or {}
        return ModelCard.from_template(
            metadata,
            template_path=str(template_path),
            model_name=model_name,
            repo_id=repo_id,
            embedding_dim=config.hidden_size,
            backbone_type=config.backbone_config.model_type,
            multimodal=getattr(config.backbone_config, "vision_config", None) is not None,
            pooling=config.pooling,
            normalize=config.normalize,
            num_parameters=_format_count(_num_parameters(model)),
            training_args={key: value for key, value in training_args.items() if not key.endswith("_token")},
            eval_rows=eval_rows,
            aggregates=aggregates,
            prompts=dict(self.prompts or {}),
            matryoshka_dims=getattr(config, "matryoshka_dims", None),
            training_data=dict(self.training_data or {}),
            training_rows=sum((self.training_data or {}).values()),
            training_diagnostics=dict(self.training_diagnostics or {}),
            lora=dict(self.lora or {}),
            framework_versions=framework_versions(),
        )


def render_model_card(model, *, template_path: str | os.PathLike = TEMPLATE_PATH, **card_data: Any) -> ModelCard:
    """The model card (README.md) of a LLaVE embedding model: `render_model_card(model, repo_id=..., eval_results=...)`
    is `LlaveModelCardData(repo_id=..., eval_results=...).render(model)`; `card_data` are its fields."""
    return LlaveModelCardData(**card_data).render(model, template_path)
