"""The pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``."""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from zoo.config import ResolvedLayer
from zoo.models.fused import autocast_dtype, fused_ops

__all__ = ["Block", "NORMS"]

NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def _norm_args(m: nn.Module) -> tuple[Tensor, Tensor | None, float]:
    """``(weight, bias or None, eps)`` of a LayerNorm / RMSNorm (RMSNorm's default eps: fp32's)."""
    eps = m.eps if m.eps is not None else torch.finfo(torch.float32).eps
    return m.weight, getattr(m, "bias", None), eps


class Block(nn.Module):
    """Pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``.

    The work around the mixer runs as the two functions of :mod:`zoo.models.fused` (fused by
    inductor for CUDA tensors, eager elsewhere: the same values). The submodules (``norm1``,
    ``norm2``, timm's ``mlp``, ``drop_path1/2``) hold the parameters and keep the state-dict names.
    """

    fused_devices: frozenset = frozenset({"cuda"})  # where the fused functions are compiled (tests add "cpu")

    def __init__(self, layer: ResolvedLayer, d_model: int, *, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm: str = "layernorm") -> None:
        super().__init__()
        if layer.config.d_model != d_model:
            raise ValueError(f"layer config has d_model={layer.config.d_model}, the block {d_model}: resolve it "
                             "with zoo.config.resolve_layer(..., d_model=...)")
        self.layer_config = layer
        self.dropout, self.path_rate = float(dropout), float(drop_path)
        self.norm1 = NORMS[norm](d_model)
        self.mixer = layer.build()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = NORMS[norm](d_model)
        self.mlp = Mlp(d_model, hidden_features=int(round(d_model * mlp_ratio)), drop=dropout)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        ops = fused_ops(self.fused_devices)
        dtype = autocast_dtype(x)
        h = ops.norm_in(x, *_norm_args(self.norm1), dtype)  # (B, L, D) in the products' dtype
        mixed = self.mixer(h, key_padding_mask=key_padding_mask)  # (B, L, D)
        return ops.mlp_residual(x, mixed, key_padding_mask, *_norm_args(self.norm2), self.mlp.fc1.weight,
                                self.mlp.fc1.bias, self.mlp.fc2.weight, self.mlp.fc2.bias, self.dropout,
                                self.path_rate, self.training, dtype)  # (B, L, D), padded rows 0
