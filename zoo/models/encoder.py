"""The encoder and the classifier: one model for every registered mixer (blocks in ``block.py``, heads in ``heads.py``).

    Block:    x = x + DropPath(mixer(LN(x), mask));  x = x + DropPath(Mlp(LN(x)))      (pre-norm)
    Encoder:  tokens (B, L) int  -> Embedding   \\
              pixels (B, L) float -> Linear(1, D) -> [+ positions] -> N blocks -> LN -> masked pool -> (B, D)
    Heads:    ClassificationHead  (B, D) -> (B, C)
              RetrievalHead       [u, v, u*v, u-v] (B, 4D) -> Mlp -> (B, C)   (LRA's dual encoder)

The mixer of every block is built from one :class:`~zoo.config.ResolvedLayer` (resolved once, by
:func:`zoo.config.resolve_layer`, with ``d_model`` from :class:`ModelConfig` and ``max_len`` injected
when the layer declares ``needs_max_len``); the encoder only checks that it fits. The head comes from
the task kind (``zoo.models.kinds``). Nothing here knows any layer or task name.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from zoo.base import config_field
from zoo.config import ResolvedLayer
from zoo.models.block import NORMS, Block, norm_args
from zoo.models.fused import fused_ops, pool
from zoo.models.kinds import TaskKind, get_kind

__all__ = ["Classifier", "Encoder", "ModelConfig", "build_model"]

POS_EMBS = ("auto", "none", "learned", "sinusoidal")
POOLINGS = ("mean", "max")
MLPS = ("gelu", "swiglu", "none")


@dataclass
class ModelConfig:
    """Encoder + head sizes (the mixer itself is the separate layer config)."""

    d_model: int = config_field(128, "model width D; injected into the layer config")
    n_layers: int = config_field(4, "number of blocks")
    mlp_ratio: float = config_field(2.0, "hidden width of the block MLP (and of the retrieval head) / D")
    dropout: float = config_field(0.0, "dropout after the embedding, in the MLPs and before the head")
    drop_path: float = config_field(0.0, "stochastic depth rate of the last block (linearly increasing from 0)")
    norm: str = config_field("layernorm", "layernorm | rmsnorm")
    pos_emb: str = config_field(
        "auto", "auto | none | learned | sinusoidal (added to the input embedding); auto: learned when the layer "
        "declares needs_positions (attention), none otherwise (SSMs, convolutions)")
    pooling: str = config_field("mean", "mean | max over valid (non-padding) positions")
    mlp: str = config_field("gelu", "the block's MLP sublayer: gelu (timm Mlp) | swiglu (Shazeer 2020; MAD's "
                                    "blocks) | none (mixer-only blocks, zoology's MQAR models)")

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_layers <= 0:
            raise ValueError(f"d_model and n_layers must be positive, got {self.d_model}, {self.n_layers}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name, value, options in (("norm", self.norm, tuple(NORMS)), ("pos_emb", self.pos_emb, POS_EMBS),
                                     ("pooling", self.pooling, POOLINGS), ("mlp", self.mlp, MLPS)):
            if value not in options:
                raise ValueError(f"model.{name}={value!r}: choose one of {', '.join(options)}")
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name}={getattr(self, name)}: must lie in [0, 1)")


def sinusoidal_positions(max_len: int, d_model: int) -> Tensor:
    """The fixed sine/cosine table of Vaswani et al. (2017), ``(max_len, d_model)``."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # (D/2,)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return table  # (L, D)


def _check_layer(layer: Any, d_model: int, max_len: int) -> None:
    """The layer is resolved and sized for this encoder; the message says how to fix the call."""
    if not isinstance(layer, ResolvedLayer):
        raise TypeError(f"the encoder takes a zoo.config.ResolvedLayer, got {type(layer).__name__}: call "
                        f"zoo.config.resolve_layer(layer, d_model={d_model}, max_len={max_len}) first")
    if layer.config.d_model != d_model:
        raise ValueError(f"layer {layer.name} was resolved with d_model={layer.config.d_model}, the model has "
                         f"d_model={d_model}: resolve it with d_model={d_model}")
    if getattr(layer.entry.cls, "needs_max_len", False) and layer.config.max_len < max_len:
        raise ValueError(f"layer {layer.name} was resolved with max_len={layer.config.max_len}, shorter than the "
                         f"model's max_len={max_len}: resolve it with max_len={max_len}")


