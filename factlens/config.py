"""One small base for factlens's frozen configuration dataclasses, with one rule for unknown keys.

:class:`ConfigBase` gives every config the same ``replace`` / ``to_dict`` / ``from_dict``:
unknown field names are rejected with the list of valid ones (never silently dropped),
tuples serialize as lists, and nested configs round-trip as tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["ConfigBase"]

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Mixin for ``@dataclass(frozen=True)`` configs.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Toy(ConfigBase):
        ...     lr: float = 1e-3
        ...     layers: tuple = (1, 2)
        >>> Toy().to_dict()
        {'lr': 0.001, 'layers': [1, 2]}
        >>> Toy.from_dict({"lr": 0.1}).replace(layers=(3,))
        Toy(lr=0.1, layers=(3,))
        >>> Toy.from_dict({"lrr": 0.1})
        Traceback (most recent call last):
        ...
        ValueError: unknown Toy fields ['lrr']; valid fields: ['layers', 'lr']
    """

    @classmethod
    def _check_keys(cls, keys) -> None:
        valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(keys) - valid)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(valid)}")

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated like the constructor; unknown names raise)."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples become lists, nested configs become dicts)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, ConfigBase):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` listing the valid ones."""
        cls._check_keys(d)
        kw = dict(d)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in kw and isinstance(default, ConfigBase) and isinstance(kw[f.name], Mapping):
                kw[f.name] = type(default).from_dict(kw[f.name])
            elif f.name in kw and isinstance(default, tuple) and isinstance(kw[f.name], list):
                kw[f.name] = tuple(kw[f.name])
        return cls(**kw)
