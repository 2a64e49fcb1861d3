"""Models built from registry layers: pre-norm blocks, the encoder, classification and retrieval heads."""

from zoo.models.block import Block
from zoo.models.encoder import Classifier, Encoder, ModelConfig, build_model
from zoo.models.heads import ClassificationHead, RetrievalHead

__all__ = [
    "Block",
    "ClassificationHead",
    "Classifier",
    "Encoder",
    "ModelConfig",
    "RetrievalHead",
    "build_model",
]
