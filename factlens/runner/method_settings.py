"""The resolved settings of the edit methods a run uses, as recorded and compared on resume.

An edit method with settings of its own (``EditMethod.config_type`` in
:data:`~factlens.editing.registry.EDIT_METHODS`: ROME's ``RomeConfig``, MEMIT's ``MemitConfig``)
reads them from ``EditConfig.methods[name]``, where a run keeps only the fields the user gave;
the other fields take the method's defaults *of the version that runs*. A run folder therefore
records every field of each method the run uses (``run_config.json``: ``resolved.edit.methods``),
so that a default changed between two versions is a difference the resume check sees instead
of finished and pending units of one run editing with different settings.

A record written before that (only the user's tables, or none) is completed by
:func:`upgrade_method_settings`: a field that changed meaning (:data:`_ADDED_METHOD_FIELDS`)
takes the value the folder's finished units of the method ran with (each unit's record keeps
its method's settings), or, when none finished, the value that reproduces the versions before
the field; the other fields take today's value. The user's tables in the run's ``edit`` overrides are compared through these resolved
settings (:func:`without_method_tables`), so resuming with ``--edit methods.memit.<field>=<old
value>`` matches a folder whose record holds that value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["covariance_text_config", "reads_covariance_text", "resolved_method_settings", "upgrade_method_settings",
           "finished_unit_values", "without_method_tables", "method_settings_diff"]

#: Fields of the methods' config types added after run folders were first written: method ->
#: field -> the value that reproduces what the versions before the field did (a stored record
#: without the field ran so). ``memit.norm_weight_floor``: before 2026-11-30 MEMIT wrote every
#: non-zero dimension of a post-MLP norm, which is a floor of 0 (the default is 0.01 since).
#: Fields that change no result, or whose default is the old behaviour, need no entry: an older
#: record takes today's value for them and resumes.
#: ``text_source`` (ROME, MEMIT): the field always existed, but before 2026-11-30 (ae244d2) the
#: runner did not pass ``--text-source`` to it, so those units estimated the key covariance on the
#: built-in text; it is taken from the finished units only (:data:`_FROM_UNITS`), and with none
#: finished today's value stands (no unit ran with another one). ``alphaedit.protect_bos``: before
#: 2026-12-05 (session 42) AlphaEdit's null space held the BOS key's direction.
_FROM_UNITS = "<the finished units' value, else today's>"
_ADDED_METHOD_FIELDS: dict[str, dict[str, Any]] = {"memit": {"norm_weight_floor": 0.0, "text_source": _FROM_UNITS},
                                                   "rome": {"text_source": _FROM_UNITS},
                                                   "alphaedit": {"protect_bos": False}}
#: The stored value of a field the finished units of a method disagree on (matches no run).
_MIXED = "differs between the finished units: "


def _config_type(method: str) -> type | None:
    """The config type edit method ``method`` declares in ``EDIT_METHODS`` (``None``: none, e.g. fine-tuning)."""
    from factlens.editing.registry import EDIT_METHODS
    from factlens.registry import load

    entry = EDIT_METHODS.get(method)
    return None if entry.config_type is None else load(entry.config_type)


def reads_covariance_text(method: str) -> bool:
    """Whether edit method ``method``'s settings have a ``text_source``: its key covariance is
    estimated on general text (ROME, MEMIT, AlphaEdit)."""
    from dataclasses import fields

    cls = _config_type(method)
    return cls is not None and "text_source" in {f.name for f in fields(cls)}


def covariance_text_config(edit_config, method: str, text_source: str | None):
    """``edit_config`` with ``text_source`` as the key-covariance text of ``method`` when its config
    type has a ``text_source`` field (ROME, MEMIT) and the method's own table does not set one.

    The runner passes its general text (``eval.text.source``) so that ROME and MEMIT estimate the
    covariance on the run's text, not on the built-in one.
    """
    if text_source is None or not reads_covariance_text(method):
        return edit_config
    own = dict(edit_config.methods.get(method, {}))
    if own.get("text_source") is not None:
        return edit_config
    return edit_config.replace(methods={**edit_config.methods, method: {**own, "text_source": str(text_source)}})


def resolved_method_settings(edit_config, methods: Iterable[str], text_source: str | None = None
                             ) -> dict[str, dict[str, Any]]:
    """Every field of each method in ``methods`` that has a config type, as that method runs
    (defaults, then ``edit_config``'s seed and text, then the user's table), JSON-ready.

    Example:
        >>> from factlens.editing import EditConfig
        >>> s = resolved_method_settings(EditConfig(methods={"memit": {"v_lr": 0.1}}), ["finetune", "memit"])
        >>> list(s), s["memit"]["v_lr"], s["memit"]["norm_weight_floor"]
        (['memit'], 0.1, 0.01)
    """
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        if _config_type(m) is not None:
            settings = covariance_text_config(edit_config, m, text_source).method_config(m)
            out[m] = json.loads(json.dumps(settings.to_dict(), default=str))
    return out


def upgrade_method_settings(edit: Mapping[str, Any], eval_: Mapping[str, Any] | None, methods: Iterable[str],
                            run_files: Iterable[Path] = ()) -> dict[str, Any]:
    """A stored resolved edit record whose ``methods`` holds every field of each method the run used.

    ``edit`` is the record (with the edit settings added since filled in), ``eval_`` the
    resolved evaluation record (its ``text.source`` is the covariance text), ``methods`` the
    run's edit methods, ``run_files`` the folder's finished unit records. A field of
    :data:`_ADDED_METHOD_FIELDS` that the stored table lacks takes the value the finished units
    of the method ran with (:func:`finished_unit_values`), or, when none finished, the value of
    the versions before the field; the table's other fields stay, the missing ones take the
    value today's version resolves from the record. Tables of methods the run did not use are
    dropped (they decide nothing). A record this version cannot read is returned unchanged:
    the resume check then reports the difference.

    Example:
        >>> from factlens.editing import EditConfig
        >>> old = {**EditConfig().to_dict(), "methods": {"memit": {"v_lr": 0.1}, "rome": {"v_lr": 1.0}}}
        >>> up = upgrade_method_settings(old, None, ["finetune", "memit"])["methods"]
        >>> list(up), up["memit"]["v_lr"], up["memit"]["norm_weight_floor"]
        (['memit'], 0.1, 0.0)
    """
    from factlens.editing import EditConfig

    given = edit.get("methods") if isinstance(edit.get("methods"), Mapping) else {}
    text = eval_.get("text") if isinstance(eval_, Mapping) else None
    try:
        tables = resolved_method_settings(EditConfig.from_dict(dict(edit)), list(methods),
                                          text.get("source") if isinstance(text, Mapping) else None)
    except (TypeError, ValueError, KeyError):
        return dict(edit)
    missing = {m: [f for f in _ADDED_METHOD_FIELDS.get(m, {}) if f not in (given.get(m) or {})] for m in tables}
    ran = finished_unit_values(run_files) if any(missing.values()) else {}
    for m, fields in missing.items():
        for f in fields:
            old = _ADDED_METHOD_FIELDS[m][f]
            tables[m][f] = ran.get(m, {}).get(f, tables[m][f] if old is _FROM_UNITS else copy.deepcopy(old))
    return {**edit, "methods": tables}


def finished_unit_values(run_files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Method -> :data:`_ADDED_METHOD_FIELDS` field -> the value the method's finished units ran with.

    Read from each unit record's ``edit.meta["<method>_config"]`` (ROME and MEMIT write their
    settings there; a unit of a version before the field ran with its old value). Only the
    records of units of such methods are read (their file names carry ``+<method>``). A field
    the units disagree on (a folder resumed across the change) gets a text that matches no run,
    so the folder is refused rather than extended with either value.
    """
    seen: dict[str, dict[str, list[Any]]] = {}
    for p in run_files:
        m = next((part for part in Path(p).stem.split("+")[1:] if part in _ADDED_METHOD_FIELDS), None)
        if m is None:
            continue
        try:
            rec = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        meta = (rec.get("edit") or {}).get("meta") if isinstance(rec, Mapping) else None
        ran = meta.get(f"{m}_config") if isinstance(meta, Mapping) else None
        unit = rec.get("unit") or {}
        if not isinstance(ran, Mapping) or rec.get("kind") != "factlens.run" or unit.get("method") != m:
            continue
        for f, old in _ADDED_METHOD_FIELDS[m].items():
            if f not in ran and old is _FROM_UNITS:
                continue
            values = seen.setdefault(m, {}).setdefault(f, [])
            if _norm(ran.get(f, old)) not in values:
                values.append(_norm(ran.get(f, old)))
    return {m: {f: v[0] if len(v) == 1 else _MIXED + ", ".join(json.dumps(x) for x in v) for f, v in fields.items()}
            for m, fields in seen.items()}


