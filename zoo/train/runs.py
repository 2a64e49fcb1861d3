"""``run_experiment``: load, lock the run folder, build, resume, train, test (what ``zoo train`` runs).

The run folder is a :class:`zoo.train.folder.RunFolder` (its paths, its lock, "is it finished?");
``RunLock`` / ``RunLockedError`` are re-exported from there.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

from zoo.train.folder import RunFolder, RunLock, RunLockedError, RunWriteError, disk_error

__all__ = ["RunFolder", "RunLock", "RunLockedError", "RunWriteError", "run_experiment"]


def _overrides(overrides, data_root, max_steps, progress) -> list[str]:
    out = list(overrides)
    if data_root is not None:
        out.append(f"data.root={data_root}")
    if max_steps is not None:
        out.append(f"train.max_steps={max_steps}")
    if progress is not None:
        out.append(f"train.progress={str(bool(progress)).lower()}")
    return out


def _check_resume_flag(folder: RunFolder, resume: bool | None) -> None:
    if resume is True and not folder.has_checkpoint():
        raise FileNotFoundError(f"--resume: no checkpoint in {folder.path}")
    if resume is False and folder.has_checkpoint():
        raise FileExistsError(f"{folder.path} holds a checkpoint: resume it (the default), or choose another "
                              "train.run_name / --out")


def _record_failure(folder: RunFolder, exc: Exception) -> None:
    """Put the failure in summary.json when the disk still lets us (best effort: it may be the cause)."""
    from zoo._io import atomic_write_text

    summary = {**(folder.summary() or {}), "status": f"failed: {exc}"}
    try:
        atomic_write_text(folder.summary_path, json.dumps(summary, indent=2, default=str) + "\n")
    except (OSError, RuntimeError):
        pass


def _disk_failure(folder: RunFolder, exc: BaseException) -> RunWriteError | None:
    """A full / unwritable disk behind ``exc`` as one RunWriteError line (None: another error)."""
    if isinstance(exc, RunWriteError):
        return exc
    code = disk_error(exc)
    where = Path(getattr(exc, "filename", None) or folder.path)
    if code is None or (code in (errno.EACCES, errno.EPERM) and folder.path not in (where, *where.parents)):
        return None  # not a write into the run folder (e.g. an unreadable data file): its own error stands
    return folder.write_error(where, code)


def run_experiment(experiment, overrides=(), *, out: str | os.PathLike = "runs", data_root: str | None = None,
                   max_steps: int | None = None, progress: bool | None = None, datasets: dict | None = None,
                   resume: bool | None = None) -> dict:
    """Load, lock the run folder, build, resume (if it has a checkpoint), train and test; returns the summary.

    ``resume``: None = automatic (resume if a checkpoint exists), True = require one, False = refuse
    to reuse a folder that has one. A finished run is not retrained: its summary is returned.

    Raises:
        ExperimentConfigError, RegistryError, TaskNotFoundError, ...: bad input (one line each), among
            them a checkpoint of another config or other data.
        RunLockedError: another process trains into the same folder.
        CheckpointError: the folder's checkpoints are all unreadable, or one is unsafe to load;
            RunWriteError (a CheckpointError): the disk is full or the folder is not writable.
        TrainingDiverged: NaN/inf loss. Interrupted: Ctrl-C / SIGTERM (a checkpoint was saved).
    """
    from zoo.train.distributed import Dist
    from zoo.train.experiment import load_experiment

    exp = load_experiment(experiment, _overrides(overrides, data_root, max_steps, progress))
    folder = RunFolder(Path(out).expanduser() / exp.run_name())
    _check_resume_flag(folder, resume)
    dist = Dist.from_env()
    if dist.main:
        folder.lock.acquire()
    try:
        return _train(exp, folder, dist, datasets)
    except (OSError, RuntimeError) as exc:
        failure = _disk_failure(folder, exc)
        if failure is None:
            raise
        if dist.main:
            _record_failure(folder, failure)
        raise failure from None
    finally:
        folder.lock.release()


def _train(exp, folder: RunFolder, dist, datasets) -> dict:
    from zoo.train.trainer import Trainer

    trainer = Trainer(exp, folder.path, datasets=datasets)
    loaded = trainer.resume()
    say = (lambda msg: print(f"zoo train: {msg}", file=sys.stderr)) if dist.main else (lambda msg: None)
    if loaded is not None:
        pos = trainer.pos
        say(f"resuming {folder.path} from {loaded.name} at step {pos.step} (epoch {pos.epoch}, batch "
            f"{pos.batch_in_epoch})")
        stop = min(exp.cfg.train.max_steps or trainer.total_steps, trainer.total_steps)
        done = folder.summary()
        if pos.step >= stop and done is not None and done.get("test_acc") is not None:
            say("nothing left to train (raise train.max_steps / --max-steps to continue)")
            return done
    run = trainer.run
    say(f"{folder.name}: task {exp.task.name} ({run.data['source']}), layer {exp.layer.name}, {run.n_params:,} "
        f"parameters, {run.steps_per_epoch} steps/epoch, {run.total_steps} steps, {run.device} {run.precision}"
        f"{f' x {dist.world} processes' if dist.world > 1 else ''} -> {folder.path}")
    return trainer.fit()
