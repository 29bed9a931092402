"""Typed registries: one small frozen entry per method, looked up by name.

Every pluggable kind of thing in factlens (scoring methods, the paper's named localizations,
evaluation suites, edit methods, training objectives) is a tuple of frozen entries in one
place, wrapped in a :class:`Registry`. An entry says what it needs (options, inputs) so that
callers never inspect signatures; :meth:`Registry.get` raises one clear error listing the
known names. Adding a method is one new module plus one entry (see docs/extending.md).

Entries point at their implementation with a :class:`Ref` (module and attribute), imported
only when used: a registry can list methods whose modules pull in optional dependencies.
Installed packages add entries through entry points (:mod:`factlens.plugins`): a registry
built with ``plugins=`` reads them at its first lookup, after factlens's own entries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

__all__ = ["Ref", "Registry", "load"]


@dataclass(frozen=True)
class Ref:
    """A lazily imported attribute: ``Ref("factlens.localization.activation", "activation_patching")``.

    Example:
        >>> Ref("math", "sqrt").load()(9.0)
        3.0
    """

    module: str
    attr: str

    def load(self) -> Any:
        """Import the module and return the attribute (clear ImportError naming both)."""
        try:
            mod = importlib.import_module(self.module)
        except ImportError as e:
            raise ImportError(f"{self.module} could not be imported ({e})") from e
        try:
            return getattr(mod, self.attr)
        except AttributeError as e:
            raise ImportError(f"{self.module} has no attribute {self.attr!r}") from e

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


def load(target: "Ref | Any") -> Any:
    """``target.load()`` for a :class:`Ref`; anything else (a function defined in a notebook or a
    test) is returned as is, so entries may hold either."""
    return target.load() if isinstance(target, Ref) else target


E = TypeVar("E")


@dataclass(frozen=True)
class Registry(Generic[E]):
    """An immutable, ordered collection of entries with a ``name`` attribute.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass(frozen=True)
        ... class Toy:
        ...     name: str
        >>> reg = Registry("toy", (Toy("a"), Toy("b")))
        >>> reg.get("b"), reg.names(), "a" in reg
        (Toy(name='b'), ('a', 'b'), True)
        >>> reg.get("c")
        Traceback (most recent call last):
        ...
        ValueError: unknown toy 'c'; known: ['a', 'b']
    """

    kind: str
    entries: tuple[E, ...]
    #: ``plugins(builtin_names)`` -> the entries installed packages add (checked by
    #: :func:`factlens.plugins.plugin_entries`); ``None``: factlens's own entries only
    plugins: Callable[[tuple[str, ...]], tuple[E, ...]] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [e.name for e in self.entries]  # type: ignore[attr-defined]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{self.kind} registry has duplicate names {dup}")

    def all_entries(self) -> tuple[E, ...]:
        """factlens's own entries, then those of installed packages (:mod:`factlens.plugins`)."""
        if self.plugins is None:
            return self.entries
        return self.entries + tuple(self.plugins(tuple(e.name for e in self.entries)))  # type: ignore[attr-defined]

    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.all_entries())  # type: ignore[attr-defined]

    def get(self, name: "str | E") -> E:
        """The entry called ``name``; an entry object itself is accepted and returned as is
        (so a method defined outside factlens can be passed where a name is expected); an entry
        of another registry's type is a TypeError here rather than an AttributeError later."""
        if not isinstance(name, str) and hasattr(name, "name"):
            kind = type(self.entries[0]) if self.entries else None
            if kind is not None and not isinstance(name, kind):  # e.g. a ScoringMethod where a Localization goes
                raise TypeError(f"a {self.kind} is a name or a {kind.__name__} entry, got a {type(name).__name__} "
                                f"({getattr(name, 'name', '?')!r})")
            known = next((e for e in self.all_entries() if e.name == name.name), None)  # type: ignore[attr-defined]
            if known is not None and known != name:
                # results would be stored (and settings looked up) under the registered entry's name
                raise ValueError(f"your {self.kind} entry is named {name.name!r}, the name of a registered "  # type: ignore[attr-defined]
                                 f"{self.kind} that it is not: give it a name of its own")
            return name  # type: ignore[return-value]
        for e in self.entries:  # factlens's own first: a plugin module may look one up while it is imported
            if e.name == name:  # type: ignore[attr-defined]
                return e
        for e in self.all_entries()[len(self.entries):]:
            if e.name == name:  # type: ignore[attr-defined]
                return e
        raise ValueError(f"unknown {self.kind} {name!r}; known: {list(self.names())}")

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[E]:
        return iter(self.all_entries())

    def __len__(self) -> int:
        return len(self.all_entries())

    def with_entry(self, entry: E) -> "Registry[E]":
        """A new registry with ``entry`` added (or replacing the entry of the same name).

        Registries are immutable module constants, and no verb takes a registry: a method of
        your own is passed as its entry (``localize(method=entry)``, ``edit(method=entry)``,
        ``evaluate(suites=[entry])``), and reaches the runner by an entry in the package's
        registry. Tests use this to build the registry a package would have. The new
        registry holds the installed packages' entries as its own (it reads no plugins again).
        """
        kept = tuple(e for e in self.all_entries() if e.name != entry.name)  # type: ignore[attr-defined]
        return Registry(self.kind, kept + (entry,))
