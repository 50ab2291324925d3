# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Inference Endpoints custom handler of LLaVE embedding models.

Request body (JSON):

    {"inputs": ITEM or [ITEM, ...], "parameters": {"instruction": "...", "batch_size": 8}}

where ITEM is a string (a text) or an object `{"text": ..., "image": ..., "instruction": ...}` with at least a text
or an image. `image` is a base64 string or a `data:image/...;base64,...` URL. An item's own `instruction` overrides
the one in `parameters`. The answer is one embedding (a list of floats, L2-normalised) per item, in input order,
also for a single item.

A bad request raises `ValueError` naming the item: the Inference Endpoints server answers it with status 400 and
`{"error": "<message>"}` (returning an error object instead would be a 200 reply that clients take as a result).
A model fault (a non-finite embedding: `encode` raises `NonFiniteEmbeddingError`, a `RuntimeError`) propagates as
a server error: the request was fine.

This file travels inside checkpoints and is imported on its own by the endpoint server: it imports only torch,
transformers, PIL and the standard library, and loads the model through `trust_remote_code`.
"""

import base64
import binascii
import io
import math
import re

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor


_ITEM_KEYS = {"text", "image", "instruction"}
_PARAMETERS = {"instruction", "batch_size"}
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


def decode_image(value, name: str) -> Image.Image:
    """A base64 string or data URL -> RGB PIL image; errors name the item."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: `image` must be a base64 string or a data URL, got {type(value).__name__}.")
    value = value.strip()
    prefix = _DATA_URL.match(value)
    # Line breaks are allowed: `base64` tools wrap their output.
    payload = "".join(value[prefix.end() if prefix else 0 :].split())
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: `image` is not valid base64 (nor a data:image/...;base64, URL).") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: `image` does not decode to an image: {error}") from None


def parse_request(data) -> tuple[list[tuple[str | None, Image.Image | None, str | None]], int]:
    """Validates a request body; returns its items as (text, image, instruction) and the batch size."""
    if not isinstance(data, dict) or "inputs" not in data:
        raise ValueError('The request body must be a JSON object with an "inputs" field.')
    unknown = sorted(set(data) - {"inputs", "parameters"})
    if unknown:
        raise ValueError(f"Unknown request field(s) {', '.join(unknown)}; expected inputs and parameters.")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValueError('"parameters" must be an object.')
    unknown = sorted(set(parameters) - _PARAMETERS)
    if unknown:
        raise ValueError(f"Unknown parameter(s) {', '.join(unknown)}; expected {', '.join(sorted(_PARAMETERS))}.")
    instruction = parameters.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise ValueError("parameters.instruction must be a string.")
    batch_size = parameters.get("batch_size", 8)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"parameters.batch_size must be a positive integer, got {batch_size!r}.")

    inputs = data["inputs"]
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items:
        raise ValueError('"inputs" must be a string, an object or a non-empty list of them.')
    parsed = []
    for index, item in enumerate(items):
        name = "inputs" if single else f"inputs[{index}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise ValueError(f"{name}: an item must be a string or an object, got {type(item).__name__}.")
        unknown = sorted(set(item) - _ITEM_KEYS)
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {', '.join(unknown)}; expected text, image, instruction.")
        text, image, item_instruction = item.get("text"), item.get("image"), item.get("instruction", instruction)
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{name}: `text` must be a string, got {type(text).__name__}.")
        if item_instruction is not None and not isinstance(item_instruction, str):
            raise ValueError(f"{name}: `instruction` must be a string, got {type(item_instruction).__name__}.")
        if not text and image is None:
            raise ValueError(f"{name}: nothing to embed: give a non-empty `text`, an `image` or both.")
        parsed.append((text, decode_image(image, name) if image is not None else None, item_instruction))
    return parsed, batch_size


class EndpointHandler:
    def __init__(self, path: str = ""):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype="auto").to(device).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)

    def __call__(self, data: dict) -> list[list[float]]:
        items, batch_size = parse_request(data)
        names = ["inputs"] if not isinstance(data["inputs"], list) else [f"inputs[{i}]" for i in range(len(items))]
        # encode() takes one instruction per call: group the items by instruction, then restore input order.
        groups: dict[str | None, list[int]] = {}
        for index, (_, _, instruction) in enumerate(items):
            groups.setdefault(instruction, []).append(index)
        embeddings: list[list[float] | None] = [None] * len(items)
        for instruction, indices in groups.items():
            try:
                rows = self.model.encode(
                    texts=[items[i][0] for i in indices],
                    images=[items[i][1] for i in indices],
                    instruction=instruction,
                    batch_size=batch_size,
                    convert_to="list",
                    processor=self.processor,
                    item_names=[names[i] for i in indices],
                )
            except (ValueError, TypeError) as error:
                # Bad input: the endpoint server answers ValueError with 400. A model fault is a RuntimeError and
                # propagates as a server error.
                raise ValueError(str(error)) from None
            for index, row in zip(indices, rows):
                # The checkpoint's own modeling code may not check; NaN would also make the JSON reply invalid.
                if not all(math.isfinite(value) for value in row):
                    raise RuntimeError(f"non-finite embedding for {names[index]}.")
                embeddings[index] = row
        return embeddings
