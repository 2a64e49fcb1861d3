"""Long Range Arena and synthetic (MQAR, MAD) data: the task registry, loaders for the official files, tokenisers,
the cache, and offline generators.

    from zoo.data import prepare
    data = prepare("listops", "~/lra")          # locate, build or reuse the cache
    train = data.dataset("train")               # (tokens, label); a pair task: (tokens1, tokens2, label)
    mask = train.padding_mask(tokens)           # True = padding (pad id 0); None for pixel tasks
    zoo.data.get_task("pathx")                  # the TaskSpec: config, classes, files, builder, generator

    x, y = zoo.data.synthetic("mqar", "train", seed=0)   # synthetic tasks: (N, L) arrays, -100 = ignored

See docs/data.md for the layout searched, encodings, splits, the manifest and the generators.
"""

from zoo.data.dataset import ArrayDataset, LRADataset, collate, padding_mask
from zoo.data.errors import DataWarning, EmptySplitError, MalformedRowError, TaskNotFoundError, default_cache_dir
from zoo.data.generators.listops import ListOpsGenConfig, generate_listops, generate_listops_examples
from zoo.data.locate import locate, locate_all
from zoo.data.prepare import PreparedTask, prepare
from zoo.data.synth import synthetic, synthetic_tasks
from zoo.data.tasks import TaskSpec, get_task, register_task, task_names
from zoo.data.tokenizers import (
    BYTE_VOCAB_SIZE,
    LISTOPS_VOCAB,
    PAD_ID,
    ByteTokenizer,
    ListOpsTokenizer,
    grayscale,
    pixel_values,
)

__all__ = [
    "BYTE_VOCAB_SIZE",
    "LISTOPS_VOCAB",
    "PAD_ID",
    "ArrayDataset",
    "ByteTokenizer",
    "DataWarning",
    "EmptySplitError",
    "LRADataset",
    "ListOpsGenConfig",
    "ListOpsTokenizer",
    "MalformedRowError",
    "PreparedTask",
    "TaskNotFoundError",
    "TaskSpec",
    "collate",
    "default_cache_dir",
    "generate_listops",
    "generate_listops_examples",
    "get_task",
    "grayscale",
    "locate",
    "locate_all",
    "padding_mask",
    "pixel_values",
    "prepare",
    "register_task",
    "synthetic",
    "synthetic_tasks",
    "task_names",
]
