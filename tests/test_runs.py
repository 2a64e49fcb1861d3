"""Runs that lose nothing: corrupt checkpoints, Ctrl-C / SIGTERM, two processes on one folder, run
folder names, bad input in one line, the memory estimate, and the command line's promises."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from zoo.cli import _parse, build_parser, main

TINY = """\
task: {{name: listops, options: {{max_len: 64}}}}
layer: {{name: s4d, d_state: 4}}
model: {{d_model: 16, n_layers: 1, pos_emb: none}}
optim: {{lr: 3.0e-3, warmup_steps: 2}}
data:
  root: {root}
  cache_dir: {cache}
  generate_if_missing: true
  generate: {{n_train: {n_train}, n_val: 16, n_test: 16, max_depth: 3, min_length: 4, max_length: 64, seed: 0}}
train: {{epochs: {epochs}, batch_size: 8, checkpoint_every: 1, log_every: 1, progress: false, tensorboard: "false"}}
"""


CACHE: list[Path] = []  # one data cache for the test session: each tiny set is generated once


def tiny_experiment(tmp_path: Path, n_train: int = 64, epochs: int = 1) -> Path:
    """A YAML experiment of a tiny generated ListOps (generated on first use into the module's cache)."""
    if not CACHE:
        CACHE.append(Path(tempfile.mkdtemp(prefix="zoo-test-cache-")))
    (tmp_path / "empty").mkdir(exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(root=tmp_path / "empty", cache=CACHE[0], n_train=n_train, epochs=epochs))
    return path


def prepare_data(exp: Path) -> None:
    """Generate and cache the experiment's data in this process (a child then starts training at once)."""
    from zoo.train import load_experiment
    from zoo.train.trainer import Trainer

    Trainer(load_experiment(str(exp)), exp.parent / "scratch")


def run_cli(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def zoo_process(*argv, env=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def train_records(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def wait_for_steps(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while sum(r["kind"] == "train" for r in train_records(run)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "the run did not start"
        time.sleep(0.1)


# ------------------------------------------------------------------ corrupt checkpoints


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 3]) == 0
    run = tmp_path / "runs" / "tiny-s4d"
    ck = run / "checkpoint.pt"
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["step"] == 2
    data = ck.read_bytes()
    ck.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(4096)}[damage])
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match=r"checkpoint.pt is unreadable .*moved it to checkpoint.pt.corrupt"):
        code = run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 5])
    assert code == 0 and "from checkpoint.prev.pt at step 2" in capsys.readouterr().err
    assert (run / "checkpoint.pt.corrupt").exists()  # set aside, never deleted
    assert torch.load(ck, weights_only=True)["step"] == 5
    steps = [r["step"] for r in train_records(run) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5]  # the records of the lost step 3 were cut, then redone once


def test_no_readable_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 2]) == 0
    run = tmp_path / "runs" / "tiny-s4d"
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes(b"not a checkpoint")
    capsys.readouterr()
    with pytest.warns(RuntimeWarning):
        code = run_cli(["train", exp, "--out", tmp_path / "runs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no usable checkpoint" in err[0] and "checkpoint.pt" in err[0] and "checkpoint.prev.pt" in err[0]


# ------------------------------------------------------------------ Ctrl-C and SIGTERM


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143),
                                      pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])  # one handler for both
def test_a_signal_saves_a_checkpoint_and_the_summary(tmp_path, sig, code):
    exp = tiny_experiment(tmp_path, n_train=2000, epochs=20)
    run = tmp_path / "runs" / "sig"
    over = ["train.checkpoint_every=1000", "train.run_name=sig"]
    prepare_data(exp)
    proc = zoo_process("train", exp, "--out", tmp_path / "runs", *over)
    wait_for_steps(run, 5, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [line for line in err.strip().splitlines() if line.startswith("zoo train:")]
    assert "Traceback" not in err and "run the same command again to resume" in lines[-1]
    done = [r["step"] for r in train_records(run) if r["kind"] == "train"]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == done[-1] >= 5  # every completed step is in the checkpoint
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith(f"interrupted by {signal.Signals(sig).name}") and summary["steps"] == ck["step"]
    # and it resumes from there
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", ck["step"] + 2, *over]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == ck["step"] + 2


def test_two_processes_cannot_share_a_run_folder(tmp_path, capsys):
    """A second trainer on a folder another process holds (a trainer's lock, taken by a tiny process) is refused."""
    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny-s4d"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from zoo.train.runs import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        code = run_cli(["train", exp, "--out", tmp_path / "runs"])
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"zoo train: error: run folder {run} is in use by pid {holder.pid}")
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 1]) == 0  # free again: it trains


# ------------------------------------------------------------------ run folders and the command line


