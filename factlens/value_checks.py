"""The checks of single setting values: numbers, bools, layer indices and values against annotations.

:func:`check_numbers` (which :class:`~factlens.config.ConfigBase` runs on every config it builds),
:func:`layer_indices`, :func:`keyword_problem`, :func:`annotation_problem`, :func:`type_ok` and
:func:`check_inplace` judge one value (and :func:`as_float` reads one as a number for a table or plot) at a time and need no config class; split from
:mod:`factlens.config` to keep it small. Every name here is importable from
:mod:`factlens.config` too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

__all__ = ["check_numbers", "layer_indices", "keyword_problem", "annotation_problem", "type_ok", "check_inplace", "as_float"]


def check_numbers(cfg: Any) -> None:
    """Raise for a field annotated ``int``, ``float`` or ``bool`` (or ``... | None``) whose value is not one.

    An ``int`` field takes any integer (numpy's too, not ``bool``); a ``float`` field any finite
    real number (an infinity or NaN in a loss weight or learning rate made every loss NaN, which
    the editor reported as a learning rate too high); a ``bool`` field only ``True`` or ``False``
    (numpy's too; not ``"false"`` or ``0``). A config calls it first in its ``__post_init__``, so that
    its range checks compare numbers.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Toy:
        ...     steps: int = 1
        ...     lr: float | None = 0.1
        >>> check_numbers(Toy(steps=2.5))
        Traceback (most recent call last):
        ...
        TypeError: Toy.steps must be an integer, got 2.5 (float)
        >>> check_numbers(Toy(lr=float("nan")))
        Traceback (most recent call last):
        ...
        ValueError: Toy.lr must be a finite number, got nan
    """
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        checked = _checked_number(hints.get(f.name), value, where=f"{type(cfg).__name__}.{f.name}")
        if checked is not value:  # numpy's bool: stored as Python's, so that the config writes to JSON
            object.__setattr__(cfg, f.name, checked)


def _checked_number(hint: Any, value: Any, *, where: str) -> Any:
    """``value`` checked against ``hint`` as :func:`check_numbers` says (a numpy bool becomes Python's)."""
    import math
    import numbers
    import types
    import typing

    args = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    if bool in args and args <= {bool, type(None)} and not (value is None and type(None) in args):
        _check_bool(value, where=where)
        value = bool(value) if not isinstance(value, bool) else value
    if not args & {int, float} or not args <= {int, float, type(None)}:
        return value
    if value is None:  # ``None`` only where the field says so (a seed of None drew a new one on every call)
        if type(None) in args:
            return value
        kind = "an integer" if args & {int, float} == {int} else "a number"
        raise TypeError(f"{where} must be {kind}, got None; None is not one of this field's values")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if args & {int, float} == {int} else "a number"
        raise TypeError(f"{where} must be {kind}, got {value!r} ({type(value).__name__})")
    if float not in args and not isinstance(value, numbers.Integral):
        raise TypeError(f"{where} must be an integer, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return value


def _checked_numbers(cls: type, kw: dict[str, Any], *, where: str) -> dict[str, Any]:
    """The field values ``kw`` of ``cls``, their numbers checked (:func:`check_numbers`) before ``cls``
    is built (its own ``__post_init__`` may compare them); an error names ``where`` (the table)."""
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations that do not resolve: the config's own checks decide
        return kw
    out = {}
    for k, v in kw.items():
        try:
            out[k] = _checked_number(hints.get(k), v, where=f"{cls.__name__}.{k}")
        except (TypeError, ValueError) as e:
            if not where:
                raise
            raise type(e)(f"{where}: {e}") from None
    return out


def _check_bool(value: Any, *, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is ``True`` or ``False`` (Python's or numpy's).

    A bool field took any value before, and read it as true or false by Python's truth test: the
    string ``"False"`` (what ``--edit methods.alphaedit.protect_bos=False`` gives, since ``False``
    is not JSON) switched the option *on*. ``where``: ``"Class.field"``, for the message.

    Example:
        >>> _check_bool(False, where="X.flag")
        >>> _check_bool("False", where="X.flag")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: X.flag must be true or false, got 'False' (str); write true or false (lower case in TOML, ...
    """
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be true or false, got {value!r} ({type(value).__name__}); write true or "
                        "false (lower case in TOML, JSON and --edit/--eval KEY=VALUE options; True or False in Python)")


def layer_indices(value: Any, *, where: str, none_means: str) -> tuple[int, ...] | None:
    """A config's ``layers`` field as a tuple of Python ints (``None`` stays ``None``).

    One integer (numpy's too) is one layer; anything else must be a non-empty sequence of
    non-negative integers. ``bool`` and floats are refused (``int()`` made ``1.9`` layer 1 and
    ``True`` layer 1), and numpy integers become ints, so that the config serializes to JSON.

    Args:
        value: The field's value.
        where: ``"Class.field"``, for the message.
        none_means: What ``None`` means for this field, for the message.

    Example:
        >>> import numpy as np
        >>> layer_indices(np.int64(2), where="X.layers", none_means="every layer")
        (2,)
        >>> layer_indices([1.5], where="X.layers", none_means="every layer")
        Traceback (most recent call last):
        ...
        ValueError: X.layers must be non-negative integer layer indices (or None for every layer), got [1.5]
    """
    import numbers

    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v: tuple | None = (value,)
    elif isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        v = None  # a string's letters are no layers
    else:
        v = tuple(value)
    if not v or any(isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0 for x in v):
        raise ValueError(f"{where} must be non-negative integer layer indices (or None for {none_means}), "
                         f"got {value!r}")
    return tuple(int(x) for x in v)


def keyword_problem(fn: Any, name: str, value: Any) -> str | None:
    """Why ``fn(..., name=value)`` has a value its annotation excludes, or ``None``.

    Options passed through to a function from a config file (a localization's or a task's) are
    checked this way before any job runs: ``n_samples = "5"`` failed inside the job otherwise.
    Only the value's type and finiteness are checked; an annotation that cannot be resolved (a
    type imported only for type checkers) or is absent checks nothing.

    Example:
        >>> def f(*, n: int = 1, lr: float = 0.1, name: str | None = None): ...
        >>> keyword_problem(f, "n", "5"), keyword_problem(f, "lr", float("inf")), keyword_problem(f, "name", None)
        ('takes int, got str', 'must be a finite number', None)
    """
    import inspect

    try:
        param = inspect.signature(fn).parameters.get(name)
        hint = param.annotation if param is not None else inspect.Parameter.empty
        if isinstance(hint, str):  # postponed annotations: resolved in the function's own module
            hint = eval(hint, getattr(inspect.unwrap(fn), "__globals__", {}))  # noqa: S307 - its own annotation
    except Exception:  # NameError for a TYPE_CHECKING-only name, or no signature: not checked
        return None
    if hint is inspect.Parameter.empty:
        return None
    return annotation_problem(hint, value)


def annotation_problem(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the (resolved) annotation ``hint``, or ``None``: the check of
    :func:`keyword_problem`, for a type already in hand (a field of a typed options dataclass).

    Example:
        >>> annotation_problem(int | None, "8"), annotation_problem(float, float("nan")), annotation_problem(str, "x")
        ('takes int | None, got str', 'must be a finite number', None)
    """
    import math

    if not type_ok(value, hint):
        shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        return f"takes {shown}, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None


def type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from JSON/TOML/YAML or Python) fits the annotation ``hint``.

    Example:
        >>> type_ok(3, float), type_ok(True, int), type_ok([1, 2], tuple[int, ...] | None)
        (True, False, True)
    """
    import os
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (tuple, list):
        elem = args[0] if args else Any
        items = value if isinstance(value, (list, tuple)) else [value]  # a single item is accepted
        return all(type_ok(v, elem) for v in items)
    return True  # anything else: the config's own validation decides


def check_inplace(inplace: object) -> None:
    """Raise ``TypeError`` unless ``inplace`` is ``True`` or ``False``: ``inplace="False"`` (a
    non-empty string, so true) edited the caller's model."""
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace takes True or False, got {type(inplace).__name__} {inplace!r}; "
                        "inplace=False (the default) edits a copy, inplace=True the model itself")


def as_float(x: Any) -> float:
    """``x`` as a float, NaN for None and for anything that is not a number (numpy scalars and
    strings of numbers convert): how tables and plots read an optional cell.

    Example:
        >>> as_float(None), as_float("0.5"), as_float("–")
        (nan, 0.5, nan)
    """
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan
