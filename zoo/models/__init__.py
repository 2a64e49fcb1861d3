"""Models built from registry layers: pre-norm blocks, the encoder, classification and retrieval heads."""

from zoo.models.encoder import (
    Block,
    ClassificationHead,
    Classifier,
    Encoder,
    ModelConfig,
    RetrievalHead,
    build_model,
)

__all__ = [
    "Block",
    "ClassificationHead",
    "Classifier",
    "Encoder",
    "ModelConfig",
    "RetrievalHead",
    "build_model",
]
