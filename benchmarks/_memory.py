"""Memory measurement shared by the benchmark scripts (``python benchmarks/<name>.py``)."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time

__all__ = ["rss", "PeakRSS", "release_memory"]


def rss() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``; ``psutil`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss


class PeakRSS:
    """Peak resident set size while the block runs, sampled in a thread every ``interval`` seconds.

    ``.start`` and ``.peak`` are absolute sizes in bytes; ``.delta`` is the increase over the start.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.start = self.peak = 0

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start


def release_memory() -> None:
    """Collect garbage and return freed heap memory to the OS (glibc), so RSS deltas start from a clean base."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
