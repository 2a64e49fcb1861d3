"""The training loop: one experiment, one run folder, resumable, on one device or under torchrun.

A run folder holds ``config.yaml``, ``checkpoint.pt`` and ``checkpoint.prev.pt`` (model, optimizer,
scheduler, step/epoch/batch, RNG states, config; written atomically every
``train.checkpoint_every`` steps, at each epoch end, at the end and on Ctrl-C / SIGTERM), ``best.pt``
(the weights with the best validation accuracy), ``metrics.jsonl``, ``curve.png``,
``summary.json`` and ``tensorboard/``. Running the same experiment again resumes exactly (same
batches, same dropout masks, same learning rates); a finished run is not retrained.

Speed: batches are length-bucketed and padded to a bounded set of shapes (``zoo.train.batching``),
the tokenised split lives on the GPU, the loss is checked for NaN/inf once per logging window
(one host sync per window, not per step), and on CUDA every shape bucket is compiled before the
first step, so the steady state never recompiles. Throughput (real and padded tokens/s), step
time, peak memory, the kernel each mixer runs and the compile count go to ``metrics.jsonl`` and
``summary.json``.

Under ``torchrun --nproc_per_node=N zoo train ...`` the same loop runs with DDP: every rank takes
its slice of each (global) batch, rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from zoo._io import atomic_torch_save, atomic_write_text
from zoo.config import resolve_layer
from zoo.models import ModelConfig, build_model
from zoo.train import checkpoint as ckpt
from zoo.train.batching import Batch, BatchSource, epoch_batches, eval_batches
from zoo.train.experiment import Experiment, ExperimentConfigError, check_device, config_diff, describe_diff
from zoo.train.metrics import MetricsLog, plot_curves
from zoo.train.optim import build_optimizer, build_scheduler

__all__ = ["Interrupted", "MemoryEstimateError", "Trainer", "TrainingDiverged", "compile_count"]


class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a checkpoint and the summary were saved; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class MemoryEstimateError(ValueError):
    """The run would not fit in the memory of the device (estimated before the first step)."""


def compile_count() -> int:
    """Graphs compiled by torch.compile in this process so far (FlexAttention and ``train.compile``)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover
        return 0
    return int(counters["stats"]["unique_graphs"])


