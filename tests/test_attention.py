"""The attention core: reference semantics, the exact identities, and every backend against
the reference (fp32 <= 1e-5, bf16 <= 1e-2 relative), causal and not, padded and not."""

import functools
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err

import registry
from zoo.functional import backends
from zoo.functional.attention import AttentionCall, attention, attention_reference, pool_values
from zoo.functional.backends import BackendUnavailable

B, H, L, d = 2, 4, 37, 16
ALPHA = torch.tensor([0.0, 0.05, 0.2, 0.7])


def qkv(dtype=torch.float32, device="cpu", length=L, requires_grad=False):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(B, H, length, d, generator=g).to(device=device, dtype=dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def padding(device="cpu", length=L):
    pad = torch.zeros(B, length, dtype=torch.bool, device=device)
    pad[0, length - 9 :] = True  # right padding
    pad[1, :4] = True  # left padding: with causal, rows 0..3 have no allowed key
    return pad


# ----------------------------------------------------------------------------- semantics


def loop_reference(q, k, v, alpha, pool, causal, pad, count_include_pad):
    """An independent, loop-based reading of the paper's operator for one (b, h) at a time."""
    Bq, Hq, Lq, dq = q.shape
    out = torch.zeros(Bq, Hq, Lq, v.shape[-1], dtype=torch.float64)
    left = 0 if causal else (pool - 1) // 2
    right = pool - 1 - left
    for b, h in itertools.product(range(Bq), range(Hq)):
        inside = [not (pad is not None and pad[b, j]) for j in range(Lq)]
        for i in range(Lq):
            if pad is not None and pad[b, i]:
                continue
            logits = {}
            for j in range(Lq):
                if inside[j] and (not causal or j <= i):
                    s = float(q[b, h, i].double() @ k[b, h, j].double()) / math.sqrt(dq)
                    logits[j] = s * math.exp(-float(alpha[h]) * abs(i - j))
            if not logits:
                continue
            m = max(logits.values())
            z = sum(math.exp(s - m) for s in logits.values())
            a = [math.exp(logits[j] - m) / z if j in logits else 0.0 for j in range(Lq)]
            for j in range(Lq):
                if not inside[j]:
                    continue
                win = [t for t in range(j - left, j + right + 1) if 0 <= t < Lq]
                n = pool if count_include_pad else sum(inside[t] for t in win)
                w = sum(a[t] for t in win) / n
                out[b, h, i] += w * v[b, h, j].double()
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_reference_matches_loop_definition(causal, count_include_pad):
    q, k, v = (t[:, :, :12] for t in qkv(torch.float64))
    pad = padding(length=12)
    ref = attention_reference(q, k, v, decay=ALPHA.double(), pool=3, causal=causal, key_padding_mask=pad,
                              count_include_pad=count_include_pad)
    loop = loop_reference(q, k, v, ALPHA, 3, causal, pad, count_include_pad)
    assert rel_err(ref, loop) < 1e-12


def test_decay_multiplies_logits_not_additive():
    """Far keys get logit ~0 (weight exp(0)), so a strongly decayed head averages far values."""
    q, k, v = qkv(torch.float64, length=64)
    q = q * 10  # large logits
    alpha = torch.full((H,), 30.0, dtype=torch.float64)
    out = attention_reference(q[:, :, :1], k[:, :, :1], v[:, :, :1])  # shape sanity
    assert out.shape == (B, H, 1, d)
    o = attention_reference(q, k, v, decay=alpha)
    # row 0: j = 0 keeps its logit, every j >= 1 has logit ~ 0 -> near-uniform over j >= 1
    s0 = (q[:, :, 0] * k[:, :, 0]).sum(-1) / math.sqrt(d)  # (B, H)
    w0 = torch.exp(s0) / (torch.exp(s0) + 63)
    expected = w0[..., None] * v[:, :, 0] + (1 - w0[..., None]) * v[:, :, 1:].mean(2)
    assert rel_err(o[:, :, 0], expected) < 1e-6


def test_pool_v_identity_is_exact():
    """AP(A) V == A (P V) for any A, every padding rule and window (fp64, to rounding)."""
    g = torch.Generator().manual_seed(0)
    A = torch.rand(B, H, L, L, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, L, d, generator=g, dtype=torch.float64)
    pad = padding()
    inside = ~pad
    for pool, causal, cip, use_pad in itertools.product([2, 3, 4, 7], [False, True], [True, False], [False, True]):
        left = 0 if causal else (pool - 1) // 2
        right = pool - 1 - left
        pos = torch.arange(L)
        member = ((pos[None, :] >= pos[:, None] - left) & (pos[None, :] <= pos[:, None] + right)).double()  # [j, t]
        ins = inside.double() if use_pad else torch.ones(B, L, dtype=torch.float64)
        n = torch.full((B, L), float(pool), dtype=torch.float64) if cip else ins @ member.T  # (B, Lj)
        w = torch.where(n > 0, ins / n.clamp_min(1), torch.zeros_like(n))  # (B, Lj)
        pooled_A = torch.einsum("bhit,jt->bhij", A, member) * w[:, None, None, :]
        lhs = pooled_A @ v
        rhs = A @ pool_values(v, pool, causal=causal, inside=inside if use_pad else None, count_include_pad=cip)
        assert rel_err(rhs, lhs) < 1e-12, (pool, causal, cip, use_pad)


def test_pooling_matches_avg_pool1d_rows():
    """Centred pooling with count_include_pad is torch's avg_pool1d over each attention row."""
    q, k, v = qkv(torch.float64)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
    pooled = F.avg_pool1d(a.reshape(-1, 1, L), 5, stride=1, padding=2, count_include_pad=True).reshape(B, H, L, L)
    assert rel_err(attention_reference(q, k, v, pool=5), pooled @ v) < 1e-12


def test_padded_equals_truncated_and_chunks_are_independent():
    q, k, v = qkv(torch.float64)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[:, 30:] = True
    full = attention_reference(q, k, v, decay=ALPHA.double(), pool=3, key_padding_mask=pad, count_include_pad=False)
    short = attention_reference(q[:, :, :30], k[:, :, :30], v[:, :, :30], decay=ALPHA.double(), pool=3,
                                count_include_pad=False)
    assert rel_err(full[:, :, :30], short) < 1e-12 and (full[:, :, 30:] == 0).all()
    chunked = attention_reference(q, k, v, decay=ALPHA.double(), pool=3, chunk=10, causal=True)
    for c in range(0, L, 10):
        sl = slice(c, min(c + 10, L))
        alone = attention_reference(q[:, :, sl], k[:, :, sl], v[:, :, sl], decay=ALPHA.double(), pool=3, causal=True)
        assert rel_err(chunked[:, :, sl], alone) < 1e-12


# ----------------------------------------------------------------------------- backends vs reference

CASES = [  # (decay, pool, chunk, causal, padded)
    (False, 1, None, False, False),
    (False, 1, None, True, True),
    (False, 3, None, False, True),
    (False, 4, None, True, False),
    (False, 3, 8, True, True),
    (True, 1, None, False, False),
    (True, 3, None, True, True),
    (True, 3, None, False, True),
    (True, 2, 8, False, True),
]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def run_case(backend, case, dtype, device="cpu", requires_grad=False, count_include_pad=True):
    decay, pool, chunk, causal, padded = case
    q, k, v = qkv(dtype, device, requires_grad=requires_grad)
    kw = dict(decay=ALPHA.to(device) if decay else None, pool=pool, chunk=chunk, causal=causal,
              key_padding_mask=padding(device) if padded else None, count_include_pad=count_include_pad)
    out = attention(q, k, v, backend=backend, **kw)
    ref = attention_reference(*(t.detach().float() for t in (q, k, v)), **kw)
    return out, ref, (q, k, v)


def cases_for(name):
    impl = backends.get(name)
    return [c for c in CASES if impl.supports_decay or not c[0]]


@pytest.mark.parametrize("case", cases_for("sdpa"), ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_sdpa_matches_reference_cpu(case, dtype):
    out, ref, _ = run_case("sdpa", case, dtype)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("case", [c for c in cases_for("flex") if c[2] is None or c[0]], ids=str)
# bf16: a compile per case here; covered on the GPU by every backend test
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow)],
                         ids=["fp32", "bf16"])
