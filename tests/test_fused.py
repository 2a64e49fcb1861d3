"""The block's fused functions (zoo.models.fused): the compiled block is the eager one, and the new
eager block is the old module-by-module formula (fp32 and bf16, padded, with gradients); the graphed
evaluation forward (zoo.train.fast_eval) is the eager forward. CPU compiles are slow: tiny sizes."""

from __future__ import annotations

import pytest
import torch

from zoo.config import resolve_layer
from zoo.models import ModelConfig, build_model
from zoo.models.block import Block
from zoo.models.fused import fused_ops

D = 16


def _block(seed: int = 0, dropout: float = 0.0, norm: str = "layernorm", device: str = "cpu") -> Block:
    torch.manual_seed(seed)
    blk = Block(resolve_layer({"name": "vanilla", "n_heads": 2}, d_model=D), D, dropout=dropout, norm=norm)
    with torch.no_grad():  # non-trivial norm parameters, so their gradients are checked for real
        for n in (blk.norm1, blk.norm2):
            n.weight.add_(0.3 * torch.randn_like(n.weight))
            if getattr(n, "bias", None) is not None:
                n.bias.add_(0.3 * torch.randn_like(n.bias))
    return blk.to(device)


def _reference(blk: Block, x, mask):
    """The block as it was: each submodule eagerly (norm output in fp32, autocast casting in the products)."""
    y = x + blk.drop_path1(blk.mixer(blk.norm1(x), key_padding_mask=mask))
    y = y + blk.drop_path2(blk.mlp(blk.norm2(y)))
    return y.masked_fill(mask.unsqueeze(-1), 0.0)


def _inputs(B=2, L=8, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g)
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[0, L - 3:] = True  # one padded row
    x = x.masked_fill(mask.unsqueeze(-1), 0.0)
    return x.to(device).requires_grad_(True), mask.to(device)


def _run(fn, blk, x, mask, bf16: bool):
    blk.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = fn(blk, x, mask)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.device)
    (out.float() * g).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in blk.named_parameters()}
    return out.detach().float(), x.grad.detach().clone(), grads


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _assert_close(got, ref, tol):
    out, gx, grads = got
    rout, rgx, rgrads = ref
    assert torch.isfinite(out).all()
    assert _rel(out, rout) < tol, _rel(out, rout)
    assert _rel(gx, rgx) < tol, _rel(gx, rgx)
    for n in rgrads:
        assert _rel(grads[n], rgrads[n]) < tol, (n, _rel(grads[n], rgrads[n]))


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_eager_block_is_the_module_formula(bf16, norm):
    blk = _block(norm=norm)
    x, mask = _inputs()
    got = _run(lambda b, x, m: b(x, m), blk, x, mask, bf16)
    ref = _run(_reference, blk, x, mask, bf16)
    _assert_close(got, ref, 2e-2 if bf16 else 1e-5)
    assert (got[0][mask] == 0).all()  # padded rows exactly zero


def test_dropout_in_training_only_and_padding_stays_zero():
    blk = _block(dropout=0.5)
    x, mask = _inputs()
    blk.eval()
    a, b = blk(x, mask), blk(x, mask)
    assert torch.equal(a, b)
    blk.train()
    c = blk(x, mask)
    assert not torch.allclose(c, a)
    assert (c[mask] == 0).all()


def _compiled_on_cpu(blk):
    blk.fused_devices = frozenset({"cpu", "cuda"})
    return blk


def test_compiled_block_matches_eager_on_cpu_and_does_not_recompile():
    """Inductor on the CPU (the same code as on CUDA): fp32, padded, gradients; a second length reuses
    the symbolic-shape compilation."""
    from torch._dynamo.utils import counters

    blk = _block()
    x, mask = _inputs(L=8)
    ref = _run(lambda b, x, m: b(x, m), blk, x, mask, False)
    _compiled_on_cpu(blk)
    got = _run(lambda b, x, m: b(x, m), blk, x, mask, False)
    assert fused_ops(blk.fused_devices).mlp_residual.failed is None
    assert fused_ops(blk.fused_devices).norm_in.failed is None
    _assert_close(got, ref, 1e-4)
    before = counters["stats"]["unique_graphs"]
    x2, mask2 = _inputs(L=12, seed=2)
    ref2 = _run(lambda b, x, m: b(x, m), _block(), x2, mask2, False)
    got2 = _run(lambda b, x, m: b(x, m), blk, x2, mask2, False)
    _assert_close(got2, ref2, 1e-4)
    assert counters["stats"]["unique_graphs"] == before  # no recompilation for a new length


@pytest.mark.slow
def test_compiled_block_matches_eager_on_cpu_bf16():
    blk = _block()
    x, mask = _inputs(L=8)
    ref = _run(lambda b, x, m: b(x, m), blk, x, mask, True)
    got = _run(lambda b, x, m: b(x, m), _compiled_on_cpu(blk), x, mask, True)
    _assert_close(got, ref, 2e-2)


# ------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [False, True])
def test_compiled_block_matches_eager_on_cuda(bf16):
    from torch._dynamo.utils import counters

    blk = _block(device="cuda")
    for i, L in enumerate((40, 56, 40)):
        x, mask = _inputs(B=4, L=L, device="cuda", seed=i)
        blk.fused_devices = frozenset()  # eager
        ref = _run(lambda b, x, m: b(x, m), blk, x, mask, bf16)
        blk.fused_devices = frozenset({"cuda"})
        got = _run(lambda b, x, m: b(x, m), blk, x, mask, bf16)
        assert fused_ops(blk.fused_devices).mlp_residual.failed is None
        _assert_close(got, ref, 2e-2 if bf16 else 1e-4)
        if i == 0:
            before = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == before  # other lengths: no recompilation


