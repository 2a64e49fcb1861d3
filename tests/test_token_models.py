"""Token-level models: the per-position head and loss, causal layers on causal tasks, the MLP shapes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from timm.layers import GluMlp

import registry
from zoo.base import MixerConfig, SequenceMixer
from zoo.config import resolve_layer
from zoo.data import ArrayDataset
from zoo.models import ModelConfig, build_model, get_kind
from zoo.models.fused import mlp_residual
from zoo.models.heads import TokenHead, labelled_index
from zoo.train.batching import BatchSource
from zoo.train.experiment import ExperimentConfigError, load_experiment

IGNORE = -100


def _hand_loss(logits_at, labels, weights):
    """Sum of -log softmax at every labelled position of a weighted row, correct count, weight sum."""
    ce = correct = n = 0.0
    for b in range(labels.shape[0]):
        for pos in range(labels.shape[1]):
            y = int(labels[b, pos])
            if y == IGNORE or weights[b] == 0:
                continue
            z = [float(v) for v in logits_at(b, pos)]
            lse = math.log(sum(math.exp(v) for v in z))
            ce += lse - z[y]
            correct += float(max(range(len(z)), key=z.__getitem__) == y)
            n += 1
    return ce, correct, n


def test_token_loss_against_hand_computed():
    torch.manual_seed(0)
    B, L, V = 3, 5, 4
    labels = torch.tensor([[IGNORE, 2, IGNORE, 0, IGNORE],
                           [1, IGNORE, IGNORE, IGNORE, IGNORE],
                           [3, 3, IGNORE, 1, 2]])  # row 2 is a filler row (weight 0)
    weights = torch.tensor([1.0, 1.0, 0.0])
    full = torch.randn(B, L, V)
    kind = get_kind("token")
    want = _hand_loss(lambda b, p: full[b, p], labels, weights)
    # every position (K = L: no selection) and the first K labelled positions give the same terms
    got_full = kind.loss_terms(full, labels, weights).tolist()
    index, valid = labelled_index(labels, 4)  # K = 4, the most labelled positions of a row
    picked = full.gather(1, index.unsqueeze(-1).expand(-1, -1, V))  # (B, K, V)
    got_picked = kind.loss_terms(picked, labels, weights).tolist()
    assert want[2] == 3  # 2 + 1 labelled positions in real rows
    for got in (got_full, got_picked):
        assert got == pytest.approx(list(want), rel=1e-5)
    # the mean the training step takes: loss sum / labelled positions; accuracy = correct / labelled
    assert valid.sum(1).tolist() == [2, 1, 4]


def test_token_head_projects_only_labelled_positions():
    torch.manual_seed(0)
    head = TokenHead(8, 11).eval()
    h = torch.randn(2, 6, 8)
    labels = torch.full((2, 6), IGNORE)
    labels[0, [1, 4]] = torch.tensor([3, 7])
    labels[1, 5] = 2
    out = head([h], labels)
    assert out.shape == (2, 2, 11)  # K = the batch's most labelled positions, not L
    full = head([h])  # (B, L, V)
    assert torch.allclose(out[0], full[0, [1, 4]]) and torch.allclose(out[1, 0], full[1, 5])
    head.max_labelled = 3  # the trainer's static count (a captured step's shape)
    assert head([h], labels).shape == (2, 3, 11)


def _causal_layers() -> list[str]:
    return [n for n in registry.list() if getattr(registry.get(n).cls, "supports_causal", False)
            and not n.startswith("tiny")]


@pytest.mark.parametrize("name", _causal_layers())
def test_no_leak_for_causal_token_models(name):
    """Changing token t never changes a prediction at a position < t (every causal layer, 2 blocks)."""
    torch.manual_seed(0)
    L, V = 24, 13
    layer = resolve_layer(name, ["causal=true"], d_model=16, max_len=L)
    model = build_model(ModelConfig(d_model=16, n_layers=2, mlp="gelu", pos_emb="learned"), layer, n_classes=V,
                        max_len=L, vocab_size=V, kind="token").eval()
    x = torch.randint(0, V, (2, L))
    with torch.no_grad():
        base = model([x])  # (B, L, V)
        for t in (1, 9, L - 1):
            y = x.clone()
            y[:, t] = (y[:, t] + 1 + torch.arange(2)) % V
            out = model([y])
            assert torch.allclose(out[:, :t], base[:, :t], atol=1e-5), f"{name}: position {t} leaks into the past"
            assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-5), f"{name}: position {t} changed nothing"


@dataclass
class _NoCausalConfig(MixerConfig):
    pass


class _NoCausal(SequenceMixer):
    def forward(self, x, key_padding_mask=None):
        return x


@pytest.fixture
def non_causal_layer():
    registry.register("tiny_noncausal_layer", _NoCausalConfig)(_NoCausal)
    yield "tiny_noncausal_layer"
    registry.unregister("tiny_noncausal_layer")


def test_causal_task_sets_causal_and_refuses_non_causal_layers(non_causal_layer):
    exp = load_experiment("mqar", ["layer=las"])
    assert exp.layer.config.causal is True and exp.cfg.layer.causal is True  # las.yaml says false
    with pytest.raises(ExperimentConfigError) as err:
        load_experiment("mqar", [f"layer={non_causal_layer}"])
    msg = str(err.value)
    assert "\n" not in msg and "cannot be causal" in msg and "supports_causal" in msg


def test_cli_refuses_compression_in_one_line():
    r = subprocess.run([sys.executable, "-m", "zoo", "train", "mad", "task=compression"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "encoder-decoder" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("mlp", ["none", "swiglu"])
def test_block_mlp_shapes(mlp):
    layer = resolve_layer("vanilla", d_model=16, max_len=8)
    model = build_model(ModelConfig(d_model=16, n_layers=2, mlp=mlp, mlp_ratio=2.75), layer, n_classes=5,
                        max_len=8, vocab_size=5, kind="token")
    block = model.encoder.blocks[0]
    if mlp == "none":
        assert block.mlp is None and not hasattr(block, "norm2")
    else:
        assert isinstance(block.mlp, GluMlp) and block.mlp.fc1.out_features == 2 * 44
    with pytest.raises(ValueError, match="model.mlp='relu'"):
        ModelConfig(mlp="relu")


def test_swiglu_residual_matches_timm_gated_mlp():
    torch.manual_seed(0)
    ref = GluMlp(16, hidden_features=24, act_layer=torch.nn.SiLU, gate_last=False)
    norm = torch.nn.LayerNorm(16)
    x, mixed = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    y = x + mixed
    want = y + ref(norm(y))
    got = mlp_residual(x, mixed, None, norm.weight, norm.bias, norm.eps, ref.fc1.weight, ref.fc1.bias,
                       ref.fc2.weight, ref.fc2.bias, 0.0, 0.0, False, torch.float32, True)
    assert torch.allclose(got, want, atol=1e-5)


def test_batches_carry_per_position_labels_cut_to_the_batch_length():
    rng = np.random.default_rng(0)
    N, L = 6, 40
    lengths = np.array([5, 9, 12, 30, 7, 3])
    x = np.zeros((N, L), dtype=np.int32)
    y = np.full((N, L), IGNORE, dtype=np.int32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.integers(1, 9, n)
        y[i, : n : 2] = rng.integers(0, 9, len(range(0, n, 2)))
    ds = ArrayDataset([x], y, lengths, n_classes=9, vocab_size=9, kind="token")
    src = BatchSource(ds, torch.device("cpu"))
    b = src.batch([0, 1, 2], batch_size=4)  # longest 12 -> one bucket; a filler row
    assert b.labels.shape == b.inputs[0].shape and b.labels.dtype == torch.long
    assert b.n_scored == int((y[[0, 1, 2]] != IGNORE).sum()) and b.n_rows == 3
    assert torch.equal(b.labels[:3], torch.as_tensor(y[[0, 1, 2], : b.labels.shape[1]], dtype=torch.long))


def test_tiny_mqar_trains_through_the_trainer(tmp_path):
    from zoo.train.runs import run_experiment

    over = ["task.options.vocab_size=64", "task.options.seq_len=16", "task.options.num_kv_pairs=2",
            "task.options.num_train_examples=256", "task.options.num_test_examples=64", "model.d_model=16",
            "train.batch_size=32", "train.max_steps=6", "train.log_every=3", f"data.cache_dir={tmp_path / 'cache'}"]
    s = run_experiment("mqar", over, out=tmp_path / "runs", progress=False)
    assert s["steps"] == 6 and 0.0 <= s["test_acc"] <= 1.0 and math.isfinite(s["test_loss"])
    rows = [json.loads(r) for r in (tmp_path / "runs" / s["run_dir"].split("/")[-1] / "metrics.jsonl").open()]
    train = [r for r in rows if r["kind"] == "train"]
    assert train and all(0.0 <= r["acc"] <= 1.0 for r in train)  # per labelled position, not per row
    assert s["test_loss"] < math.log(64) + 1.0  # a mean over labelled positions, not a per-row sum


def test_causal_data_in_memory_refuses_a_non_causal_layer(tmp_path):
    from zoo.train.runs import run_experiment

    x = np.random.default_rng(0).integers(0, 9, (16, 16)).astype(np.int32)
    y = np.where(np.arange(16) % 4 == 3, x, IGNORE).astype(np.int32)
    ds = ArrayDataset([x], y, np.full(16, 16), n_classes=9, vocab_size=9, padding=False, kind="token", causal=True)
    cfg = {"task": {"name": "listops", "options": {"max_len": 16}}, "layer": {"name": "vanilla", "causal": False},
           "model": {"d_model": 16, "n_layers": 1}, "train": {"batch_size": 8, "progress": False}}
    with pytest.raises(ExperimentConfigError, match="set layer.causal=true"):
        run_experiment(cfg, [], out=tmp_path, max_steps=1, datasets={"train": ds, "val": ds, "test": ds})
    # a causal token task (the kind and `causal` come from the task) trains on the same data
    s = run_experiment(cfg, ["task=mqar", "task.options.seq_len=16", "task.options.vocab_size=32",
                             "task.options.num_kv_pairs=2"], out=tmp_path, max_steps=2,
                       datasets={"train": ds, "val": ds, "test": ds})
    assert s["steps"] == 2 and 0.0 <= s["test_acc"] <= 1.0


def test_swiglu_residual_matches_timm_gated_mlp_bf16():
    torch.manual_seed(0)
    ref = GluMlp(16, hidden_features=24, act_layer=torch.nn.SiLU, gate_last=False)
    norm = torch.nn.LayerNorm(16)
    x, mixed = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = x + mixed
        want = y + ref(norm(y).to(torch.bfloat16)).float()
        got = mlp_residual(x, mixed, None, norm.weight, norm.bias, norm.eps, ref.fc1.weight, ref.fc1.bias,
                           ref.fc2.weight, ref.fc2.bias, 0.0, 0.0, False, torch.bfloat16, True)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=5e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["vanilla", "s4d"])
def test_token_step_replayed_from_a_cuda_graph_equals_eager_gpu(layer):
    """The token kind's step (labels (B, L), the head's static K) captured and replayed = the eager step."""
    from zoo.functional.capture import graph_safe
    from zoo.train.step import GraphedSteps, optimizer_step

    g = torch.Generator().manual_seed(1)
    L, V, B = 32, 50, 8
    batches = []
    for i in range(6):
        x = torch.randint(0, V, (B, L), generator=g)
        y = torch.where(torch.rand(B, L, generator=g) < 0.2, torch.randint(0, V, (B, L), generator=g), IGNORE)
        w = torch.ones(B)
        w[6:] = 0.0 if i % 2 else 1.0
        n = int((y[w > 0] != IGNORE).sum())
        batches.append(([x.cuda()], [None], y.cuda(), w.cuda(), 1.0 / max(n, 1)))
    kmax = max(int((b[2] != IGNORE).sum(1).max()) for b in batches)
    runs = []
    for graphed in (False, True):
        torch.manual_seed(0)
        layer_cfg = resolve_layer(layer, ["causal=true"], d_model=32, max_len=L)
        model = build_model(ModelConfig(d_model=32, n_layers=2, mlp="none"), layer_cfg, n_classes=V, max_len=L,
                            vocab_size=V, kind="token").cuda()
        model.head.max_labelled = kmax
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        params = [p for p in model.parameters() if p.requires_grad]
        autocast = lambda cache=True: torch.autocast("cuda", enabled=False)  # noqa: E731
        kind = get_kind("token")
        steps = GraphedSteps(model, opt, grad_clip=1.0, autocast=autocast, device=torch.device("cuda"),
                             loss_terms=kind.loss_terms)
        outs = []
        for x, m, y, w, scale in batches:
            if graphed:
                outs.append(steps(x, m, y, w, scale))
            else:
                model.train()
                with graph_safe():
                    outs.append(optimizer_step(model, params, opt, x, m, y, w, scale, 1.0, autocast, kind.loss_terms))
        runs.append(torch.stack(outs).cpu())
    assert len(steps.graphs) == 1 and steps.eager_steps == 0
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-5)


def test_chance_accuracy_of_per_position_labels_counts_labelled_positions_only():
    """Token tasks: the majority label among labelled positions (-100 ignored), weighted by example weights."""
    from types import SimpleNamespace

    from zoo.train.summary import chance_accuracy

    labels = np.array([[-100, 5, 7, -100], [5, -100, 5, 9], [-100, 7, 7, -100]])
    assert chance_accuracy(SimpleNamespace(labels=labels)) == pytest.approx(3 / 7)  # 5 and 7 thrice among 7
    weighted = SimpleNamespace(labels=labels, weights=np.array([1.0, 0.0, 1.0]))
    assert chance_accuracy(weighted) == pytest.approx(3 / 4)  # row 1 weighs 0: 5, 7, 7, 7
    assert chance_accuracy(SimpleNamespace(labels=np.full((2, 3), -100))) is None
