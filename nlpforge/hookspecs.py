"""The plugin contract: the hooks an nlpforge plugin may implement.

A plugin is a module (or object) registered under the ``nlpforge`` entry-point group.
It implements any of these hooks with ``@nlpforge.hookimpl``; the argument names must match.
"""

from __future__ import annotations

from typing import Callable

import click
import pluggy

hookspec = pluggy.HookspecMarker("nlpforge")

#: Version of the hook API described in this module. A plugin may declare the
#: version it was written for as ``NLPFORGE_PLUGIN_API = 1`` in its module.
PLUGIN_API_VERSION = 1


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register task classes: call ``register(TaskSubclass)`` once per task.

    :param register: callback taking a :class:`nlpforge.Task` subclass; it validates the class
        and raises :class:`nlpforge.errors.PluginError` when the task id is already taken.
    All implementations are called; return values are ignored.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``nlpforge`` command line: ``cli.add_command(cmd)``.

    :param cli: the top-level click group. Import heavy modules inside the command body,
        never at module level, so ``nlpforge --help`` stays instant.
    All implementations are called; return values are ignored.
    """
