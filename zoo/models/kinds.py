"""Task kinds: what a task's examples look like to the model, its head and its loss, declared once.

A kind names how many inputs an example has, which head turns the pooled encoder outputs into
logits, and :meth:`TaskKind.loss_terms`, the one loss the training step (``zoo.train.step``) and
evaluation (``zoo.train.trainer``) share. Adding a kind is one class and one :func:`register_kind`
line; :func:`zoo.models.build_model` picks the head by kind name, never by branching on it.

    classify   one input  -> ClassificationHead  (ListOps, Text, Image, Pathfinder; Tay et al. 2021)
    pair       two inputs -> RetrievalHead        (LRA's dual-encoder Retrieval)
    token      one input  -> TokenHead            (a label per position: MQAR, Arora et al. 2024; MAD, Poli et al. 2024)

A kind's labels are ``(B,)`` (one per example) or ``(B, L)`` (one per position, ``-100`` where not
scored); :meth:`TaskKind.probe_labels` makes labels of the right shape for compiling ahead.
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.models.heads import IGNORE, ClassificationHead, RetrievalHead, TokenHead, labelled_index

__all__ = ["KINDS", "ClassifyKind", "PairKind", "TaskKind", "TokenKind", "get_kind", "register_kind"]


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
        the batch's scored labels (``Batch.n_scored``: its real rows here, its labelled positions for
        a per-position kind), so the third term is their count; evaluation sums all three over the split.
        """
        ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
        correct = (logits.detach().argmax(-1) == labels).float()  # (B,)
        return torch.stack([(ce * weights).sum(), (correct * weights).sum(), weights.sum().float()])

    def probe_labels(self, batch_size: int, length: int, device) -> Tensor:
        """Labels of a synthetic batch of one shape (for compiling and capturing a step ahead)."""
        return torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)


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


def _attains_max(logits: Tensor, target: Tensor) -> Tensor:
    """``(..., V), (...) -> (...)`` bool: the target's logit is the largest (``argmax == target`` but for
    exact ties, which count as correct here; float logits of a trained head do not tie).

    On the CPU ``argmax`` over V=8192 costs ~4 ms of a 60 ms MQAR step (L=64, batch 64); ``amax``
    a tenth of it, and a tie-breaking pass (another scan of the logits) would cost as much as argmax.
    """
    return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) >= logits.amax(-1)


class TokenKind(TaskKind):
    """One sequence -> a label per position (``-100``: not scored), a next-token style task.

    The encoder's per-position outputs go to a :class:`~zoo.models.heads.TokenHead`, which projects
    onto the vocabulary only at labelled positions. Loss and accuracy count labelled positions of
    real rows: the weight sum is their number, so evaluation's accuracy is correct labelled
    positions / labelled positions, and the training step's loss is the mean over them.
    """

    name, n_inputs = "token", 1

    def head(self, config, n_classes: int) -> nn.Module:
        return TokenHead(config.d_model, n_classes, dropout=config.dropout)

    def loss_terms(self, logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
        """``logits`` ``(B, K, V)`` from :class:`~zoo.models.heads.TokenHead` (the first K labelled positions
        of each row, or every position when K = L), ``labels`` ``(B, L)``, ``weights`` ``(B,)``."""
        index, valid = labelled_index(labels, logits.shape[1])  # (B, K)
        target = labels.gather(1, index).masked_fill(~valid, 0)  # (B, K)
        w = valid.float() * weights.float().unsqueeze(1)  # (B, K): 0 unlabelled or in filler rows
        ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")  # (B*K,)
        correct = _attains_max(logits.detach(), target).float()  # (B, K)
        return torch.stack([(ce * w.flatten()).sum(), (correct * w).sum(), w.sum()])

    def probe_labels(self, batch_size: int, length: int, device) -> Tensor:
        return torch.full((batch_size, length), IGNORE, dtype=torch.long, device=device).index_fill_(
            1, torch.arange(0, length, 2, device=device), 0)  # (B, L): every other position labelled


KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    """Declare a kind under ``kind.name`` (one line per kind)."""
    KINDS[kind.name] = kind
    return kind


register_kind(ClassifyKind())
register_kind(PairKind())
register_kind(TokenKind())


def get_kind(name: str | TaskKind) -> TaskKind:
    """The kind called ``name`` (a :class:`TaskKind` passes through); an unknown name raises one line."""
    if isinstance(name, TaskKind):
        return name
    if name not in KINDS:
        close = difflib.get_close_matches(str(name), list(KINDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task kind {name!r}.{hint} Known kinds: {', '.join(KINDS)}")
    return KINDS[name]
