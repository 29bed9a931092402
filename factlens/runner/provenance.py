"""What a run record says about where it came from: package versions and the time it was written.

Every unit's record and the run folder's manifest carry :func:`versions`, so that two runs whose
numbers differ can be told apart by what computed them. The list holds the packages that decide
a result: the model code (torch, TransformerLens, transformers), the arrays and probes (numpy,
scikit-learn) and the statistics of every interval and p-value (scipy, statsmodels).

factlens's own version number stays put between commits, so a run from a git checkout also records
the git tree of the factlens source that computed it (:func:`factlens_source`): the report and
``factlens compare`` say when the units they pool were computed by different code (a folder resumed
after an update, folders of several sessions merged), which their numbers alone never show.
"""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["RESULT_PACKAGES", "versions", "now", "factlens_source", "plugin_version_diff"]

#: The distributions whose versions a run records (PyPI names).
RESULT_PACKAGES = ("factlens", "torch", "transformer-lens", "transformers", "numpy", "scipy", "statsmodels",
                   "scikit-learn", "plotly")


def versions() -> dict[str, Any]:
    """Versions of Python, the platform and :data:`RESULT_PACKAGES` (those installed), the factlens
    source tree (:func:`factlens_source`, ``None`` outside a git checkout), torch's thread count,
    and ``plugins``: the installed packages that add methods through entry points
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
    out["factlens_source"] = running_source()
    out["torch_threads"] = str(torch.get_num_threads())
    out["plugins"] = plugin_versions()
    return out


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``finished_at``, ``created``, ``updated``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def running_source() -> str | None:
    """:func:`factlens_source` at this process's first call, which the runner makes when it starts (the
    driver when it opens the run folder, each worker process when it starts): the code a process
    imported does not change when the files do. Computed per unit, a run during which the checkout
    changed (an edit, a pull, a commit) named code that never ran, and its report then warned that
    its units "were computed by different code" and advised rerunning them."""
    return factlens_source()


def factlens_source() -> str | None:
    """The factlens source that runs, as git knows it: ``"tree <sha>"``, the git tree of the package
    folder at the checkout's commit (the same for two commits that differ only outside the
    package, in docs or tests), with ``" +changes <digest>"`` when the package's files differ from
    it (a digest of those differences: two different uncommitted states do not read the same);
    ``None`` when factlens does not run from a git checkout that tracks it (an installed wheel:
    its version says which code it is) or git cannot be run.

    Example:
        >>> s = factlens_source()
        >>> s is None or (s.startswith("tree ") and len(s.split()[1]) == 40)
        True
    """
    import hashlib

    import factlens

    package = Path(factlens.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, timeout=20, check=False)

    try:
        # the package must be tracked by the checkout that holds it: a wheel inside a venv inside the
        # user's own repository (ignored there) has no tree of ours
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        tree = git("rev-parse", "HEAD:./")  # the package folder's tree (HEAD:./ is relative to -C)
        diff = git("diff", "HEAD", "--binary", "--", ".")
        untracked = git("ls-files", "--others", "--exclude-standard", "-z", "--", ".")
    except (OSError, subprocess.SubprocessError):  # no git on this machine, or it hung
        return None
    sha = tree.stdout.decode().strip()
    if tree.returncode or diff.returncode or untracked.returncode or len(sha) != 40:
        return None
    if not diff.stdout and not untracked.stdout:
        return f"tree {sha}"
    h = hashlib.blake2b(diff.stdout, digest_size=6)
    for name in sorted(n for n in untracked.stdout.decode().split("\0") if n):
        h.update(b"\0" + name.encode())
        try:
            h.update((package / name).read_bytes())
        except OSError:
            continue
    return f"tree {sha} +changes {h.hexdigest()}"


def plugin_version_diff(stored: dict[str, Any], config) -> list[str]:
    """The packages giving the entries of the stored ``config`` (:func:`_entry_packages`) whose installed
    version is not the one the stored results ran with (``versions.plugins`` of ``run_config.json``).

    A resume after ``pip install -U mypkg`` computed the new units with the new version next to
    the old units, and the record then named only the new one: results of two versions mixed
    without a word, where a changed setting is refused. A folder written before plugin versions
    were kept, a package the stored results ran without (one that gives only the localizations
    this run adds), and another package's upgrade are no difference.
    """
    from factlens.plugins import plugin_versions

    versions_ = stored.get("versions")
    recorded = versions_.get("plugins") if isinstance(versions_, dict) else None
    if not isinstance(recorded, dict):
        return []
    installed = plugin_versions()
    out = []
    for dist, entries in sorted(_entry_packages(config).items()):
        was, now = recorded.get(dist), installed.get(dist)
        if was is not None and was != now:
            out.append(f"plugin package {dist} (gives the {', '.join(entries)}): {was!r} (stored) != {now!r} "
                       f"(installed now); to resume, reinstall the version the stored results ran with "
                       f"(pip install '{dist}=={was}')")
    return out


def _entry_packages(config) -> dict[str, list[str]]:
    """``{distribution: ["localization 'x'", ...]}``: the installed packages whose entry points give
    the run's localizations (and their scoring methods), edit methods, objectives and suites."""
    import importlib.metadata as md

    from factlens.localization import LOCALIZATIONS
    from factlens.plugins import GROUPS

    scoring = set()
    for name in config.localizations:
        method = LOCALIZATIONS.get(name).method if name in LOCALIZATIONS.names() else None
        scoring.add(method if isinstance(method, str) else getattr(method, "name", None))
    names = {"localization": set(config.localizations), "localization method": scoring,
             "edit method": set(config.methods), "objective": set(config.objectives or (config.default_objective,)),
             "evaluation suite": set(config.suites)}
    out: dict[str, list[str]] = {}
    for kind, group in GROUPS.items():
        for ep in md.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None and ep.name in names[kind]:
                out.setdefault(dist.metadata["Name"], []).append(f"{kind} {ep.name!r}")
    return out
