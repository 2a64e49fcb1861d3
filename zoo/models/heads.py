"""Heads: classification ``(B, D) -> (B, C)``, LRA's dual-encoder retrieval, and the per-position token head.

The pooled heads (``pooled = True``) take the encoder's pooled vectors; :class:`TokenHead`
(``pooled = False``) takes the per-position outputs ``(B, L, D)`` and projects onto the vocabulary
only at the labelled positions (:func:`labelled_index`): on MQAR at L=64, kv=4 that is 4 of 64
positions, and the ``(B, L, V)`` projection at V=8192 would otherwise be most of a CPU step.
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import Mlp
from torch import Tensor, nn

__all__ = ["ClassificationHead", "RetrievalHead", "TokenHead", "labelled_index"]

IGNORE = -100  # the label of a position that is not scored (PyTorch's ignore_index)


class ClassificationHead(nn.Module):
    """One pooled sequence ``(B, D)`` -> logits ``(B, C)``."""

    n_inputs, pooled = 1, True

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, pooled: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        (u,) = pooled
        return self.fc(self.drop(u))  # (B, C)


class RetrievalHead(nn.Module):
    """Two pooled documents ``u, v`` ``(B, D)`` -> ``Mlp([u, v, u*v, u-v])`` -> logits ``(B, C)``.

    The dual-encoder combination of the Long Range Arena's retrieval task (Tay et al. 2021).
    """

    n_inputs, pooled = 2, True

    def __init__(self, d_model: int, n_classes: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = Mlp(4 * d_model, hidden_features=hidden or d_model, out_features=n_classes, drop=dropout)

    def forward(self, pooled: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        u, v = pooled
        return self.mlp(torch.cat([u, v, u * v, u - v], dim=-1))  # (B, C)


def labelled_index(labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first ``k`` labelled positions of each row, in order: ``(index (B, K), valid (B, K))``.

    ``labels`` ``(B, L)`` with :data:`IGNORE` where a position is not scored. Rows with fewer than
    ``k`` labelled positions are filled with unlabelled ones (``valid`` False there). With
    ``k >= L`` the index is every position in order (no selection). Static shapes and no host
    sync, so a CUDA graph can capture it; the same function picks the logits (:class:`TokenHead`)
    and their labels (``zoo.models.kinds.TokenKind.loss_terms``), so both agree.
    """
    B, L = labels.shape
    if k >= L:
        index = torch.arange(L, device=labels.device).expand(B, L)  # (B, L)
    else:
        # a stable sort puts labelled positions first, each group in position order
        index = torch.sort((labels == IGNORE).to(torch.uint8), dim=1, stable=True).indices[:, :k]  # (B, K)
    return index, labels.gather(1, index) != IGNORE  # (B, K), (B, K)


class TokenHead(nn.Module):
    """Per-position logits over the vocabulary, computed only at labelled positions.

    ``forward([h], labels)``: ``h`` ``(B, L, D)`` (the encoder's per-position outputs, no pooling),
    ``labels`` ``(B, L)`` -> logits ``(B, K, V)`` at the first ``K`` labelled positions of each row
    (:func:`labelled_index`); ``K = max_labelled`` when set (the trainer sets the dataset's largest
    count, a static shape), else the batch's largest count. Without labels: every position, ``(B, L, V)``.
    """

    n_inputs, pooled = 1, False

    def __init__(self, d_model: int, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, vocab_size)
        self.max_labelled: int | None = None

    def forward(self, outputs: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        (h,) = outputs  # (B, L, D)
        k = h.shape[1]
        if labels is not None:
            k = self.max_labelled if self.max_labelled is not None else int((labels != IGNORE).sum(1).max())
        if k < h.shape[1]:  # (k >= L: every position, in order, as labelled_index says)
            index, _ = labelled_index(labels, max(k, 1))  # (B, K)
            h = h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, K, D)
        return self.fc(self.drop(h))  # (B, K, V)
