"""The one interface every sequence mixer implements.

A *sequence mixer* maps a batch of sequences ``x: (B, L, D)`` to ``(B, L, D)``, mixing
information along the sequence axis (attention, state space, long convolution, ...). The LRA
trainer, the benchmarks and the conformance tests use mixers only through this contract and the
capability attributes below; they never branch on layer names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.fields import config_field  # re-exported: layer configs import it from here


@dataclass
class MixerConfig:
    """Fields every mixer config has. Layer configs subclass this dataclass."""

    d_model: int = config_field(256, "model width D (input and output features)")

    def __post_init__(self) -> None:
        if self.d_model <= 0:
            raise ValueError(f"d_model must be positive, got {self.d_model}")


class SequenceMixer(nn.Module):
    """Base class of every mixer: ``forward(x, key_padding_mask=None) -> y``.

    Args of ``forward``:
        x: ``(B, L, D)`` floating-point input, ``D == config.d_model``.
        key_padding_mask: optional ``(B, L)`` bool tensor, **True marks padding** (the
            convention of ``torch.nn.MultiheadAttention``). Padded positions never influence
            valid positions, and the output at padded positions is zero.

    Returns:
        ``(B, L, D)`` tensor of the same dtype as ``x``.

    Capability attributes (class level; generic code reads them, never layer names):
        supports_causal: the config has a ``causal`` field that, when True, guarantees that
            position ``i`` depends only on positions ``<= i``.
        supports_padding_mask: ``key_padding_mask`` is honoured.
        complexity: cost in the sequence length: ``"L^2"``, ``"L log L"`` or ``"L"``.
        needs_max_len: the config has a ``max_len`` field bounding the sequence length.
        needs_positions: the layer cannot tell positions apart by itself (softmax attention is
            permutation-equivariant), so a model with ``pos_emb: auto`` adds learned position
            embeddings in front of it; convolutions and SSMs see order and leave it False.

    Writing a layer: implement :meth:`mix` and the base ``forward`` validates the call and zeroes
    the padded inputs and outputs around it (the padding contract above, NaN or inf stored at
    padded positions included); or override ``forward`` where the masking is fused into kernels.

    Hooks:
        param_groups(): optional optimizer parameter groups (e.g. SSM parameters want a small
            learning rate and no weight decay); ``None`` means "treat all parameters alike".
    """

    supports_causal: ClassVar[bool] = False
    supports_padding_mask: ClassVar[bool] = True
    complexity: ClassVar[str] = "L^2"
    needs_max_len: ClassVar[bool] = False
    needs_positions: ClassVar[bool] = False
    config_class: ClassVar[type | None] = None

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        self.d_model = config.d_model

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The contract around :meth:`mix`: validate the call, zero the padded inputs, mix, zero the
        padded outputs (an empty batch returns an empty output without calling ``mix``). A layer
        that implements ``mix`` gets the padding rules for free; a layer with its own fused masking
        overrides ``forward`` instead (and then honours the rules itself)."""
        self._validate_input(x, key_padding_mask)
        if x.shape[0] == 0:
            return x.clone()  # (0, L, D)
        y = self.mix(zero_padded(x, key_padding_mask), key_padding_mask)  # (B, L, D)
        return zero_padded(y, key_padding_mask)

    def mix(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The layer's computation on a validated ``(B, L, D)`` input whose padded positions are zero;
        its output at padded positions is zeroed by :meth:`forward`. Valid positions must still not
        read the padded ones (e.g. exclude them from means: they hold zeros, not data)."""
        raise NotImplementedError(
            f"{type(self).__name__}: implement mix(x, key_padding_mask) (SequenceMixer.forward validates the input "
            "and zeroes padded positions around it) or override forward"
        )

    @classmethod
    def complexity_for(cls, config: MixerConfig) -> str:
        """The complexity of the layer built from ``config`` (defaults to the class attribute;
        a class whose cost depends on a field, like chunked attention, overrides this)."""
        return cls.complexity

    @classmethod
    def check_length(cls, config: MixerConfig, max_len: int) -> None:
        """Check ``config`` against the longest sequence it will see, ``max_len`` (called by
        :func:`zoo.config.resolve_layer` when the task's length is known): raise a ValueError naming
        the field and the fix where the layer cannot work, warn in one line where it works but not
        as its name promises. The default accepts every length."""

    def param_groups(self) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups with per-group options, or None for the defaults."""
        return None

    def reference_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The same computation through the materialised reference operators (for checks).

        Layers whose fast path differs from their definition override this; the comparison
        runner reports the error of ``forward`` against it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no separate reference path")

    def kernel_name(self, x: Tensor, key_padding_mask: Tensor | None = None, requires_grad: bool = True) -> str:
        """Which kernel ``forward`` would use for this input (for tables and `zoo info`)."""
        return "torch"

    # ------------------------------------------------------------------ shared validation

    def _validate_input(self, x: Tensor, key_padding_mask: Tensor | None) -> None:
        """Raise a ValueError / TypeError that says how to fix a malformed call."""
        validate_sequence_input(x, key_padding_mask, self.d_model, type(self).__name__)
        validate_param_dtype(x, self, type(self).__name__)
        max_len = getattr(self.config, "max_len", None)
        if self.needs_max_len and max_len is not None and x.shape[1] > max_len:
            raise ValueError(
                f"{type(self).__name__}: sequence length {x.shape[1]} exceeds max_len={max_len} "
                "of this layer's fixed-length kernel; build it with a larger `max_len`."
            )


def validate_sequence_input(
    x: Tensor, key_padding_mask: Tensor | None, d_model: int, who: str = "mixer"
) -> None:
    """``x`` must be a floating ``(B, L, D)`` tensor with ``D == d_model`` and ``L >= 1``; the mask
    is checked by :func:`validate_padding_mask`."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{who}: x must have shape (B, L, D), got {tuple(x.shape)}; add a batch axis with "
            "x.unsqueeze(0) for a single sequence."
        )
    if x.shape[1] == 0:
        raise ValueError(f"{who}: x has length L=0 (shape {tuple(x.shape)}); a sequence needs at least one position")
    if x.shape[-1] != d_model:
        raise ValueError(f"{who}: x has D={x.shape[-1]} features but the layer has d_model={d_model}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: x must be floating point (float32/bfloat16/float16), got {x.dtype}")
    validate_padding_mask(key_padding_mask, tuple(x.shape[:2]), x.device, who)


def validate_padding_mask(mask: Tensor | None, shape: tuple[int, int], device: torch.device, who: str) -> None:
    """A key padding mask is None or a bool ``(B, L)`` tensor on ``device``, True = padding."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"{who}: key_padding_mask must be a bool tensor of shape (B, L) = {shape}, True = padding; got "
            f"{getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{who}: key_padding_mask must have shape (B, L) = {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{who}: key_padding_mask is on {mask.device}, the input on {device}")


def validate_param_dtype(x: Tensor, module: nn.Module, who: str) -> None:
    """Outside autocast, ``x`` must have the dtype of the module's parameters (an fp64 input to an
    fp32 layer is a mistake that would otherwise fail deep inside a kernel or silently upcast)."""
    if torch.is_autocast_enabled(x.device.type):
        return
    p = next(module.parameters(), None)
    if p is not None and p.is_floating_point() and x.dtype != p.dtype:
        raise TypeError(
            f"{who}: input dtype {x.dtype} differs from the layer's parameters ({p.dtype}); cast one to the "
            f"other (x.to({p.dtype}) or layer.to({x.dtype})), or run under torch.autocast"
        )


def zero_padded(x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """Zero the positions marked as padding (``(B, L, D)`` input, ``(B, L)`` mask)."""
    if key_padding_mask is None:
        return x
    # one kernel each way (an out-of-place masked_fill is a copy and a fill, forward and backward)
    return torch.where(key_padding_mask.unsqueeze(-1), 0.0, x)
