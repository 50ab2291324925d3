"""llave-hf: train and serve LLaVE universal multimodal embedding models, HF-native.

`import llave_hf` registers the model, config and processors with transformers' Auto classes (checkpoints also load
without it, through `trust_remote_code`). The training, evaluation and publishing API is imported on first use, so
that embedding needs neither `datasets` nor the Trainer loaded.
"""

import importlib
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .modeling.backbones import SUPPORTED_BACKBONES
from .modeling.configuration_llave import LlaveEmbeddingConfig
from .modeling.modeling_llave import LlaveEmbeddingModel, LlaveEmbeddingOutput, NonFiniteEmbeddingError
from .modeling.processing_llave import (
    LLAVE_PROMPT_TEMPLATE,
    MMEB_IMAGE_PLACEHOLDER,
    LlaveProcessor,
    LlaveTextProcessor,
    Video,
)


__version__ = "0.1.0"

AutoConfig.register("llave", LlaveEmbeddingConfig, exist_ok=True)
AutoModel.register(LlaveEmbeddingConfig, LlaveEmbeddingModel, exist_ok=True)
AutoProcessor.register(LlaveEmbeddingConfig, LlaveProcessor, exist_ok=True)
# AutoProcessor finds a saved processor's class by name among the registered ones, one per config class: the text-only
# processor gets a key of its own so that text-only checkpoints load without trust_remote_code too.
PROCESSOR_MAPPING.register(type("LlaveTextProcessorKey", (), {}), LlaveTextProcessor, exist_ok=True)
# `save_pretrained` then writes `auto_map` and copies the modeling files, so checkpoints load without llave_hf.
LlaveEmbeddingConfig.register_for_auto_class()
LlaveEmbeddingModel.register_for_auto_class("AutoModel")
LlaveProcessor.register_for_auto_class("AutoProcessor")
LlaveTextProcessor.register_for_auto_class("AutoProcessor")

# name -> submodule, imported on first access
_LAZY = {
    "ContrastiveTrainer": "trainer",
    "ContrastiveTrainingArguments": "trainer_config",
    "hardness_weighted_contrastive_loss": "loss",
    "ContrastiveLossOutput": "loss",
    "ContrastiveCollator": "collator",
    "ContrastiveBatch": "collator",
    "ModalityLengthGroupedSampler": "sampler",
    "load_mmeb_train": "mmeb_train",
    "MMEBEvaluator": "evaluation",
    "EvaluationResults": "evaluation",
    "VideoRetrievalEvaluator": "evaluation",
    "push_to_hub": "hub",
    "save_for_hub": "hub",
    "build_processor": "processors",
    "load_processor": "processors",
}

if TYPE_CHECKING:
    from .collator import ContrastiveBatch, ContrastiveCollator
    from .evaluation import EvaluationResults, MMEBEvaluator, VideoRetrievalEvaluator
    from .hub import push_to_hub, save_for_hub
    from .loss import ContrastiveLossOutput, hardness_weighted_contrastive_loss
    from .mmeb_train import load_mmeb_train
    from .processors import build_processor, load_processor
    from .sampler import ModalityLengthGroupedSampler
    from .trainer import ContrastiveTrainer
    from .trainer_config import ContrastiveTrainingArguments


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "LLAVE_PROMPT_TEMPLATE",
    "MMEB_IMAGE_PLACEHOLDER",
    "SUPPORTED_BACKBONES",
    "LlaveEmbeddingConfig",
    "LlaveEmbeddingModel",
    "LlaveEmbeddingOutput",
    "LlaveProcessor",
    "LlaveTextProcessor",
    "NonFiniteEmbeddingError",
    "Video",
    *_LAZY,
]
