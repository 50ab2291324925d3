# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Which `checkpoint-N` folder a run resumes from: the newest COMPLETE one.

A run killed while the Trainer writes `checkpoint-N` leaves a half-written folder (a truncated `config.json` or
`model.safetensors`, no `trainer_state.json`). transformers' `get_last_checkpoint` picks it by its number alone, and
the resume then fails. The Trainer writes, in this order: the model (`config.json`, the weights), the processor
files, `training_args.bin`, the optimizer, scheduler and RNG states, and `trainer_state.json` last. A folder counts
as complete when `trainer_state.json` and every other JSON file parse, the safetensors files hold all the bytes
their headers announce, and the `torch.save` files (`*.pt`, `*.pth`, `*.bin`: zip archives) end with their
directory.
"""

import json
import os
import re
import struct
import zipfile

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


logger = logging.get_logger(__name__)

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _safetensors_problem(path: str) -> str | None:
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return f"{os.path.basename(path)} is truncated ({size} bytes)"
        (header_size,) = struct.unpack("<Q", prefix)
        if 8 + header_size > size:
            return f"{os.path.basename(path)} is truncated (its header announces {header_size} bytes)"
        try:
            header = json.loads(file.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{os.path.basename(path)} has an unreadable header"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if size < 8 + header_size + end:
        return f"{os.path.basename(path)} is truncated ({size} of {8 + header_size + end} bytes)"
    return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why the checkpoint `folder` is incomplete (a sentence), or `None` when it is complete."""
    folder = os.fspath(folder)
    names = set(os.listdir(folder))
    if "trainer_state.json" not in names:
        return "trainer_state.json is missing (the Trainer writes it last: the save was interrupted)"
    if not any(name in names for name in _WEIGHTS) and not any(name.startswith("global_step") for name in names):
        return "it holds no model weights"
    for name in sorted(names):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".json"):
            try:
                with open(path, encoding="utf-8") as file:
                    json.load(file)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return f"{name} is not valid JSON (truncated?)"
        elif name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
            if problem:
                return problem
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            return f"{name} is truncated or corrupt"
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            with open(os.path.join(folder, index), encoding="utf-8") as file:
                shards = set(json.load(file).get("weight_map", {}).values())
            missing = sorted(shards - names)
            if missing:
                return f"weight shard(s) {', '.join(missing)} are missing"
    return None


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` folder of `output_dir` (`None` when there is none); warns, naming each
    newer incomplete one and why it was skipped."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    numbered = [(int(match.group(1)), name) for name in os.listdir(output_dir) if (match := _CHECKPOINT.match(name))]
    for _, name in sorted(numbered, reverse=True):
        folder = os.path.join(output_dir, name)
        if not os.path.isdir(folder):
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning(f"Skipping the incomplete checkpoint {folder}: {problem}.")
    return None


__all__ = ["checkpoint_problem", "latest_complete_checkpoint"]