def effective_pos_emb(pos_emb: str, mixer_cls: type, layer_name: str = "") -> str:
    """The position embedding a model adds in front of a mixer class: ``auto`` follows the class's
    ``needs_positions`` capability (learned or none); an explicit ``none`` for a layer that needs
    positions is kept but warned about in one line (the model cannot tell positions apart)."""
    needs = bool(getattr(mixer_cls, "needs_positions", False))
    if pos_emb == "auto":
        return "learned" if needs else "none"
    if pos_emb == "none" and needs:
        warnings.warn(
            f"model.pos_emb=none with layer {layer_name or mixer_cls.__name__!r}, which needs positions (it is "
            "permutation-equivariant): set model.pos_emb=auto or learned", UserWarning, stacklevel=3)
    return pos_emb


class Encoder(nn.Module):
    """Embedding -> [positions] -> ``n_layers`` blocks -> final norm -> pooled ``(B, D)``.

    The work around the blocks (positions, dropout and masking in; the final norm, masking and
    pooling out) runs as functions of :mod:`zoo.models.fused`, compiled on ``fused_devices``.

    Args:
        config: the :class:`ModelConfig`.
        layer: the resolved layer (:func:`zoo.config.resolve_layer` with this model's ``d_model``
            and ``max_len``); nothing is resolved here.
        vocab_size: token inputs ``(B, L)`` int64 use an embedding of this size; ``None`` means float
            inputs ``(B, L)`` or ``(B, L, in_features)`` through a Linear.
        max_len: the longest input (positional table; ``max_len`` of layers that need it).
        in_features: features per position of float inputs.
    """

    fused_devices: frozenset = Block.fused_devices  # where the functions around the blocks are compiled

    def __init__(self, config: ModelConfig, layer: ResolvedLayer, *, vocab_size: int | None, max_len: int,
                 in_features: int = 1) -> None:
        super().__init__()
        self.config = config
        self.max_len = max_len
        self.in_features = in_features
        D = config.d_model
        self.embed = nn.Embedding(vocab_size, D) if vocab_size is not None else nn.Linear(in_features, D)
        _check_layer(layer, D, max_len)
        self.pos_emb = effective_pos_emb(config.pos_emb, layer.entry.cls, layer.name)  # what auto became
        if self.pos_emb == "learned":
            self.pos = nn.Parameter(torch.randn(max_len, D) * 0.02)  # (L, D)
        elif self.pos_emb == "sinusoidal":
            self.register_buffer("pos", sinusoidal_positions(max_len, D), persistent=False)
        else:
            self.pos = None
        self.drop = nn.Dropout(config.dropout)
        self.layer = layer
        rates = [config.drop_path * i / max(config.n_layers - 1, 1) for i in range(config.n_layers)]
        self.blocks = nn.ModuleList(
            Block(layer, D, mlp_ratio=config.mlp_ratio, dropout=config.dropout, drop_path=r, norm=config.norm,
                  mlp=config.mlp)
            for r in rates
        )
        self.norm = NORMS[config.norm](D)

    def embed_inputs(self, x: Tensor) -> Tensor:
        if x.is_floating_point():
            if isinstance(self.embed, nn.Embedding):
                raise TypeError("this encoder embeds token ids (int64); got floating-point inputs")
            x = x.unsqueeze(-1) if x.dim() == 2 else x  # (B, L, F)
            return self.embed(x.to(self.embed.weight.dtype))  # (B, L, D)
        if not isinstance(self.embed, nn.Embedding):
            raise TypeError("this encoder takes float inputs (vocab_size=None); got integer inputs")
        return self.embed(x)  # (B, L, D)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, L)`` token ids or float values -> ``(B, L, D)`` (normed, padded positions 0)."""
        ops = fused_ops(self.fused_devices)
        return ops.norm_out(self._blocks(x, key_padding_mask, ops), key_padding_mask, *norm_args(self.norm))

    def pool(self, h: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``(B, L, D)`` -> ``(B, D)``, over valid positions only."""
        return pool(h, key_padding_mask, self.config.pooling)

    def encode(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x`` -> pooled ``(B, D)``: ``pool(self(x))``, the final norm and the pooling in one function."""
        ops = fused_ops(self.fused_devices)
        return ops.norm_pool(self._blocks(x, key_padding_mask, ops), key_padding_mask, *norm_args(self.norm),
                             self.config.pooling)

    def _blocks(self, x: Tensor, key_padding_mask: Tensor | None, ops) -> Tensor:
        """Embedding, positions, dropout and the blocks: the residual stream before the final norm."""
        L = x.shape[1]
        if L > self.max_len:
            raise ValueError(f"input length {L} exceeds the encoder's max_len={self.max_len}")
        h = ops.embed_out(self.embed_inputs(x), self.pos, self.drop.p, self.training, key_padding_mask)  # (B, L, D)
        for block in self.blocks:
            h = block(h, key_padding_mask)  # (B, L, D)
        return h

    def mixers(self) -> list[nn.Module]:
        """The mixer of every block (the trainer asks them for ``param_groups()``)."""
        return [b.mixer for b in self.blocks]


class Classifier(nn.Module):
    """A shared :class:`Encoder` applied to each input, then a head over the pooled vectors (or,
    for a per-position head, ``head.pooled = False``, over the per-position outputs ``(B, L, D)``).

    ``forward(inputs, masks, labels)``: ``inputs`` a sequence of ``head.n_inputs`` tensors ``(B, L_i)``,
    ``masks`` the matching ``(B, L_i)`` bool padding masks (True = padding) or ``None``; ``labels``
    go to the head (the token head projects only at labelled positions; pooled heads ignore them).
    """

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def n_inputs(self) -> int:
        return self.head.n_inputs

    def forward(self, inputs: Sequence[Tensor], masks: Sequence[Tensor | None] | None = None,
                labels: Tensor | None = None) -> Tensor:
        if isinstance(inputs, Tensor):
            inputs = (inputs,)
        masks = [None] * len(inputs) if masks is None else list(masks)
        if len(inputs) != self.n_inputs or len(masks) != len(inputs):
            raise ValueError(f"this model takes {self.n_inputs} input(s) and as many masks; got {len(inputs)} "
                             f"input(s) and {len(masks)} mask(s)")
        run = self.encoder.encode if self.head.pooled else self.encoder
        return self.head([run(x, m) for x, m in zip(inputs, masks)], labels)  # (B, C), or (B, K, V) per position

    def mixers(self) -> list[nn.Module]:
        return self.encoder.mixers()


def build_model(config: ModelConfig, layer: Any, *, n_classes: int, max_len: int, vocab_size: int | None,
                kind: str | TaskKind = "classify", in_features: int = 1) -> Classifier:
    """A :class:`Classifier` with the head of the task ``kind`` (``zoo.models.kinds``: ``classify``,
    ``pair``, ``token``, ...); the encoder is shared between the inputs of a multi-input kind.

    ``layer``: a :class:`~zoo.config.ResolvedLayer`, or a registry name / mapping, resolved here
    once with ``config.d_model`` and ``max_len`` (the one resolution of a model built directly).
    """
    from zoo.config import resolve_layer

    layer = resolve_layer(layer, d_model=config.d_model, max_len=max_len)
    encoder = Encoder(config, layer, vocab_size=vocab_size, max_len=max_len, in_features=in_features)
    return Classifier(encoder, get_kind(kind).head(config, n_classes))
