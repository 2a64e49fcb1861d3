"""The pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``."""

from __future__ import annotations

from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from zoo.base import zero_padded
from zoo.config import ResolvedLayer

__all__ = ["Block", "NORMS"]

NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


class Block(nn.Module):
    """Pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``."""

    def __init__(self, layer: ResolvedLayer, d_model: int, *, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm: str = "layernorm") -> None:
        super().__init__()
        if layer.config.d_model != d_model:
            raise ValueError(f"layer config has d_model={layer.config.d_model}, the block {d_model}: resolve it "
                             "with zoo.config.resolve_layer(..., d_model=...)")
        self.layer_config = layer
        self.norm1 = NORMS[norm](d_model)
        self.mixer = layer.build()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = NORMS[norm](d_model)
        self.mlp = Mlp(d_model, hidden_features=int(round(d_model * mlp_ratio)), drop=dropout)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(x), key_padding_mask=key_padding_mask))  # (B, L, D)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))  # (B, L, D)
        return zero_padded(x, key_padding_mask)  # padded positions stay exactly 0 between blocks
