"""Methods from other installed packages: Python entry points that add entries to the registries.

A package of one's own reaches ``factlens run``, ``evaluate`` and ``edit`` without editing
factlens: it declares each entry (a :class:`~factlens.localization.ScoringMethod`,
:class:`~factlens.localization.Localization`, :class:`~factlens.evaluation.Suite`,
:class:`~factlens.editing.registry.EditMethod` or :class:`~factlens.editing.registry.Objective`)
as an entry point in the group of its kind, named after the entry::

    # the plugin's pyproject.toml
    [project.entry-points."factlens.localization_methods"]
    weight_norm = "mypkg.weight_norm:WEIGHT_NORM"    # a ScoringMethod called "weight_norm"

The registries read their group the first time they are used in a process (the worker processes
of ``--workers`` read it again, from the same installed packages); a lookup of a built-in name
reads no plugin, so a plugin module may wrap a built-in entry (``METHODS.get("causal_tracing")``)
while it is imported. A plugin may not replace a
built-in entry or another plugin's entry, and its entry point must name an entry of the group's
type with the entry point's own name: anything else is a :class:`PluginError` naming the package,
so that a run never uses a method other than the one its name says. ``factlens run`` records the
versions of the packages that add entries (:func:`plugin_versions`) beside factlens's own.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
from typing import Any

__all__ = ["GROUPS", "PluginError", "plugin_entries", "plugin_versions", "refresh"]

#: registry kind -> the entry-point group whose entries join it (see docs/extending.md)
GROUPS: dict[str, str] = {
    "localization method": "factlens.localization_methods",
    "localization": "factlens.localizations",
    "evaluation suite": "factlens.suites",
    "edit method": "factlens.edit_methods",
    "objective": "factlens.objectives",
}


class PluginError(RuntimeError):
    """An installed package declares a factlens entry point that cannot be used as it is."""


def _where(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    pkg = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unnamed distribution"
    return f"entry point {ep.name} = {ep.value!r} of {pkg} (group {ep.group!r})"


# Cached: which packages are installed does not change while a process runs, and reading the
# entry points of every installed distribution costs milliseconds per call, which registry
# lookups in loops would pay thousands of times. refresh() clears it (tests, a notebook that
# has just pip-installed a plugin).
@functools.lru_cache(maxsize=None)
def _installed(group: str) -> tuple[tuple[md.EntryPoint, Any], ...]:
    out = []
    for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as e:  # any failure of a third-party import: name the package that failed
            raise PluginError(f"{_where(ep)} could not be loaded: {type(e).__name__}: {e}. Fix or uninstall "
                              "that package.") from e
        out.append((ep, obj))
    return tuple(out)


def plugin_entries(kind: str, entry_type: type, builtin: tuple[str, ...]) -> tuple[Any, ...]:
    """The entries installed packages add to the registry of ``kind``, checked.

    Args:
        kind: A key of :data:`GROUPS` (the registry's kind).
        entry_type: The type every entry of the group must have.
        builtin: The names of factlens's own entries of that registry (a plugin may not reuse one).

    Raises:
        PluginError: An entry point that does not load, that is not an ``entry_type``, whose entry
            has another name than the entry point, or whose name is already taken.
    """
    group = GROUPS[kind]
    out, seen = [], {}
    for ep, obj in _installed(group):
        if not isinstance(obj, entry_type):
            raise PluginError(f"{_where(ep)} gives a {type(obj).__name__}; entries of {group!r} must be "
                              f"{entry_type.__name__} objects")
        name = getattr(obj, "name", None)
        if name != ep.name:
            raise PluginError(f"{_where(ep)} gives the {kind} {name!r}; name the entry point after its entry "
                              f"({name} = ...)")
        if name in builtin:
            raise PluginError(f"{_where(ep)} registers the {kind} {name!r}, which factlens already has; a plugin "
                              "cannot replace a built-in method: give it another name")
        if name in seen:
            raise PluginError(f"{_where(ep)} and {_where(seen[name])} both register the {kind} {name!r}; "
                              "uninstall or rename one")
        seen[name] = ep
        out.append(obj)
    return tuple(out)


def plugin_versions() -> dict[str, str]:
    """``{distribution name: version}`` of the installed packages that declare factlens entry points
    (read now, not cached: after installing a plugin in a notebook, :func:`refresh` the registries too)."""
    out: dict[str, str] = {}
    for group in GROUPS.values():
        for ep in md.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None:
                out[dist.metadata["Name"]] = dist.version
    return dict(sorted(out.items()))


def refresh() -> None:
    """Read the installed packages' entry points again (after installing a plugin in a running
    notebook); registries look them up at their next use."""
    _installed.cache_clear()
