"""JSON text that every JSON parser reads: non-finite numbers are written as ``null``.

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default; they are not
JSON (RFC 8259), and strict parsers reject the whole file: JavaScript's ``JSON.parse``,
``jq`` before 1.7, Go's ``encoding/json``, Rust's ``serde_json``. factlens's result files
hold such numbers where a value is undefined (a token role that no prompt has, a metric
over no facts, the loss of a diverged edit), so :func:`strict_dumps` writes them as
``null``, as pandas' ``to_json`` does. factlens's own readers load ``null`` in a numeric
field as NaN (``Metric.from_dict``, the arrays of ``ComponentScores``); the sign of an
infinity is not kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

__all__ = ["strict_dumps", "strict_loads", "json_default", "read_json"]


def json_default(x: Any) -> Any:
    """``json.dump(..., default=json_default)``: arrays and tensors as lists, numpy scalars as
    Python numbers, anything else as its ``str`` (results and run files are written with it)."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def strict_dumps(obj: Any, *, indent: int | None = 1, default: Callable[[Any], Any] = json_default,
                 sort_keys: bool = False) -> str:
    """``json.dumps`` with NaN and infinities (also inside arrays and numpy scalars) as ``null``.

    Example:
        >>> import numpy as np
        >>> strict_dumps({"a": float("nan"), "b": [1.5, float("-inf")], "c": np.array([np.nan, 2.0])}, indent=None)
        '{"a": null, "b": [1.5, null], "c": [null, 2.0]}'
    """
    return json.dumps(_finite(obj, default), indent=indent, allow_nan=False, sort_keys=sort_keys)


def strict_loads(text: str) -> Any:
    """``json.loads`` that, like strict parsers, rejects ``NaN``, ``Infinity`` and ``-Infinity``.

    Raises:
        ValueError: ``text`` holds one of them (or is no JSON at all).

    Example:
        >>> strict_loads('[1, null]')
        [1, None]
        >>> strict_loads('[NaN]')
        Traceback (most recent call last):
        ...
        ValueError: NaN is not JSON (RFC 8259); write the file with factlens.strict_json.strict_dumps
    """
    return json.loads(text, parse_constant=_reject)


def read_json(path: str | Path, *, what: str) -> Any:
    """The JSON value in the file at ``path``, which should hold ``what`` (``"a saved Mask"``).

    A loader's raw ``UnicodeDecodeError`` (a binary file, such as a saved edit) or
    ``JSONDecodeError`` (a text or empty file) named neither the file nor what it should be.
    ``NaN`` and infinities are read as Python's ``json`` reads them (older files hold them).

    Raises:
        ValueError: The file is empty, not UTF-8 text or not valid JSON (the message names it
            and ``what`` was expected).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"; _ = f.write_text("hello")
        >>> read_json(f, what="a saved Mask")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../notes.txt: not valid JSON (Expecting value: line 1 column 1 (char 0)); expected a saved Mask
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text, so not JSON (byte {e.start}: {e.reason}); expected {what} "
                         "(a binary file, such as a saved edit, has its own loader)") from e
    if not text.strip():
        raise ValueError(f"{path} is empty; expected {what}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected {what}") from e


def _reject(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (RFC 8259); write the file with factlens.strict_json.strict_dumps")


def _finite(x: Any, default: Callable[[Any], Any]) -> Any:
    """``x`` with every float that is not finite replaced by ``None``; other types that JSON
    lacks are converted by ``default`` first (so a numpy array's NaN is found too)."""
    if isinstance(x, float):  # also numpy.float64, a float subclass
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int)):  # bool is an int
        return x
    if isinstance(x, dict):
        return {k: _finite(v, default) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v, default) for v in x]
    y = default(x)
    if type(y) is type(x):  # a default that returns its input: let json raise its TypeError
        return x
    return _finite(y, default)
