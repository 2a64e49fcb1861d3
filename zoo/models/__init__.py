"""Models built from registry layers: pre-norm blocks, the encoder, classification and retrieval heads, task kinds."""

from zoo.models.block import Block
from zoo.models.encoder import Classifier, Encoder, ModelConfig, build_model
from zoo.models.heads import ClassificationHead, RetrievalHead
from zoo.models.kinds import KINDS, TaskKind, get_kind, register_kind

__all__ = [
    "Block",
    "ClassificationHead",
    "Classifier",
    "Encoder",
    "KINDS",
    "ModelConfig",
    "RetrievalHead",
    "TaskKind",
    "build_model",
    "get_kind",
    "register_kind",
]
