"""Heads over pooled sequences: classification ``(B, D) -> (B, C)`` and LRA's dual-encoder retrieval."""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import Mlp
from torch import Tensor, nn

__all__ = ["ClassificationHead", "RetrievalHead"]


class ClassificationHead(nn.Module):
    """One pooled sequence ``(B, D)`` -> logits ``(B, C)``."""

    n_inputs = 1

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, pooled: Sequence[Tensor]) -> Tensor:
        (u,) = pooled
        return self.fc(self.drop(u))  # (B, C)


class RetrievalHead(nn.Module):
    """Two pooled documents ``u, v`` ``(B, D)`` -> ``Mlp([u, v, u*v, u-v])`` -> logits ``(B, C)``.

    The dual-encoder combination of the Long Range Arena's retrieval task (Tay et al. 2021).
    """

    n_inputs = 2

    def __init__(self, d_model: int, n_classes: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = Mlp(4 * d_model, hidden_features=hidden or d_model, out_features=n_classes, drop=dropout)

    def forward(self, pooled: Sequence[Tensor]) -> Tensor:
        u, v = pooled
        return self.mlp(torch.cat([u, v, u * v, u - v], dim=-1))  # (B, C)
