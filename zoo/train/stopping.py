"""How a run stops: it diverged (NaN/inf), or it was asked to (Ctrl-C, SIGTERM).

A first Ctrl-C or SIGTERM only raises a flag: the current step completes, a checkpoint and the
summary are written, and :class:`Interrupted` carries the exit code (130 / 143) and one line
saying how to resume. A second signal stops at once (the last checkpoint stands). Under torchrun
the flag is agreed on by all ranks once per logging window, in the window's one host sync
(:meth:`StopSignals.agree`), so they stop together at the same step.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Interrupted", "StopSignals", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""

    @classmethod
    def at(cls, what: str, value: float, info: dict, checkpoint, step: int | None) -> "TrainingDiverged":
        """The one-line error for a non-finite ``what`` at ``info``'s step; ``checkpoint`` (its ``step``) is
        the last good one, or None."""
        where = (f"the last good checkpoint is {checkpoint} (step {step})" if step is not None
                 else "no checkpoint was written before it")
        return cls(
            f"non-finite {what} ({value}) at step {info['step']} (epoch {info['epoch']}, batch {info['batch']}): "
            f"training stopped, nothing after step {step if step is not None else 0} was saved; {where}. Try a lower "
            "optim.lr, a warm-up (optim.warmup_steps), gradient clipping (optim.grad_clip) or train.precision=fp32.")


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a checkpoint and the summary were saved; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """``with StopSignals() as s: ... if s.requested: ...``: SIGINT / SIGTERM set a flag (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.agreed = False  # some rank asked to stop, as of the last agreement
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def agree(self, any_rank: bool) -> None:
        """Record the outcome of the window's all-reduce: ``any_rank`` asked to stop."""
        self.agreed = bool(any_rank)
        if self.agreed and self.signum is None:
            self.signum = signal.SIGTERM

    def should_stop(self, world: int) -> bool:
        """Stop now? Alone: as soon as a signal came; under DDP: when the ranks agreed on it."""
        return self.agreed if world > 1 else self.requested

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
