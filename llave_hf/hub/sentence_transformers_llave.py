# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""The sentence-transformers input module of LLaVE embedding models, `LlaveTransformer`.

`save_for_hub` copies this file into every checkpoint and names it in `modules.json`, so that
`SentenceTransformer(repo, trust_remote_code=True)` embeds exactly as `LlaveEmbeddingModel.encode`. It stands alone
(it imports only torch and sentence-transformers): sentence-transformers imports it from the checkpoint.

Why a module of our own rather than the stock `Transformer`: sentence-transformers prepends a prompt (`encode_query`,
`encode_document`, `prompt_name=`) to texts only, so an image queried with an instruction would lose it; and it
refuses batches that mix modalities. Here every item, whatever its modality, goes through `LlaveProcessor` with the
prompt as its instruction, and one batch may hold texts, images and image+text items.
"""

from typing import Any


from sentence_transformers.base.modules import Transformer


# Keys of a dict input: {"text": ..., "image": ...} (either may be missing).
_ITEM_KEYS = {"text", "image"}


def _describe(item, limit: int = 60) -> str:
    text = repr(item) if isinstance(item, (str, dict, list, tuple)) else f"<{type(item).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LlaveTransformer(Transformer):
    """`Transformer` whose inputs are LLaVE items and whose output is the model's pooled, normalised embedding.

    An input is a text (a string), an image (a PIL image, or a path that sentence-transformers recognises as one) or
    a dict `{"text": ..., "image": ...}`. The prompt (`prompt=`, `prompt_name=`, `encode_query`/`encode_document`)
    is the item's instruction, for every modality, as `LlaveEmbeddingModel.encode(..., instruction=prompt)`.
    """

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        if not inputs:
            return {}
        texts, images, names = [], [], []
        for item in inputs:
            # sentence-transformers sorts the inputs by length before this: name items by content, not position.
            name = f"input {_describe(item)}"
            if isinstance(item, dict):
                unknown = set(item) - _ITEM_KEYS
                if unknown:
                    raise ValueError(f"{name}: unknown keys {sorted(unknown)}; an item has 'text' and/or 'image'.")
                text, image = item.get("text"), item.get("image")
            elif isinstance(item, str) and self._is_image_path(item):
                text, image = None, item
            elif isinstance(item, str):
                text, image = item, None
            elif isinstance(item, (list, tuple)):
                raise ValueError(f"{name}: pairs and chat messages are not LLaVE items; give a text, an image or a dict.")
            else:
                text, image = None, item  # a PIL image; the processor names the item if it is not one
            texts.append(text)
            images.append(image)
            names.append(name)
        features = dict(self.processor(text=texts, images=images, instruction=prompt or None, item_names=names))
        features["modality"] = "text"  # sentence-transformers' bookkeeping; the forward below ignores it
        return features

    @staticmethod
    def _is_image_path(text: str) -> bool:
        from sentence_transformers.base.modality import is_image_url_or_path

        return is_image_url_or_path(text)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        inputs = {name: features[name] for name in self.processor.model_input_names if name in features}
        features[self.module_output_name] = self.model(**inputs).embeddings
        return features

    def get_embedding_dimension(self) -> int:
        return self.model.config.hidden_size


__all__ = ["LlaveTransformer"]
