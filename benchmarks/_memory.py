"""Memory measurement shared by the benchmark scripts (``python benchmarks/<name>.py``).

The helpers live in :mod:`factlens.memory` (the runner records per-stage peaks with them too);
this module keeps the scripts' import line short.
"""

from __future__ import annotations

from factlens.memory import PeakRSS, release_memory, rss

__all__ = ["rss", "PeakRSS", "release_memory"]
