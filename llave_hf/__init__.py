"""llave-hf: train and serve LLaVE universal multimodal embedding models, HF-native."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .modeling.backbones import SUPPORTED_BACKBONES
from .modeling.configuration_llave import LlaveEmbeddingConfig
from .modeling.modeling_llave import LlaveEmbeddingModel, LlaveEmbeddingOutput, NonFiniteEmbeddingError
from .modeling.processing_llave import LLAVE_PROMPT_TEMPLATE, MMEB_IMAGE_PLACEHOLDER, LlaveProcessor, LlaveTextProcessor


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
]
