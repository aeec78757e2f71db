"""Keep the chatter of export tools (progress, advice meant for their developers) out."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Silence stdout, warnings and the named loggers (below ERROR) while the block runs;
    ``""`` names the root logger."""
    found = [logging.getLogger(name or None) for name in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(found, levels):
            lg.setLevel(level)
