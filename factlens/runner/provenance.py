"""What a run record says about where it came from: package versions and the time it was written.

Every unit's record and the run folder's manifest carry :func:`versions`, so that two runs whose
numbers differ can be told apart by what computed them. The list holds the packages that decide
a result: the model code (torch, TransformerLens, transformers), the arrays and probes (numpy,
scikit-learn) and the statistics of every interval and p-value (scipy, statsmodels).
"""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any

__all__ = ["RESULT_PACKAGES", "versions", "now"]

#: The distributions whose versions a run records (PyPI names).
RESULT_PACKAGES = ("factlens", "torch", "transformer-lens", "transformers", "numpy", "scipy", "statsmodels",
                   "scikit-learn", "plotly")


def versions() -> dict[str, Any]:
    """Versions of Python, the platform and :data:`RESULT_PACKAGES` (those installed), torch's
    thread count, and ``plugins``: the installed packages that add methods through entry points
    (:mod:`factlens.plugins`).

    Example:
        >>> v = versions()
        >>> {"python", "torch", "scipy", "statsmodels", "plugins"} <= set(v)
        True
    """
    import importlib.metadata as md

    import torch

    from factlens.plugins import plugin_versions

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in RESULT_PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            if pkg == "factlens":
                import factlens

                out[pkg] = getattr(factlens, "__version__", "unknown")
    out["torch_threads"] = str(torch.get_num_threads())
    out["plugins"] = plugin_versions()
    return out


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``finished_at``, ``created``, ``updated``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
