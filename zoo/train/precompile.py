"""Compile ahead: run every shape a training run will see once, before the first step.

Batches come in a bounded set of shapes (``BatchSource.shapes()``: one per length bucket, the batch
always filled to its full size), so running each shape once, forward and backward in training
mode and forward in evaluation mode, triggers every compilation (FlexAttention, compiled block
masks) up front: the steady state then never recompiles (the trainer counts and reports it).
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from zoo.functional.call import exception_line
from zoo.functional.capture import graph_safe
from zoo.models.kinds import get_kind

__all__ = ["capture_shapes", "compile_count", "compile_shapes", "kernels_used"]


def compile_count() -> int:
    """Graphs compiled by torch.compile in this process so far (FlexAttention, compiled block masks)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover
        return 0
    return int(counters["stats"]["unique_graphs"])


def compile_shapes(train_model, eval_model, source, device: torch.device, autocast, batch_sizes,
                   kind=None) -> None:
    """One step of every shape of ``source`` for each ``(batch size, training?)`` in ``batch_sizes``,
    under forked RNG states (dropout draws do not shift the run's random stream); ``kind`` (the
    task kind) makes labels of the right shape (a token head projects only at labelled positions)."""
    devices = [device] if device.type == "cuda" else []
    kind = get_kind(kind or "classify")
    with torch.random.fork_rng(devices=devices):
        for L in source.shapes():
            for bs, train in batch_sizes:
                inputs, masks = source.probe(bs, L)
                labels = kind.probe_labels(bs, L, source.device)
                if train:
                    train_model.train()
                    with autocast():
                        train_model(inputs, masks, labels).float().sum().backward()
                else:
                    eval_model.eval()
                    with torch.no_grad(), autocast():
                        eval_model(inputs, masks, labels)


def capture_shapes(graphs, source, batch_size: int, kind=None) -> str | None:
    """Capture the training step of every shape of ``source`` (:class:`zoo.train.step.GraphedSteps`);
    None, or why a capture failed (also warned once; the graphs captured so far are dropped).
    ``kind``: the task kind, whose ``probe_labels`` have the shape of its labels (``(B,)`` or ``(B, L)``)."""
    kind = get_kind(kind or "classify")
    try:
        for L in source.shapes():
            inputs, masks = source.probe(batch_size, L)
            labels = kind.probe_labels(batch_size, L, source.device)
            graphs.capture(inputs, masks, labels, torch.ones(batch_size, device=source.device))
    except RuntimeError as exc:
        graphs.graphs.clear()
        why = exception_line(exc)
        warnings.warn(f"zoo: the training step cannot be captured as a CUDA graph ({why}); it runs eagerly",
                      RuntimeWarning, stacklevel=2)
        return why
    return None


def kernels_used(model, source, batch_size: int, device: torch.device, dtype: torch.dtype, graphs: bool) -> dict:
    """The kernel the first mixer runs at the largest shape of ``source``: in training (the captured
    step's, under ``graph_safe`` when ``graphs``) and in inference."""
    shape = (batch_size, max(source.shapes()), model.encoder.config.d_model)
    x = torch.empty((), dtype=dtype, device=device).expand(shape)  # the shape, dtype and device; no memory
    mask = torch.zeros((), dtype=torch.bool, device=device).expand(shape[:2]) if source.ds.has_padding else None
    mixer = model.mixers()[0]
    with graph_safe() if graphs else contextlib.nullcontext():
        training = mixer.kernel_name(x, mask, requires_grad=True)
    return {"training": training, "inference": mixer.kernel_name(x, mask, requires_grad=False)}
