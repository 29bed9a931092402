"""One small base for factlens's frozen configuration dataclasses, with one rule for unknown keys.

:class:`ConfigBase` gives every config the same ``replace`` / ``override`` / ``to_dict`` /
``from_dict``. The rule: a key that names no field is rejected, at every level of nesting,
with the list of the valid ones (never silently dropped). Tuples serialize as lists.

A field whose default is itself a ``ConfigBase`` is a *nested* config (``EvalConfig.relearning``
is a :class:`~factlens.evaluation.relearning.RelearningConfig`): it serializes as a table,
``from_dict`` builds it from one, and ``override`` / :class:`Overrides` merge a partial table
into it (the fields the table leaves out keep their values). A dotted key
(``"relearning.steps"``) is the same as a one-key table.

A field whose default is a mapping (``EvalConfig.other_suites``: suite name -> table) is a
*mapping field*: its keys are free, ``override`` / :class:`Overrides` merge a table into it
key by key, and dotted keys reach into it (``"other_suites.my_attack.steps"``). The config
validates the keys itself (in ``__post_init__``), since only it knows what they may be.

A config whose fields moved lists the old names in ``_renamed`` (old key -> dotted path now,
e.g. ``"relearn_steps" -> "relearning.steps"``): ``from_dict`` / ``override`` / :class:`Overrides`
map such a key with a ``FutureWarning`` (shown by default: the user typed the old name), so that files written by older versions still
load; ``replace`` (keyword arguments, as in code) rejects it and names the new place.

:class:`Overrides` holds validated field overrides of one config type: the ``[edit]`` /
``[eval]`` tables of a :class:`~factlens.runner.config.RunConfig`, applied on top of a preset.

The checks of single values (:func:`check_numbers`, :func:`type_ok`, ...) are in :mod:`factlens.value_checks`
(split from here to keep this module small); they stay importable from here.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from typing import Any, ClassVar, Generic, Iterator, Mapping, TypeVar

from factlens.value_checks import (_checked_numbers, annotation_problem, check_inplace, check_numbers, keyword_problem,
                                   layer_indices, type_ok)

__all__ = ["ConfigBase", "Overrides", "type_ok", "check_numbers", "check_config_type", "keyword_problem",
           "annotation_problem", "layer_indices", "check_inplace"]

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Mixin for ``@dataclass(frozen=True)`` configs (see the module docstring).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Inner(ConfigBase):
        ...     steps: int = 3
        >>> @dataclass(frozen=True)
        ... class Toy(ConfigBase):
        ...     _renamed = {"inner_steps": "inner.steps"}
        ...     lr: float = 1e-3
        ...     layers: tuple = (1, 2)
        ...     inner: Inner = Inner()
        >>> Toy().to_dict()
        {'lr': 0.001, 'layers': [1, 2], 'inner': {'steps': 3}}
        >>> Toy.from_dict({"lr": 0.1, "inner": {"steps": 5}}).replace(layers=(3,))
        Toy(lr=0.1, layers=(3,), inner=Inner(steps=5))
        >>> Toy(lr=0.1).override({"inner.steps": 7})
        Toy(lr=0.1, layers=(1, 2), inner=Inner(steps=7))
        >>> Toy.from_dict({"lrr": 0.1})
        Traceback (most recent call last):
        ...
        ValueError: unknown Toy fields ['lrr']; valid fields: ['inner', 'layers', 'lr']
        >>> Toy.from_dict({"inner": {"step": 1}})
        Traceback (most recent call last):
        ...
        ValueError: unknown Inner fields ['step'] (in Toy.inner); valid fields: ['steps']
    """

    #: Old (flat) key -> dotted path of the field that holds it now.
    _renamed: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the fields, in order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def nested_types(cls) -> dict[str, type["ConfigBase"]]:
        """The nested configs: field name -> config type (the type of the field's default)."""
        out: dict[str, type[ConfigBase]] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if isinstance(f.default, ConfigBase):
                out[f.name] = type(f.default)
        return out

    @classmethod
    def mapping_fields(cls) -> frozenset[str]:
        """The fields whose default is a mapping (free keys; tables merge into them)."""
        return frozenset(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), Mapping))

    @classmethod
    def _unknown_error(cls, unknown: list[str], where: str = "") -> ValueError:
        moved = [f"{k} -> {cls._renamed[k]}" for k in unknown if k in cls._renamed]
        return ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}{f' (in {where})' if where else ''}; "
                          f"valid fields: {sorted(cls.field_names())}" + (f" (moved: {', '.join(moved)})" if moved else ""))

    @classmethod
    def _check_keys(cls, keys) -> None:
        unknown = sorted(set(keys) - set(cls.field_names()))
        if unknown:
            raise cls._unknown_error(unknown)

    @classmethod
    def normalize(cls, d: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
        """``d`` as nested tables of valid field names (dotted and renamed keys resolved).

        Later keys win; a table for a nested config merges into an earlier one. A nested
        config given as an instance becomes its full table.

        Raises:
            ValueError: A key names no field (at any level; the message names the level and
                lists its valid fields), or a nested config is given something else than a
                table or an instance.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"{where or cls.__name__} takes a table of {cls.__name__} fields, got {d!r}")
        names, nested, mappings = set(cls.field_names()), cls.nested_types(), cls.mapping_fields()
        out: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in d.items():
            key = str(key)
            if key in cls._renamed and (key not in names or (key in nested and not _is_table(value))):
                new = cls._renamed[key]
                warnings.warn(f"{cls.__name__} key {key!r} is deprecated; it is now {new!r} (write "
                              f"{_as_table(new)})", FutureWarning, stacklevel=3)
                key, value = _split_path(new, value)
            elif "." in key and key.split(".", 1)[0] in nested:
                key, value = _split_path(key, value)
            elif "." in key and key.split(".", 1)[0] in mappings:
                key, value = _nest_path(key, value)
            if key not in names:
                unknown.append(key)
            elif key in nested:
                sub = nested[key]
                if isinstance(value, sub):
                    value = value.to_dict()
                value = sub.normalize(value, where=f"{where or cls.__name__}.{key}")
                out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) else value
            elif key in mappings and isinstance(value, Mapping):
                value = {str(k): v.to_dict() if isinstance(v, ConfigBase) else v for k, v in value.items()}
                out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) else value
            else:
                out[key] = value
        if unknown:
            raise cls._unknown_error(unknown, where)
        return out

    def _nest_tables(self) -> None:
        """Turn tables given for nested configs into configs (call first in ``__post_init__``).

        Raises:
            TypeError: A nested field holds neither its config type nor a table.
        """
        for name, sub in type(self).nested_types().items():
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, sub.from_dict(v))
            elif not isinstance(v, sub):
                raise TypeError(f"{type(self).__name__}.{name} must be a {sub.__name__} (or a table of its fields "
                                f"{sub.field_names()}), got {type(v).__name__}: {v!r}")

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated like the constructor; unknown names raise)."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def override(self: C, d: Mapping[str, Any]) -> C:
        """A copy with the overrides in ``d`` (nested tables, dotted keys) applied.

        Unlike :meth:`replace`, a table for a nested config changes only the fields it names,
        and a table for a mapping field only the keys it names.
        """
        return self._apply(type(self).normalize(d))

    def _apply(self: C, norm: Mapping[str, Any]) -> C:
        nested, tuples, mappings = type(self).nested_types(), _tuple_fields(type(self)), type(self).mapping_fields()
        changes: dict[str, Any] = {}
        for k, v in norm.items():
            old = getattr(self, k)
            if k in nested:
                changes[k] = old._apply(v)
            elif k in mappings and isinstance(old, Mapping) and isinstance(v, Mapping):
                changes[k] = _merge(copy.deepcopy(dict(old)), v)
            else:
                changes[k] = _tuple_if(k in tuples, v)
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
            elif isinstance(v, Mapping):
                v = _plain(v)  # a copy the caller may change (plain dicts and lists)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` listing the valid ones.

        Keys left out take their defaults (in nested tables too).
        """
        return cls._build(cls.normalize(d))

    @classmethod
    def _build(cls: type[C], norm: Mapping[str, Any], *, where: str = "") -> C:
        """``cls`` from normalized tables, its numbers checked first (:func:`check_numbers`).

        The check runs here, not only in the configs' own ``__post_init__``: a plugin's settings
        (``EditConfig.methods["scale"]``, ``EvalConfig.other_suites["my_attack"]``) took
        ``factor="abc"`` and failed inside the job. ``where`` names the table in the message.
        """
        nested, tuples = cls.nested_types(), _tuple_fields(cls)
        kw = {k: nested[k]._build(v, where=f"{where}.{k}" if where else "") if k in nested
              else _tuple_if(k in tuples, v) for k, v in norm.items()}
        return cls(**_checked_numbers(cls, kw, where=where))


class Overrides(Mapping[str, Any], Generic[C]):
    """Validated field overrides of one config type, applied on top of a base config.

    Keys are checked at every level (:meth:`ConfigBase.normalize`: unknown ones raise with the
    valid fields, dotted keys become tables, renamed keys are mapped with a
    ``FutureWarning``) and values are checked against the fields' annotations. It reads
    as a read-only dict of the normalized tables, compares equal to one, and serializes as
    one (:meth:`to_dict`).

    Args:
        config_type: The config class the overrides are for.
        values: A mapping of overrides, another ``Overrides`` of the same type, or a
            ``config_type`` instance (every field: that exact config).
        label: How error messages name these overrides (``"eval"``: ``eval option ...``).

    Example:
        >>> from factlens.editing import EditConfig
        >>> o = Overrides(EditConfig, {"steps": 3})
        >>> o == {"steps": 3}, o.apply(EditConfig()).steps
        (True, 3)
        >>> Overrides(EditConfig, {"steps": "three"}, label="edit")
        Traceback (most recent call last):
        ...
        ValueError: edit option steps='three' has the wrong type (str); EditConfig.steps takes int (default 50)
    """

    __slots__ = ("config_type", "_values")

    def __init__(self, config_type: type[C], values: Any = None, *, label: str = "") -> None:
        if isinstance(values, Overrides):
            if values.config_type is not config_type:
                raise TypeError(f"overrides of {values.config_type.__name__} given for {config_type.__name__}")
            values = values.to_dict()
        elif isinstance(values, ConfigBase):
            if not isinstance(values, config_type):
                raise TypeError(f"a {type(values).__name__} given for {config_type.__name__} overrides")
            values = values.to_dict()
        elif values is None:
            values = {}
        elif not isinstance(values, Mapping):
            raise ValueError(f"{label or config_type.__name__} options must be a table/mapping of "
                             f"{config_type.__name__} fields, got {values!r}")
        norm = config_type.normalize(values)
        _check_types(config_type, norm, label=label)
        self.config_type = config_type
        self._values = norm

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._values[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Overrides({self.config_type.__name__}, {self._values!r})"

    def __reduce__(self):
        return (Overrides, (self.config_type, self.to_dict()))

    def get_path(self, path: str, default: Any = None) -> Any:
        """The override at a dotted path (``"text.source"``), or ``default`` when not set."""
        v: Any = self._values
        for part in path.split("."):
            if not isinstance(v, Mapping) or part not in v:
                return default
            v = v[part]
        return copy.deepcopy(v)

    def to_dict(self) -> dict[str, Any]:
        """The overrides as nested plain dicts (a copy)."""
        return copy.deepcopy(self._values)

    def merged(self, other: Mapping[str, Any]) -> "Overrides[C]":
        """These overrides, then ``other`` on top (tables merge)."""
        return Overrides(self.config_type, _merge(self.to_dict(), self.config_type.normalize(other)))

    def apply(self, base: C) -> C:
        """``base`` with these overrides (:meth:`ConfigBase.override`)."""
        if not isinstance(base, self.config_type):
            raise TypeError(f"{self.config_type.__name__} overrides applied to a {type(base).__name__}")
        return base._apply(self._values)


def _is_table(value: Any) -> bool:
    return isinstance(value, (Mapping, ConfigBase))


def _split_path(path: str, value: Any) -> tuple[str, Any]:
    head, _, rest = path.partition(".")
    return head, ({rest: value} if rest else value)


def _nest_path(path: str, value: Any) -> tuple[str, Any]:
    """``"a.b.c", v`` -> ``("a", {"b": {"c": v}})``: every dot one level of table."""
    head, *rest = path.split(".")
    for part in reversed(rest):
        value = {part: value}
    return head, value


def _as_table(path: str) -> str:
    head, _, rest = path.partition(".")
    return f"{head}={{{rest!r}: ...}}" if rest else f"{head}=..."


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a`` with ``b`` on top; dicts on both sides merge."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, Mapping) else v
    return out


def _tuple_if(is_tuple: bool, value: Any) -> Any:
    return tuple(value) if is_tuple and isinstance(value, list) else value


@functools.lru_cache(maxsize=None)
def _tuple_fields(cls: type) -> frozenset[str]:
    """Fields annotated with a tuple type (alone or in a union): a JSON list read for them becomes a tuple."""
    import types
    import typing

    def has_tuple(hint: Any) -> bool:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            return any(has_tuple(a) for a in typing.get_args(hint))
        return hint is tuple or origin is tuple

    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations that do not resolve: fall back to the defaults' types
        return frozenset(f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple))
    return frozenset(f.name for f in dataclasses.fields(cls) if has_tuple(hints.get(f.name)))


def _check_types(cls: type[ConfigBase], norm: Mapping[str, Any], *, label: str = "", prefix: str = "") -> None:
    """Raise ``ValueError`` for an override whose value does not fit its field's annotation."""
    import typing

    hints = typing.get_type_hints(cls)
    nested = cls.nested_types()
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k, v in norm.items():
        if k in nested:
            _check_types(nested[k], v, label=label, prefix=f"{prefix}{k}.")
        elif not type_ok(v, hints[k]):
            hint = hints[k].__name__ if isinstance(hints[k], type) else str(hints[k]).replace("typing.", "")
            default = defaults[k] if defaults[k] is not dataclasses.MISSING else None
            raise ValueError(f"{label + ' ' if label else ''}option {prefix}{k}={v!r} has the wrong type "
                             f"({type(v).__name__}); {cls.__name__}.{k} takes {hint} (default {default!r})")


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` with every mapping as a ``dict`` and every tuple as a list."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def check_config_type(value: Any, *, where: str) -> type[ConfigBase]:
    """``value`` if it is a settings type (a dataclass subclassing :class:`ConfigBase`), else a
    ``TypeError`` naming ``where`` (the entry that declares it: ``"suite 'my_attack'"``).

    An entry's ``config_type`` that was a plain dataclass or a dict failed when its settings were
    first built, inside a job, as ``AttributeError: ... has no attribute '_build'``.

    Example:
        >>> check_config_type(dict, where="suite 'toy'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: suite 'toy': config_type must subclass factlens.config.ConfigBase (...), got <class 'dict'>
    """
    if not (isinstance(value, type) and issubclass(value, ConfigBase) and dataclasses.is_dataclass(value)):
        raise TypeError(f"{where}: config_type must subclass factlens.config.ConfigBase (a frozen dataclass: "
                        f"@dataclass(frozen=True) class MyConfig(ConfigBase): ...), got {value!r}")
    return value