@pytest.mark.gpu
def test_graphed_eval_forward_is_the_eager_forward():
    from zoo.train.fast_eval import GraphedForward

    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=64, n_layers=2, dropout=0.1), {"name": "vanilla", "n_heads": 4},
                        n_classes=5, max_len=300, vocab_size=12).cuda()

    def autocast(cache=True):
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)

    graphed = GraphedForward(model, autocast, torch.device("cuda"))
    for L in (128, 256, 128):
        x = torch.randint(1, 12, (8, L), device="cuda")
        mask = torch.zeros(8, L, dtype=torch.bool, device="cuda")
        mask[:3, L // 2:] = True
        x = x.masked_fill(mask, 0)
        got = graphed([x], [mask])
        model.eval()
        with torch.no_grad(), autocast():
            from zoo.functional.capture import graph_safe
            with graph_safe():
                ref = model([x], [mask])
        assert _rel(got, ref) < 1e-2
    assert len(graphed.graphs) == 2 and graphed.eager_calls == 0


def test_graphed_evaluate_without_graphs_is_the_trainer_evaluate(tmp_path):
    """On the CPU (no graphs) the fast evaluation loop returns exactly the trainer's own numbers."""
    from test_train import _exp, _synthetic

    from zoo.train.experiment import load_experiment
    from zoo.train.fast_eval import graphed_evaluate
    from zoo.train.trainer import Trainer

    tr = Trainer(load_experiment(_exp(), []), tmp_path / "run", datasets=_synthetic())
    assert graphed_evaluate(tr, None, "val") == tr.evaluate("val")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_key_value_masking_matches_eager_on_cpu(dtype):
    """attention()'s masking of padded keys and values, compiled on the CPU as on CUDA, on the strided
    views the mixer passes (with NaN and inf stored at padding): the eager values and gradients; a
    second length reuses the symbolic-shape compilation."""
    from torch._dynamo.utils import counters

    from zoo.functional.attention import zero_padded_kv
    from zoo.functional.compiled import CudaCompiled

    fn = CudaCompiled(zero_padded_kv, "kv masking", dynamic=True, devices={"cpu"})
    for i, L in enumerate((10, 14)):
        qkv = torch.randn(2, L, 3, 2, 8, dtype=dtype)
        mask = torch.zeros(2, L, dtype=torch.bool)
        mask[1, L - 4:] = True
        qkv[1, L - 4:, 1:] = float("nan")
        qkv[1, L - 1, 2] = float("inf")
        outs = []
        for f in (zero_padded_kv, fn):
            leaf = qkv.clone().requires_grad_(True)
            _, k, v = leaf.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, d) strided, as the mixer's
            k2, v2 = f(k, v, mask)
            (k2.float() * 2 + v2.float() * 3).nan_to_num(7.0).sum().backward()
            outs.append((k2.detach(), v2.detach(), leaf.grad))
        assert fn.failed is None
        for got, want in zip(outs[1], outs[0]):
            assert torch.equal(got, want)
        assert (outs[1][0][1, :, L - 4:] == 0).all() and (outs[1][1][1, :, L - 4:] == 0).all()
        if i == 0:
            before = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == before


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_compiled_encoder_ends_match_eager_on_cpu(monkeypatch, bf16, pooling):
    """The encoder's functions around the blocks (positions, dropout and masking in; the final norm,
    masking and pooling out), compiled on the CPU, give the eager model's logits and gradients,
    pooled and per position, padded."""
    from zoo.models.encoder import Encoder

    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=D, n_layers=1, pooling=pooling), {"name": "vanilla", "n_heads": 2},
                        n_classes=3, max_len=32, vocab_size=11)
    x = torch.randint(1, 11, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[1, 7:] = True

    def run(fn):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fn()
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return out.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for fn in (lambda: model([x], [mask]), lambda: model.encoder(x, mask)):
        ref = run(fn)
        with monkeypatch.context() as m:
            m.setattr(Encoder, "fused_devices", frozenset({"cpu"}))
            got = run(fn)
        assert _rel(got[0], ref[0]) < (2e-2 if bf16 else 1e-5)
        assert got[1].keys() == ref[1].keys() and "encoder.pos" in ref[1]
        for n in ref[1]:
            assert _rel(got[1][n], ref[1][n]) < (2e-2 if bf16 else 1e-5), n
    for f in ("embed_out", "norm_out", "norm_pool"):
        assert getattr(fused_ops(frozenset({"cpu"})), f).failed is None


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vanilla", "las"])
def test_attention_mixer_on_cuda_matches_its_reference(name):
    """On CUDA the mixer runs the fast kernel (flex under graph_safe, as in a captured training
    step, with the compiled masking of k and v); the reference runs the materialised definition:
    the same output and gradients (bf16, padded)."""
    from zoo.functional.capture import graph_safe

    torch.manual_seed(0)
    mixer = resolve_layer({"name": name, "n_heads": 4}, d_model=64).build().cuda()
    x = torch.randn(4, 200, 64, device="cuda")
    mask = torch.zeros(4, 200, dtype=torch.bool, device="cuda")
    mask[1, 150:] = True
    mask[3, 20:] = True
    x = x.masked_fill(mask.unsqueeze(-1), 0.0)

    def run(fn):
        mixer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16), graph_safe():
            out = fn(xi, mask)
        (out.float() * torch.linspace(-1, 1, out.numel(), device="cuda").view(out.shape)).sum().backward()
        return out.detach().float(), xi.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()}

    got, ref = run(mixer), run(mixer.reference_forward)
    _assert_close(got, ref, 2e-2)
    assert (got[0][mask] == 0).all()
