"""A run folder's JSON files: read so that a damaged one is named with what to do about it, and
written atomically as strict JSON.

:func:`read_json`, :func:`read_json_table` and :func:`write_json_atomic` serve every file of a run
folder (the settings, the manifest, plans and run records); split from
:mod:`factlens.runner.run_dir` to keep it small, which still exports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factlens.files import write_atomic
from factlens.runner.run_files import RunFileError
from factlens.strict_json import strict_dumps

__all__ = ["read_json", "read_json_table", "write_json_atomic"]


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a truncated or corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path} is not valid JSON ({e}); it is truncated or was edited by hand. "
                         + _recovery(path)) from e


def read_json_table(path: str | Path, *, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """:func:`read_json` of a file that holds a JSON object (whose ``tables`` entries are objects too).

    Valid JSON of another shape (``[]``, ``{"config": 3}``) in a run folder's file was an
    ``AttributeError`` or ``KeyError`` traceback wherever it was first used; this names the file.
    """
    path = Path(path)
    rec = read_json(path)
    if not isinstance(rec, dict):
        raise RunFileError(f"{path} holds a JSON {type(rec).__name__}, not the object factlens writes. "
                           + _recovery(path))
    bad = [k for k in tables if not isinstance(rec.get(k), dict)]
    if bad:
        raise RunFileError(f"{path} lacks the table(s) {bad} factlens writes (or they are not objects). "
                           + _recovery(path))
    return rec


def _recovery(path: Path) -> str:
    """What to do about a damaged file of a run folder: a unit's or a plan's file is redone when it
    is deleted; without run_config.json or manifest.json the folder is no run folder any more."""
    if path.name in ("run_config.json", "manifest.json"):
        return (f"The folder's settings cannot be read: restore the file from a copy, or start the run afresh "
                f"with --overwrite (which deletes the results in {path.parent}) or another --out")
    return "Delete it and rerun `factlens run` with the same settings to redo it"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path``, never half-written (:func:`~factlens.files.write_atomic`), with NaN
    and infinities as ``null`` so that strict parsers read it (:mod:`factlens.strict_json`)."""
    text = strict_dumps(obj)
    write_atomic(path, lambda tmp: tmp.write_text(text))
