"""xformers memory-efficient attention (``xformers.ops.memory_efficient_attention``).

The first choice wherever it can express the call: no score modification (xformers takes
additive biases only, so the multiplicative decay goes to FlexAttention), causal through
``LowerTriangularMask``. A padded batch runs padding-free: the valid tokens of every sequence are
packed into one variable-length batch (``BlockDiagonalMask`` / ``BlockDiagonalCausalMask``, the
flash/cutlass varlen kernels, no L x L bias) and unpacked with zeros at the padded positions,
which is exactly the padding rule of the reference (padded keys never attend, padded queries
output 0; causal order is the order of the valid tokens). Whether it can run is decided by a
real probe call per device: an xformers wheel built for another CUDA imports fine but has no
operator ("No operator found"); then the zoo warns once and falls back.
"""

from __future__ import annotations

import functools
import logging
import warnings

import torch

from zoo.functional.backends.base import Backend
from zoo.functional.call import exception_line
from zoo.functional.capture import derived_from_mask
from zoo.functional.packing import packing


@functools.lru_cache(maxsize=None)
def _probe(device_str: str) -> str | None:
    """None if a tiny real call works on ``device_str``, else why not (cached per device)."""
    logging.getLogger("xformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import xformers.ops as xops  # noqa: F401  (importable?)
    except Exception as exc:  # ImportError and broken builds alike
        return f"xformers is not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not device_str.startswith("cuda"):
        return None
    try:
        _probe_call(device_str)
        return None
    except Exception as exc:
        reason = f"probe call failed ({exception_line(exc)})"
        warnings.warn(
            f"zoo: xformers is installed but cannot run on {device_str}: {reason}. Falling back to "
            "the next attention backend (see `zoo info`). On CUDA-13 machines install the CUDA 12 "
            "runtime next to the xformers wheel (docs/kernels.md).",
            RuntimeWarning,
            stacklevel=4,
        )
        return reason


def _probe_call(device_str: str) -> None:
    import xformers.ops as xops

    x = torch.randn(1, 8, 1, 32, device=device_str, dtype=torch.bfloat16)
    xops.memory_efficient_attention(x, x, x)


class XFormersBackend(Backend):
    name = "xformers"
    devices = frozenset({"cuda"})
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32})
    supports_decay = False
    head_dim_multiple = 8  # kernel alignment (seen on the H200: head_dim 8 runs, 2 is refused)
    max_head_dim = 256
    padding_needs_host_lengths = True  # the varlen packing
    description = "xformers memory_efficient_attention (cutlass / flash); additive biases only"

    def runtime_reasons(self, device):
        if device.type != "cuda":
            return []  # the device reason already says it
        reason = _probe(str(device))
        return [reason] if reason else []

    def run(self, q, k, v, *, decay, causal, key_padding_mask, scale):
        """Equivalent PyTorch code: ``softmax(q k^T * scale + bias) v`` (layout (B, L, H, d))."""
        import xformers.ops as xops

        qx, kx, vx = (t.transpose(1, 2) for t in (q, k, v))  # (B, L, H, d)
        if key_padding_mask is None:
            bias = xops.LowerTriangularMask() if causal else None
            out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias, scale=scale)
            return out.transpose(1, 2)  # (B, H, L, d)
        pk = packing(key_padding_mask)
        if not pk.seqlens:  # every position is padding: every output is 0
            return torch.zeros_like(q)
        mask_cls = xops.fmha.attn_bias.BlockDiagonalCausalMask if causal else xops.fmha.attn_bias.BlockDiagonalMask
        bias = derived_from_mask(key_padding_mask, ("xformers-bias", causal, q.device),
                                 lambda: mask_cls.from_seqlens(list(pk.seqlens), device=q.device))
        out = xops.memory_efficient_attention(pk.pack(qx), pk.pack(kx), pk.pack(vx), attn_bias=bias, scale=scale)
        return pk.unpack(out).transpose(1, 2)  # (1, T, H, d) -> (B, H, L, d)
