"""The LRA trainer and the models: every registered layer in the encoder, training, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import registry
from zoo.data import ArrayDataset
from zoo.models import ModelConfig, build_model
from zoo.train import (
    ExperimentConfigError,
    TrainingDiverged,
    build_optimizer,
    load_experiment,
    param_groups,
    run_experiment,
)

TINY_MODEL = {"d_model": 16, "n_layers": 2, "mlp_ratio": 2.0, "dropout": 0.1, "drop_path": 0.1}


def _mask(B: int, L: int) -> torch.Tensor:
    m = torch.zeros(B, L, dtype=torch.bool)
    m[1, L // 2:] = True  # the second sequence is half padding
    return m


# ------------------------------------------------------------------ every layer in the model


@pytest.mark.parametrize("name", registry.list())
@pytest.mark.parametrize("inputs", ["tokens", "floats", "pair"])
def test_every_layer_forward_backward(name, inputs):
    cfg = ModelConfig(**TINY_MODEL, pos_emb="learned")
    vocab = None if inputs == "floats" else 11
    model = build_model(cfg, {"name": name}, n_classes=3, max_len=16, vocab_size=vocab,
                        kind="pair" if inputs == "pair" else "classify")
    B, L = 2, 12
    x = torch.randn(B, L) if inputs == "floats" else torch.randint(1, 11, (B, L))
    mask = _mask(B, L)
    xs, masks = ([x, x.flip(1)], [mask, mask.flip(1)]) if inputs == "pair" else ([x], [mask])
    logits = model(xs, masks)
    assert logits.shape == (B, 3) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # padded positions do not influence the prediction (eval mode: no dropout)
    model.eval()
    x2 = x.clone()
    if inputs == "floats":
        x2[1, L // 2:] = 123.0
    else:
        x2[1, L // 2:] = 7
    xs2 = [x2, x.flip(1)] if inputs == "pair" else [x2]
    torch.testing.assert_close(model(xs, masks), model(xs2, masks), rtol=1e-5, atol=1e-5)


def test_layer_config_gets_d_model_and_max_len():
    for name in registry.list():
        model = build_model(ModelConfig(d_model=24, n_layers=1), {"name": name, "d_model": 999}, n_classes=2,
                            max_len=40, vocab_size=5)
        block = model.encoder.blocks[0]
        assert block.mixer.config.d_model == 24
        if type(block.mixer).needs_max_len:
            assert block.mixer.config.max_len == 40


# ------------------------------------------------------------------ synthetic data with the ArrayDataset interface


def synthetic(n: int, seed: int, n_classes: int = 4, max_len: int = 16) -> ArrayDataset:
    """Label = the token that fills the (variable-length, padded) sequence: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    lengths = torch.randint(3, max_len + 1, (n,), generator=g)
    x = torch.zeros(n, max_len, dtype=torch.uint8)
    for i in range(n):
        x[i, : lengths[i]] = labels[i] + 1
    return ArrayDataset([x.numpy()], labels.numpy(), lengths.numpy(), n_classes=n_classes, vocab_size=n_classes + 1)


def _synthetic():
    return {"train": synthetic(64, 0), "val": synthetic(32, 1), "test": synthetic(32, 2)}


def _exp(layer="vanilla", **over):
    cfg = {
        "task": {"name": "listops", "options": {"max_len": 16}},
        "layer": {"name": layer},
        "model": {"d_model": 16, "n_layers": 1, "pos_emb": "none", "dropout": 0.1},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "sched": "cosine"},
        "train": {"epochs": 3, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, "progress": False,
                  "tensorboard": "false", "run_name": "run"},
    }
    return cfg


