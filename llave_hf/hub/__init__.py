# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Publishing LLaVE embedding models to the Hugging Face Hub.

A published repository holds the safetensors weights, the config with `auto_map` and the modeling files (so that
`AutoModel.from_pretrained(repo, trust_remote_code=True)` works without llave-hf), the processor, our model card
(README.md), the Inference Endpoints `handler.py` and its `requirements.txt`. Three ways to get there:

- `save_for_hub(model, processor, folder)` writes such a folder; `push_to_hub(model, processor, repo_id)` pushes one
  (`publish.py`).
- `HubPublishMixin` makes a `Trainer` subclass's pushes (`--push_to_hub`, also the ones on every save) carry the
  same files: the Trainer's own pushes would replace our card with its generic one and, mid-training, upload only
  config and weights beside whatever (possibly stale) code the output folder holds (`trainer_integration.py`).
- `TokenRedactingArgumentsMixin` keeps `--hub_token` out of the `training_args.bin` that the Trainer pushes.

The card's content is a `LlaveModelCardData`, rendered from a Jinja template (`model_card.py`).
"""

from .model_card import (
    DEFAULT_TAGS,
    DEFAULT_WIDGET_TEXTS,
    PIPELINE_TAG,
    LlaveModelCardData,
    final_training_diagnostics,
    framework_versions,
    render_model_card,
    training_data_summary,
    widget_examples,
)
from .publish import push_to_hub, save_for_hub, write_hub_files, write_sentence_transformers_files
from .trainer_integration import HubPublishMixin, TokenRedactingArgumentsMixin, training_settings


__all__ = [
    "DEFAULT_TAGS",
    "DEFAULT_WIDGET_TEXTS",
    "PIPELINE_TAG",
    "HubPublishMixin",
    "LlaveModelCardData",
    "TokenRedactingArgumentsMixin",
    "final_training_diagnostics",
    "framework_versions",
    "push_to_hub",
    "render_model_card",
    "save_for_hub",
    "training_data_summary",
    "training_settings",
    "widget_examples",
    "write_hub_files",
    "write_sentence_transformers_files",
]
