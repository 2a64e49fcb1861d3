"""The pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``.

The MLP sublayer is timm's GELU ``Mlp`` (``mlp="gelu"``), a SwiGLU (``"swiglu"``: timm's ``GluMlp``
with SiLU, MAD's mixer/SwiGLU alternation, Poli et al. 2024) or absent (``"none"``: zoology's
mixer-only MQAR models, Arora et al. 2024).
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, GluMlp, Mlp
from torch import Tensor, nn

from zoo.config import ResolvedLayer
from zoo.models.fused import autocast_dtype, fused_ops

__all__ = ["Block", "MLPS", "NORMS", "norm_args"]

NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def _gelu_mlp(d_model: int, hidden: int, dropout: float) -> nn.Module:
    return Mlp(d_model, hidden_features=hidden, drop=dropout)


def _swiglu_mlp(d_model: int, hidden: int, dropout: float) -> nn.Module:
    return GluMlp(d_model, hidden_features=2 * hidden, act_layer=nn.SiLU, gate_last=False, drop=dropout)


MLPS = {"gelu": _gelu_mlp, "swiglu": _swiglu_mlp, "none": None}  # the MLP sublayer's module (None: no MLP)


def norm_args(m: nn.Module) -> tuple[Tensor, Tensor | None, float]:
    """``(weight, bias or None, eps)`` of a LayerNorm / RMSNorm (RMSNorm's default eps: fp32's)."""
    eps = m.eps if m.eps is not None else torch.finfo(torch.float32).eps
    return m.weight, getattr(m, "bias", None), eps


class Block(nn.Module):
    """Pre-norm residual block: ``x + DropPath(mixer(norm(x)))``, then ``x + DropPath(Mlp(norm(x)))``
    (no second sublayer when ``mlp="none"``; ``mlp_ratio`` sets the MLP's hidden width / D).

    The work around the mixer runs as the two functions of :mod:`zoo.models.fused` (fused by
    inductor for CUDA tensors, eager elsewhere: the same values). The submodules (``norm1``,
    ``norm2``, timm's ``mlp``, ``drop_path1/2``) hold the parameters and keep the state-dict names.
    """

    fused_devices: frozenset = frozenset({"cuda"})  # where the fused functions are compiled (tests add "cpu")

    def __init__(self, layer: ResolvedLayer, d_model: int, *, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm: str = "layernorm", mlp: str = "gelu") -> None:
        super().__init__()
        if layer.config.d_model != d_model:
            raise ValueError(f"layer config has d_model={layer.config.d_model}, the block {d_model}: resolve it "
                             "with zoo.config.resolve_layer(..., d_model=...)")
        self.layer_config = layer
        self.dropout, self.path_rate = float(dropout), float(drop_path)
        self.norm1 = NORMS[norm](d_model)
        self.mixer = layer.build()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp not in MLPS:
            raise ValueError(f"mlp={mlp!r}: choose one of {', '.join(MLPS)}")
        self.gated = mlp == "swiglu"
        if MLPS[mlp] is not None:
            self.norm2 = NORMS[norm](d_model)
            self.mlp = MLPS[mlp](d_model, int(round(d_model * mlp_ratio)), dropout)
            self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        else:
            self.mlp = None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        ops = fused_ops(self.fused_devices)
        dtype = autocast_dtype(x)
        h = ops.norm_in(x, *norm_args(self.norm1), dtype)  # (B, L, D) in the products' dtype
        mixed = self.mixer(h, key_padding_mask=key_padding_mask)  # (B, L, D)
        if self.mlp is None:
            return ops.residual(x, mixed, key_padding_mask, self.path_rate, self.training)  # (B, L, D)
        return ops.mlp_residual(x, mixed, key_padding_mask, *norm_args(self.norm2), self.mlp.fc1.weight,
                                self.mlp.fc1.bias, self.mlp.fc2.weight, self.mlp.fc2.bias, self.dropout,
                                self.path_rate, self.training, dtype, self.gated)  # (B, L, D), padded rows 0
