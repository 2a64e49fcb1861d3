"""Run folders: one process at a time.

A run folder (``OUT/<run name>``) is locked for as long as a trainer writes to it (an advisory
``fcntl`` lock on ``.lock``, released by the OS if the process dies), so two terminals, or two
``torchrun`` launches, can never interleave checkpoints silently: the second one is refused
with one line naming the holder.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["RunLock", "RunLockedError"]


class RunLockedError(RuntimeError):
    """Another process holds the run folder."""


class RunLock:
    """``with RunLock(run_dir): ...`` holds the folder's lock (non-blocking: raises if taken)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"run folder {self.path.parent} is in use by {holder}: wait for it to finish, or "
                                 "choose another --out / train.run_name") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_experiment(experiment, overrides=(), *, out: str | os.PathLike = "runs", data_root: str | None = None,
                   max_steps: int | None = None, progress: bool | None = None, datasets: dict | None = None,
                   resume: bool | None = None) -> dict:
    """Load, lock the run folder, build, resume (if it has a checkpoint), train and test; returns the summary.

    ``resume``: None = automatic (resume if a checkpoint exists), True = require one, False = refuse
    to reuse a folder that has one. A finished run is not retrained: its summary is returned.

    Raises:
        ExperimentConfigError, RegistryError, TaskNotFoundError, ...: bad input (one line each).
        RunLockedError: another process trains into the same folder.
        CheckpointError: the folder's checkpoints are all unreadable.
        TrainingDiverged: NaN/inf loss. Interrupted: Ctrl-C / SIGTERM (a checkpoint was saved).
    """
    import json
    import sys

    from zoo.train import checkpoint as ckpt
    from zoo.train.experiment import load_experiment
    from zoo.train.distributed import Dist
    from zoo.train.trainer import Trainer

    overrides = list(overrides)
    if data_root is not None:
        overrides.append(f"data.root={data_root}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    if progress is not None:
        overrides.append(f"train.progress={str(bool(progress)).lower()}")
    exp = load_experiment(experiment, overrides)
    run_dir = Path(out).expanduser() / exp.run_name()
    has_ck = any((run_dir / n).exists() for n in (ckpt.CHECKPOINT, ckpt.PREVIOUS))
    if resume is True and not has_ck:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    if resume is False and has_ck:
        raise FileExistsError(f"{run_dir} holds a checkpoint: resume it (the default), or choose another "
                              "train.run_name / --out")
    dist = Dist.from_env()
    lock = RunLock(run_dir).acquire() if dist.main else None
    try:
        trainer = Trainer(exp, run_dir, datasets=datasets)
        loaded = trainer.resume()
        if loaded is not None:
            stop = min(exp.cfg.train.max_steps or trainer.total_steps, trainer.total_steps)
            if dist.main:
                print(f"zoo train: resuming {run_dir} from {loaded.name} at step {trainer.step} (epoch "
                      f"{trainer.epoch}, batch {trainer.batch_in_epoch})", file=sys.stderr)
            summary = run_dir / "summary.json"
            if trainer.step >= stop and summary.exists():
                done = json.loads(summary.read_text())
                if done.get("test_acc") is not None:
                    if dist.main:
                        print("zoo train: nothing left to train (raise train.max_steps / --max-steps to continue)",
                              file=sys.stderr)
                    return done
        if dist.main:
            print(f"zoo train: {run_dir.name}: task {exp.task.name} ({trainer.data_source}), layer {exp.layer.name}, "
                  f"{trainer.n_params:,} parameters, {trainer.steps_per_epoch} steps/epoch, {trainer.total_steps} "
                  f"steps, {trainer.device} {trainer.precision}"
                  f"{f' x {dist.world} processes' if dist.world > 1 else ''} -> {run_dir}", file=sys.stderr)
        return trainer.fit()
    finally:
        if lock is not None:
            lock.release()
