"""Where the loop is, and when it logs, evaluates and checkpoints: two small objects the trainer asks.

:class:`LoopState` is the loop's position (step, epoch, batch in the epoch, the best validation
accuracy and its step, the seconds spent), counted in one place (:meth:`LoopState.advance`) and
saved in the checkpoint as plain numbers. :class:`Cadence` decides, after each step, what is due:
a host sync (flush), a log record, a validation, a checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Cadence", "Due", "LoopState"]


@dataclass
class LoopState:
    """The loop's position and bests; everything here goes into the checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_acc: float | None = None
    best_step: int | None = None
    train_seconds: float = 0.0

    def advance(self, batches_in_epoch: int) -> bool:
        """One optimizer step done: count it; returns True when it ended the epoch."""
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch < batches_in_epoch:
            return False
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return True

    def improved(self, val_acc: float) -> bool:
        """Record a validation accuracy; True when it is the best so far."""
        if self.best_val_acc is not None and val_acc <= self.best_val_acc:
            return False
        self.best_val_acc, self.best_step = val_acc, self.step
        return True

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        fresh = LoopState(**{f.name: state[f.name] for f in dataclasses.fields(self) if f.name in state})
        self.__dict__.update(fresh.__dict__)


@dataclass(frozen=True)
class Due:
    """What the step just done calls for."""

    flush: bool  # sync: check the window's losses, agree on a stop signal under DDP
    evaluate: bool
    checkpoint: bool


@dataclass(frozen=True)
class Cadence:
    """``train.log_every`` / ``eval_every`` / ``checkpoint_every`` and the last step, decided in one place."""

    log_every: int
    eval_every: int
    checkpoint_every: int
    stop: int

    def due(self, step: int, epoch_end: bool, pending: int, local_stop: bool) -> Due:
        """What is due after ``step``. ``pending``: steps not yet synced; ``local_stop``: a stop signal
        that may end the window early (only a single process passes it: under DDP every rank must
        sync at the same steps, so the signal waits for the window's end)."""
        evaluate = epoch_end or bool(self.eval_every and step % self.eval_every == 0)
        boundary = epoch_end or bool(self.checkpoint_every and step % self.checkpoint_every == 0) or step >= self.stop
        flush = pending >= self.log_every or evaluate or boundary or local_stop
        return Due(flush=flush, evaluate=evaluate, checkpoint=boundary)

    def log_due(self, window_steps: int, evaluate: bool) -> bool:
        """Close the log window (after the flush that counted its steps)."""
        return window_steps >= self.log_every or evaluate
