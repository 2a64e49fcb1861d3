"""The training loop: one experiment, one run folder, resumable, on one device or under torchrun.

A run folder holds ``config.yaml``, ``checkpoint.pt`` and ``checkpoint.prev.pt`` (model, optimizer,
scheduler, step/epoch/batch, RNG states, config; written atomically every
``train.checkpoint_every`` steps, at each epoch end, at the end and on Ctrl-C / SIGTERM), ``best.pt``
(the weights with the best validation accuracy), ``metrics.jsonl``, ``curve.png``,
``summary.json`` and ``tensorboard/``. Running the same experiment again resumes exactly (same
batches, same dropout masks, same learning rates); a finished run is not retrained.

Speed: batches are length-bucketed and padded to a bounded set of shapes (``zoo.train.batching``),
the tokenised split lives on the GPU, the loss is checked for NaN/inf once per logging window
(one host sync per window, not per step), and on CUDA every shape bucket is compiled and its
training step captured as a CUDA graph before the first step (``zoo.train.step``), so the steady
state never recompiles and launches one graph per step. Throughput (real and padded tokens/s), step
time, peak memory, the kernel each mixer runs and the compile count go to ``metrics.jsonl`` and
``summary.json``.

Under ``torchrun --nproc_per_node=N zoo train ...`` the same loop runs with DDP: every rank takes
its slice of each (global) batch, rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from zoo._io import atomic_torch_save, atomic_write_text
from zoo.config import resolve_layer
from zoo.models import ModelConfig, build_model
from zoo.train import checkpoint as ckpt
from zoo.train.batching import Batch, BatchSource, epoch_batches, eval_batches
from zoo.train.distributed import Dist
from zoo.train.experiment import Experiment, ExperimentConfigError, check_device, config_diff, describe_diff
from zoo.train.metrics import Meter, MetricsLog, plot_curves
from zoo.train.optim import build_optimizer, build_scheduler
from zoo.train.step import GraphedSteps, graphs_unavailable, optimizer_step
from zoo.train.stopping import Interrupted, StopSignals, TrainingDiverged
from zoo.train.warmup import compile_count, kernels_used

__all__ = ["Trainer"]


class Trainer:
    """Builds data, model, optimizer and scheduler from an :class:`Experiment` and runs the loop.

    Args:
        exp: from :func:`zoo.train.experiment.load_experiment`.
        run_dir: the run folder (created).
        datasets: optional ``{"train", "val", "test"}`` datasets with the ``ArrayDataset`` interface
            (``zoo.data.ArrayDataset``) instead of the prepared task (tests, custom data).
    """

    def __init__(self, exp: Experiment, run_dir: str | os.PathLike, *, datasets: dict | None = None) -> None:
        self.exp = exp
        self.cfg = cfg = exp.cfg
        t = cfg.train
        self.dist = Dist.from_env()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = bool(t.progress) and self.dist.main and sys.stderr.isatty()
        self.device = self.dist.device(check_device(t.device))
        self.precision = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        if datasets is None:
            from zoo.data import prepare

            generate = OmegaConf.to_container(cfg.data.generate, resolve=True) if cfg.data.generate_if_missing else None
            prepared = prepare(exp.task.name, cfg.data.root, options=exp.task_config, cache_dir=cfg.data.cache_dir,
                               progress=self.progress, generate=generate)
            datasets = prepared.datasets()
            self.data_source, self.data_protocol = prepared.source, prepared.manifest["build"]["protocol"]
        else:
            self.data_source, self.data_protocol = "datasets passed to Trainer", None
        self.datasets = datasets
        train_ds = datasets["train"]
        self.dist.init(self.device, t.batch_size)
        ckpt.seed_all(t.seed)
        layer = resolve_layer(exp.layer, max_len=train_ds.max_len)
        self.model = build_model(ModelConfig(**OmegaConf.to_container(cfg.model)), layer,
                                 n_classes=train_ds.n_classes, max_len=train_ds.max_len,
                                 vocab_size=train_ds.vocab_size, n_inputs=2 if train_ds.is_pair else 1).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self.params)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if
                                                              self.device.type == "cuda" else None)
                    if self.dist.world > 1 else self.model)
        self.steps_per_epoch = math.ceil(len(train_ds) / t.batch_size)
        self.total_steps = int(cfg.optim.schedule_steps or t.epochs * self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        self.sources = {s: BatchSource(d, self.device, on_device=cfg.data.on_device, buckets=cfg.data.bucketing)
                        for s, d in datasets.items()}
        self.eval_batch_size = int(t.eval_batch_size or t.batch_size)
        # loop state (all of it goes into the checkpoint)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_val_acc: float | None = None
        self.best_step: int | None = None
        self.train_seconds = 0.0
        self.eval_seconds = 0.0  # this process's validation and test time (the steps' time is train_seconds)
        self.warmup_seconds = 0.0
        self.kernels: dict | None = None  # what fit() finds before the first step
        self.memory: dict | None = None
        self.graphs: GraphedSteps | None = None  # the captured steps (warm_up() decides)
        self.graph_status: dict | None = None
        self.meter = Meter()
        self._compiles_at_warmup: int | None = None
        self.signals = StopSignals()
        self.log: MetricsLog | None = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_val_acc": self.best_val_acc, "best_step": self.best_step,
            "train_seconds": self.train_seconds, "window": dict(self.meter.window), "total_steps": self.total_steps,
            "rng": ckpt.rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save_checkpoint(self) -> None:
        if self.dist.main:
            ckpt.save(self.state_dict(), self.run_dir)
        self.dist.barrier()

    def resume(self) -> Path | None:
        """Load the newest readable checkpoint of the run folder (None: a fresh run)."""
        found = ckpt.load_latest(self.run_dir, map_location=self.device)
        if found is None:
            return None
        ck, path = found
        current = OmegaConf.to_container(self.cfg, resolve=True)
        diff = config_diff(ck["config"], current)
        if diff:
            raise ExperimentConfigError(
                f"{path} was written with a different config ({describe_diff(ck['config'], current, diff)}). "
                "Resume with the same config, or start a new run (train.run_name=NEW or another --out).")
        self.model.load_state_dict(ck["model"])
        ckpt.load_optimizer(self.optimizer, ck["optimizer"], self.device)
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        for k in ("step", "epoch", "batch_in_epoch", "best_val_acc", "best_step", "train_seconds"):
            setattr(self, k, ck[k])
        self.meter.window = dict(ck["window"])
        ckpt.set_rng_state(ck["rng"])
        return path

    # ------------------------------------------------------------------ one step

    def _autocast(self, cache: bool = True):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16",
                              cache_enabled=cache)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step (replayed from its CUDA graph when captured); returns ``(loss, correct,
        grad_norm)`` as device tensors (no host sync)."""
        b = self.dist.rank_slice(batch)
        scale = self.dist.world / batch.n_rows  # the weighted sum -> the mean over the global batch's real rows
        if self.graphs is not None:
            out = self.graphs(b.inputs, b.masks, b.labels, b.weights, scale)
        else:
            self.ddp.train()
            out = optimizer_step(self.ddp, self.params, self.optimizer, b.inputs, b.masks, b.labels, b.weights, scale,
                                 self.cfg.optim.grad_clip, self._autocast)
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.step)
        return out[0] / self.dist.world, out[1], out[2]

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Mean loss and accuracy over a split (eval mode, no gradients, one host sync)."""
        src = self.sources[split]
        batches = eval_batches(src.longest, self.eval_batch_size)[self.dist.rank::self.dist.world]
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, rows
        from tqdm.auto import tqdm

        for idx in tqdm(batches, desc=f"eval {split}", leave=False, disable=not self.progress, dynamic_ncols=True):
            b = src.batch(idx, self.eval_batch_size)
            with self._autocast():
                logits = self.model(b.inputs, b.masks).float()
            ce = F.cross_entropy(logits, b.labels, reduction="none")
            sums += torch.stack([(ce * b.weights).sum(), ((logits.argmax(-1) == b.labels).float() * b.weights).sum(),
                                 b.weights.sum()]).double()
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
                                       autocast=self._autocast, device=self.device)
        self.graph_status = {"enabled": reason is None, "reason": reason}
        if t.warmup_compile == "false" or (t.warmup_compile == "auto" and self.device.type != "cuda"):
            return 0
        from zoo.train.warmup import capture_shapes, compile_shapes

        before = compile_count()
        failed = capture_shapes(self.graphs, self.sources["train"], t.batch_size) if self.graphs else None
        if failed and t.cuda_graphs == "true":
            raise ExperimentConfigError(f"train.cuda_graphs=true but capturing the step failed: {failed}")
        if failed:  # under auto: say why, and run the steps eagerly
            self.graphs, self.graph_status = None, {"enabled": False, "reason": f"capture failed: {failed}"}
        train = [] if self.graphs is not None else [(t.batch_size // self.dist.world, True)]
        compile_shapes(self.ddp, self.model, self.sources["train"], self.device, self._autocast,
                       train + [(self.eval_batch_size, False)])
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

    # ------------------------------------------------------------------ the loop

    def _flush_window(self, pending: list) -> None:
        """Sync once: check the pending steps' losses and gradient norms, add them to the window."""
        if not pending:
            return
        stacked = torch.stack([torch.stack([loss, correct, norm.float()]) for loss, correct, norm, _ in pending])
        vals = self.dist.all_sum(stacked).tolist()  # the one host sync of the window
        for (loss, correct, norm), (_, _, _, info) in zip(vals, pending):
            if not math.isfinite(loss) or not math.isfinite(norm):
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
                raise self._diverged(what, value, info)
            self.meter.add(loss, correct, info["rows"], info["real"], info["padded"])
        pending.clear()

    def _diverged(self, what: str, value: float, info: dict) -> TrainingDiverged:
        path = self.run_dir / ckpt.CHECKPOINT
        step = ckpt.peek_step(path) if path.exists() else None
        if self.log is not None:
            self.log.log({"kind": "diverged", "step": info["step"], "epoch": info["epoch"], "what": what,
                          "value": str(value)})
        return TrainingDiverged.at(what, value, info, path, step)

    def _log_window(self) -> None:
        rec = self.meter.close_window()
        if rec is None:
            return
        rec = {"kind": "train", "step": self.step, "epoch": self.epoch, **rec,
               "lr": float(self.optimizer.param_groups[0]["lr"]), "compiles": compile_count()}
        if self.device.type == "cuda":
            rec["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.log is not None:
            self.log.log(rec)

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until the schedule ends (or ``max_steps`` total steps), then test; returns the summary."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        max_steps = max_steps if max_steps is not None else t.max_steps
        stop = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        if self.dist.main:
            self.log = MetricsLog(self.run_dir, tensorboard=t.tensorboard, wandb=t.wandb,
                                  run_name=self.run_dir.name, config=OmegaConf.to_container(self.cfg, resolve=True))
            self.log.truncate(self.step)
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))
        self.memory = self.check_memory()
        warm_s = time.perf_counter()
        self.warm_up()
        self.warmup_seconds = time.perf_counter() - warm_s
        self.kernels = kernels_used(self.model, self.sources["train"], t.batch_size, self.device,
                                    torch.bfloat16 if self.precision == "bf16" else torch.float32, self.graphs is not None)
        src = self.sources["train"]
        bar = tqdm(total=stop, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        pending: list = []
        saved_at = self.step
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with self.signals:
                while self.step < stop:
                    batches = epoch_batches(src.longest, t.batch_size, t.seed, self.epoch,
                                            bucketed=self.cfg.data.bucketing)
                    for idx in batches[self.batch_in_epoch:]:
                        step_t0 = time.perf_counter()
                        batch = src.batch(idx, t.batch_size)
                        info = {"step": self.step + 1, "epoch": self.epoch, "batch": self.batch_in_epoch,
                                "rows": batch.n_rows, "real": batch.real_tokens, "padded": batch.padded_tokens}
                        pending.append((*self.train_step(batch), info))
                        self.signals.agree(self.dist, self.device)  # every rank stops at the same step
                        self.batch_in_epoch += 1
                        epoch_end = self.batch_in_epoch == len(batches)
                        if epoch_end:
                            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        evaluate = epoch_end or (t.eval_every and self.step % t.eval_every == 0)
                        boundary = epoch_end or (t.checkpoint_every and self.step % t.checkpoint_every == 0) \
                            or self.step >= stop
                        if len(pending) >= t.log_every or evaluate or boundary or self.signals.requested:
                            self._flush_window(pending)
                        now = time.perf_counter()
                        self.meter.window["seconds"] += now - step_t0  # exact over a window: it ends with a sync
                        self.train_seconds += now - step_t0  # the steps only (not evaluation, not checkpoints)
                        bar.update(1)
                        if self.meter.window["steps"] >= t.log_every or evaluate:
                            self._log_window()
                            if self.meter.window_ms:
                                bar.set_postfix(epoch=self.epoch, step_ms=f"{self.meter.window_ms[-1]:.1f}")
                        if evaluate:
                            self._validate()
                        if boundary or self.signals.requested:  # (a signal may have come during eval)
                            self._flush_window(pending)
                            self.save_checkpoint()
                            saved_at = self.step
                        if self.signals.requested:
                            raise self._interrupted()
                        if self.step >= stop or epoch_end:
                            break
        except KeyboardInterrupt:  # a second signal, or one outside the step loop: the last checkpoint stands
            raise Interrupted(f"interrupted at step {self.step}; the last checkpoint (step {saved_at}) is in "
                              f"{self.run_dir}: run the same command again to resume", signal.SIGINT) from None
        finally:
            bar.close()
        self._log_window()
        return self.finish(reached_end=self.step >= self.total_steps)

    def _interrupted(self) -> Interrupted:
        signum = self.signals.signum
        name = signal.Signals(signum).name
        self.finish(reached_end=False, test=False, status=f"interrupted by {name} at step {self.step} (resume to continue)")
        if self.log is not None:
            self.log.log({"kind": "interrupted", "step": self.step, "signal": name})
        return Interrupted(f"{name}: saved a checkpoint at step {self.step} in {self.run_dir}; run the same command "
                           "again to resume", signum)

    def _validate(self) -> None:
        t0 = time.perf_counter()
        r = self.evaluate("val")
        self.eval_seconds += time.perf_counter() - t0
        if self.log is not None:
            self.log.log({"kind": "val", "step": self.step, "epoch": self.epoch, "loss": r["loss"], "acc": r["acc"]})
        if self.best_val_acc is None or r["acc"] > self.best_val_acc:
            self.best_val_acc, self.best_step = r["acc"], self.step
            if self.dist.main:
                atomic_torch_save({"model": self.model.state_dict(), "step": self.step, "val_acc": r["acc"]},
                                  self.run_dir / ckpt.BEST)
            self.dist.barrier()
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"step {self.step} epoch {self.epoch}: val loss {r['loss']:.4f} acc {r['acc']:.4f} "
                       f"(best {self.best_val_acc:.4f} at step {self.best_step})", file=sys.stderr)

    def throughput(self) -> dict:
        graphs = None if self.graph_status is None else {
            **self.graph_status, "captured": len(self.graphs.graphs) if self.graphs else 0,
            "eager_steps": self.graphs.eager_steps if self.graphs else None}
        out = {**self.meter.summary(), "cuda_graphs": graphs, "compiles": compile_count(),
               "compiles_after_warmup": (compile_count() - self._compiles_at_warmup
                                         if self._compiles_at_warmup is not None else None)}
        if self.device.type == "cuda":
            out["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out

    def finish(self, reached_end: bool, *, test: bool = True, status: str | None = None) -> dict:
        """Test with the best-val weights (unless ``test=False``), write curve.png and summary.json."""
        best = self.run_dir / ckpt.BEST
        tested, result = "last", None
        if test:
            if best.exists():
                self.model.load_state_dict(torch.load(best, map_location=self.device, weights_only=False)["model"])
                tested = f"best val (step {self.best_step})"
            result = self.evaluate("test")
            if self.log is not None:
                self.log.log({"kind": "test", "step": self.step, "loss": result["loss"], "acc": result["acc"],
                              "weights": tested})
        summary = {
            "status": status or ("complete" if reached_end else
                                 f"stopped at step {self.step} of {self.total_steps} (resume to continue)"),
            "task": self.exp.task.name, "layer": self.exp.layer.name, "params": self.n_params,
            "steps": self.step, "total_steps": self.total_steps, "epochs_completed": self.epoch,
            "best_val_acc": self.best_val_acc, "best_step": self.best_step,
            "test_acc": result["acc"] if result else None, "test_loss": result["loss"] if result else None,
            "test_weights": tested if result else None,
            "train_seconds": round(self.train_seconds, 2), "eval_seconds": round(self.eval_seconds, 2),
            "warmup_seconds": round(self.warmup_seconds, 2),
            **self.throughput(), "kernel": self.kernels, "memory_estimate": self.memory,
            "device": str(self.device), "precision": self.precision, "world_size": self.dist.world,
            "data_source": self.data_source, "data_protocol": self.data_protocol,
            "sizes": {s: len(d) for s, d in self.datasets.items()}, "run_dir": str(self.run_dir),
        }
        if self.dist.main:
            summary["curve"] = str(plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curve.png",
                                               f"{self.exp.task.name} / {self.exp.layer.name} ({self.step} steps)"))
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
            if self.log is not None:
                self.log.close()
        return summary
