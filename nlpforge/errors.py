"""Errors a user can hit. The CLI prints them without a traceback and exits non-zero."""

from __future__ import annotations


class NlpforgeError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""

    exit_code = 1


class UsageError(NlpforgeError):
    """A wrong argument or option value."""

    exit_code = 2


class DataError(NlpforgeError):
    """A data file that cannot be read, or a row that does not fit the task."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)
        self.path, self.line, self.field = path, line, field


class ManifestError(NlpforgeError):
    """A missing, corrupt or incompatible nlpforge.json."""


class ModelDirError(NlpforgeError):
    """A run or export dir that is missing files, unreadable, or of the wrong kind."""


class PluginError(NlpforgeError):
    """A plugin that failed to load or register, or a task that no plugin provides."""


class ExportError(NlpforgeError):
    """An export that failed, including one whose outputs differ from PyTorch."""
