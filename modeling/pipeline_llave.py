# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""The `feature-extraction` pipeline of LLaVE embedding models: `model.encode`'s embeddings, through `pipeline()`.

transformers' own feature-extraction pipeline would run the backbone on the bare text and return every token's
hidden state: no LLaVE prompt, no pooling, no normalisation, i.e. wrong embeddings. Checkpoints name this class in
`config.custom_pipelines` instead (`LlaveEmbeddingModel.save_pretrained` writes it), so that

    pipe = pipeline("feature-extraction", model="<org>/llave-2b", trust_remote_code=True)
    pipe(["a dog on a beach", {"image": "dog.jpg", "text": "<|image_1|> Represent the given image."}])

gives one embedding (a list of floats, L2-normalised) per input, equal to `model.encode`'s. An input is a text, a PIL
image, or a dict with `text` and/or `image` (a PIL image or a path); under `image-feature-extraction` a string is an
image path. `instruction=` is prepended to every text, as in `encode`.

This file travels inside every checkpoint (``trust_remote_code``): it imports only torch, transformers and PIL.
"""

import torch
from PIL import Image
from transformers import Pipeline


# config.custom_pipelines: task -> implementation, as `pipeline()` reads it.
LLAVE_CUSTOM_PIPELINES = {
    task: {"impl": "pipeline_llave.LlaveFeatureExtractionPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
    for task in ("feature-extraction", "image-feature-extraction")
}
_ITEM_KEYS = {"text", "image"}


class LlaveFeatureExtractionPipeline(Pipeline):
    """Embeds texts, images or image+text pairs with `model.encode` (see the module docstring)."""

    # encode() loads the checkpoint's own LlaveProcessor; pipeline() must not load a bare tokenizer or image processor.
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def _item(self, value, name: str) -> tuple[str | None, object]:
        if isinstance(value, str):
            return (None, value) if self.task == "image-feature-extraction" else (value, None)
        if isinstance(value, Image.Image):
            return None, value
        if isinstance(value, dict) and value and set(value) <= _ITEM_KEYS:
            return value.get("text"), value.get("image")
        raise TypeError(
            f"{name}: an input must be a text, a PIL image or a dict with 'text' and/or 'image', got {value!r:.80}."
        )

    def __call__(
        self,
        inputs,
        instruction: str | None = None,
        batch_size: int | None = None,
        return_tensors: bool = False,
    ):
        """One embedding per input (a list of floats; a `(hidden_size,)` tensor with `return_tensors=True`), a list
        of them for a list of inputs. Items are batched and ordered by `encode` itself."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        names = ["inputs"] if single else [f"inputs[{index}]" for index in range(len(items))]
        texts, images = zip(*(self._item(item, name) for item, name in zip(items, names))) if items else ((), ())
        embeddings = self.model.encode(
            texts=list(texts),
            images=list(images),
            instruction=instruction,
            batch_size=batch_size or self._batch_size or 32,
            item_names=names,
        )
        rows = list(embeddings) if return_tensors else embeddings.tolist()
        return rows[0] if single else rows

    # The single-item steps of the Pipeline API, which __call__ runs all at once through encode().

    def _sanitize_parameters(self, instruction=None, return_tensors=None, **kwargs):
        forward = {"instruction": instruction} if instruction is not None else {}
        postprocess = {"return_tensors": return_tensors} if return_tensors is not None else {}
        return {}, forward, postprocess

    def preprocess(self, inputs):
        return {"item": self._item(inputs, "inputs")}

    def _forward(self, model_inputs, instruction: str | None = None):
        text, image = model_inputs["item"]
        return {"embedding": self.model.encode(texts=[text], images=[image], instruction=instruction)[0]}

    def postprocess(self, model_outputs, return_tensors: bool = False) -> torch.Tensor | list[float]:
        embedding = model_outputs["embedding"]
        return embedding if return_tensors else embedding.tolist()


__all__ = ["LLAVE_CUSTOM_PIPELINES", "LlaveFeatureExtractionPipeline"]
