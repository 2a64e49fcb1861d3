"""Dataclass fields with help strings, for every config schema in the zoo.

Kept free of torch so that the task and data modules (and the CLI's fast commands) can declare
their configs without importing it.
"""

from __future__ import annotations

import copy
from dataclasses import field
from typing import Any

__all__ = ["config_field"]


def config_field(default: Any, help: str, **metadata: Any):  # noqa: A002 - the field's help string
    """A dataclass field with a ``help`` string (shown by ``zoo describe``, the YAML comments and
    ``--help``); mutable defaults (lists, dicts) are copied per instance. Extra ``metadata`` keys
    mark roles, e.g. ``view=True`` for data fields that do not change the cached arrays."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})
