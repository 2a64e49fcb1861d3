"""The training core's parts: the layer resolved once, task kinds and their one loss, the loop's
position and cadence, the run folder, safe checkpoints, data-aware resume, a full disk, wrong
types, threads and the summary's times."""

from __future__ import annotations

import errno
import inspect
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from test_runs import run_cli, tiny_experiment
from test_train import _exp, _synthetic, synthetic

from zoo.config import resolve_layer
from zoo.models import KINDS, ModelConfig, TaskKind, build_model, get_kind, register_kind
from zoo.models.encoder import Encoder
from zoo.models.heads import ClassificationHead, RetrievalHead
from zoo.train import RunFolder, load_experiment, run_experiment
from zoo.train.loop import Cadence, LoopState
from zoo.train.trainer import Trainer

# ------------------------------------------------------------------ 1. one resolution, one length


def test_the_encoder_takes_a_resolved_layer_only():
    cfg = ModelConfig(d_model=16, n_layers=1)
    with pytest.raises(TypeError, match="resolve_layer"):
        Encoder(cfg, {"name": "vanilla"}, vocab_size=5, max_len=8)
    with pytest.raises(ValueError, match="d_model=32"):
        Encoder(cfg, resolve_layer("vanilla", d_model=32), vocab_size=5, max_len=8)
    layer = resolve_layer("vanilla", d_model=16)
    assert Encoder(cfg, layer, vocab_size=5, max_len=8).layer is layer  # used as given, not resolved again


def test_the_experiment_sizes_the_model_and_the_saved_config_agrees(tmp_path):
    exp = load_experiment(_exp("long_conv"))  # a layer that declares needs_max_len
    assert exp.max_len == 16 == exp.layer.config.max_len
    tr = Trainer(exp, tmp_path / "r", datasets={s: synthetic(16, i, max_len=12) for i, s in
                                                enumerate(("train", "val", "test"))})
    assert tr.model.encoder.max_len == 16  # the experiment's length, not the data's 12
    assert tr.model.encoder.layer is exp.layer  # the experiment's resolution, not a second one
    assert tr.model.encoder.blocks[0].mixer.config.max_len == exp.cfg.layer.max_len == 16


def test_data_longer_than_the_experiment_is_one_line(tmp_path):
    exp = load_experiment(_exp())
    with pytest.raises(ValueError, match="training data is 32 long .* sizes the model for 16"):
        Trainer(exp, tmp_path / "r", datasets={s: synthetic(16, 0, max_len=32) for s in ("train", "val", "test")})


# ------------------------------------------------------------------ 2. kinds, loss, position, cadence


def test_kinds_pick_the_head_and_share_one_loss():
    cfg = ModelConfig(d_model=8, n_layers=1)
    assert isinstance(build_model(cfg, "vanilla", n_classes=3, max_len=8, vocab_size=5).head, ClassificationHead)
    assert isinstance(build_model(cfg, "vanilla", n_classes=3, max_len=8, vocab_size=5, kind="pair").head,
                      RetrievalHead)
    with pytest.raises(ValueError, match="unknown task kind 'pairs'. Did you mean 'pair'"):
        get_kind("pairs")
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])  # a filler row counts for nothing
    loss, correct, n = get_kind("classify").loss_terms(logits, labels, weights).tolist()
    ce = torch.nn.functional.cross_entropy(logits[:3], labels[:3], reduction="sum")
    assert loss == pytest.approx(ce.item(), rel=1e-6) and n == 3
    assert correct == (logits[:3].argmax(-1) == labels[:3]).sum().item()


def test_a_new_kind_is_one_class_and_one_line_and_both_paths_use_its_loss(tmp_path, monkeypatch):
    calls = []

    class Counting(TaskKind):
        name, n_inputs = "counting", 1

        def head(self, config, n_classes):
            return ClassificationHead(config.d_model, n_classes)

        def loss_terms(self, logits, labels, weights):
            calls.append(logits.shape[0])
            return super().loss_terms(logits, labels, weights)

    monkeypatch.setitem(KINDS, "counting", Counting())
    register_kind(KINDS["counting"])  # the one line a new kind adds
    exp = load_experiment(_exp(), ["train.epochs=1"])
    class Task:  # the task spec, declaring the new kind
        kind = "counting"

        def __getattr__(self, name):
            return getattr(spec, name)

    spec = exp.task
    monkeypatch.setattr(exp, "task", Task())
    tr = Trainer(exp, tmp_path / "r", datasets=_synthetic())
    assert tr.kind.name == "counting"
    tr.fit()
    train_calls = len(calls)
    assert train_calls >= 8  # the 8 training steps (64 rows / 8) went through it
    tr.evaluate("val")
    assert len(calls) > train_calls  # and evaluation too


