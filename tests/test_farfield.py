"""The far-field shortcut: its formula against the exact operator (within the stated bound, error
shrinking with delta), the FlexAttention paths against the formula, gradients, and input errors."""

import math
import warnings

import pytest
import torch

from zoo.experimental.farfield import farfield_attention, farfield_band, farfield_error_bound, farfield_reference
from zoo.functional.attention import attention_reference

ALPHAS = [0.0, 0.05, 0.2, 0.7]
B, H, L, D = 2, 4, 300, 16
SLACK = 2e-5  # fp32 rounding of the two fp32 computations being compared (values ~ N(0, 1))


def _inputs(dtype=torch.float32, L=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    decay = torch.tensor(ALPHAS, dtype=torch.float32)
    return q, k, v, decay


def _pad(L=L):
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, L - L // 5 :] = True  # right padding
    pad[0, :7] = True  # and left padding (causal rows 0..6 have no key at all)
    return pad


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_reference_within_bound_of_exact(delta, causal, padded):
    """Realistic logits: q, k ~ N(0, 1), d = 16, scale = d^-0.5, alphas 0 / 0.05 / 0.2 / 0.7, L = 300."""
    q, k, v, decay = _inputs()
    kpm = _pad() if padded else None
    exact = attention_reference(q, k, v, decay=decay, causal=causal, key_padding_mask=kpm)
    approx, stats = farfield_reference(q, k, v, decay=decay, delta=delta, causal=causal, key_padding_mask=kpm,
                                       return_stats=True)
    err = (approx - exact).abs().max().item()
    assert err <= farfield_error_bound(delta, v) + SLACK
    # the approximation is active (far keys exist) on every decayed head, absent on the alpha = 0 head
    assert stats["far_fraction"][0] == 0.0 and all(f > 0.05 for f in stats["far_fraction"][1:])
    assert stats["W"][0] == L
    if padded:
        assert approx[kpm[:, None, :, None].expand_as(approx)].abs().max() == 0


def test_error_shrinks_with_delta():
    """fp64 so the trend is not hidden by rounding: the error falls roughly linearly with delta."""
    q, k, v, decay = _inputs(torch.float64)
    decay = decay.double()
    exact = attention_reference(q, k, v, decay=decay)
    errs = [(farfield_reference(q, k, v, decay=decay, delta=dl) - exact).abs().max().item() for dl in (0.3, 1e-2, 1e-4)]
    assert errs[0] > 1e-4  # a coarse delta is visibly wrong: the test can fail
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5
    for dl, e in zip((0.3, 1e-2, 1e-4), errs):
        assert e <= farfield_error_bound(dl, v)


def test_far_logits_are_below_delta_and_formula_is_zeroed_far_softmax():
    """Every far decayed logit satisfies |x| <= delta, and the combine formula equals the plain
    softmax with the far logits replaced by 0 (an independent formulation), in fp64."""
    q, k, v, decay = _inputs(torch.float64)
    decay = decay.double()
    kpm = _pad()
    delta = 1e-2
    for causal in (False, True):
        scale = D**-0.5
        W, M = farfield_band(q, k, decay, delta, scale, ~kpm)
        pos = torch.arange(L)
        dist = (pos[:, None] - pos[None, :]).abs()
        s = (q @ k.transpose(-1, -2)) * scale * torch.exp(-decay[:, None, None] * dist)
        allowed = ~kpm[:, None, None, :] & ((pos[None, :] <= pos[:, None]) if causal else True)
        far = allowed & (dist[None] > W[:, None, None])
        assert far.any()
        assert s[far.expand_as(s)].abs().max() <= delta
        assert (s.abs() * allowed).amax(dim=(0, 2, 3)).le(M).all()
        z = torch.where(far, torch.zeros((), dtype=s.dtype), s).masked_fill(~allowed, float("-inf"))
        direct = torch.softmax(z, -1).nan_to_num(0.0) @ v
        direct = direct.masked_fill(kpm[:, None, :, None], 0.0)
        ref = farfield_reference(q, k, v, decay=decay, delta=delta, causal=causal, key_padding_mask=kpm)
        torch.testing.assert_close(ref, direct, rtol=0, atol=1e-12)


@pytest.mark.slow  # a CPU FlexAttention compile for an experimental operator no layer uses
def test_alpha_zero_heads_are_exact():
    q, k, v, _ = _inputs()
    kpm = _pad()
    for causal in (False, True):
        zero = torch.zeros(H)
        exact = attention_reference(q, k, v, decay=zero, causal=causal, key_padding_mask=kpm)
        torch.testing.assert_close(farfield_reference(q, k, v, decay=zero, causal=causal, key_padding_mask=kpm),
                                   exact, rtol=0, atol=1e-6)
        mixed = torch.tensor(ALPHAS)
        exact = attention_reference(q, k, v, decay=mixed, causal=causal, key_padding_mask=kpm)
        with torch.no_grad():
            fast = farfield_attention(q, k, v, decay=mixed, delta=0.3, causal=causal, key_padding_mask=kpm)
        torch.testing.assert_close(fast[:, 0], exact[:, 0], rtol=0, atol=1e-6)  # head 0 has alpha = 0
        assert (fast[:, 3] - exact[:, 3]).abs().max() > 1e-4  # a decayed head is approximated at delta = 0.3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_flex_sink_path_matches_reference(causal, padded):
    """The CPU kernel (compiled FlexAttention, sink key, forward only) equals the materialised formula."""
    q, k, v, decay = _inputs()
    kpm = _pad() if padded else None
    ref = farfield_reference(q, k, v, decay=decay, delta=1e-2, causal=causal, key_padding_mask=kpm)
    with torch.no_grad():
        fast, stats = farfield_attention(q, k, v, decay=decay, delta=1e-2, causal=causal, key_padding_mask=kpm,
                                         return_stats=True)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    assert stats["W"][1:] == sorted(stats["W"][1:], reverse=True) and stats["W"][-1] < L // 4


@pytest.mark.parametrize("causal", [False, True])
def test_flex_lse_path_matches_reference(causal):
    """The CUDA code path (FlexAttention with LSE, then the combine) run eagerly on CPU."""
    q, k, v, decay = _inputs()
    kpm = _pad()
    ref = farfield_reference(q, k, v, decay=decay, delta=1e-2, causal=causal, key_padding_mask=kpm)
    with torch.no_grad():
        fast = farfield_attention(q, k, v, decay=decay, delta=1e-2, causal=causal, key_padding_mask=kpm,
                                  _near="lse", _compile=False)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


@pytest.mark.slow  # a CPU FlexAttention compile for an experimental operator no layer uses
def test_flex_sink_path_bf16():
    q, k, v, decay = _inputs(torch.bfloat16)
    ref = farfield_reference(q, k, v, decay=decay, delta=1e-3, causal=True)
    with torch.no_grad():
        fast = farfield_attention(q, k, v, decay=decay, delta=1e-3, causal=True)
    assert fast.dtype == torch.bfloat16
    assert (fast.float() - ref.float()).abs().max() <= 2 ** -7 * ref.float().abs().max()  # bf16 rounding


def test_reference_gradients():
    """Finite gradients with causal + left/right padding; gradcheck of the formula (fp64, small)."""
    q, k, v, decay = _inputs()
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = farfield_reference(q, k, v, decay=decay, delta=1e-2, causal=True, key_padding_mask=_pad())
    (out * torch.randn_like(out)).sum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in (q, k, v))

    g = torch.Generator().manual_seed(1)
    q2, k2, v2 = (torch.randn(1, 2, 24, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    dec = torch.tensor([0.0, 0.6], dtype=torch.float64)
    pad = torch.zeros(1, 24, dtype=torch.bool)
    pad[0, 20:] = True
    for causal in (False, True):
        fn = lambda a, b, c: farfield_reference(a, b, c, decay=dec, delta=0.05, causal=causal, key_padding_mask=pad)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (q2, k2, v2))


def test_cpu_with_grad_runs_the_reference():
    q, k, v, decay = _inputs()
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = farfield_attention(q, k, v, decay=decay, causal=True)
    ref = farfield_reference(q, k, v, decay=decay, causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_error_bound_value():
    v = torch.tensor([[-3.0, 2.0]])
    assert farfield_error_bound(1e-3, v) == pytest.approx(math.expm1(2e-3) * 3.0)
    assert farfield_error_bound(0.5, 2.0) == pytest.approx((math.e - 1) * 2.0)


def test_bad_inputs():
    q, k, v, decay = _inputs(L=32)
    for fn in (farfield_reference, farfield_attention):
        with pytest.raises(ValueError, match="delta"):
            fn(q, k, v, decay=decay, delta=-1e-3)
        with pytest.raises(ValueError, match="delta"):
            fn(q, k, v, decay=decay, delta=0.0)
        with pytest.raises(TypeError, match="delta"):
            fn(q, k, v, decay=decay, delta="1e-3")
        with pytest.raises(ValueError, match="decay"):
            fn(q, k, v, decay=torch.ones(H + 1))
        with pytest.raises(ValueError, match="decay"):
            fn(q, k, v, decay=torch.ones(1, H))
        with pytest.raises(ValueError, match="decay"):
            fn(q, k, v, decay=None)
        with pytest.raises(ValueError, match=">= 0"):
            fn(q, k, v, decay=-decay - 0.1)
        with pytest.raises(ValueError, match="shape"):
            fn(q[0], k[0], v[0], decay=decay)
        with pytest.raises(ValueError, match="key_padding_mask"):
            fn(q, k, v, decay=decay, key_padding_mask=torch.zeros(B, 31, dtype=torch.bool))
