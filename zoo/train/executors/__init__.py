"""Where a comparison's runs execute: executors declared by name, like the layer registry.

An executor is a module here with a ``run(todo, folder, execution, progress) -> dict[str, str]``
function that trains the unfinished :class:`~zoo.train.compare.GridRun` s into
``folder/runs/<run name>`` and returns ``{run name: one-line reason}`` for the runs that failed
(it raises :class:`DiskError` when the disk is the cause: the grid then stops). A new executor is
one file with ``@register("name")`` (from ``zoo.train.executors.base``) on its ``run`` and one
import line below.
"""

from zoo.train.executors.base import AUTO, EXECUTORS, DiskError, check_executor, disk_error, one_line, register, resolve

__all__ = ["AUTO", "EXECUTORS", "DiskError", "check_executor", "disk_error", "register", "resolve", "one_line"]

from zoo.train.executors import (
                                      local,  # noqa: E402,F401  local
                                      processes,  # noqa: E402,F401  processes
                                      submitit,  # noqa: E402,F401  submitit
)
