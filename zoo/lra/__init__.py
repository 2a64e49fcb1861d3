"""Long Range Arena: loaders for the official files, tokenisers, caches and offline generators.

    from zoo.lra import prepare
    data = prepare("listops", "~/lra")          # locate, build or reuse the cache
    train = data.dataset("train")               # (tokens, label); retrieval: (tokens1, tokens2, label)
    mask = train.padding_mask(tokens)           # True = padding (pad id 0); None for pixel tasks

See docs/data.md for the layout searched, encodings, splits, the manifest and the generators.
"""

from zoo.lra.common import (
    TASKS,
    DataWarning,
    EmptySplitError,
    MalformedRowError,
    TaskNotFoundError,
    default_cache_dir,
)
from zoo.lra.config import ImageConfig, ListOpsConfig, PathfinderConfig, RetrievalConfig, TextConfig, make_config
from zoo.lra.dataset import LRADataset, collate, padding_mask
from zoo.lra.listops_gen import ListOpsGenConfig, generate_listops, generate_listops_examples
from zoo.lra.locate import locate, locate_all
from zoo.lra.prepare import PreparedTask, prepare
from zoo.lra.tokenizers import (
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
    "TASKS",
    "ByteTokenizer",
    "DataWarning",
    "EmptySplitError",
    "ImageConfig",
    "LRADataset",
    "ListOpsConfig",
    "ListOpsGenConfig",
    "ListOpsTokenizer",
    "MalformedRowError",
    "PathfinderConfig",
    "PreparedTask",
    "RetrievalConfig",
    "TaskNotFoundError",
    "TextConfig",
    "collate",
    "default_cache_dir",
    "generate_listops",
    "generate_listops_examples",
    "grayscale",
    "locate",
    "locate_all",
    "make_config",
    "padding_mask",
    "pixel_values",
    "prepare",
]
