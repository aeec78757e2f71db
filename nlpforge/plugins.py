"""Finding plugins: entry points of the ``nlpforge`` group, loaded one by one, errors isolated.

Environment variables:

- ``NLPFORGE_LOAD_PLUGINS=a,b``: load only these plugins (entry-point or distribution names).
- ``NLPFORGE_BLOCK_PLUGINS=a,b``: never load these (built-in ones included).
- ``NLPFORGE_STRICT_PLUGINS=1``: a plugin that fails to load or register is an error.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from nlpforge import hookspecs
from nlpforge.errors import PluginError
from nlpforge.tasks import Task

ENTRY_POINT_GROUP = "nlpforge"
log = logging.getLogger("nlpforge")


@dataclass
class PluginInfo:
    """One entry point of the ``nlpforge`` group and what became of it."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None
    tasks: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"'{self.name}' from {self.distribution} {self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version,
            "module": self.module, "status": self.status, "error": self.error,
            "tasks": self.tasks, "commands": self.commands,
        }


@dataclass
class TaskEntry:
    task: type[Task]
    plugin: PluginInfo


def _names(value: str | None) -> set[str] | None:
    if value is None or not value.strip():
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _strict(env: dict[str, str]) -> bool:
    return env.get("NLPFORGE_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on")


class PluginManager:
    """Loads plugins once and keeps the task registry."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None,
                 env: dict[str, str] | None = None):
        self._entry_points = entry_points
        self._env = dict(os.environ if env is None else env)
        self.pm = pluggy.PluginManager("nlpforge")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.conflicts: dict[str, list[PluginInfo]] = {}
        self._tasks: dict[str, TaskEntry] = {}
        self._loaded = False

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> "PluginManager":
        if self._loaded:
            return self
        self._loaded = True
        allow = _names(self._env.get("NLPFORGE_LOAD_PLUGINS"))
        block = _names(self._env.get("NLPFORGE_BLOCK_PLUGINS")) or set()
        eps = self._entry_points
        if eps is None:
            eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        seen: dict[str, PluginInfo] = {}
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else "unknown",
                              dist.version if dist else "unknown", ep.value)
            other = seen.get(info.name) or seen.get(_top_module(info.module))
            if other is not None and (other.name, other.module, other.distribution) == \
                    (info.name, info.module, info.distribution):
                continue  # the same distribution seen twice on sys.path
            self.plugins.append(info)
            if other is not None:
                self._fail(info, "failed to load: " + _taken(info, other), PluginError(info.name))
                continue
            seen[info.name] = seen[_top_module(info.module)] = info
            names = {info.name, info.distribution}
            if (allow is not None and not names & allow) or names & block:
                info.status = "disabled"
                continue
            try:
                plugin = ep.load()
            except PluginError as exc:  # says what to do itself
                self._fail(info, f"failed to load: {exc}", exc)
                continue
            except Exception as exc:  # a broken plugin must not stop the others
                self._fail(info, f"failed to load: {_short(exc)}; reinstall or upgrade it "
                                 f"(pip install -U '{info.distribution}') or skip it with "
                                 f"NLPFORGE_BLOCK_PLUGINS={info.name}", exc)
                continue
            self._add(info, plugin)
        return self

    def register(self, plugin: Any, name: str, distribution: str = "local",
                 version: str = "0.0.0") -> PluginInfo:
        """Register a plugin object in this process, as an installed one is registered (API
        version, hook names, task ids checked; errors isolated and reported the same way).
        Tests and embedding apps use it; ``unregister(name)`` undoes it."""
        self.load()
        if any(p.name == name and p.status == "loaded" for p in self.plugins):
            raise PluginError(f"a plugin named '{name}' is registered already")
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        info = PluginInfo(name, distribution, version, module)
        self.plugins.append(info)
        self._add(info, plugin)
        return info

    def unregister(self, name: str) -> None:
        """Forget the plugin ``name`` and its tasks."""
        self.load()
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.plugins = [p for p in self.plugins if p.name != name]
        self._tasks = {k: e for k, e in self._tasks.items() if e.plugin.name != name}

    def _add(self, info: PluginInfo, plugin: Any) -> None:
        """Check a loaded plugin object, register its hooks, then its tasks."""
        try:
            self._check_api(info, plugin)
            self.pm.register(plugin, name=info.name)
            self._check_hooks(info, plugin)
        except PluginError as exc:
            self._fail(info, f"failed to load: {exc}", exc)
            return
        except Exception as exc:
            self._fail(info, f"failed to load: {_short(exc)}", exc)
            return
        self._register_tasks(info)

    def _check_hooks(self, info: PluginInfo, plugin: Any) -> None:
        """pluggy's own check that every hook implementation has a spec; a misspelt hook
        (``register_task``) is refused naming the hook that exists."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(name=info.name)
            known = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "nlpforge_spec")]
            unknown = [n for n in dir(plugin) if not n.startswith("_") and n not in known
                       and hasattr(getattr(plugin, n, None), "nlpforge_impl")]
            hints = [f"'{n}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                     for n in unknown for close in [difflib.get_close_matches(n, known, 1)]]
            raise PluginError(f"it implements {', '.join(hints) or 'a hook'}, which is not an "
                              f"nlpforge hook (hooks: {', '.join(known)})") from None

    def _check_api(self, info: PluginInfo, plugin: Any) -> None:
        wanted = getattr(plugin, "NLPFORGE_PLUGIN_API", hookspecs.PLUGIN_API_VERSION)
        have = hookspecs.PLUGIN_API_VERSION
        if wanted == have:
            return
        if isinstance(wanted, int) and wanted < have:  # the plugin is older than nlpforge
            todo = (f"upgrade it: pip install -U '{info.distribution}' (or use an nlpforge "
                    f"release with plugin API {wanted})")
        elif isinstance(wanted, int):  # the plugin is newer than nlpforge
            todo = (f"upgrade nlpforge: pip install -U nlpforge (or install a release of "
                    f"{info.distribution} made for plugin API {have})")
        else:
            todo = f"NLPFORGE_PLUGIN_API must be an integer such as {have}"
        raise PluginError(f"it is written for plugin API {wanted}, this nlpforge has plugin API "
                          f"{have}; {todo}")

    def _register_tasks(self, info: PluginInfo) -> None:
        def register(task: type[Task]) -> None:
            if not (isinstance(task, type) and issubclass(task, Task)):
                raise PluginError(f"register() takes a Task subclass, got {task!r}")
            task.check_class()
            other = self._tasks.get(task.id)
            if other is not None or task.id in self.conflicts:
                owners = self.conflicts.setdefault(task.id, [other.plugin] if other else [])
                owners.append(info)
                self._tasks.pop(task.id, None)
                raise PluginError(self._conflict_message(task.id))
            self._tasks[task.id] = TaskEntry(task, info)
            info.tasks.append(task.id)

        for impl in self.pm.hook.register_tasks.get_hookimpls():
            if impl.plugin_name != info.name:
                continue
            try:
                impl.function(register=register)
            except Exception as exc:
                self._fail(info, f"failed to register tasks: {_short(exc)}", exc)

    def _conflict_message(self, task_id: str) -> str:
        owners = " and ".join(p.describe() for p in self.conflicts[task_id])
        return (f"task '{task_id}' is registered by two plugins: {owners}; block one with "
                f"NLPFORGE_BLOCK_PLUGINS=<name> or uninstall it")

    def _fail(self, info: PluginInfo, message: str, exc: BaseException) -> None:
        info.status = "failed"
        info.error = message if info.error is None else f"{info.error}; {message}"
        full = f"plugin {info.describe()} {message}"
        log.debug("".join(traceback.format_exception(exc)))
        if _strict(self._env):
            raise PluginError(full + " (NLPFORGE_STRICT_PLUGINS is set)") from exc
        log.warning("%s; run 'nlpforge plugins' for details", full)

    # -- queries ----------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, TaskEntry]:
        self.load()
        return dict(self._tasks)

    def get_task(self, task_id: str) -> type[Task]:
        self.load()
        if task_id in self.conflicts:
            raise PluginError(self._conflict_message(task_id))
        entry = self._tasks.get(task_id)
        if entry is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            hint = ""
            if any(p.status == "failed" for p in self.plugins):
                hint = "; some plugins failed to load, see 'nlpforge plugins'"
            raise PluginError(f"unknown task '{task_id}' (installed tasks: {known}){hint}")
        return entry.task

    def plugin_of(self, task_id: str) -> PluginInfo:
        self.get_task(task_id)
        return self._tasks[task_id].plugin

    def add_commands(self, cli: Any) -> None:
        """Let every loaded plugin add its commands to the click group."""
        self.load()
        for impl in self.pm.hook.register_commands.get_hookimpls():
            info = next(p for p in self.plugins if p.name == impl.plugin_name)
            before = set(cli.commands)
            try:
                impl.function(cli=cli)
            except Exception as exc:
                self._fail(info, f"failed to add commands: {_short(exc)}", exc)
            info.commands.extend(sorted(set(cli.commands) - before))


def distribution_of(module_name: str) -> tuple[str, str]:
    """(name, version) of the installed distribution that ships ``module_name``'s top-level
    package, else (``local:<package>``, ``unknown``)."""
    top = module_name.split(".")[0]
    for name in metadata.packages_distributions().get(top, []):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return f"local:{top}", "unknown"


def _top_module(value: str) -> str:
    """The top-level module an entry point's value imports (``pkg.mod:attr`` → ``pkg``)."""
    return "module:" + value.split(":")[0].split(".")[0]


def _taken(info: PluginInfo, other: PluginInfo) -> str:
    what = (f"the plugin name '{info.name}'" if other.name == info.name
            else f"the module {_top_module(info.module)[len('module:'):]}")
    return (f"{what} is taken by {other.describe()}; only one of them can load. Rename the "
            f"plugin (its entry point and package), or uninstall one, or skip it with "
            f"NLPFORGE_BLOCK_PLUGINS={info.name}")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager.load()


def reset_plugin_manager(manager: PluginManager | None = None) -> None:
    """Replace the process-wide manager (tests, or after installing a plugin)."""
    global _manager
    _manager = manager


def get_task(task_id: str) -> type[Task]:
    return get_plugin_manager().get_task(task_id)
