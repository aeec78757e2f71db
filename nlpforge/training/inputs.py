"""What a run trains on: its task and rows, from a registered task id and data files (``nlpforge
train``) or given in Python (a Task instance or class, rows in memory).

A task class that no plugin registers is recorded in the manifest under a local stand-in
plugin (``local_plugin``); the run dir then loads, exports and predicts wherever a plugin
registers that class's id.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from nlpforge.data import read_dataset
from nlpforge.errors import DataError, UsageError
from nlpforge.plugins import PluginInfo, distribution_of, get_plugin_manager
from nlpforge.tasks import Task
from nlpforge.training.config import TrainConfig

#: A task given in Python: an instance (with its labels and options) or a class (built with
#: the config's ``labels`` and ``task_options``).
TaskArg = Task | type[Task]


def python_config(config: TrainConfig, task: TaskArg | None, train_rows: Any,
                  validation_rows: Any) -> TrainConfig:
    """The config of a run whose task or rows come from Python: a copy with ``task`` set to
    the task's id, checked (``task``/``train``/``validation`` are not needed where the
    argument gives them). Refuses a setting given twice."""
    given = set()
    if task is not None:
        cls = task if isinstance(task, type) else type(task)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UsageError(f"train(task=...) takes a Task instance or subclass, got {task!r}")
        cls.check_class()
        if config.task and config.task != cls.id:
            raise UsageError(f"config.task is '{config.task}' but the task given is "
                             f"'{cls.id}'; leave config.task empty")
        if not isinstance(task, type) and (config.labels is not None or config.task_options):
            raise UsageError("config.labels and config.task_options go to the task class; "
                             "with a task instance, give them to its constructor instead")
        config = dataclasses.replace(config, task=cls.id)
        given.add("task")
    for name, rows in (("train", train_rows), ("validation", validation_rows)):
        if rows is None:
            continue
        if getattr(config, name):
            raise UsageError(f"both config.{name} ({getattr(config, name)}) and {name}_rows "
                             f"are given; pass one of them")
        given.add(name)
    config.check(given)
    return config


def resolve_task(config: TrainConfig, task: TaskArg | None) -> tuple[Task, PluginInfo]:
    """The run's task instance and the plugin the manifest records for it."""
    manager = get_plugin_manager()
    if task is None:
        cls = manager.get_task(config.task)
        return cls(labels=config.labels, **config.task_options), manager.plugin_of(config.task)
    cls = task if isinstance(task, type) else type(task)
    instance = cls(labels=config.labels, **config.task_options) if task is cls else task
    entry = manager.tasks.get(cls.id)
    if entry is not None and entry.task is cls:
        return instance, entry.plugin
    if cls.id in manager.conflicts:
        manager.get_task(cls.id)  # raises, naming both plugins
    if entry is not None:
        raise UsageError(f"task class {cls.__module__}.{cls.__qualname__} has the id "
                         f"'{cls.id}', which the plugin {entry.plugin.describe()} registers "
                         f"for {entry.task.__module__}.{entry.task.__qualname__}; a run dir "
                         f"names its task by id, so give the class an id of its own")
    return instance, local_plugin(cls)


def local_plugin(cls: type[Task]) -> PluginInfo:
    """A stand-in for the plugin of a task class no plugin registers: named by the task id,
    from the installed distribution that ships the class's package (with its version), else
    ``local:<package>`` with version ``unknown`` (the manifest then requires no version)."""
    distribution, version = distribution_of(cls.__module__)
    return PluginInfo(cls.id, distribution, version, cls.__module__, tasks=[cls.id])


def load_rows(rows: Iterable[dict] | None, path: str | None, task: Task,
              name: str) -> list[dict] | None:
    """Rows given in Python (checked against ``task``; errors name ``name`` and the row's
    number, from 1), else the rows of the data file ``path``, else None."""
    if rows is None:
        return read_dataset(path, task).rows if path else None
    checked = []
    for number, row in enumerate(rows, start=1):
        task.check_row(row, name, number, training=True)
        checked.append(row)
    if not checked:
        raise DataError("no rows", name)
    return checked