def test_loop_state_round_trips_and_counts_epochs():
    pos = LoopState()
    assert [pos.advance(3) for _ in range(4)] == [False, False, True, False]
    assert (pos.step, pos.epoch, pos.batch_in_epoch) == (4, 1, 1)
    assert pos.improved(0.5) and not pos.improved(0.4) and pos.best_step == 4
    again = LoopState()
    again.load_state_dict({**pos.state_dict(), "model": "ignored"})
    assert again == pos


def test_cadence_decides_when_to_sync_log_evaluate_and_save():
    c = Cadence(log_every=4, eval_every=0, checkpoint_every=6, stop=10)
    assert not c.due(3, False, 3, False).flush
    assert c.due(4, False, 4, False).flush and not c.due(4, False, 4, False).evaluate
    assert c.due(3, False, 3, True).flush  # a signal ends the window early when alone
    assert c.due(6, False, 2, False).checkpoint and c.due(10, False, 4, False).checkpoint
    due = c.due(5, True, 1, False)
    assert due.evaluate and due.checkpoint and due.flush
    assert c.log_due(4, False) and c.log_due(1, True) and not c.log_due(3, False)


def test_fit_reads_like_the_loop():
    src = textwrap.dedent(inspect.getsource(Trainer.fit))
    body = [ln for ln in src.splitlines() if ln.strip()]
    assert len(body) <= 40
    depth = max((len(ln) - len(ln.lstrip())) // 4 for ln in body if not ln.strip().startswith(('"', "#", ")")))
    assert depth <= 4  # def + 3 levels of blocks (with / for / if)


def test_one_sync_per_window_not_per_step(tmp_path, monkeypatch):
    """The loss check and the (DDP) stop agreement share one all-reduce per logging window."""
    tr = Trainer(load_experiment(_exp(), ["train.log_every=4", "train.checkpoint_every=0", "train.epochs=1"]),
                 tmp_path / "r", datasets=_synthetic())
    calls = []
    real = tr.dist.all_sum
    monkeypatch.setattr(tr.dist, "all_sum", lambda t: calls.append(tuple(t.shape)) or real(t))
    tr.fit()
    windows = [s for s in calls if len(s) == 2]
    assert len(windows) == 2 and all(s == (4 + 1, 3) for s in windows)  # 8 steps: 2 windows (+1 row: the signal)


# ------------------------------------------------------------------ 3. the run folder


def test_run_folder_knows_whether_a_run_is_finished(tmp_path):
    f = RunFolder(tmp_path / "r")
    assert not f.finished() and f.summary() is None and not f.has_checkpoint()
    f.path.mkdir()
    f.summary_path.write_text("{broken")
    assert f.summary() is None and not f.finished()
    f.summary_path.write_text(json.dumps({"status": "stopped at step 3 of 8", "test_acc": 0.5}))
    assert not f.finished()
    f.summary_path.write_text(json.dumps({"status": "complete", "test_acc": 0.5}))
    assert f.finished() and f.summary()["test_acc"] == 0.5
    assert f.checkpoint.name == "checkpoint.pt" and f.lock.path == f.path / ".lock"


# ------------------------------------------------------------------ 4. nothing runs from a loaded file


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_code_is_refused_in_one_line(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 2]) == 0
    run = tmp_path / "runs" / "tiny-s4d"
    ck = torch.load(run / "checkpoint.pt", weights_only=True)  # a real one loads safely (RNG states included)
    marker = tmp_path / "executed"
    torch.save({**ck, "model": _Payload(marker)}, run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 4]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused to load it" in err[0] and "system" in err[0], err
    assert not marker.exists()  # nothing executed
    assert (run / "checkpoint.pt").read_bytes() == before  # left where it is, unchanged


# ------------------------------------------------------------------ 6. data-aware resume


