"""The materialised reference: the definition of the operator, always available (last resort)."""

from __future__ import annotations

import torch

from zoo.functional.backends.base import Backend
from zoo.functional.reference import attention_reference


class ReferenceBackend(Backend):
    name = "reference"
    devices = frozenset({"cpu", "cuda", "mps", "xpu"})
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
    supports_decay = True
    supports_backward = frozenset({"cpu", "cuda", "mps", "xpu"})
    description = "materialised L x L scores in fp32 (the semantics; O(L^2) memory)"

    def run(self, q, k, v, *, decay, causal, key_padding_mask, scale):
        return attention_reference(q, k, v, decay=decay, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
