"""What a run record says about where it came from: package versions and the time it was written.

Every unit's record and the run folder's manifest carry :func:`versions`, so that two runs whose
numbers differ can be told apart by what computed them. The list holds the packages that decide
a result: the model code (torch, TransformerLens, transformers), the arrays and probes (numpy,
scikit-learn) and the statistics of every interval and p-value (scipy, statsmodels).

factlens's own version number stays put between commits, so a run from a git checkout also records
the commit of the factlens source that computed it (:func:`factlens_source`): the report and
``factlens compare`` say when the units they pool were computed by different code (a folder resumed
after an update, folders of several sessions merged), which their numbers alone never show.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["RESULT_PACKAGES", "versions", "now", "factlens_source"]

#: The distributions whose versions a run records (PyPI names).
RESULT_PACKAGES = ("factlens", "torch", "transformer-lens", "transformers", "numpy", "scipy", "statsmodels",
                   "scikit-learn", "plotly")


def versions() -> dict[str, Any]:
    """Versions of Python, the platform and :data:`RESULT_PACKAGES` (those installed), the factlens
    source commit (:func:`factlens_source`, ``None`` outside a git checkout), torch's thread count, and ``plugins``: the installed packages that add methods through entry points
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
    out["factlens_source"] = factlens_source()
    out["torch_threads"] = str(torch.get_num_threads())
    out["plugins"] = plugin_versions()
    return out


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``finished_at``, ``created``, ``updated``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def factlens_source() -> str | None:
    """The git commit of the factlens source that runs (40 hex digits), with ``"+changes"`` when its
    files differ from that commit (edited or untracked files under the package); ``None`` when
    factlens does not run from a git checkout that tracks it (an installed wheel: its version says
    which code it is) or git cannot be run.

    Example:
        >>> s = factlens_source()
        >>> s is None or len(s.split("+")[0]) == 40
        True
    """
    import factlens

    package = Path(factlens.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=20,
                              check=False)

    try:
        # the package must be tracked by the checkout that holds it: a wheel inside a venv inside the
        # user's own repository (ignored there) has no commit of ours
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):  # no git on this machine, or it hung
        return None
    commit = head.stdout.strip()
    if head.returncode != 0 or status.returncode != 0 or len(commit) != 40:
        return None
    return commit + ("+changes" if status.stdout.strip() else "")
