# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of LLaVE embedding models.

This file travels inside every checkpoint (``trust_remote_code``): it imports only torch, transformers and its
sibling files.
"""

from typing import Literal

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .backbones import backbone_family


class LlaveEmbeddingConfig(PretrainedConfig):
    r"""
    Configuration of [`LlaveEmbeddingModel`]: a multimodal (or text-only) backbone whose last token's final hidden
    state, L2-normalised, is the embedding (LLaVE, Lan et al., Findings of EMNLP 2025, arXiv 2503.04812).

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the backbone, built with `AutoModel.from_config`. One of the model types in
            `SUPPORTED_BACKBONES` (see `backbones.py`): LLaVA-OneVision (the released LLaVE models), Qwen2-VL,
            Qwen2.5-VL, Qwen3-VL, LLaVA, or a text-only Qwen2 language model. Defaults to a default Qwen2 config.
        pooling (`str`, *optional*, defaults to `"last"`):
            `"last"`: the final hidden state of the last non-padding token (LLaVE). `"mean"`: the mean over all
            non-padding tokens.
        normalize (`bool`, *optional*, defaults to `True`):
            L2-normalise the embeddings, so that cosine similarity is a dot product.
        sub_batching (`bool`, *optional*, defaults to `False`):
            Run the rows of a batch as sub-batches of similar length inside one `forward` (e.g. short text queries
            apart from long image targets), each padded only to its own longest row, instead of padding every row
            to the batch's longest. Embeddings and gradients are those of the padded forward (up to float
            rounding); only the padding is not computed. It pays where rows differ much in length (text queries
            beside images of thousands of tokens); on batches of short rows the extra backbone calls cost more than
            the padding they save, so it is off by default. Under DeepSpeed ZeRO-3 (its partitioned weights need
            every process to make the same calls) one padded backbone call runs either way.
        sub_batch_overhead_tokens (`int`, *optional*, defaults to 256):
            What one more backbone call costs, in tokens: rows are split into the sub-batches that minimise
            `sum(rows x longest row) + sub_batch_overhead_tokens x number of sub-batches`. Raise it where a call's
            fixed cost (kernel launches) is high compared with its tokens.
        matryoshka_dims (`list[int]`, *optional*):
            The dimensions the model was trained to be truncated to (Matryoshka training), largest first;
            `encode(truncate_dim=d)` keeps the first `d` dimensions and re-normalises. `None`: not trained so.

    Example:

    ```python
    >>> from transformers import Qwen2Config
    >>> from llave_hf import LlaveEmbeddingConfig, LlaveEmbeddingModel

    >>> config = LlaveEmbeddingConfig(backbone_config=Qwen2Config(hidden_size=64, num_hidden_layers=2))
    >>> model = LlaveEmbeddingModel(config)
    ```"""

    model_type = "llave"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    backbone_config: dict | PretrainedConfig | None = None
    pooling: Literal["last", "mean"] = "last"
    normalize: bool = True
    sub_batching: bool = False
    sub_batch_overhead_tokens: int = 256
    matryoshka_dims: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        backbone_family(self.backbone_config)  # raises for an unsupported family
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}.")
        if self.sub_batch_overhead_tokens < 0:
            raise ValueError(f"sub_batch_overhead_tokens must be >= 0, got {self.sub_batch_overhead_tokens}.")

    @property
    def hidden_size(self) -> int:
        """Dimension of the embeddings: the language model's hidden size."""
        return self.backbone_config.get_text_config().hidden_size
