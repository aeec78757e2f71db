"""Entry point: a click group whose commands load lazily, plus plugin commands."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from nlpforge.version import __version__
from nlpforge.errors import NlpforgeError
from nlpforge.lazy import import_object

#: Built-in commands: name → "module:function", imported on first use.
COMMANDS = {
    "train": "nlpforge.cli.train:train",
    "export": "nlpforge.cli.export:export",
    "inspect": "nlpforge.cli.inspect:inspect",
    "tune": "nlpforge.cli.tune:tune",
    "predict": "nlpforge.cli.predict:predict",
    "evaluate": "nlpforge.cli.evaluate:evaluate",
    "generate": "nlpforge.cli.generate:generate",
    "plot": "nlpforge.cli.plot:plot",
    "tasks": "nlpforge.cli.listing:tasks",
    "plugins": "nlpforge.cli.listing:plugins",
    "serve": "nlpforge.cli.serve:serve",
    "new-plugin": "nlpforge.cli.new_plugin:new_plugin",
}


class LazyGroup(click.Group):
    """Built-in commands are imported when invoked; plugin commands are added at start."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._plugins_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from nlpforge.plugins import get_plugin_manager

        get_plugin_manager().add_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return import_object(COMMANDS[name])
        self._add_plugin_commands()
        return self.commands.get(name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NlpforgeError as exc:
            logging.getLogger("nlpforge").debug("error", exc_info=True)
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.levelno < logging.INFO:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _setup_logging(verbose: int) -> None:
    logger = logging.getLogger("nlpforge")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Format())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nlpforge")
@click.option("-v", "--verbose", count=True, help="Show debug logs and tracebacks.")
def cli(verbose: int) -> None:
    """Fine-tune transformers for NLP tasks, export them to ONNX, run them without torch.

    \b
    nlpforge train    --task text-classification --model DIR --train FILE --output RUN
    nlpforge export   RUN --output EXPORT
    nlpforge predict  EXPORT "some text"
    nlpforge evaluate EXPORT --data FILE
    """
    _setup_logging(verbose)


def main() -> None:
    _setup_logging(0)
    cli(prog_name="nlpforge")


if __name__ == "__main__":
    main()
