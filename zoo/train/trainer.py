"""The training loop: one experiment, one run folder, resumable, on one device or under torchrun.

A run folder (:class:`zoo.train.folder.RunFolder`) holds ``config.yaml``, ``checkpoint.pt`` and
``checkpoint.prev.pt`` (model, optimizer, scheduler, the loop position, RNG states, config and what
the data is; written atomically every ``train.checkpoint_every`` steps, at each epoch end, at the
end and on Ctrl-C / SIGTERM), ``best.pt`` (the weights with the best validation accuracy),
``metrics.jsonl``, ``curve.png``, ``summary.json`` and ``tensorboard/``. Running the same
experiment again resumes exactly (same batches, same dropout masks, same learning rates); a
finished run is not retrained; a checkpoint of other data is refused.

The parts are built by :func:`zoo.train.build.build_run`; the loop's position is a
:class:`~zoo.train.loop.LoopState` and what is due after a step a :class:`~zoo.train.loop.Cadence`.
Speed: batches are length-bucketed and padded to a bounded set of shapes (``zoo.train.batching``),
the loss is checked for NaN/inf once per logging window (one host sync per window, which also
agrees on a stop signal under DDP), and on CUDA every shape bucket is compiled and its training
step captured as a CUDA graph before the first step (``zoo.train.step``, ``zoo.train.precompile``).

Under ``torchrun --nproc_per_node=N zoo train ...`` the same loop runs with DDP: every rank takes
its slice of each (global) batch, rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time

import torch
from omegaconf import OmegaConf

from zoo._io import atomic_torch_save, atomic_write_text
from zoo.train import checkpoint as ckpt
from zoo.train.batching import Batch, epoch_batches, eval_batches
from zoo.train.build import build_run
from zoo.train.experiment import Experiment, ExperimentConfigError, config_diff, describe_diff
from zoo.train.folder import RunFolder
from zoo.train.loop import Cadence, LoopState
from zoo.train.metrics import Meter, MetricsLog
from zoo.train.precompile import compile_count, kernels_used
from zoo.train.step import GraphedSteps, graphs_unavailable, optimizer_step
from zoo.train.stopping import Interrupted, StopSignals, TrainingDiverged

__all__ = ["Trainer"]


class Trainer:
    """Runs the loop over the parts :func:`~zoo.train.build.build_run` makes from an :class:`Experiment`.

    Args:
        exp: from :func:`zoo.train.experiment.load_experiment`.
        run_dir: the run folder (created).
        datasets: optional ``{"train", "val", "test"}`` datasets with the ``ArrayDataset`` interface
            (``zoo.data.ArrayDataset``) instead of the prepared task (tests, custom data).
    """

    def __init__(self, exp: Experiment, run_dir: str | os.PathLike, *, datasets: dict | None = None) -> None:
        self.started = time.perf_counter()
        self.folder = RunFolder(run_dir)
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.run_dir = self.folder.path
        self.run = run = build_run(exp, self.run_dir, datasets)
        self.exp, self.cfg, self.dist, self.device = exp, exp.cfg, run.dist, run.device
        self.model, self.ddp, self.params, self.optimizer = run.model, run.ddp, run.params, run.optimizer
        self.scheduler, self.sources, self.kind = run.scheduler, run.sources, run.kind
        self.total_steps, self.steps_per_epoch = run.total_steps, run.steps_per_epoch
        self.pos = LoopState()
        self.meter = Meter()
        self.signals = StopSignals()
        self.log: MetricsLog | None = None
        self.graphs: GraphedSteps | None = None  # the captured steps (warm_up() decides)
        self.graph_status: dict | None = None
        self.kernels = self.memory = None  # what fit() finds before the first step
        self.eval_seconds = self.warmup_seconds = 0.0  # this process's (the steps' time is pos.train_seconds)
        self._compiles_at_warmup: int | None = None
        self._pending: list = []  # the steps of the window not yet synced
        self._saved_at = 0  # the step of the last checkpoint this process wrote
        self._wall_before = 0.0  # wall seconds of the processes before this one (from the checkpoint)

    # ------------------------------------------------------------------ state

    @property
    def step(self) -> int:
        return self.pos.step

    @property
    def n_params(self) -> int:
        return self.run.n_params

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            **self.pos.state_dict(), "window": dict(self.meter.window), "total_steps": self.total_steps,
            "wall_seconds": self.wall_seconds(),
            "rng": ckpt.rng_state(), "data": self.run.data,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def wall_seconds(self) -> float:
        """The run's wall time so far: this process's (build, warm-up, steps, evaluation) plus the
        earlier processes' up to the checkpoint it resumed from."""
        return self._wall_before + time.perf_counter() - self.started

    def save_checkpoint(self) -> None:
        if self.dist.main:
            self.folder.write(self.folder.checkpoint, lambda p: ckpt.save(self.state_dict(), p.parent))
        self.dist.barrier()

    def resume(self):
        """Load the newest readable checkpoint of the run folder (None: a fresh run); a checkpoint of
        another config or other data is refused in one line (nothing is changed)."""
        found = ckpt.load_latest(self.run_dir, map_location=self.device)
        if found is None:
            return None
        ck, path = found
        self._check_same_run(ck, path)
        self.model.load_state_dict(ck["model"])
        ckpt.load_optimizer(self.optimizer, ck["optimizer"], self.device)
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        self.pos.load_state_dict(ck)
        self.meter.window = dict(ck["window"])
        ckpt.set_rng_state(ck["rng"])
        self._saved_at, self._wall_before = self.pos.step, float(ck.get("wall_seconds", 0.0))
        return path

    def _check_same_run(self, ck: dict, path) -> None:
        current = OmegaConf.to_container(self.cfg, resolve=True)
        diff = config_diff(ck["config"], current)
        if diff:
            raise ExperimentConfigError(
                f"{path} was written with a different config ({describe_diff(ck['config'], current, diff)}). "
                "Resume with the same config, or start a new run (train.run_name=NEW or another --out).")
        was, now = ck.get("data"), self.run.data
        same = was is not None and all(was.get(k) == now.get(k) for k in ("task", "fingerprint", "protocol"))
        if not same:
            def show(d):
                return "unrecorded data" if d is None else f"{d['task']} {d['fingerprint']} ({d['source']})"
            raise ExperimentConfigError(
                f"{path} was trained on {show(was)}, this run has {show(now)}: resume with the same data "
                "(data.root / --data-root), or start a new run (train.run_name=NEW or another --out)")

    # ------------------------------------------------------------------ one step, one evaluation

    def _autocast(self, cache: bool = True):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.run.precision == "bf16", cache_enabled=cache)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step (replayed from its CUDA graph when captured); returns ``(loss, correct,
        grad_norm)`` as device tensors (no host sync). The position is advanced by the caller."""
        b = self.dist.rank_slice(batch)
        scale = self.dist.world / max(batch.n_scored, 1)  # the weighted sum -> the mean over the global batch's
        # scored labels (its real rows; for a token task its labelled positions)
        if self.graphs is not None:
            out = self.graphs(b.inputs, b.masks, b.labels, b.weights, scale)
        else:
            self.ddp.train()
            out = optimizer_step(self.ddp, self.params, self.optimizer, b.inputs, b.masks, b.labels, b.weights, scale,
                                 self.cfg.optim.grad_clip, self._autocast, self.kind.loss_terms)
        if self.scheduler is not None:
            self.scheduler.step_update(self.pos.step + 1)
        return out[0] / self.dist.world, out[1], out[2]

    @torch.no_grad()
    def evaluate(self, split: str, forward=None) -> dict:
        """Mean loss and accuracy over a split (eval mode, no gradients, one host sync), with the
        task kind's ``loss_terms``, the training step's. ``forward(inputs, masks) -> logits`` replaces
        the eager forward (``zoo.train.fast_eval``: replayed from CUDA graphs)."""
        src, bs = self.sources[split], self.run.eval_batch_size
        batches = eval_batches(src.longest, bs)[self.dist.rank::self.dist.world]
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, weight sum
        from tqdm.auto import tqdm

        for idx in tqdm(batches, desc=f"eval {split}", leave=False, disable=not self.run.progress, dynamic_ncols=True):
            b = src.batch(idx, bs)
            if forward is not None:
                logits = forward(b.inputs, b.masks)
            else:
                with self._autocast():
                    logits = self.model(b.inputs, b.masks, b.labels)
            sums += self.kind.loss_terms(logits, b.labels, b.weights).double()
        loss_sum, correct, n = self.dist.all_sum(sums).tolist()
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": int(n)}

    # ------------------------------------------------------------------ before the first step

    def warm_up(self) -> int:
        """Before the first step: decide on CUDA graphs, compile every shape bucket (on CUDA under
        ``auto``) and capture the training step of each; returns the graphs compiled. Forked RNG
        states and no gradients left: the run is the same without it."""
        t = self.cfg.train
        reason = "train.cuda_graphs=false" if t.cuda_graphs == "false" else graphs_unavailable(
            self.device, self.dist.world, self.optimizer)
        if reason and t.cuda_graphs == "true":
            raise ExperimentConfigError(f"train.cuda_graphs=true but {reason}; use train.cuda_graphs=auto or false")
        if reason is None:
            self.graphs = GraphedSteps(self.model, self.optimizer, grad_clip=self.cfg.optim.grad_clip,
                                       autocast=self._autocast, device=self.device, loss_terms=self.kind.loss_terms)
        self.graph_status = {"enabled": reason is None, "reason": reason}
        if t.warmup_compile == "false" or (t.warmup_compile == "auto" and self.device.type != "cuda"):
            return 0
        from zoo.train.precompile import capture_shapes, compile_shapes

        before = compile_count()
        failed = capture_shapes(self.graphs, self.sources["train"], t.batch_size, self.kind) if self.graphs else None
        if failed and t.cuda_graphs == "true":
            raise ExperimentConfigError(f"train.cuda_graphs=true but capturing the step failed: {failed}")
        if failed:  # under auto: say why, and run the steps eagerly
            self.graphs, self.graph_status = None, {"enabled": False, "reason": f"capture failed: {failed}"}
        train = [] if self.graphs is not None else [(t.batch_size // self.dist.world, True)]
        compile_shapes(self.ddp, self.model, self.sources["train"], self.device, self._autocast,
                       train + [(self.run.eval_batch_size, False)], self.kind)
        self.optimizer.zero_grad(set_to_none=True)
        self._compiles_at_warmup = compile_count()
        return self._compiles_at_warmup - before

    def check_memory(self) -> dict | None:
        """Refuse a CPU run that cannot fit in memory, before the first step (see ``zoo.train.memory``)."""
        if self.device.type != "cpu":
            return None
        from zoo.train.memory import check_cpu_memory

        with torch.random.fork_rng():
            est = check_cpu_memory(self.model, self.sources["train"], self.cfg.train.batch_size, self._autocast)
        self.optimizer.zero_grad(set_to_none=True)
        return est

    def _before_first_step(self) -> None:
        """Open the log, write config.yaml (after the resume checks), check memory, compile, find kernels."""
        t = self.cfg.train
        if self.dist.main:
            self.log = MetricsLog(self.run_dir, tensorboard=t.tensorboard, wandb=t.wandb,
                                  run_name=self.run_dir.name, config=OmegaConf.to_container(self.cfg, resolve=True))
            self.log.truncate(self.pos.step)
            self.folder.write(self.folder.config, lambda p: atomic_write_text(p, OmegaConf.to_yaml(self.cfg)))
        self.memory = self.check_memory()
        warm_s = time.perf_counter()
        self.warm_up()
        self.warmup_seconds = time.perf_counter() - warm_s
        self.kernels = kernels_used(self.model, self.sources["train"], t.batch_size, self.device,
                                    torch.bfloat16 if self.run.precision == "bf16" else torch.float32,
                                    self.graphs is not None)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    # ------------------------------------------------------------------ the loop

    def _batches(self, stop: int):
        """``(row indices of a batch, batches in its epoch)`` from the current position until step ``stop``."""
        t, src = self.cfg.train, self.sources["train"]
        while self.pos.step < stop:
            order = epoch_batches(src.longest, t.batch_size, t.seed, self.pos.epoch, bucketed=self.cfg.data.bucketing)
            for idx in order[self.pos.batch_in_epoch:]:
                yield idx, len(order)
                if self.pos.step >= stop or self.pos.batch_in_epoch == 0:
                    break

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until the schedule ends (or ``max_steps`` total steps), then test; returns the summary."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        max_steps = max_steps if max_steps is not None else t.max_steps
        stop = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        cadence = Cadence(t.log_every, t.eval_every, t.checkpoint_every, stop)
        self._before_first_step()
        bar = tqdm(total=stop, initial=self.pos.step, desc="train", disable=not self.run.progress, dynamic_ncols=True)
        with self.signals, self._second_signal(), bar:
            for idx, n_batches in self._batches(stop):
                t0 = time.perf_counter()
                batch = self.sources["train"].batch(idx, t.batch_size)
                info = {"step": self.pos.step + 1, "epoch": self.pos.epoch, "batch": self.pos.batch_in_epoch,
                        "rows": batch.n_rows, "scored": batch.n_scored, "real": batch.real_tokens,
                        "padded": batch.padded_tokens}
                self._pending.append((*self.train_step(batch), info))
                epoch_end = self.pos.advance(n_batches)
                local_stop = self.signals.requested and self.dist.world == 1
                due = cadence.due(self.pos.step, epoch_end, len(self._pending), local_stop)
                self._after_step(due, cadence, t0, bar)
                if self.signals.should_stop(self.dist.world):
                    raise self._interrupted()
        self._log_window()
        return self.finish(reached_end=self.pos.step >= self.total_steps)

    @contextlib.contextmanager
    def _second_signal(self):
        """A second signal (or one outside the step loop) stops at once: the last checkpoint stands."""
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at step {self.pos.step}; the last checkpoint (step {self._saved_at}) is in "
                              f"{self.run_dir}: run the same command again to resume", signal.SIGINT) from None

    def _after_step(self, due, cadence: Cadence, t0: float, bar) -> None:
        """Sync, time, log, validate and checkpoint as ``due`` says."""
        if due.flush:
            self._flush_window()
        now = time.perf_counter()
        self.meter.window["seconds"] += now - t0  # exact over a window: it ends with a sync
        self.pos.train_seconds += now - t0  # the steps only (not evaluation, not checkpoints)
        bar.update(1)
        if cadence.log_due(self.meter.window["steps"], due.evaluate):
            self._log_window()
            if self.meter.window_ms:
                bar.set_postfix(epoch=self.pos.epoch, step_ms=f"{self.meter.window_ms[-1]:.1f}")
        if due.evaluate:
            self._validate()
        if due.checkpoint or self.signals.should_stop(self.dist.world):  # (a signal may have come during eval)
            self._flush_window()
            self.save_checkpoint()
            self._saved_at = self.pos.step

    def _flush_window(self) -> None:
        """Sync once: check the pending steps' losses and gradient norms, add them to the window, and
        agree on a stop signal (under DDP, in the same all-reduce)."""
        pending = self._pending
        if not pending:
            return
        stacked = torch.stack([torch.stack([loss, correct, norm.float()]) for loss, correct, norm, _ in pending])
        flag = torch.full((1, 3), float(self.signals.requested), device=stacked.device)
        vals = self.dist.all_sum(torch.cat([stacked, flag])).tolist()  # the one host sync of the window
        self.signals.agree(vals.pop()[0] > 0)
        for (loss, correct, norm), (_, _, _, info) in zip(vals, pending):
            if not math.isfinite(loss) or not math.isfinite(norm):
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
                raise self._diverged(what, value, info)
            self.meter.add(loss, correct, info["scored"], info["real"], info["padded"])  # per scored label
        pending.clear()

    def _diverged(self, what: str, value: float, info: dict) -> TrainingDiverged:
        path = self.folder.checkpoint
        step = ckpt.peek_step(path) if path.exists() else None
        if self.log is not None:
            self.log.log({"kind": "diverged", "step": info["step"], "epoch": info["epoch"], "what": what,
                          "value": str(value)})
        return TrainingDiverged.at(what, value, info, path, step)

    def _log_window(self) -> None:
        rec = self.meter.close_window()
        if rec is None:
            return
        rec = {"kind": "train", "step": self.pos.step, "epoch": self.pos.epoch, **rec,
               "lr": float(self.optimizer.param_groups[0]["lr"]), "compiles": compile_count()}
        if self.device.type == "cuda":
            rec["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.log is not None:
            self.log.log(rec)

    def _interrupted(self) -> Interrupted:
        signum = self.signals.signum
        name = signal.Signals(signum).name
        step = self.pos.step
        self.finish(reached_end=False, test=False, status=f"interrupted by {name} at step {step} (resume to continue)")
        if self.log is not None:
            self.log.log({"kind": "interrupted", "step": step, "signal": name})
        return Interrupted(f"{name}: saved a checkpoint at step {step} in {self.run_dir}; run the same command "
                           "again to resume", signum)

    def _validate(self) -> None:
        t0 = time.perf_counter()
        r = self.evaluate("val")
        self.eval_seconds += time.perf_counter() - t0
        if self.log is not None:
            self.log.log({"kind": "val", "step": self.pos.step, "epoch": self.pos.epoch, "loss": r["loss"],
                          "acc": r["acc"]})
        if self.pos.improved(r["acc"]):
            if self.dist.main:
                best = {"model": self.model.state_dict(), "step": self.pos.step, "val_acc": r["acc"]}
                self.folder.write(self.folder.best, lambda p: atomic_torch_save(best, p))
            self.dist.barrier()
        if self.run.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"step {self.pos.step} epoch {self.pos.epoch}: val loss {r['loss']:.4f} acc {r['acc']:.4f} "
                       f"(best {self.pos.best_val_acc:.4f} at step {self.pos.best_step})", file=sys.stderr)

    def finish(self, reached_end: bool, *, test: bool = True, status: str | None = None) -> dict:
        """Test with the best-val weights (unless ``test=False``), write curve.png and summary.json."""
        from zoo.train.summary import write_summary

        tested, result = "last", None
        if test:
            if self.folder.best.exists():
                self.model.load_state_dict(ckpt.safe_load(self.folder.best, self.device)["model"])
                tested = f"best val (step {self.pos.best_step})"
            result = self.evaluate("test")
            if self.log is not None:
                self.log.log({"kind": "test", "step": self.pos.step, "loss": result["loss"], "acc": result["acc"],
                              "weights": tested})
        status = status or ("complete" if reached_end else
                            f"stopped at step {self.pos.step} of {self.total_steps} (resume to continue)")
        return write_summary(self, status, result, tested)
