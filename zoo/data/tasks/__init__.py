"""The LRA tasks, one module each; every import line below registers the task(s) beside it.

    from zoo.data.tasks import get_task
    spec = get_task("listops")           # a TaskSpec: config, classes, vocabulary, files, builder, generator
    cfg = spec.make_config(["max_len=1000"])
"""

from zoo.data.tasks.registry import GeneratorSpec, TaskSpec, get_task, register_task, task_names

from zoo.data.tasks import listops  # noqa: E402,F401  listops
from zoo.data.tasks import text  # noqa: E402,F401  text
from zoo.data.tasks import retrieval  # noqa: E402,F401  retrieval
from zoo.data.tasks import image  # noqa: E402,F401  image
from zoo.data.tasks import pathfinder  # noqa: E402,F401  pathfinder, pathx

__all__ = ["GeneratorSpec", "TaskSpec", "get_task", "register_task", "task_names"]
