"""Temporary plugin registration for tests: a task class or plugin module is known to nlpforge
for one test, and the previous plugin manager comes back afterwards, even when the test fails.

The plugin goes through ``PluginManager.register`` — the checks an installed plugin meets at
load time (API version, hook names, task ids and conflicts) — so what a test sees is what a
user with the distribution installed sees. No torch here.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Any, Iterator

import nlpforge
from nlpforge import plugins as _plugins
from nlpforge.plugins import PluginManager, distribution_of
from nlpforge.tasks import Task


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


def plugin_registration(plugin: Any) -> tuple[Any, str, str, str]:
    """(plugin object, name, distribution, version) for a Task subclass, a module or any
    object with hooks: the name an installed one would have."""
    if isinstance(plugin, type) and issubclass(plugin, Task):
        module_name, name = plugin.__module__, getattr(plugin, "id", plugin.__name__)
        plugin = task_plugin(plugin)
    elif isinstance(plugin, types.ModuleType):
        module_name = plugin.__name__
        name = module_name.rsplit(".", 1)[-1].replace("_", "-")
    else:
        module_name = getattr(plugin, "__module__", None) or "local"
        name = type(plugin).__name__.lower()
    distribution, version = distribution_of(module_name)
    return plugin, name, distribution, version


@contextlib.contextmanager
def temporary_plugins(*plugins: Any, installed: bool = True,
                      env: dict[str, str] | None = None) -> Iterator[PluginManager]:
    """Make ``plugins`` (Task subclasses, plugin modules or hook objects) known to nlpforge
    inside the ``with`` block; the previous process-wide plugin manager is restored on exit.

    ``installed=False`` hides the installed plugins (the built-ins included), so the test sees
    only its own. ``env`` replaces the environment the manager reads (``NLPFORGE_*_PLUGINS``).
    Yields the loaded manager; its load errors are reported as for installed plugins.
    """
    entry_points = None if installed else []
    manager = PluginManager(entry_points=entry_points, env=env).load()
    for plugin in plugins:
        obj, name, distribution, version = plugin_registration(plugin)
        manager.register(obj, name, distribution, version)
    previous = _plugins._manager
    _plugins.reset_plugin_manager(manager)
    try:
        yield manager
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
