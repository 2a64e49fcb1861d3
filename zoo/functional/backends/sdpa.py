"""torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient / math kernels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.functional.backends.base import Backend
from zoo.functional.call import allowed_mask


class SDPABackend(Backend):
    name = "sdpa"
    devices = frozenset({"cpu", "cuda"})
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
    supports_decay = False
    padding_materialises_mask = True
    description = "PyTorch scaled_dot_product_attention; no score modifications"

    def run(self, q, k, v, *, decay, causal, key_padding_mask, scale):
        """Equivalent PyTorch code: ``softmax(q k^T * scale + mask) v``."""
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        mask = allowed_mask(key_padding_mask, causal, q.shape[-2], q.device)  # (B, 1, L, L)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