def test_flex_matches_reference_cpu(case, dtype):
    """Compiled FlexAttention on CPU (forward only: it has no CPU backward)."""
    with torch.no_grad():
        out, ref, _ = run_case("flex", case, dtype)
    assert rel_err(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_auto_matches_reference_with_gradients(case, count_include_pad):
    """auto on CPU with gradients runs the identities + the reference kernel; gradients agree too."""
    out, ref, (q, k, v) = run_case("auto", case, torch.float32, requires_grad=True, count_include_pad=count_include_pad)
    assert rel_err(out, ref) <= 1e-5
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    decay, pool, chunk, causal, padded = case
    ref2 = attention_reference(q2, k2, v2, decay=ALPHA if decay else None, pool=pool, chunk=chunk, causal=causal,
                               key_padding_mask=padding() if padded else None, count_include_pad=count_include_pad)
    ref_grads = torch.autograd.grad(ref2.pow(2).sum(), (q2, k2, v2))
    for g, rg in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        assert rel_err(g, rg) <= 1e-5


GPU_BACKENDS = backends.names()  # the dispatcher's own list: a new backend is compared without a test edit
GPU_CASES = [(name, case) for name in GPU_BACKENDS for case in CASES
             if backends.get(name).supports_decay or not case[0]]  # only what each backend declares it can run


def test_gpu_backend_list_is_the_dispatchers():
    assert GPU_BACKENDS and set(GPU_BACKENDS) == {b.name for b in backends.PRIORITY}
    assert {name for name, _ in GPU_CASES} == set(GPU_BACKENDS)


@pytest.mark.gpu
@pytest.mark.parametrize("name,case", GPU_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_backend_matches_reference_gpu(name, case, dtype):
    out, ref, (q, k, v) = run_case(name, case, dtype, device="cuda", requires_grad=True)
    assert rel_err(out, ref) <= TOL[dtype]
    out.float().pow(2).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.gpu
@pytest.mark.parametrize("name,decay", [("xformers", False), ("flex", True), ("flex", False)])
@pytest.mark.parametrize("head_dim", [8, 32])
@pytest.mark.parametrize("causal", [False, True])
def test_padded_batches_match_reference_with_gradients_gpu(name, decay, head_dim, causal):
    """The training path on the GPU: random lengths (xformers packs them, flex masks them; flex pads a head
    dim of 8 to 16), outputs and gradients against the materialised reference, in fp32."""
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H, L = 6, 4, 200
    q, k, v = (torch.randn(B, H, L, head_dim, device="cuda", generator=g, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([200, 1, 37, 128, 150, 199], device="cuda")
    mask = torch.arange(L, device="cuda")[None] >= lengths[:, None]  # (B, L) right padding
    alphas = torch.linspace(0, 0.3, H, device="cuda") if decay else None
    out = attention(q, k, v, decay=alphas, causal=causal, key_padding_mask=mask, backend=name)
    ref = attention_reference(q, k, v, decay=alphas, causal=causal, key_padding_mask=mask)
    assert rel_err(out, ref) <= 1e-4
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) <= 1e-4


@pytest.mark.gpu
def test_flex_runs_fused_at_long_length_gpu():
    """The compiled kernel (not the unfused fallback that materialises L x L) is what runs."""
    Lg = 16384
    q, k, v = (torch.randn(1, 8, Lg, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        attention(q, k, v, decay=torch.linspace(0, 0.5, 8, device="cuda"), backend="flex")
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 1 << 30, f"flex used {extra / 2**30:.1f} GiB: the scores were materialised"


# ----------------------------------------------------------------------------- selection and errors


def test_auto_picks_by_capability_not_name():
    cpu = lambda **kw: AttentionCall(torch.device("cpu"), torch.float32, 1, 8, 128, 64, **kw)  # noqa: E731
    assert backends.select(cpu(has_decay=False, causal=False, has_padding=False, requires_grad=True)).name == "sdpa"
    assert backends.select(cpu(has_decay=True, causal=True, has_padding=True, requires_grad=False)).name == "flex"
    assert backends.select(cpu(has_decay=True, causal=False, has_padding=False, requires_grad=True)).name == "reference"


def test_forced_backend_that_cannot_run_lists_every_reason():
    q, k, v = qkv()
    with pytest.raises(BackendUnavailable) as exc:
        attention(q.bfloat16().double(), k.double(), v.double(), decay=ALPHA.double(), backend="xformers")
    msg = str(exc.value)
    assert "device=cpu" in msg and "dtype=float64" in msg and "decay" in msg
    with pytest.raises(BackendUnavailable, match="no backward pass on cpu"):
        attention(*qkv(requires_grad=True), decay=ALPHA, backend="flex")
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention(q, k, v, backend="flash")


def test_xformers_that_cannot_run_warns_once_and_falls_back(monkeypatch):
    """As on a CUDA-13-only machine: xformers imports but every call raises 'No operator found'."""
    from zoo.functional.backends import xformers as xf

    def broken_probe(device_str):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(xf, "_probe_call", broken_probe)
    xf._probe.cache_clear()
    call = AttentionCall(torch.device("cuda"), torch.bfloat16, 1, 8, 128, 64, False, False, False, True)
    try:
        with pytest.warns(RuntimeWarning, match="cannot run on cuda.*Falling back"):
            picked = backends.select(call)
        assert picked.name == "sdpa"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: the second look-up is silent
            assert backends.select(call).name == "sdpa"
        with pytest.raises(BackendUnavailable, match="No operator found"):
            backends.select(call, "xformers")
    finally:
        xf._probe.cache_clear()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(q=torch.randn(2, 5, 8)), ValueError, r"\(B, H, L, d\)"),
        (dict(k=torch.randn(B, H, L, d + 1)), ValueError, "agree"),
        (dict(v=torch.randn(B, H, L, d).double()), TypeError, "dtypes differ"),
        (dict(q=torch.randint(0, 3, (B, H, L, d))), TypeError, "floating point"),
        (dict(decay=torch.zeros(H + 1)), ValueError, r"shape \(H,\)"),
        (dict(decay=-torch.ones(H)), ValueError, ">= 0"),
        (dict(key_padding_mask=torch.zeros(B, L)), TypeError, "bool"),
        (dict(key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool)), ValueError, r"\(B, L\)"),
        (dict(pool=0), ValueError, "pool"),
        (dict(chunk=0), ValueError, "chunk"),
    ],
)
def test_bad_input_errors(kwargs, exc, match):
    q, k, v = qkv()
    args = dict(q=q, k=k, v=v)
    args.update({n: kwargs.pop(n) for n in ("q", "k", "v") if n in kwargs})
    with pytest.raises(exc, match=match):
        attention(args["q"], args["k"], args["v"], **kwargs)


# ----------------------------------------------------------------------------- layer and presets


def test_presets_follow_the_paper_defaults():
    las = registry.build("las", d_model=64)
    alphas = las.alphas
    assert alphas[0] == 0 and (alphas[1:] > 0).all()
    ratios = alphas[2:] / alphas[1:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))  # log-spaced
    assert math.isclose(alphas[-1].item(), las.config.alpha_max, rel_tol=1e-6)
    assert las.config.pool_size > 1 and las.config.chunk_size == 0
    assert registry.build("vanilla", d_model=64).alphas is None
    assert registry.build("local", d_model=64).config.pool_size == 1
    assert registry.build("smooth", d_model=64).alphas is None
    assert registry.build("las_chunk", d_model=64).config.chunk_size > 0
    assert registry.build("las_chunk", d_model=64).complexity == "L"


