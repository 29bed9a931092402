"""What the resume check (:meth:`~factlens.runner.run_dir.RunDir.open`) compares between the
settings a run folder holds and the run's: the settings as given (:func:`_experiment`,
:func:`_diff`), the evaluation settings of the suites the run runs (:func:`_ran_only`) and the
contents of the input files (:func:`_input_diff`).

Split from :mod:`factlens.runner.run_dir` to keep it small.
"""

from __future__ import annotations

from typing import Any

from factlens.runner.config import RunConfig
from factlens.runner.method_settings import _norm, without_method_tables
from factlens.runner.stored import reads_multiple_choice, without_added_eval_fields


def _input_diff(stored: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Input files whose content changed (``stored`` is ``None`` for folders written before hashes were kept).

    Only inputs both records name are compared: an option given on one side only is a changed
    setting, which the configuration check reports, and a folder written before an input was
    hashed (the edit methods' ``text_source``, since 2026-12-05) lacks its entry."""
    if stored is None:
        return []
    out = []
    for k in sorted(set(stored) & set(now)):
        a, b = (stored.get(k) or {}).get("sha256"), (now.get(k) or {}).get("sha256")
        if a != b:
            path = (now.get(k) or stored.get(k) or {}).get("path")
            out.append(f"input {k} ({path}): its content changed since the stored results were made "
                       f"(sha256 {str(a)[:12]} stored, {str(b)[:12]} now)")
    return out


def _respelled_inputs(stored: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Options that name the stored input file under another spelling (the same content): the
    resume is refused as another setting (the path is part of the record every unit keeps), and
    this says which spelling resumes it."""
    out = []
    for k in sorted(set(stored or {}) & set(now)):
        a, b = (stored or {}).get(k) or {}, now.get(k) or {}
        if a.get("sha256") and a.get("sha256") == b.get("sha256") and a.get("path") != b.get("path"):
            out.append(f"input {k}: {b.get('path')!r} is the stored {a.get('path')!r} (the same content, "
                       f"sha256 {a['sha256'][:12]}): give it as {a.get('path')!r} to resume")
    return out


def _ran_only(ev: dict[str, Any], suites: tuple[str, ...]) -> dict[str, Any]:
    """Resolved evaluation settings without the tables of suites not in ``suites`` (``--eval
    relearning.steps=3`` on a run without relearning was recorded, and then refused a resume
    without it as a different configuration)."""
    from factlens.evaluation import EvalConfig

    fields = set(EvalConfig.suite_fields())
    out = {k: v for k, v in ev.items() if k not in fields or k in suites}
    if isinstance(out.get("other_suites"), dict):
        out["other_suites"] = {k: v for k, v in out["other_suites"].items() if k in suites}
    # the multiple-choice examples (a shared setting) decide only the suites that score multiple choice
    if not reads_multiple_choice(ev, suites):
        out.pop("mcq_shots", None)
    return out


def _experiment(config: RunConfig, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of ``config`` that the resume check compares as given (``edit`` and ``eval`` are
    compared resolved), with the suites as a set: their order decides no number, and a resume with
    ``--suites formats,standard`` of a ``standard,formats`` folder was refused.

    ``stored``: the folder's ``config`` table, whose ``localize_options`` are compared as stored: a
    folder made in Python before RunConfig kept the default tables under the given ones ran without
    them, which reading it through RunConfig would hide."""
    out = {k: v for k, v in without_added_eval_fields(without_method_tables(config.experiment_dict())).items()
           if k not in ("edit", "eval")}
    if stored is not None and isinstance(stored.get("localize_options"), dict) and "localize_options" in out:
        out["localize_options"] = stored["localize_options"]
    if isinstance(out.get("suites"), (list, tuple)):
        out["suites"] = sorted(out["suites"])
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} (stored) != {b.get(k)!r} (now)" for k in keys if _norm(a.get(k)) != _norm(b.get(k))]
