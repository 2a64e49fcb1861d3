"""FlexAttention (``torch.nn.attention.flex_attention`` under ``torch.compile``).

Serves the multiplicative LaS decay as a ``score_mod`` (fp32 exp of a captured fp32 per-head
alpha tensor, so a new alpha never recompiles) and causal / padding as a block-sparse
``mask_mod`` whose block mask is built with tensor ops (no host sync: CUDA-graph capturable).
FlexAttention compiles per shape, so lengths are padded up to a bucket (masked keys, outputs
sliced) and the compiled call runs with dynamo's recompile limit raised and
``fail_on_recompile_limit_hit`` on: past the limit it raises instead of silently falling back to
the unfused path that materialises L x L scores.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from zoo.functional.backends.base import Backend
from zoo.functional.call import bucket_length
from zoo.functional.capture import capturing, derived_from_mask
from zoo.functional.compiled import dynamo_guard_options


def decay_score_mod(alpha):
    # The kernels hold scores in fp32; no explicit casts here (a `.to(score.dtype)` in a
    # score_mod miscompiles for bf16 on the CPU inductor path, torch 2.14).
    def score_mod(score, b, h, q_idx, kv_idx):
        dist = (q_idx - kv_idx).abs().to(torch.float32)
        return score * torch.exp(-alpha[h] * dist)

    return score_mod


SPARSE_BLOCK = 128  # FlexAttention's default block-mask granularity; bucket_length pads to multiples of it


def _mask_mod(valid, causal: bool):
    """Key ``kv_idx`` of row ``b`` is inside its sequence (and, causal, not after ``q_idx``)."""
    if causal:
        def mask_mod(b, h, q_idx, kv_idx):
            return valid[b, kv_idx] & (kv_idx <= q_idx)
    else:
        def mask_mod(b, h, q_idx, kv_idx):
            return valid[b, kv_idx]
    return mask_mod


def padding_block_mask(valid: torch.Tensor, causal: bool, block: int = SPARSE_BLOCK):
    """The ``BlockMask`` of :func:`_mask_mod` over a ``(B, Lb)`` valid-key mask (``Lb`` a multiple of
    ``block``), from tensor ops only: no host sync and no compilation, so it can be captured into a
    CUDA graph and costs a dozen small kernels instead of evaluating the mask over the (L, L) grid.

    Per (row, query block, key block): *full* when every key of the block is valid (and, causal,
    the block lies below the diagonal), *partial* when some key is (the mask_mod decides inside;
    causal diagonal blocks always are), *empty* otherwise: what ``create_block_mask`` finds for the
    same mask_mod (tested)."""
    from torch.nn.attention.flex_attention import BlockMask

    B, Lb = valid.shape
    n = Lb // block
    count = valid.view(B, n, block).sum(-1)  # (B, n) valid keys per key block
    some, every = (count > 0)[:, None, :], (count == block)[:, None, :]  # (B, 1, n_kv)
    if causal:
        pos = torch.arange(n, device=valid.device)
        below = pos[None, :] < pos[:, None]  # (n_q, n_kv): key block before the query block
        diag = pos[None, :] == pos[:, None]
        full, partial = every & below, some & (diag | (below & ~every))  # (B, n_q, n_kv)
    else:
        full, partial = every.expand(B, n, n), (some & ~every).expand(B, n, n)

    def ordered(flags):  # the block indices of each (row, query block), the kept ones first
        flags = flags.unsqueeze(1).to(torch.int32)  # (B, 1, n_q, n_kv)
        order = torch.argsort(flags, dim=-1, descending=True, stable=True)
        return flags.sum(-1).to(torch.int32), order.to(torch.int32)

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=_mask_mod(valid, causal), seq_lengths=(Lb, Lb))


@functools.lru_cache(maxsize=1)
def compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class FlexBackend(Backend):
    name = "flex"
    devices = frozenset({"cpu", "cuda"})
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32})
    supports_decay = True
    supports_backward = frozenset({"cuda"})  # FlexAttention has no CPU backward
    description = "compiled FlexAttention: decay as score_mod, causal/padding as block mask"

    MIN_HEAD_DIM = {"cuda": 16}  # the Triton kernels' minimum embedding size: smaller heads are zero-padded to it

    def runtime_reasons(self, device):
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError as exc:  # pragma: no cover - torch < 2.5
            return [f"torch.nn.attention.flex_attention unavailable ({exc})"]
        if device.type == "cpu":
            import shutil

            if shutil.which("g++") is None and shutil.which("c++") is None:
                return ["no C++ compiler found for torch.compile's CPU code generation"]
        return []

    def run(self, q, k, v, *, decay, causal, key_padding_mask, scale):
        """Equivalent PyTorch code: ``softmax(exp(-alpha_h |i-j|) * (q k^T * scale) + mask) v``.

        Lengths are padded up to their shape bucket (masked keys, outputs sliced); on CUDA a head
        dim below 16 is zero-padded (exact: zero features change no dot product, and the padded
        value features are sliced off); the block mask is built once per padding mask and shape.
        """
        B, H, L, d = q.shape
        Lb = bucket_length(L)
        dp = max(d, self.MIN_HEAD_DIM.get(q.device.type, 1))
        if Lb != L or dp != d:
            q, k, v = (F.pad(t, (0, dp - d, 0, Lb - L)) for t in (q, k, v))
        block_mask = None
        if causal or key_padding_mask is not None or Lb != L:
            block_mask = self._block_mask(key_padding_mask, causal, B, L, Lb, q.device)
        score_mod = None if decay is None else decay_score_mod(decay.to(torch.float32))
        with torch._dynamo.config.patch(**dynamo_guard_options()):
            out = compiled_flex_attention()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
        return out[:, :, :L, :d]

    @staticmethod
    def _block_mask(key_padding_mask, causal: bool, B: int, L: int, Lb: int, device):
        def build():
            valid = torch.ones(B, Lb, dtype=torch.bool, device=device)
            if key_padding_mask is not None:
                valid[:, :L] = ~key_padding_mask
            valid[:, L:] = False
            return padding_block_mask(valid, causal)

        if key_padding_mask is None:  # depends on the shape only: built eagerly, once (not inside a capture)
            key = ("flex-block-mask", B, L, Lb, causal, device)
            if key not in _SHAPE_MASKS:
                if capturing(torch.device(device)):
                    return build()
                _SHAPE_MASKS[key] = build()
            return _SHAPE_MASKS[key]
        return derived_from_mask(key_padding_mask, ("flex-block-mask", causal, Lb, device), build)


_SHAPE_MASKS: dict = {}  # block masks of unpadded calls: one per (batch, length, bucket, causal, device)
