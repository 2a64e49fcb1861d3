"""Task kinds: what a task's examples look like to the model, its head and its loss, declared once.

A kind names how many inputs an example has, which head turns the pooled encoder outputs into
logits, and :meth:`TaskKind.loss_terms`, the one loss the training step (``zoo.train.step``) and
evaluation (``zoo.train.trainer``) share. Adding a kind is one class and one :func:`register_kind`
line; :func:`zoo.models.build_model` picks the head by kind name, never by branching on it.

    classify   one input  -> ClassificationHead  (ListOps, Text, Image, Pathfinder; Tay et al. 2021)
    pair       two inputs -> RetrievalHead        (LRA's dual-encoder Retrieval)
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.models.heads import ClassificationHead, RetrievalHead

__all__ = ["KINDS", "ClassifyKind", "PairKind", "TaskKind", "get_kind", "register_kind"]


class TaskKind:
    """One kind of task: ``n_inputs`` sequences per example, a head, and the weighted loss terms."""

    name: str = ""
    n_inputs: int = 1

    def head(self, config, n_classes: int) -> nn.Module:
        """The head over the ``n_inputs`` pooled ``(B, D)`` vectors -> logits."""
        raise NotImplementedError

    def loss_terms(self, logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
        """``(3,)`` fp32: the weighted cross-entropy sum, the weighted correct count and the weight sum.

        ``weights`` ``(B,)``: 1 for real rows, 0 for filler rows. Training divides the first term by
        the batch's real rows; evaluation sums all three over the split.
        """
        ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
        correct = (logits.detach().argmax(-1) == labels).float()  # (B,)
        return torch.stack([(ce * weights).sum(), (correct * weights).sum(), weights.sum().float()])


class ClassifyKind(TaskKind):
    """One sequence -> one label."""

    name, n_inputs = "classify", 1

    def head(self, config, n_classes: int) -> nn.Module:
        return ClassificationHead(config.d_model, n_classes, dropout=config.dropout)


class PairKind(TaskKind):
    """Two sequences (one shared encoder) -> one label: the dual encoder of LRA Retrieval."""

    name, n_inputs = "pair", 2

    def head(self, config, n_classes: int) -> nn.Module:
        return RetrievalHead(config.d_model, n_classes, hidden=int(round(config.d_model * config.mlp_ratio)),
                             dropout=config.dropout)


KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    """Declare a kind under ``kind.name`` (one line per kind)."""
    KINDS[kind.name] = kind
    return kind


register_kind(ClassifyKind())
register_kind(PairKind())


def get_kind(name: str | TaskKind) -> TaskKind:
    """The kind called ``name`` (a :class:`TaskKind` passes through); an unknown name raises one line."""
    if isinstance(name, TaskKind):
        return name
    if name not in KINDS:
        close = difflib.get_close_matches(str(name), list(KINDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task kind {name!r}.{hint} Known kinds: {', '.join(KINDS)}")
    return KINDS[name]
