"""What a backend declares: devices, dtypes, features; and why it cannot run a given call."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor


class BackendUnavailable(RuntimeError):
    """A backend was forced but cannot run the call; the message lists every reason."""


class Backend:
    """One attention kernel behind the common contract.

    ``run(q, k, v, *, decay, causal, key_padding_mask, scale)`` computes plain (optionally decayed)
    softmax attention on ``(B, H, L, d)`` tensors; pooling and chunking were already applied by
    :func:`zoo.functional.attention.attention` through exact identities. Rows of padded queries
    and rows without any allowed key may hold any finite value: the caller zeroes them.
    """

    name: ClassVar[str] = ""
    devices: ClassVar[frozenset[str]] = frozenset()
    dtypes: ClassVar[frozenset[torch.dtype]] = frozenset()
    supports_decay: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_padding: ClassVar[bool] = True
    supports_backward: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})
    max_head_dim: ClassVar[int | None] = None
    head_dim_multiple: ClassVar[int] = 1
    # Under zoo.functional.capture.graph_safe() (a CUDA graph capture), a padded call is declined by
    # a backend that needs the sequence lengths on the host (a device sync, which a capture forbids)
    # and, on CUDA, by one that would materialise an (L, L) mask for it (a block-sparse kernel can
    # serve it instead; the reference stays able for everything).
    padding_needs_host_lengths: ClassVar[bool] = False
    padding_materialises_mask: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def not_supported_reasons(self, call) -> list[str]:
        """Every reason this backend cannot run ``call`` (empty list: it can)."""
        reasons = []
        if call.device.type not in self.devices:
            reasons.append(f"device={call.device.type} (supported: {', '.join(sorted(self.devices))})")
        if call.dtype not in self.dtypes:
            names = ", ".join(sorted(str(d).replace("torch.", "") for d in self.dtypes))
            reasons.append(f"dtype={str(call.dtype).replace('torch.', '')} (supported: {names})")
        if call.has_decay and not self.supports_decay:
            reasons.append("multiplicative decay is not expressible (needs a score modification)")
        if call.causal and not self.supports_causal:
            reasons.append("causal masking not supported")
        if call.has_padding and not self.supports_padding:
            reasons.append("key padding not supported")
        if call.requires_grad and call.device.type not in self.supports_backward:
            reasons.append(f"no backward pass on {call.device.type} (inputs require grad)")
        if self.max_head_dim is not None and call.head_dim > self.max_head_dim:
            reasons.append(f"head_dim={call.head_dim} > {self.max_head_dim}")
        if call.head_dim % self.head_dim_multiple:
            reasons.append(f"head_dim={call.head_dim} is not a multiple of {self.head_dim_multiple}")
        if call.graph_safe and call.has_padding:
            if self.padding_needs_host_lengths:
                reasons.append("a padded call needs the sequence lengths on the host (a device sync), which a "
                               "CUDA graph capture forbids")
            if self.padding_materialises_mask and call.device.type == "cuda":
                reasons.append("a padded call materialises a (B, 1, L, L) mask here; in a CUDA graph FlexAttention's "
                               "block mask serves it")
        reasons.extend(self.runtime_reasons(call.device))
        return reasons

    def runtime_reasons(self, device: torch.device) -> list[str]:
        """Reasons found by importing / probing on ``device`` (missing package, failed probe)."""
        return []

    def run(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        decay: Tensor | None,
        causal: bool,
        key_padding_mask: Tensor | None,
        scale: float,
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
