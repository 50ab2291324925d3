# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Inference Endpoints custom handler of LLaVE embedding models.

Request body (JSON):

    {"inputs": ITEM or [ITEM, ...], "parameters": {"instruction": "...", "batch_size": 8}}

where ITEM is a string (a text) or an object `{"text": ..., "image": ..., "instruction": ...}` with at least a text
or an image. `image` is a base64 string or a `data:image/...;base64,...` URL. An item's own `instruction` overrides
the one in `parameters`. The answer is one embedding (a list of floats, L2-normalised) per item, in input order,
also for a single item.

Limits (each an environment variable of the endpoint, or an `EndpointHandler(path, limits=...)` argument) bound the
memory and time of one request; a request over one is refused, naming the item:

    LLAVE_MAX_INPUTS        items per request                        (default 256)
    LLAVE_MAX_BATCH_SIZE    largest parameters.batch_size            (default 64)
    LLAVE_MAX_TEXT_CHARS    characters of a text or an instruction   (default 20000; prompts are cut at the
                                                                      processor's max_length tokens anyway)
    LLAVE_MAX_IMAGE_PIXELS  width x height of an image, read from its header before decoding
                                                                     (default 16777216 = 4096 x 4096)

Images are decoded one batch at a time, so a request holds at most `batch_size` decoded images. 16-bit images are
rescaled to 8 bits (value * 255 / 65535), not clipped.

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
import os
import re
from dataclasses import dataclass, fields

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor


_ITEM_KEYS = {"text", "image", "instruction"}
_PARAMETERS = {"instruction", "batch_size"}
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits; `from_env` reads them from `LLAVE_<FIELD IN CAPITALS>` variables (`none` = no limit)."""

    max_inputs: int | None = 256
    max_batch_size: int | None = 64
    max_text_chars: int | None = 20_000
    max_image_pixels: int | None = 4096 * 4096

    @classmethod
    def from_env(cls, environ=os.environ) -> "RequestLimits":
        values = {}
        for field in fields(cls):
            variable = f"LLAVE_{field.name.upper()}"
            if variable in environ:
                text = environ[variable].strip()
                if text.lower() == "none":
                    values[field.name] = None
                elif text.isdigit() and int(text) > 0:
                    values[field.name] = int(text)
                else:
                    raise ValueError(f"{variable}={text!r}: expected a positive integer or 'none'.")
        return cls(**values)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit integer images are rescaled (value * 255 / 65535, rounded), as the processor does, since
    PIL's own conversion clips them at 255."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        image = image.convert("I").point(lambda value: value * (255 / 65535) + 0.5).convert("L")
    return image.convert("RGB")


def decode_image(value, name: str, max_pixels: int | None = RequestLimits.max_image_pixels) -> Image.Image:
    """A base64 string or data URL -> a PIL image, opened (its header read and checked) but not decoded yet:
    `load_rgb` decodes it. Errors name the item."""
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
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: `image` does not decode to an image: {error}") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{name}: the image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(LLAVE_MAX_IMAGE_PIXELS)."
        )
    return image


def load_rgb(image: Image.Image, name: str) -> Image.Image:
    """Decodes an image from `decode_image` to 8-bit RGB; errors name the item."""
    try:
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: `image` does not decode to an image: {error}") from None


def parse_request(
    data, limits: RequestLimits = RequestLimits()
) -> tuple[list[tuple[str | None, Image.Image | None, str | None]], int]:
    """Validates a request body; returns its items as (text, image opened but not decoded, instruction) and the batch
    size."""
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
    if limits.max_batch_size is not None and batch_size > limits.max_batch_size:
        raise ValueError(
            f"parameters.batch_size={batch_size} is over the limit of {limits.max_batch_size} (LLAVE_MAX_BATCH_SIZE)."
        )

    inputs = data["inputs"]
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items:
        raise ValueError('"inputs" must be a string, an object or a non-empty list of them.')
    if limits.max_inputs is not None and len(items) > limits.max_inputs:
        raise ValueError(f'"inputs" has {len(items)} items, over the limit of {limits.max_inputs} (LLAVE_MAX_INPUTS).')
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
        for key, value in (("text", text), ("instruction", item_instruction)):
            if value is not None and limits.max_text_chars is not None and len(value) > limits.max_text_chars:
                raise ValueError(
                    f"{name}: `{key}` has {len(value):,} characters, over the limit of {limits.max_text_chars:,} "
                    "(LLAVE_MAX_TEXT_CHARS)."
                )
        opened = decode_image(image, name, limits.max_image_pixels) if image is not None else None
        parsed.append((text, opened, item_instruction))
    return parsed, batch_size


class EndpointHandler:
    def __init__(self, path: str = "", limits: RequestLimits | None = None):
        self.limits = limits if limits is not None else RequestLimits.from_env()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # This file is itself code of the repository it serves: the endpoint already trusts that repository.
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype="auto").to(device).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)

    def __call__(self, data: dict) -> list[list[float]]:
        items, batch_size = parse_request(data, self.limits)
        names = ["inputs"] if not isinstance(data["inputs"], list) else [f"inputs[{i}]" for i in range(len(items))]
        # encode() takes one instruction per call: group the items by instruction, then restore input order.
        groups: dict[str | None, list[int]] = {}
        for index, (_, _, instruction) in enumerate(items):
            groups.setdefault(instruction, []).append(index)
        embeddings: list[list[float] | None] = [None] * len(items)
        # One encode call per batch, its images decoded just before: memory stays at one batch of decoded images.
        # Longest first, as encode() orders a call's items, so that batch-mates pad little.
        chunks = []
        for instruction, indices in groups.items():
            indices = sorted(indices, key=lambda i: (items[i][1] is not None, len(items[i][0] or "")), reverse=True)
            chunks += [(instruction, indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]
        for instruction, indices in chunks:
            images = [load_rgb(items[i][1], names[i]) if items[i][1] is not None else None for i in indices]
            try:
                rows = self.model.encode(
                    texts=[items[i][0] for i in indices],
                    images=images,
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
