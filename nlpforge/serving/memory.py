"""Giving freed memory back to the operating system after large requests. No torch.

CPython and ONNX Runtime free what a large request used, but glibc's allocator keeps the freed
pages of its heaps (one heap per thread that allocated) for later use, so the server's
resident memory stays at its peak. ``malloc_trim(0)`` returns them; elsewhere (macOS, musl
without it) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable


def _trimmer() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


#: ``release_memory()``: hand the allocator's free pages back to the operating system.
release_memory = _trimmer()
