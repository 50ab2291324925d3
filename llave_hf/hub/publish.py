# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Writing a complete Hub repository of a LLaVE embedding model (`save_for_hub`) and pushing one (`push_to_hub`).

The token is only ever handed to `huggingface_hub`; it is never logged or written.
"""

import glob
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import CommitInfo, HfApi, ModelCard
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import logging

from .. import modeling
from .model_card import DEFAULT_WIDGET_TEXTS, render_model_card, widget_examples


logger = logging.get_logger(__name__)

HANDLER_PATH = Path(modeling.__file__).resolve().parent / "handler.py"
# Imports sentence-transformers, so it is only read as a file here, never imported.
SENTENCE_TRANSFORMERS_MODULE_PATH = Path(__file__).resolve().parent / "sentence_transformers_llave.py"
# Root files of these kinds are what a save writes; left over from an earlier push they would contradict this one.
_SAVED_SUFFIXES = (".py", ".json", ".safetensors", ".bin", ".txt", ".jinja", ".model")


def write_sentence_transformers_files(folder: str | os.PathLike, prompts: Mapping[str, str] | None = None) -> None:
    """Writes what `SentenceTransformer(folder, trust_remote_code=True)` loads: `modules.json` (one module, our
    `LlaveTransformer`, whose file is copied beside), `sentence_bert_config.json` (every modality goes to the
    model's `forward` and its `embeddings` output, already pooled and normalised: no Pooling or Normalize module)
    and `config_sentence_transformers.json` (the prompts that `encode_query` and `encode_document` prepend as the
    instruction, e.g. `{"query": ..., "document": ...}`; none by default)."""
    folder = Path(folder)
    shutil.copyfile(SENTENCE_TRANSFORMERS_MODULE_PATH, folder / SENTENCE_TRANSFORMERS_MODULE_PATH.name)
    module_type = f"{SENTENCE_TRANSFORMERS_MODULE_PATH.stem}.LlaveTransformer"
    modules = [{"idx": 0, "name": "0", "path": "", "type": module_type}]
    forward = {"method": "forward", "method_output_name": "embeddings"}
    # "message" is declared so that sentence-transformers lets batches that mix modalities through.
    modality_config = {modality: forward for modality in ("text", "image", "image+text", "message")}
    module_config = {
        "transformer_task": "feature-extraction",
        "modality_config": modality_config,
        "module_output_name": "sentence_embedding",
    }
    versions = {"transformers": transformers.__version__, "pytorch": torch.__version__}
    if importlib.util.find_spec("sentence_transformers") is not None:
        versions = {"sentence_transformers": importlib.metadata.version("sentence-transformers"), **versions}
    model_config = {
        "model_type": "SentenceTransformer",
        "__version__": versions,
        "prompts": dict(prompts or {}),
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    for name, content in (
        ("modules.json", modules),
        ("sentence_bert_config.json", module_config),
        ("config_sentence_transformers.json", model_config),
    ):
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def write_hub_files(
    folder: str | os.PathLike, model, card: ModelCard, prompts: Mapping[str, str] | None = None
) -> None:
    """Writes what a push carries beside weights, config and processor: the model's current modeling files,
    `handler.py`, `requirements.txt`, the sentence-transformers files (with `prompts`) and the card as README.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The Trainer's mid-training pushes copy only config and weights into the pushed folder: refresh the code too.
    custom_object_save(model, folder)
    shutil.copyfile(HANDLER_PATH, folder / "handler.py")
    write_sentence_transformers_files(folder, prompts)
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
    **card_data: Any,
) -> Path:
    """Writes a complete Hub repository into the empty (or new) `folder`: safetensors weights, config with
    `auto_map`, the modeling files, the processor, README.md, handler.py, requirements.txt and the
    sentence-transformers files (`write_sentence_transformers_files`).

    `card_data` are `LlaveModelCardData` fields (`repo_id`, `base_model`, `training_args`, `eval_results`,
    `prompts`, ...);
    `widget_texts` are the (text, title) widget examples whose outputs the card shows (`()` for none).
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        # Files of an earlier save (other shards, a .bin) would be pushed along and contradict this one.
        raise ValueError(f"{folder} is not empty: save_for_hub writes a complete repository into an empty folder.")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    widget = widget_examples(model, processor, widget_texts)
    card = render_model_card(model, widget=widget, **card_data)
    write_hub_files(folder, model, card, prompts=card_data.get("prompts"))
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
    **save_kwargs: Any,
) -> CommitInfo:
    """Creates `repo_id` if needed and pushes `save_for_hub`'s folder to it in one commit.

    `token` defaults to the logged-in one (`HF_TOKEN` or `hf auth login`); `private` applies only when the
    repository is created. Root code, config and weight files of an earlier push that this one does not carry are
    deleted in the same commit (a stale `model.safetensors` would shadow new shards). `save_kwargs` go to
    `save_for_hub` (`widget_texts` and `LlaveModelCardData` fields).
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