def without_method_tables(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's experiment fields (or resolved settings) without ``edit.methods``.

    The resume check compares the methods' settings only through :func:`method_settings_diff`
    of the resolved records, which hold every field: a user's table that spells out the value a
    folder ran with (``--edit methods.memit.norm_weight_floor=0``) resumes it, tables of methods
    the run does not use decide nothing, and a method added to the run is no difference.

    Example:
        >>> without_method_tables({"edit": {"steps": 1, "methods": {"memit": {}}}, "seeds": [0]})
        {'edit': {'steps': 1}, 'seeds': [0]}
    """
    out = dict(record)
    edit = out.get("edit")
    if isinstance(edit, Mapping) and "methods" in edit:
        out["edit"] = {k: v for k, v in edit.items() if k != "methods"}
    return out


def method_settings_diff(stored: Mapping[str, Any] | None, now: Mapping[str, Any] | None
                         ) -> tuple[list[str], list[str]]:
    """``(differences, resume flags)`` between two resolved ``edit.methods`` records.

    Only methods both records hold are compared: a method new to the run has no finished
    units. Each difference names the field (``methods.memit.norm_weight_floor``); each flag is
    the ``--edit`` option that resumes with the stored value.

    Example:
        >>> lines, flags = method_settings_diff({"memit": {"norm_weight_floor": 0.0, "v_lr": 0.5}},
        ...                                     {"memit": {"norm_weight_floor": 0.01, "v_lr": 0.5}, "rome": {}})
        >>> lines, flags
        (['methods.memit.norm_weight_floor: 0.0 (stored) != 0.01 (now)'], ['--edit methods.memit.norm_weight_floor=0.0'])
    """
    stored, now = stored or {}, now or {}
    lines: list[str] = []
    flags: list[str] = []
    for m in sorted(set(stored) & set(now)):
        a, b = stored[m] or {}, now[m] or {}
        for f in sorted(set(a) | set(b)):
            if _norm(a.get(f)) != _norm(b.get(f)):
                lines.append(f"methods.{m}.{f}: {a.get(f)!r} (stored) != {b.get(f)!r} (now)")
                if f == "text_source" and a.get(f) is None:
                    # the runner replaces an unset covariance text by --text-source: no flag reproduces it
                    lines[-1] += (f" ({m}'s finished units estimated the key covariance on the built-in text; "
                                  "a run with --text-source cannot extend them: use a new --out)")
                elif f in a and not str(a[f]).startswith(_MIXED):
                    flags.append(f"--edit methods.{m}.{f}={json.dumps(a[f])}")
    return lines, flags


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))
