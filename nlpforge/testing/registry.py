"""Temporary plugin registration for tests: a task class or plugin module is known to nlpforge
for one test, and the previous plugin manager comes back afterwards, even when the test fails.

The plugin is registered the way an installed one is (through the plugin manager's entry-point
loading, with API-version check and conflict detection), so what a test sees is what a user
with the distribution installed sees. No torch here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterator

import nlpforge
from nlpforge import plugins as _plugins
from nlpforge.plugins import ENTRY_POINT_GROUP, PluginManager
from nlpforge.tasks import Task


@dataclass(frozen=True)
class _Distribution:
    name: str
    version: str


@dataclass(frozen=True)
class LocalEntryPoint:
    """An entry point whose object is already in memory (what ``metadata.EntryPoint`` looks
    like to the plugin manager: ``name``, ``value``, ``dist``, ``load()``)."""

    name: str
    value: str
    dist: _Distribution
    plugin: Any

    def load(self) -> Any:
        return self.plugin


def task_plugin(*tasks: type[Task]) -> types.SimpleNamespace:
    """A plugin object whose ``register_tasks`` hook registers ``tasks``."""

    @nlpforge.hookimpl
    def register_tasks(register):
        for task in tasks:
            register(task)

    return types.SimpleNamespace(register_tasks=register_tasks,
                                 NLPFORGE_PLUGIN_API=_plugin_api(tasks))


def _plugin_api(tasks: tuple[type[Task], ...]) -> int:
    """The API version the tasks' modules declare (the current one when they declare none)."""
    from nlpforge.hookspecs import PLUGIN_API_VERSION

    for task in tasks:
        module = sys.modules.get(task.__module__)
        if module is not None and hasattr(module, "NLPFORGE_PLUGIN_API"):
            return module.NLPFORGE_PLUGIN_API
    return PLUGIN_API_VERSION


def _distribution_of(module_name: str) -> _Distribution:
    """The installed distribution that ships ``module_name``'s top-level package, if any."""
    top = module_name.split(".")[0]
    for name in metadata.packages_distributions().get(top, []):
        try:
            return _Distribution(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return _Distribution(f"local:{top}", "0.0.0")


def entry_point_for(plugin: Any, name: str | None = None,
                    distribution: str | None = None, version: str | None = None) -> LocalEntryPoint:
    """An in-memory entry point for a Task subclass, a module or any object with hooks."""
    if isinstance(plugin, type) and issubclass(plugin, Task):
        module_name = plugin.__module__
        value = f"{module_name}:{plugin.__qualname__}"
        default_name = getattr(plugin, "id", plugin.__name__)
        plugin = task_plugin(plugin)
    elif isinstance(plugin, types.ModuleType):
        module_name = value = plugin.__name__
        default_name = module_name.rsplit(".", 1)[-1].replace("_", "-")
    else:
        module_name = getattr(plugin, "__module__", None) or "local"
        value = f"{module_name}:{type(plugin).__qualname__}"
        default_name = type(plugin).__name__.lower()
    dist = _distribution_of(module_name)
    if distribution is not None:
        dist = _Distribution(distribution, version or dist.version)
    return LocalEntryPoint(name or default_name, value, dist, plugin)


def installed_entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


@contextlib.contextmanager
def temporary_plugins(*plugins: Any, installed: bool = True,
                      env: dict[str, str] | None = None) -> Iterator[PluginManager]:
    """Make ``plugins`` (Task subclasses, plugin modules or hook objects) known to nlpforge
    inside the ``with`` block; the previous process-wide plugin manager is restored on exit.

    ``installed=False`` hides the installed plugins (the built-ins included), so the test sees
    only its own. ``env`` replaces the environment the manager reads (``NLPFORGE_*_PLUGINS``).
    Yields the loaded manager; its load errors are reported as for installed plugins.
    """
    eps: list[Any] = installed_entry_points() if installed else []
    eps += [p if isinstance(p, LocalEntryPoint) else entry_point_for(p) for p in plugins]
    previous = _plugins._manager
    manager = PluginManager(entry_points=eps, env=env)
    _plugins.reset_plugin_manager(manager)
    try:
        yield manager.load()
    finally:
        _plugins.reset_plugin_manager(previous)


class PluginRegistrar:
    """What the ``nlpforge_plugins`` fixture gives a test: ``register(...)`` as often as needed;
    every registration is undone when the test ends."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._plugins: list[Any] = []
        self.manager: PluginManager | None = None

    def register(self, *plugins: Any, installed: bool = True) -> PluginManager:
        """Register more plugins (on top of the ones registered before in this test)."""
        self._plugins.extend(plugins)
        self.close()
        self.manager = self._stack.enter_context(
            temporary_plugins(*self._plugins, installed=installed))
        return self.manager

    def close(self) -> None:
        self._stack.close()
        self.manager = None
