"""Padding-free layouts: the valid tokens of a padded batch, concatenated, for varlen kernels."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from zoo.functional.capture import derived_from_mask

__all__ = ["Packing", "packing"]


@dataclass(frozen=True)
class Packing:
    """The valid tokens of a padded batch, concatenated: ``index`` into the flattened ``(B * L)``
    positions (row-major, so each sequence's tokens stay in order) and each non-empty sequence's
    length (host ints, for varlen kernels)."""

    index: Tensor          # (T,) int64, positions of the valid tokens in B * L
    seqlens: tuple         # lengths of the non-empty rows, sum = T
    batch: int
    length: int

    def pack(self, x: Tensor) -> Tensor:
        """``(B, L, ...)`` -> ``(1, T, ...)``: the valid tokens only."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index).unsqueeze(0)

    def unpack(self, y: Tensor) -> Tensor:
        """``(1, T, ...)`` -> ``(B, L, ...)`` with zeros at the padded positions."""
        out = y.new_zeros(self.batch * self.length, *y.shape[2:])
        return out.index_copy(0, self.index, y[0]).reshape(self.batch, self.length, *y.shape[2:])


def packing(key_padding_mask: Tensor) -> Packing:
    """The :class:`Packing` of a ``(B, L)`` padding mask (True = padding), once per mask tensor."""
    def build() -> Packing:
        valid = ~key_padding_mask  # (B, L)
        lengths = valid.sum(-1).tolist()  # the one host sync
        index = valid.reshape(-1).nonzero().squeeze(1)
        B, L = key_padding_mask.shape
        return Packing(index=index, seqlens=tuple(n for n in lengths if n > 0), batch=B, length=L)

    return derived_from_mask(key_padding_mask, ("packing", key_padding_mask.device), build)
