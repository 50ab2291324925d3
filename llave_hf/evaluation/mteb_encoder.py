# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""LLaVE models in mteb (MTEB, MIEB): an mteb encoder of a checkpoint, through its sentence-transformers files.

    import mteb
    from llave_hf.evaluation.mteb_encoder import mteb_encoder

    encoder = mteb_encoder("<org>/llave-2b", prompts={"query": "...", "document": "..."})
    results = mteb.evaluate(encoder, mteb.get_tasks(tasks=["..."]))

mteb feeds the encoder batches of texts, images or both; `LlaveTransformer` (the checkpoint's sentence-transformers
module) embeds each as `LlaveEmbeddingModel.encode` would, with mteb's prompt for the task as the instruction.
"""

from collections.abc import Mapping
from typing import Any


def mteb_encoder(model, prompts: Mapping[str, str] | None = None, **model_kwargs: Any):
    """An mteb encoder (`mteb.models.SentenceTransformerEncoderWrapper`) of a LLaVE model.

    Args:
        model: a checkpoint (Hub id or folder written by `save_for_hub`), loaded with
            `SentenceTransformer(model, trust_remote_code=True, **model_kwargs)`, or a loaded `SentenceTransformer`.
        prompts: mteb's prompt keys -> instructions, e.g. `{"query": ..., "document": ...}`, or per task and side,
            `{"VisualNews_t2i-query": ...}` (keys must name mteb tasks or task types; mteb ignores others).
            Default: the checkpoint's own named prompts (`config_sentence_transformers.json`).

    The encoder declares the modalities the backbone takes (text, and image for multimodal backbones): mteb refuses
    image tasks for a model it believes text-only.
    """
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    if isinstance(model, str):
        model = SentenceTransformer(model, trust_remote_code=True, **model_kwargs)
    encoder = SentenceTransformerEncoderWrapper(model, model_prompts=dict(prompts) if prompts else None)
    backbone_config = model[0].model.config.backbone_config
    modalities = ["image", "text"] if getattr(backbone_config, "vision_config", None) is not None else ["text"]
    encoder.mteb_model_meta = encoder.mteb_model_meta.model_copy(update={"modalities": modalities})
    return encoder


__all__ = ["mteb_encoder"]
