"""Compile ahead: run every shape a training run will see once, before the first step.

Batches come in a bounded set of shapes (``BatchSource.shapes()``: one per length bucket, the batch
always filled to its full size), so running each shape once, forward and backward in training
mode and forward in evaluation mode, triggers every compilation (FlexAttention, compiled block
masks) up front: the steady state then never recompiles (the trainer counts and reports it).
"""

from __future__ import annotations

import torch

__all__ = ["compile_count", "compile_shapes"]


def compile_count() -> int:
    """Graphs compiled by torch.compile in this process so far (FlexAttention, compiled block masks)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover
        return 0
    return int(counters["stats"]["unique_graphs"])


def compile_shapes(train_model, eval_model, source, device: torch.device, autocast, batch_sizes) -> None:
    """One step of every shape of ``source`` for each ``(batch size, training?)`` in ``batch_sizes``,
    under forked RNG states (dropout draws do not shift the run's random stream)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for L in source.shapes():
            for bs, train in batch_sizes:
                inputs, masks = source.probe(bs, L)
                if train:
                    train_model.train()
                    with autocast():
                        train_model(inputs, masks).float().sum().backward()
                else:
                    eval_model.eval()
                    with torch.no_grad(), autocast():
                        eval_model(inputs, masks)