def test_run_folders_are_named_after_what_differs(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    out = tmp_path / "runs"
    assert run_cli(["train", exp, "--out", out, "--max-steps", 1]) == 0
    assert run_cli(["train", exp, "layer=vanilla", "--out", out, "--max-steps", 1]) == 0  # the README's second run
    assert run_cli(["train", exp, "layer=vanilla", "optim.lr=1e-2", "--out", out, "--max-steps", 1]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names[:2] == ["tiny-s4d", "tiny-vanilla"] and names[2].startswith("tiny-vanilla-") and len(names) == 3
    # runtime-only keys do not make a new folder
    assert run_cli(["train", exp, "--out", out, "--max-steps", 2, "train.progress=false"]) == 0
    assert len(list(out.iterdir())) == 3


def test_max_steps_stops_without_shortening_the_schedule(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 3]) == 0
    out = capsys.readouterr().out.splitlines()  # a few lines, not the whole summary
    run = tmp_path / "runs" / "tiny-s4d"
    assert len(out) <= 8 and out[-1].strip() == f"summary   {run / 'summary.json'}"
    assert any(line.strip().startswith("test acc") for line in out) and "params" in "".join(out)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["total_steps"] == 8 and summary["status"] == "stopped at step 3 of 8 " \
        "(resume to continue)"


@pytest.mark.parametrize("argv,why", [
    (["train", "listops_small", "train.device=cuda"], "no CUDA GPU is available here"),
    (["train", "listops_small", "--max-steps", "-5"], "must be a positive integer, got -5"),
    (["train", "listops_small", "train.max_steps=-5"], "train.max_steps=-5 is not valid"),
    (["train", "listops_small", "n_layers=6"], "Did you mean 'model.n_layers'"),
    (["bench", "--device", "tpu"], "'tpu' is not a device"),
    (["bench", "--lengths", "0"], "must be a positive integer, got 0"),
    (["compare", "no_such_grid"], "no comparison 'no_such_grid'"),
    (["data", "prepare", "listops", "--root", "/nonexistent"], "data root /nonexistent is not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(argv, why, capsys):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # (CI and the CPU machines have none: the case runs there)
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and why in err, err


def test_bad_tensors_are_clear_errors():
    import registry

    layer = registry.build("las", d_model=16, n_heads=2)
    with pytest.raises(ValueError, match="length L=0"):
        layer(torch.zeros(1, 0, 16))
    with pytest.raises(TypeError,
                       match=r"input dtype torch.float64 differs from the layer's parameters \(torch.float32\)"):
        layer(torch.zeros(1, 4, 16, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the dtypes may differ
        layer(torch.zeros(1, 4, 16))


def test_the_paper_run_on_this_cpu_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch):
    """Seen: the paper-settings ListOps on a 24 GB CPU machine was killed by the kernel with no word."""
    from zoo.data import ListOpsGenConfig, generate_listops
    from zoo.train import memory

    generate_listops(tmp_path / "lra", ListOpsGenConfig(n_train=32, n_val=8, n_test=8, min_length=1800), progress=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: 24 * 2**30)  # this machine's size, whatever runs the test
    code = run_cli(["train", "listops", "--data-root", tmp_path / "lra", "--out", tmp_path / "runs",
                    f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "needs about" in err[-1] and "24.0 GiB is available" in err[-1]
    assert "lower train.batch_size" in err[-1] and not (tmp_path / "runs" / "listops-las" / "checkpoint.pt").exists()


def test_every_option_has_help_and_every_example_parses():
    import argparse

    parser = build_parser()

    def walk(p, path):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction):
                yield path, action, p

    for path, action, p in walk(parser, ["zoo"]):
        assert action.help, f"{' '.join(path)} {action.dest} has no help text"
        for line in (p.epilog or "").splitlines():
            line = line.strip()
            if line.startswith("zoo "):
                argv = shlex.split(line.split("   ")[0].replace("\\", ""))[1:]
                _parse(build_parser(), argv)  # exits (SystemExit) if an example does not parse


def test_progress_bars_stay_out_of_logs(tmp_path, capsys):
    """Asked for, but stderr is not a terminal (a log file, CI): no bars, only the one-line reports."""
    exp = tiny_experiment(tmp_path)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 3, "train.progress=true"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and len(err.splitlines()) <= 3, err


def test_every_run_also_logs_to_tensorboard(tmp_path):
    exp = tiny_experiment(tmp_path)  # (tensorboard is a dependency of the package: `auto` turns it on)
    assert run_cli(["train", exp, "--out", tmp_path / "runs", "--max-steps", 2, "train.tensorboard=auto"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "runs" / "tiny-s4d" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
