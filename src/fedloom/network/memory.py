"""Keep a long-running server's memory honest on glibc.

glibc raises its mmap threshold after a large buffer is freed, so later model-sized
buffers (updates, frames) come from per-thread heaps that rarely shrink; with a thread
per gRPC call the resident size then grows with the number of clients. A fixed
threshold sends every buffer above it to mmap, and it goes back to the OS when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 256 * 1024, arena_max: int = 2) -> bool:
    """Apply the settings where the C library is glibc; returns whether they were applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_ARENA_MAX, arena_max)
    )
    log.debug("mallopt applied: %s", applied)
    return applied
