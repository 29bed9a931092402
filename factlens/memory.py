"""Handing freed memory back to the operating system between the steps of a long job.

PyTorch's CPU tensors come from the C allocator; glibc keeps freed blocks below its mmap
threshold in the process's heap for reuse, so the resident memory after a step that
allocated and freed several GB (the relearning attack, an edit) stays near that step's
peak and adds to the next step's. :func:`release_memory` (a garbage collection, then
glibc's ``malloc_trim``) returns it. It changes no result; on other C libraries it only
collects garbage.
"""

from __future__ import annotations

import ctypes
import gc

__all__ = ["release_memory"]


def release_memory() -> None:
    """Collect garbage and return the heap's free memory to the OS (glibc ``malloc_trim(0)``; else a no-op)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