def test_resume_on_other_data_is_refused_and_nothing_changes(tmp_path, capsys):
    from zoo.data.generators.listops import ListOpsGenConfig, generate_listops

    for seed in (0, 1):
        generate_listops(tmp_path / f"d{seed}" / "lra_release" / "lra_release",
                         ListOpsGenConfig(n_train=32, n_val=8, n_test=8, max_depth=3, min_length=4, max_length=64,
                                          seed=seed), progress=False, overwrite=True)
    exp = tiny_experiment(tmp_path)
    common = ["--out", tmp_path / "runs", "data.generate_if_missing=false", f"data.cache_dir={tmp_path / 'cache'}",
              "train.run_name=r"]
    assert run_cli(["train", exp, *common, "--data-root", tmp_path / "d0", "--max-steps", 2]) == 0
    run = tmp_path / "runs" / "r"
    saved = {n: (run / n).read_bytes() for n in ("checkpoint.pt", "config.yaml")}
    capsys.readouterr()
    assert run_cli(["train", exp, *common, "--data-root", tmp_path / "d1", "--max-steps", 4]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on listops" in err[0] and "this run has listops" in err[0], err
    assert {n: (run / n).read_bytes() for n in saved} == saved
    assert run_cli(["train", exp, *common, "--data-root", tmp_path / "d0", "--max-steps", 3]) == 0  # same data: on


# ------------------------------------------------------------------ 7. a full disk


class _FullFile:
    """A file on a disk with 1,000 bytes left."""

    def __init__(self, f) -> None:
        self.f, self.n = f, 0

    def write(self, data) -> int:
        self.n += len(data)
        if self.n > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays(tmp_path, capsys, monkeypatch, wrapped):
    from zoo.train import checkpoint as ckpt

    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 2]) == 0
    run = tmp_path / "runs" / "tiny-s4d"
    real = ckpt.save

    def full(state, run_dir):
        if state["step"] < 4:
            return real(state, run_dir)
        if not wrapped:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with monkeypatch.context() as m:  # the disk fills inside torch.save, which hides the ENOSPC
            m.setattr(os, "fdopen", lambda fd, mode: _FullFile(open(fd, mode)))
            return real(state, run_dir)

    monkeypatch.setattr(ckpt, "save", full)
    capsys.readouterr()
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 6]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("zoo train: ") or
           "error" in ln]  # (the resume and start lines come first)
    assert len(err) == 1 and "the disk is full (ENOSPC)" in err[0] and "checkpoint.pt" in err[0], err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3  # the last good one, usable
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["step"] == 2
    assert json.loads((run / "summary.json").read_text())["status"].startswith("failed: cannot write")
    monkeypatch.setattr(ckpt, "save", real)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 5]) == 0  # and it resumes


# ------------------------------------------------------------------ 8. wrong types name the key


@pytest.mark.parametrize("override,line", [
    ("model.n_layers=two", "model.n_layers: 'two' is not an int (e.g. model.n_layers=6)"),
    ("optim.lr=fast", "optim.lr: 'fast' is not a float"),
])
def test_a_wrong_type_names_the_key(override, line, capsys):
    assert run_cli(["train", "listops_small", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err


# ------------------------------------------------------------------ 9. threads, wall time, chance


def test_summary_records_threads_wall_time_and_chance(tmp_path):
    data = _synthetic()
    summary = run_experiment(_exp(), ["train.threads=1", "train.epochs=1"], out=tmp_path, datasets=data)
    assert summary["threads"] == 1 and torch.get_num_threads() == 1
    assert summary["wall_seconds"] >= summary["train_seconds"] + summary["eval_seconds"] > 0
    labels = data["test"].labels
    majority = max((labels == c).mean() for c in set(labels.tolist()))
    assert summary["chance_acc"] == pytest.approx(majority)
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["threads"] == 1 and saved["chance_acc"] == pytest.approx(majority)


def test_default_threads_follow_omp_num_threads_else_half_the_cores(monkeypatch):
    from zoo.train.build import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_threads() == 4


def test_the_compile_warm_up_module_is_called_precompile():
    import importlib

    assert importlib.import_module("zoo.train.precompile").compile_count() >= 0
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("zoo.train.warmup")


@pytest.mark.parametrize("code,words", [(errno.EACCES, "not writable"), (errno.EROFS, "read-only")])
def test_an_unwritable_folder_is_named_in_one_line(tmp_path, code, words):
    from zoo.train import RunWriteError

    f = RunFolder(tmp_path / "r")

    def refuse(path):
        raise PermissionError(code, os.strerror(code), str(path))

    with pytest.raises(RunWriteError, match=f"cannot write .*summary.json: .*{words}") as info:
        f.write(f.summary_path, refuse)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):  # anything else passes through untouched
        f.write(f.summary_path, lambda p: int("x"))


def test_a_full_disk_under_the_metrics_log_is_one_line_too(tmp_path, capsys, monkeypatch):
    from zoo.train.metrics import MetricsLog

    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny-s4d"

    def full(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(MetricsLog, "log", full)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 2]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert len(err) == 1 and f"cannot write {run / 'metrics.jsonl'}: the disk is full" in err[0], err
