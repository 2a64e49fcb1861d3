"""The tasks: the LRA tasks one module each, the synthetic ones (MQAR, MAD) in ``synthetic``;
every import line below registers the task(s) beside it.

    from zoo.data.tasks import get_task
    spec = get_task("listops")           # a TaskSpec: config, classes, vocabulary, files, builder, generator
    cfg = spec.make_config(["max_len=1000"])
"""

from zoo.data.tasks import (
    image,  # noqa: E402,F401  image
    listops,  # noqa: E402,F401  listops
    pathfinder,  # noqa: E402,F401  pathfinder, pathx
    retrieval,  # noqa: E402,F401  retrieval
    synthetic,  # noqa: E402,F401  mqar and MAD's six tasks (generated, per-token labels)
    text,  # noqa: E402,F401  text
)
from zoo.data.tasks.registry import GeneratorSpec, TaskSpec, get_task, register_task, task_names

__all__ = ["GeneratorSpec", "TaskSpec", "get_task", "register_task", "task_names"]
