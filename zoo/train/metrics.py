"""Run metrics: ``metrics.jsonl`` (one JSON record per line), optional TensorBoard / W&B, curves.

Records have a ``kind`` (``train``, ``val``, ``test``, ``diverged``, ``interrupted``) and a ``step``.
On resume the log is cut back to the checkpoint's step, so an interrupted run never holds
duplicated or orphaned records.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from zoo._io import atomic_write_text

__all__ = ["Meter", "MetricsLog", "plot_curves", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl`` and mirrors scalars to TensorBoard / W&B if asked."""

    def __init__(self, run_dir: Path, *, tensorboard: str = "auto", wandb: bool = False, run_name: str = "",
                 config: dict | None = None) -> None:
        import importlib.util

        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.touch()
        self._tb = self._wandb = None
        if str(tensorboard).lower() == "true" or (tensorboard == "auto" and importlib.util.find_spec("tensorboard")):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError(f"train.tensorboard=true needs the tensorboard package ({exc}); "
                                   "pip install tensorboard") from None
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise RuntimeError("train.wandb=true needs the wandb package; pip install wandb") from None
            self._wandb = wandb_lib.init(name=run_name, config=config, dir=str(run_dir), resume="allow",
                                         id=run_name.replace("/", "-") or None)

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"{record['kind']}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}
        if self._tb is not None and "step" in record:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, record["step"])
        if self._wandb is not None and "step" in record:
            self._wandb.log(scalars, step=record["step"])

    def truncate(self, step: int) -> None:
        """Keep only the train/val records up to ``step`` (the checkpoint being resumed)."""
        rows = read_metrics(self.path)
        keep = [r for r in rows if r.get("kind") in ("train", "val") and r["step"] <= step]
        if len(keep) != len(rows):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class Meter:
    """Training statistics over the current logging window and over the whole run.

    A window's seconds are exact because it ends with a host sync (the NaN check of its losses);
    its step time is their mean. The run's step time is the median over windows after the first
    fifth (warm-up effects), its tokens/s the totals over the timed steps.
    """

    EMPTY = {"loss": 0.0, "correct": 0, "rows": 0, "steps": 0, "real": 0, "padded": 0, "seconds": 0.0}

    def __init__(self) -> None:
        self.window = dict(self.EMPTY)
        self.totals = {"real": 0, "padded": 0, "seconds": 0.0}
        self.window_ms: list[float] = []

    def add(self, loss: float, correct: float, rows: int, real: int, padded: int) -> None:
        w = self.window
        w["loss"] += loss * rows
        w["correct"] += int(round(correct))
        w["rows"] += rows
        w["steps"] += 1
        w["real"] += real
        w["padded"] += padded

    def close_window(self) -> dict | None:
        """The window's record fields (None if it is empty); starts a new window."""
        w = self.window
        if not w["steps"]:
            return None
        ms = 1e3 * w["seconds"] / w["steps"]
        self.window_ms.append(ms)
        for k in self.totals:
            self.totals[k] += w[k]
        self.window = dict(self.EMPTY)
        return {"loss": w["loss"] / max(w["rows"], 1), "acc": w["correct"] / max(w["rows"], 1), "step_ms": ms,
                "tokens_per_s": w["real"] / max(w["seconds"], 1e-9),
                "padded_tokens_per_s": w["padded"] / max(w["seconds"], 1e-9),
                "pad_fraction": 1.0 - w["real"] / max(w["padded"], 1)}

    def summary(self) -> dict:
        t = self.totals
        steady = self.window_ms[len(self.window_ms) // 5:] or self.window_ms
        return {"tokens_per_s": t["real"] / max(t["seconds"], 1e-9),
                "padded_tokens_per_s": t["padded"] / max(t["seconds"], 1e-9),
                "pad_fraction": 1.0 - t["real"] / max(t["padded"], 1),
                "step_ms_median": statistics.median(steady) if steady else None}


def plot_curves(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Loss and accuracy vs step (train and val) from ``metrics.jsonl`` into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_path)
    if not rows:
        return None
    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for kind, style in (("train", "-"), ("val", "o-")):
        pts = [r for r in rows if r.get("kind") == kind]
        if not pts:
            continue
        steps = [r["step"] for r in pts]
        axes[0].plot(steps, [r["loss"] for r in pts], style, label=kind, markersize=3)
        axes[1].plot(steps, [r["acc"] for r in pts], style, label=kind, markersize=3)
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.88, wspace=0.22)  # (tight_layout draws twice)
    fig.savefig(out, dpi=90)
    return out