def test_alphas_stay_fp32_under_bf16():
    las = registry.build("las", d_model=64).to(torch.bfloat16)
    assert las.alphas.dtype == torch.float32


def test_layer_chunked_equals_reference_forward():
    layer = registry.build("las_chunk", d_model=32, n_heads=4, chunk_size=8, causal=True)
    x = torch.randn(2, 30, 32)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 25:] = True
    assert rel_err(layer(x, pad), layer.reference_forward(x, pad)) < 1e-5


def test_invalid_layer_configs():
    with pytest.raises(registry.ConfigError, match="not divisible by n_heads"):
        registry.build("las", d_model=30, n_heads=8)
    with pytest.raises(registry.ConfigError, match="alpha_min"):
        registry.build("las", alpha_min=0.9, alpha_max=0.1)
    with pytest.raises(registry.ConfigError, match="backend"):
        registry.build("vanilla", backend="flash")


def test_head_dim_limits_are_declared(monkeypatch):
    """Seen on the H200: xformers refuses head_dim 2; FlexAttention's CUDA kernels need head_dim >= 16, which
    the flex backend meets by zero-padding the head (so it declares small heads as runnable)."""
    from zoo.functional.backends import xformers as xf

    monkeypatch.setattr(xf, "_probe_call", lambda device_str: None)  # no GPU here: pretend the probe ran
    xf._probe.cache_clear()
    monkeypatch.setattr(xf, "_probe", functools.lru_cache(maxsize=None)(xf._probe.__wrapped__))
    cuda = lambda d, decay: AttentionCall(torch.device("cuda"), torch.bfloat16, 1, 8, 256, d, decay, False, True, True)  # noqa: E731
    assert not any("head_dim" in r for r in backends.get("flex").not_supported_reasons(cuda(8, True)))
    assert "not a multiple of 8" in " ".join(backends.get("xformers").not_supported_reasons(cuda(2, False)))
    cpu = AttentionCall(torch.device("cpu"), torch.float32, 1, 8, 256, 8, True, False, False, False)
    assert backends.select(cpu).name == "flex"  # the CPU kernels take head_dim 8


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])
def test_flex_pads_small_heads_exactly(monkeypatch, dtype):
    """The zero-padding the CUDA kernels need for head_dim < 16, run here on the CPU kernels (inference)."""
    from zoo.functional.backends.flex import FlexBackend

    monkeypatch.setattr(FlexBackend, "MIN_HEAD_DIM", {"cpu": 16})
    q, k, v = (torch.randn(2, 3, 40, 4, dtype=dtype) for _ in range(3))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[1, 29:] = True
    alphas = torch.tensor([0.0, 0.1, 0.4])
    with torch.no_grad():
        out = FlexBackend().run(q, k, v, decay=alphas, causal=False, key_padding_mask=mask, scale=4 ** -0.5)
    ref = attention_reference(q, k, v, decay=alphas, key_padding_mask=mask)
    assert out.shape == q.shape
    valid = ~mask[:, None, :, None]
    assert rel_err(out * valid, ref) < (1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_is_the_padding_rule(causal, dtype):
    """The padding-free layout of the xformers path: pack the valid tokens of random-length (and holed)
    sequences, attend within each sequence, unpack; equal to the materialised reference with the mask."""
    from zoo.functional.packing import packing

    g = torch.Generator().manual_seed(3)
    B, H, L, d = 5, 2, 23, 8
    q, k, v = (torch.randn(B, H, L, d, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.rand(B, L, generator=g) < 0.3  # holes anywhere
    mask[0] = False  # a full row
    mask[1] = True  # an empty row
    mask[2, 10:] = True  # right padding
    pk = packing(mask)
    assert packing(mask) is pk  # once per mask tensor
    assert sum(pk.seqlens) == int((~mask).sum()) and len(pk.seqlens) == B - 1
    packed = [pk.pack(t.transpose(1, 2)) for t in (q, k, v)]  # (1, T, H, d)
    outs, start = [], 0
    for n in pk.seqlens:  # the block-diagonal kernel: each sequence on its own
        seg = [t[:, start:start + n].transpose(1, 2) for t in packed]  # (1, H, n, d)
        outs.append(attention_reference(*seg, causal=causal).transpose(1, 2))
        start += n
    out = pk.unpack(torch.cat(outs, dim=1)).transpose(1, 2)  # (B, H, L, d)
    ref = attention_reference(q, k, v, causal=causal, key_padding_mask=mask)
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 1e-2)
    assert (out[1] == 0).all() and (out.transpose(1, 2)[mask] == 0).all()
    mask[0, 0] = True  # modified in place: the layout is rebuilt
    assert packing(mask) is not pk and sum(packing(mask).seqlens) == sum(pk.seqlens) - 1


def test_a_kernel_refusing_at_run_time_falls_back_with_a_warning(monkeypatch):
    from zoo.functional.backends import sdpa

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("No operator found for this input")

    monkeypatch.setattr(sdpa.SDPABackend, "run", refuse)
    backends._refusals_warned.clear()
    q, k, v = qkv()
    with pytest.warns(RuntimeWarning, match="'sdpa' refused .*falling back"):
        out = attention(q, k, v, causal=True, key_padding_mask=padding())
    assert rel_err(out, attention_reference(q, k, v, causal=True, key_padding_mask=padding())) < 1e-5
    with pytest.raises(NotImplementedError):  # a forced backend does not fall back
        attention(q, k, v, backend="sdpa")


# ----------------------------------------------------------------------------- CUDA-graph safety


def _dense_blocks(num, idx, n):
    """An ordered block list (FlexAttention's kv_num_blocks / kv_indices) as a dense (B, H, n_q, n) bool."""
    out = torch.zeros(*idx.shape[:3], n, dtype=torch.bool)
    for b, h, qb in itertools.product(*(range(s) for s in idx.shape[:3])):
        out[b, h, qb, idx[b, h, qb, : int(num[b, h, qb])].long()] = True
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["right-padded", "holes", "mostly-empty"])
def test_padding_block_mask_is_create_block_masks(causal, kind):
    """The flex backend's block mask (tensor ops only, no host sync: capturable in a CUDA graph) has the
    same full / partial / empty blocks as torch's create_block_mask evaluating the same mask_mod."""
    from torch.nn.attention.flex_attention import create_block_mask

    from zoo.functional.backends.flex import _mask_mod, padding_block_mask

    g = torch.Generator().manual_seed(7)
    for Lb in (128, 384, 512):
        B, n = 4, Lb // 128
        if kind == "right-padded":
            valid = torch.arange(Lb)[None] < torch.randint(1, Lb + 1, (B, 1), generator=g)
            valid[0] = True  # a full row
        elif kind == "holes":
            valid = torch.rand(B, Lb, generator=g) < 0.7
        else:
            valid = torch.zeros(B, Lb, dtype=torch.bool)
            valid[0, :130] = True  # one row with a block and a bit; the others empty
        ref = create_block_mask(_mask_mod(valid, causal), B, None, Lb, Lb, device="cpu")
        got = padding_block_mask(valid, causal)
        for a, b in ((ref.kv_num_blocks, got.kv_num_blocks), (ref.full_kv_num_blocks, got.full_kv_num_blocks),
                     (ref.q_num_blocks, got.q_num_blocks), (ref.full_q_num_blocks, got.full_q_num_blocks)):
            assert torch.equal(a, b), (Lb, kind)
        assert torch.equal(_dense_blocks(ref.kv_num_blocks, ref.kv_indices, n),
                           _dense_blocks(got.kv_num_blocks, got.kv_indices, n))
        assert torch.equal(_dense_blocks(ref.full_kv_num_blocks, ref.full_kv_indices, n),
                           _dense_blocks(got.full_kv_num_blocks, got.full_kv_indices, n))


def test_graph_safe_calls_skip_backends_that_sync_or_materialise(monkeypatch):
    """Under graph_safe() (a CUDA-graph capture) a padded call cannot use xformers' varlen packing (its
    lengths are a host sync) nor SDPA's dense mask on CUDA: FlexAttention's block mask takes it. Unpadded
    calls and calls outside the context choose as before, and the layers report the kernel they run."""
    from zoo.functional.attention import make_call
    from zoo.functional.backends import xformers as xf
    from zoo.functional.capture import graph_safe, graph_safe_active

    monkeypatch.setattr(xf, "_probe_call", lambda device_str: None)  # no GPU here: pretend the probe ran
    monkeypatch.setattr(xf, "_probe", functools.lru_cache(maxsize=None)(xf._probe.__wrapped__))
    call = functools.partial(make_call, (32, 8, 1024, 32), torch.bfloat16, torch.device("cuda"), decay=None,
                             chunk=None, causal=False, requires_grad=True)
    assert backends.select(call(padded=True)).name == "xformers"
    assert not graph_safe_active()
    with graph_safe():
        with graph_safe():  # nests
            assert graph_safe_active()
        padded = call(padded=True)
        assert padded.graph_safe and "graph-safe" in padded.describe()
        reasons = " ".join(backends.get("xformers").not_supported_reasons(padded))
        assert "sequence lengths on the host" in reasons
        assert "materialises" in " ".join(backends.get("sdpa").not_supported_reasons(padded))
        assert backends.select(padded).name == "flex"
        assert backends.select(call(padded=False)).name == "xformers"  # no lengths needed
        cpu = make_call((2, 4, 64, 16), torch.float32, torch.device("cpu"), decay=None, chunk=None, causal=False,
                        padded=True, requires_grad=True)
        assert backends.select(cpu).name == "sdpa"  # no FlexAttention backward on the CPU; graphs are CUDA-only
    assert not graph_safe_active()
    with pytest.raises(BackendUnavailable, match="sequence lengths on the host"):
        with graph_safe():
            backends.select(call(padded=True), "xformers")


@pytest.mark.slow  # compiles with inductor's C++ backend; on CUDA the GPU suite runs it inside attention()
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_compiled_pooling_is_the_pooling(count_include_pad):
    """The fused value pooling that attention() runs on CUDA is pool_values itself, compiled: same values
    and gradients (here on the CPU compiler)."""
    from zoo.functional.attention import _compiled_pooling
    from zoo.functional.reference import pool_values

    v = torch.randn(2, 3, 40, 8, requires_grad=True)
    inside = torch.rand(2, 40, generator=torch.Generator().manual_seed(1)) < 0.8
    kw = dict(causal=False, inside=inside, count_include_pad=count_include_pad)
    got, ref = _compiled_pooling.compiled(v, 3, **kw), pool_values(v, 3, **kw)
    assert rel_err(got, ref) < 1e-6
    g_got, = torch.autograd.grad(got.square().sum(), v)
    g_ref, = torch.autograd.grad(ref.square().sum(), v)
    assert rel_err(g_got, g_ref) < 1e-6


# ----------------------------------------------------------------------------- what padding holds, empty batches

PADDED_CASES = [c for c in CASES if c[4]]


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("backend", ["auto", "sdpa", "reference"])
@pytest.mark.parametrize("case", PADDED_CASES, ids=str)
def test_non_finite_values_at_padding_stay_out(case, backend, fill):
    """Padded keys behave like positions past the end: NaN/inf stored in q, k, v at padded positions
    change nothing (the dispatcher and the reference zero them before any product)."""
    if backend == "sdpa" and case[0]:
        pytest.skip("sdpa declares no decay")
    decay, pool, chunk, causal, _ = case
    pad = padding()
    kw = dict(decay=ALPHA if decay else None, pool=pool, chunk=chunk, causal=causal, key_padding_mask=pad)
    q, k, v = qkv(torch.float32, "cpu")
    clean = attention(q, k, v, backend=backend, **kw)
    dirty = [t.masked_fill(pad[:, None, :, None], fill) for t in (q, k, v)]
    out = attention(*dirty, backend=backend, **kw)
    assert torch.isfinite(out).all() and torch.equal(out, clean)


@pytest.mark.parametrize("backend", ["auto", "sdpa", "reference"])
def test_empty_batch_gives_an_empty_output(backend):
    q, k, v = (torch.randn(0, H, L, d) for _ in range(3))
    out = attention(q, k, v, backend=backend, key_padding_mask=torch.zeros(0, L, dtype=torch.bool), chunk=8, pool=3)
    assert out.shape == (0, H, L, d) and out.dtype == q.dtype