def test_loss_decreases_on_easy_task(tmp_path):
    summary = run_experiment(_exp(), ["optim.lr=1e-2", "train.epochs=4", "train.run_name=null"], out=tmp_path,
                             datasets=_synthetic())
    run = Path(summary["run_dir"])
    assert run.parent == tmp_path and run.name.startswith("run-vanilla-")  # named after the layer and the overrides
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(train) == summary["steps"] == 32
    first, last = sum(train[:4]) / 4, sum(train[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    assert summary["best_val_acc"] >= 0.9 and summary["test_acc"] >= 0.9
    for f in ("config.yaml", "checkpoint.pt", "checkpoint.prev.pt", "best.pt", "metrics.jsonl", "curve.png",
              "summary.json"):
        assert (run / f).is_file(), f
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "complete" and saved["tokens_per_s"] > 0 and 0 <= saved["pad_fraction"] < 1
    # the first able backend for plain attention (head_dim 2 here: too small for xformers); on CUDA the
    # captured training step runs FlexAttention (its padding needs no host sync)
    on_gpu = torch.cuda.is_available()
    expected = {"training": "flex", "inference": "sdpa"} if on_gpu else {"training": "sdpa", "inference": "sdpa"}
    assert saved["kernel"] == expected


# ------------------------------------------------------------------ resume


def test_resume_is_exact(tmp_path):
    exp = _exp(layer="s4d")
    a = run_experiment(exp, ["train.epochs=1"], out=tmp_path / "a", max_steps=2, datasets=_synthetic())
    assert a["steps"] == 2 and a["status"].startswith("stopped")
    b = run_experiment(exp, ["train.epochs=1"], out=tmp_path / "a", max_steps=5, datasets=_synthetic())
    c = run_experiment(exp, ["train.epochs=1"], out=tmp_path / "c", max_steps=5, datasets=_synthetic())
    assert b["steps"] == c["steps"] == 5
    sa = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=True)
    sc = torch.load(tmp_path / "c" / "run" / "checkpoint.pt", weights_only=True)
    for k in sc["model"]:
        assert torch.equal(sa["model"][k], sc["model"][k]), k
    assert sa["optimizer"]["param_groups"][0]["lr"] == sc["optimizer"]["param_groups"][0]["lr"]
    ma = [json.loads(r) for r in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    mc = [json.loads(r) for r in (tmp_path / "c" / "run" / "metrics.jsonl").read_text().splitlines()]
    la = [(r["step"], r["loss"]) for r in ma if r["kind"] == "train"]
    lc = [(r["step"], r["loss"]) for r in mc if r["kind"] == "train"]
    assert la == lc  # no duplicated or lost records, same losses


def test_resume_across_epoch_boundary_and_config_mismatch(tmp_path):
    exp = _exp()
    run_experiment(exp, [], out=tmp_path / "a", max_steps=7, datasets=_synthetic())  # 8 steps / epoch
    full_a = run_experiment(exp, [], out=tmp_path / "a", max_steps=10, datasets=_synthetic())
    full_c = run_experiment(exp, [], out=tmp_path / "c", max_steps=10, datasets=_synthetic())
    assert full_a["best_val_acc"] == full_c["best_val_acc"] and full_a["test_acc"] == full_c["test_acc"]
    # a different config gets its own run folder (named after what differs) ...
    other = run_experiment(exp, ["optim.lr=0.5", "train.epochs=1", "train.run_name=null"], out=tmp_path / "a",
                           datasets=_synthetic())
    assert other["run_dir"].startswith(str(tmp_path / "a" / "run-vanilla-"))
    # ... and an explicit run name with a different config is refused, the layer listed first
    with pytest.raises(ExperimentConfigError, match=r"different config \(layer.name: 'vanilla' -> 's4d', .*optim.lr"):
        run_experiment(exp, ["optim.lr=0.5", "layer=s4d"], out=tmp_path / "a", datasets=_synthetic())


# ------------------------------------------------------------------ failures


def test_nan_loss_stops_with_clear_error(tmp_path):
    ds = _synthetic()
    with pytest.raises(TrainingDiverged, match=r"non-finite .* at step \d+ .*last good checkpoint") as info:
        run_experiment(_exp(), ["optim.lr=1e30", "optim.grad_clip=0", "optim.warmup_steps=0", "optim.sched=none",
                                "train.epochs=3"], out=tmp_path, datasets=ds)
    step = int(str(info.value).split(" at step ")[1].split()[0])
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == step - 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_unknown_keys_raise_with_valid_keys():
    base = _exp()
    with pytest.raises(ExperimentConfigError, match=r"model\.n_layer'.*Did you mean 'model\.n_layers'"):
        load_experiment(base, ["model.n_layer=3"])
    with pytest.raises(ExperimentConfigError, match=r"Valid keys of optim: .*optim\.lr"):
        load_experiment(base, ["optim.learning_rate=3"])
    with pytest.raises(ExperimentConfigError, match="unknown config key 'trian'"):
        load_experiment(base, ["trian.epochs=3"])
    with pytest.raises(ExperimentConfigError, match="n_head.*Did you mean 'n_heads'"):
        load_experiment(base, ["layer.n_head=3"])
    with pytest.raises(ExperimentConfigError, match="task.options.*Valid keys: max_len"):
        load_experiment(base, ["task.options.maxlen=3"])
    with pytest.raises(ExperimentConfigError, match="model.pos_emb"):
        load_experiment(base, ["model.pos_emb=rope"])
    with pytest.raises(ExperimentConfigError, match=r"unknown config key 'n_layers'. Did you mean 'model.n_layers'"):
        load_experiment(base, ["n_layers=6"])
    with pytest.raises(ExperimentConfigError, match=r"train.max_steps=-5 is not valid"):
        load_experiment(base, ["train.max_steps=-5"])
    # swapping the layer replaces the section (vanilla's fields do not leak into s4d)
    exp = load_experiment({**base, "layer": {"name": "vanilla", "n_heads": 2}}, ["layer=s4d", "layer.d_state=8"])
    assert exp.cfg.layer.name == "s4d" and exp.cfg.layer.d_state == 8 and "n_heads" not in exp.cfg.layer
    assert exp.layer.config.d_model == exp.cfg.model.d_model == 16  # injected, once


def test_shipped_experiments_and_tasks_load():
    from zoo.config import available
    from zoo.data import task_names

    names = available("experiments")
    assert "listops_small" in names
    for name in names:
        load_experiment(name)
    from zoo.data.tasks import get_task

    for task in task_names():
        if getattr(get_task(task).config_class, "needs_model", None):  # MAD compression: refused in one line
            with pytest.raises(ExperimentConfigError, match="needs"):
                load_experiment(_exp(), [f"task={task}"])
            continue
        assert load_experiment(_exp(), [f"task={task}"]).cfg.task.name == task


# ------------------------------------------------------------------ param groups


def test_param_groups_are_honoured():
    exp = load_experiment(_exp(layer="s4d"), ["layer.lr=0.0007", "optim.lr=0.01", "optim.weight_decay=0.05"])
    cfg = exp.cfg
    model = build_model(ModelConfig(**OmegaConf.to_container(cfg.model)), exp.layer, n_classes=4, max_len=16,
                        vocab_size=5)
    opt = build_optimizer(model, cfg.optim)
    ssm = [g for g in opt.param_groups if g["lr"] == pytest.approx(0.0007)]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    ssm_ids = {id(p) for p in ssm[0]["params"]}
    for mixer in model.mixers():
        assert {id(mixer.log_dt), id(mixer.log_A_real), id(mixer.A_imag)} <= ssm_ids
    decay = [g for g in opt.param_groups if g.get("name") == "decay"][0]
    assert decay["lr"] == 0.01 and decay["weight_decay"] == 0.05
    # every parameter is in exactly one group
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    # a mixer without the hook: only the default groups
    plain = build_model(ModelConfig(d_model=16, n_layers=1), {"name": "vanilla"}, n_classes=2, max_len=8, vocab_size=5)
    assert {g["name"] for g in param_groups(plain, 0.1)} == {"decay", "no_decay"}


# ------------------------------------------------------------------ real loaders (tiny official-format data)


@pytest.mark.parametrize("task,over", [("listops", []), ("retrieval", []), ("image", ["task.options.pixels=signed"])])
def test_tiny_lra_tasks_train(tmp_path_factory, task, over):
    from zoo.data.testing import tiny_lra

    root = tmp_path_factory.getbasetemp() / "tiny_lra"
    if not root.exists():
        tiny_lra(root)
    out = tmp_path_factory.mktemp(f"runs_{task}")
    cache = tmp_path_factory.getbasetemp() / "cache"
    exp = {"task": task, "layer": {"name": "s4d", "d_state": 4}, "model": {"d_model": 16, "n_layers": 1},
           "train": {"epochs": 1, "batch_size": 16, "progress": False, "tensorboard": "false"}}
    options = {"retrieval": ["task.options.max_len=300"], "image": ["task.options.val_size=40"]}.get(task, [])
    s = run_experiment(exp, [*over, *options, f"data.cache_dir={cache}"], out=out, data_root=str(root))
    assert s["steps"] == s["total_steps"] >= 1
    assert s["sizes"]["test"] * s["test_acc"] == pytest.approx(round(s["sizes"]["test"] * s["test_acc"]))  # a count
    assert s["data_source"].startswith("files under")


def test_listops_generated_when_missing_and_hint_otherwise(tmp_path):
    from zoo.data.errors import TaskNotFoundError

    exp = {"task": "listops", "layer": "vanilla", "model": {"d_model": 16, "n_layers": 1},
           "train": {"epochs": 1, "batch_size": 32, "progress": False, "tensorboard": "false"}}
    over = [f"data.root={tmp_path / 'empty'}", f"data.cache_dir={tmp_path / 'cache'}", "task.options.max_len=64"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskNotFoundError, match="zoo data generate listops"):
        run_experiment(exp, over, out=tmp_path / "runs")
    gen = ["data.generate_if_missing=true", "data.generate.n_train=64", "data.generate.n_val=16",
           "data.generate.n_test=16", "data.generate.max_depth=3", "data.generate.min_length=4",
           "data.generate.max_length=64"]
    s = run_experiment(exp, over + gen, out=tmp_path / "runs")
    assert s["data_source"].startswith("GENERATED") and s["sizes"] == {"train": 64, "val": 16, "test": 16}


def test_cli_train_errors_are_one_line(tmp_path, capsys):
    from zoo.cli import main

    assert main(["train", "no_such_experiment", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'no_such_experiment'" in err and err.count("\n") == 1
    assert main(["train", "listops_small", "--out", str(tmp_path), "model.n_layer=2"]) == 2  # override after an option
    err = capsys.readouterr().err
    assert "Did you mean 'model.n_layers'" in err and err.count("\n") == 1