@dataclass
class Dist:
    """This process's place under torchrun (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t


def _available_bytes() -> int:
    """Memory a new allocation can use on this machine (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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
        self.device = check_device(t.device)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)
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
        if self.dist.world > 1:
            if t.batch_size % self.dist.world:
                raise ExperimentConfigError(f"train.batch_size={t.batch_size} is the global batch: it must be "
                                            f"divisible by the {self.dist.world} processes of torchrun")
            if not torch.distributed.is_initialized():
                torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        ckpt.seed_all(t.seed)
        layer = resolve_layer(exp.layer, max_len=train_ds.max_len)
        self.model = build_model(ModelConfig(**OmegaConf.to_container(cfg.model)), layer,
                                 n_classes=train_ds.n_classes, max_len=train_ds.max_len,
                                 vocab_size=train_ds.vocab_size, n_inputs=2 if train_ds.is_pair else 1).to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
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
        self._window = {"loss": 0.0, "correct": 0, "rows": 0, "steps": 0, "real": 0, "padded": 0, "seconds": 0.0}
        self._window_ms: list[float] = []  # mean step time of each logged window
        self._compiles_at_warmup: int | None = None
        self._stop_signal: int | None = None
        self.log: MetricsLog | None = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_val_acc": self.best_val_acc, "best_step": self.best_step,
            "train_seconds": self.train_seconds, "window": dict(self._window), "total_steps": self.total_steps,
            "rng": ckpt.rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save_checkpoint(self) -> None:
        if self.dist.main:
            ckpt.save(self.state_dict(), self.run_dir)

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
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        for k in ("step", "epoch", "batch_in_epoch", "best_val_acc", "best_step", "train_seconds"):
            setattr(self, k, ck[k])
        self._window = dict(ck["window"])
        ckpt.set_rng_state(ck["rng"])
        return path

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _rank_slice(self, b: Batch) -> Batch:
        if self.dist.world == 1:
            return b
        r, w = self.dist.rank, self.dist.world
        return Batch([x[r::w] for x in b.inputs], [m if m is None else m[r::w] for m in b.masks], b.labels[r::w],
                     b.weights[r::w], b.n_rows, b.real_tokens, b.padded_tokens)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step; returns ``(loss, correct, grad_norm)`` as device tensors (no host sync)."""
        b = self._rank_slice(batch)
        self.ddp.train()
        with self._autocast():
            logits = self.ddp(b.inputs, b.masks)
        ce = F.cross_entropy(logits.float(), b.labels, reduction="none")  # (B,)
        loss = (ce * b.weights).sum() * (self.dist.world / batch.n_rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.step)
        correct = ((logits.detach().argmax(-1) == b.labels).float() * b.weights).sum()
        return loss.detach() / self.dist.world, correct, norm.detach()

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Mean loss and accuracy over a split (eval mode, no gradients, one host sync)."""
        src = self.sources[split]
        batches = eval_batches(src.lengths.max(axis=1), self.eval_batch_size)[self.dist.rank::self.dist.world]
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
        """Compile every shape bucket (train and eval) before the first step; returns the graphs compiled.

        Runs under forked RNG states and leaves no gradients, so the run is the same with or without it.
        """
        mode = self.cfg.train.warmup_compile
        if mode == "false" or (mode == "auto" and self.device.type != "cuda"):
            return 0
        before = compile_count()
        src = self.sources["train"]
        ds = src.ds
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for L in src.shapes():
                for bs, train in ((self.cfg.train.batch_size // self.dist.world, True), (self.eval_batch_size, False)):
                    rows = torch.ones(bs, L, dtype=torch.uint8, device=self.device)
                    if ds.has_padding:
                        rows[:, -1] = 0  # one padded key: the padded code path
                    x = ds.convert(rows)
                    inputs = [x] * (2 if ds.is_pair else 1)
                    masks = [ds.padding_mask(x)] * len(inputs)
                    if train:
                        self.ddp.train()
                        with self._autocast():
                            self.ddp(inputs, masks).float().sum().backward()
                    else:
                        self.model.eval()
                        with torch.no_grad(), self._autocast():
                            self.model(inputs, masks)
        self.optimizer.zero_grad(set_to_none=True)
        self._compiles_at_warmup = compile_count()
        return self._compiles_at_warmup - before

    def check_memory(self) -> dict | None:
        """On CPU: estimate the peak memory of one training step (two small probes, extrapolated in
        ``L`` as ``a L + b L^2`` and linearly in the batch) and refuse a run that cannot fit."""
        if self.device.type != "cpu":
            return None
        from zoo.measure import cpu_peak_mib

        src = self.sources["train"]
        ds = src.ds
        L = max(src.shapes())
        B = self.cfg.train.batch_size
        probes = [min(L, 128), min(L, 256)]
        peaks = []
        with torch.random.fork_rng():
            for Lp in probes:
                rows = torch.ones(1, Lp, dtype=torch.uint8)
                x = ds.convert(rows)
                inputs = [x] * (2 if ds.is_pair else 1)

                def step():
                    with self._autocast():
                        self.model(inputs, [ds.padding_mask(x)] * len(inputs)).float().sum().backward()

                peaks.append(cpu_peak_mib(step) * 2**20)
        self.optimizer.zero_grad(set_to_none=True)
        (l1, l2), (m1, m2) = probes, peaks
        if l2 > l1:
            b = max((m2 - m1 * l2 / l1) / (l2 * l2 - l1 * l2), 0.0)
            a = max((m1 - b * l1 * l1) / l1, 0.0)
        else:
            a, b = m1 / l1, 0.0
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        need = B * (a * L + b * L * L) + 4 * params  # activations + weights, grads and Adam moments
        have = _available_bytes()
        est = {"estimated_gib": need / 2**30, "available_gib": have / 2**30, "batch": B, "length": L}
        if need > 0.9 * have:
            raise MemoryEstimateError(
                f"this run needs about {need / 2**30:.1f} GiB per training step on the CPU (batch {B}, length {L}; "
                f"measured at B=1, L={l1} and {l2}, extrapolated) but {have / 2**30:.1f} GiB is available: lower "
                "train.batch_size or task.options.max_len, or train on a GPU (train.device=cuda)")
        return est

    # ------------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now (the last checkpoint stands)
            raise KeyboardInterrupt
        self._stop_signal = signum

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        else:  # pragma: no cover - signal handlers only work in the main thread
            yield

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
            w = self._window
            w["loss"] += loss * info["rows"]
            w["correct"] += int(round(correct))
            w["rows"] += info["rows"]
            w["steps"] += 1
            w["real"] += info["real"]
            w["padded"] += info["padded"]
        pending.clear()

    def _diverged(self, what: str, value: float, info: dict) -> TrainingDiverged:
        path = self.run_dir / ckpt.CHECKPOINT
        step = ckpt.peek_step(path) if path.exists() else None
        where = (f"the last good checkpoint is {path} (step {step})" if step is not None
                 else "no checkpoint was written before it")
        if self.log is not None:
            self.log.log({"kind": "diverged", "step": info["step"], "epoch": info["epoch"], "what": what,
                          "value": str(value)})
        return TrainingDiverged(
            f"non-finite {what} ({value}) at step {info['step']} (epoch {info['epoch']}, batch {info['batch']}): "
            f"training stopped, nothing after step {step if step is not None else 0} was saved; {where}. Try a lower "
            "optim.lr, a warm-up (optim.warmup_steps), gradient clipping (optim.grad_clip) or train.precision=fp32.")

    def _log_window(self) -> None:
        w = self._window
        if not w["steps"]:
            return
        ms = 1e3 * w["seconds"] / w["steps"]
        self._window_ms.append(ms)
        rec = {"kind": "train", "step": self.step, "epoch": self.epoch, "loss": w["loss"] / max(w["rows"], 1),
               "acc": w["correct"] / max(w["rows"], 1), "lr": float(self.optimizer.param_groups[0]["lr"]),
               "step_ms": ms, "tokens_per_s": w["real"] / max(w["seconds"], 1e-9),
               "padded_tokens_per_s": w["padded"] / max(w["seconds"], 1e-9),
               "pad_fraction": 1.0 - w["real"] / max(w["padded"], 1), "compiles": compile_count()}
        if self.device.type == "cuda":
            rec["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.log is not None:
            self.log.log(rec)
        self._totals = {k: getattr(self, "_totals", {}).get(k, 0) + w[k] for k in ("real", "padded", "seconds")}
        self._window = {"loss": 0.0, "correct": 0, "rows": 0, "steps": 0, "real": 0, "padded": 0, "seconds": 0.0}

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
        self.compiled_in_warmup = self.warm_up()
        self.warmup_seconds = time.perf_counter() - warm_s
        self.kernels = self._kernels()
        src = self.sources["train"]
        bar = tqdm(total=stop, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        pending: list = []
        saved_at = self.step
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with self._signals():
                t0 = time.perf_counter()
                while self.step < stop:
                    batches = epoch_batches(src.lengths.max(axis=1), t.batch_size, t.seed, self.epoch,
                                            bucketed=self.cfg.data.bucketing)
                    for idx in batches[self.batch_in_epoch:]:
                        step_t0 = time.perf_counter()
                        batch = src.batch(idx, t.batch_size)
                        info = {"step": self.step + 1, "epoch": self.epoch, "batch": self.batch_in_epoch,
                                "rows": batch.n_rows, "real": batch.real_tokens, "padded": batch.padded_tokens}
                        pending.append((*self.train_step(batch), info))
                        self.batch_in_epoch += 1
                        epoch_end = self.batch_in_epoch == len(batches)
                        if epoch_end:
                            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        evaluate = epoch_end or (t.eval_every and self.step % t.eval_every == 0)
                        boundary = epoch_end or (t.checkpoint_every and self.step % t.checkpoint_every == 0) \
                            or self.step >= stop
                        if len(pending) >= t.log_every or evaluate or boundary or self._stop_signal is not None:
                            self._flush_window(pending)
                        now = time.perf_counter()
                        self._window["seconds"] += now - step_t0  # exact over a window: it ends with a sync
                        bar.update(1)
                        if self._window["steps"] >= t.log_every or evaluate:
                            bar.set_postfix(epoch=self.epoch, loss=f"{self._window['loss'] / max(self._window['rows'], 1):.4f}")
                            self._log_window()
                        if evaluate:
                            self._validate()
                        if boundary or self._stop_signal is not None:  # (a signal may have come during eval)
                            self._flush_window(pending)
                            self.train_seconds += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            self.save_checkpoint()
                            saved_at = self.step
                        if self._stop_signal is not None:
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
        signum = self._stop_signal
        name = signal.Signals(signum).name
        self.finish(reached_end=False, test=False, status=f"interrupted by {name} at step {self.step} (resume to continue)")
        if self.log is not None:
            self.log.log({"kind": "interrupted", "step": self.step, "signal": name})
        return Interrupted(f"{name}: saved a checkpoint at step {self.step} in {self.run_dir}; run the same command "
                           "again to resume", signum)

    def _validate(self) -> None:
        r = self.evaluate("val")
        if self.log is not None:
            self.log.log({"kind": "val", "step": self.step, "epoch": self.epoch, "loss": r["loss"], "acc": r["acc"]})
        if self.best_val_acc is None or r["acc"] > self.best_val_acc:
            self.best_val_acc, self.best_step = r["acc"], self.step
            if self.dist.main:
                atomic_torch_save({"model": self.model.state_dict(), "step": self.step, "val_acc": r["acc"]},
                                  self.run_dir / ckpt.BEST)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"step {self.step} epoch {self.epoch}: val loss {r['loss']:.4f} acc {r['acc']:.4f} "
                       f"(best {self.best_val_acc:.4f} at step {self.best_step})", file=sys.stderr)

    def _kernels(self) -> dict:
        """The kernel each mixer runs, for a batch of the largest shape (training / inference)."""
        ds = self.sources["train"].ds
        L = max(self.sources["train"].shapes())
        x = torch.zeros(self.cfg.train.batch_size, L, self.model.encoder.config.d_model,
                        dtype=torch.bfloat16 if self.precision == "bf16" else torch.float32, device=self.device)
        mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=self.device) if ds.has_padding else None
        mixer = self.model.mixers()[0]
        return {"training": mixer.kernel_name(x, mask, requires_grad=True),
                "inference": mixer.kernel_name(x, mask, requires_grad=False)}

    def throughput(self) -> dict:
        tot = getattr(self, "_totals", {"real": 0, "padded": 0, "seconds": 0.0})
        steady = self._window_ms[len(self._window_ms) // 5:] or self._window_ms  # skip the first fifth
        out = {"tokens_per_s": tot["real"] / max(tot["seconds"], 1e-9),
               "padded_tokens_per_s": tot["padded"] / max(tot["seconds"], 1e-9),
               "pad_fraction": 1.0 - tot["real"] / max(tot["padded"], 1),
               "step_ms_median": statistics.median(steady) if steady else None,
               "compiles": compile_count(),
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
            "train_seconds": round(self.train_seconds, 2), "warmup_seconds": round(getattr(self, "warmup_seconds", 0.0), 2),
            **self.throughput(), "kernel": getattr(self, "kernels", None), "memory_estimate": getattr(self, "memory", None),
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
