"""The training step as CUDA graphs (zoo.train.step): when they are used, and that a replayed step is the
eager step. The equality tests need a GPU (`make test-gpu`); what decides for or against graphs runs here."""

from __future__ import annotations

import pytest
import torch
from test_train import _exp, _synthetic

from zoo.functional.capture import graph_safe
from zoo.models import ModelConfig, build_model
from zoo.train import ExperimentConfigError, run_experiment
from zoo.train.step import GraphedSteps, graphs_unavailable, optimizer_step


def _adamw():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)


def test_graphs_are_refused_with_a_reason():
    cuda = torch.device("cuda", 0)
    assert "CUDA device" in graphs_unavailable(torch.device("cpu"), 1, _adamw())
    assert "DDP" in graphs_unavailable(cuda, 2, _adamw())
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert "optimizer is torch.optim.sgd.SGD" in graphs_unavailable(cuda, 1, sgd)
    assert graphs_unavailable(cuda, 1, _adamw()) is None


def test_cpu_run_reports_eager_steps_and_true_is_refused(tmp_path):
    summary = run_experiment(_exp(), ["train.epochs=1"], out=tmp_path, max_steps=2, datasets=_synthetic())
    if not torch.cuda.is_available():
        assert summary["cuda_graphs"]["enabled"] is False and "CUDA device" in summary["cuda_graphs"]["reason"]
        with pytest.raises(ExperimentConfigError, match="train.cuda_graphs=true but CUDA graphs need a CUDA device"):
            run_experiment(_exp(), ["train.epochs=1", "train.cuda_graphs=true", "train.run_name=other"], out=tmp_path,
                           max_steps=2, datasets=_synthetic())
    with pytest.raises(ExperimentConfigError, match="train.cuda_graphs='sometimes' is not valid"):
        run_experiment(_exp(), ["train.cuda_graphs=sometimes"], out=tmp_path, datasets=_synthetic())


# ------------------------------------------------------------------ GPU: replayed = eager


def _model(layer: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=64, n_layers=2, dropout=0.0, pos_emb="learned")
    spec = {"name": layer, "n_heads": 4} if layer != "s4d" else {"name": layer}
    return build_model(cfg, spec, n_classes=5, max_len=300, vocab_size=12).cuda()


def _batches(n: int):
    """Batches of three shapes in a mixed order, right-padded, with filler rows of weight 0."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        L = (128, 256, 300)[[0, 1, 0, 2, 1, 0, 2, 2, 1, 0][i % 10]]
        lengths = torch.randint(L // 2, L + 1, (8,), generator=g)
        x = torch.randint(1, 12, (8, L), generator=g)
        x[torch.arange(L)[None] >= lengths[:, None]] = 0
        w = torch.ones(8)
        w[6:] = 0.0 if i % 3 == 0 else 1.0
        out.append(([x.cuda()], [(x == 0).cuda()], torch.randint(0, 5, (8,), generator=g).cuda(), w.cuda(),
                     1.0 / float(w.sum())))
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["vanilla", "las", "s4d"])
@pytest.mark.parametrize("max_graphs", [32, 1])
def test_replayed_steps_equal_eager_steps_gpu(layer, max_graphs):
    """The same model trained 12 steps on batches of three shapes (mixed order, a new learning rate every
    step) eagerly and from graphs: equal losses and gradient norms, and the same weights up to the
    run-to-run noise of the kernels (atomic accumulations in some backward kernels; Adam turns it into
    updates of up to ~lr where a gradient is near 0, e.g. the key bias, whose gradient is exactly 0 in
    exact arithmetic): the weights differ by under 1% of how far training moved them (global norms). The
    eager run uses the same kernels (graph_safe) and a capturable AdamW; with max_graphs=1 the other two
    shapes run eagerly through the same optimizer."""
    batches = _batches(12)
    runs = []
    for graphed in (False, True):
        model = _model(layer)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        params = [p for p in model.parameters() if p.requires_grad]
        autocast = lambda cache=True: torch.autocast("cuda", enabled=False)  # noqa: E731 - fp32 for a tight match
        steps = GraphedSteps(model, opt, grad_clip=1.0, autocast=autocast, device=torch.device("cuda"),
                             max_graphs=max_graphs)  # also makes the eager AdamW capturable, as compared
        outs = []
        for i, (x, m, y, w, scale) in enumerate(batches):
            for g in opt.param_groups:
                g["lr"] = 1e-3 * (1 + i) / 12
            if graphed:
                outs.append(steps(x, m, y, w, scale))
            else:
                model.train()
                with graph_safe():
                    outs.append(optimizer_step(model, params, opt, x, m, y, w, scale, 1.0, autocast))
        runs.append((torch.stack(outs).cpu(), [p.detach().clone() for p in params], steps))
    (eager, w_eager, _), (replayed, w_graph, steps) = runs
    first = batches[0][0][0].shape
    others = sum(x[0].shape != first for x, *_ in batches)  # batches of the shapes past max_graphs=1
    assert len(steps.graphs) == min(3, max_graphs) and steps.eager_steps == (0 if max_graphs > 1 else others)
    torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-6)  # loss, correct rows, grad norm per step
    init = [p.detach() for p in _model(layer).parameters() if p.requires_grad]
    moved = torch.cat([(b - i).flatten() for b, i in zip(w_eager, init)]).norm()
    differ = torch.cat([(a - b).flatten() for a, b in zip(w_graph, w_eager)]).norm()
    assert sum(not torch.equal(b, i) for b, i in zip(w_eager, init)) > len(init) // 2  # it did train
    assert differ <= 0.01 * moved, (differ, moved)


@pytest.mark.gpu
def test_trainer_captures_every_shape_and_never_recompiles_gpu(tmp_path):
    common = ["train.epochs=2", "train.device=cuda", "train.precision=bf16", "layer.n_heads=2"]  # head_dim 8
    summary = run_experiment(_exp(), common, out=tmp_path, datasets=_synthetic())
    graphs = summary["cuda_graphs"]
    assert graphs["enabled"] and graphs["reason"] is None and graphs["eager_steps"] == 0
    assert graphs["captured"] >= 1 and summary["compiles_after_warmup"] == 0
    assert summary["kernel"]["training"] == "flex"  # the captured step's padded attention
    assert summary["test_acc"] is not None and summary["status"] == "complete"
    eager = run_experiment(_exp(), [*common, "train.cuda_graphs=false", "train.run_name=eager"], out=tmp_path,
                           datasets=_synthetic())
    assert eager["cuda_graphs"]["enabled"] is False and eager["kernel"]["training"] == "xformers"
    assert abs(eager["best_val_acc"] - summary["best_val_acc"]) <= 0.25  # the same training, other kernels


def test_a_graph_runs_optimizer_state_resumes_off_cuda():
    """A checkpoint written by captured steps holds AdamW with capturable=True (accelerators only): resumed on
    the CPU it gets the ordinary update back and steps."""
    from zoo.train.checkpoint import load_optimizer

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    state = opt.state_dict()
    state["param_groups"][0]["capturable"] = True
    fresh = torch.optim.AdamW([p], lr=0.1)
    load_optimizer(fresh, state, torch.device("cpu"))
    assert fresh.param_groups[0]["capturable"] is False
    fresh.step()
    assert float(fresh.state[p]["step"]) == 2.0
