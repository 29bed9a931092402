"""Run folders written by older versions: their stored settings in today's form.

A run folder's ``run_config.json`` keeps the settings it ran with. Settings were renamed,
nested and added since the first folders were written; :func:`upgrade_stored` rewrites a
stored record so that the resume check (:meth:`~factlens.runner.run_dir.RunDir.open`)
compares like with like: a folder resumes when it ran with today's settings, and is refused,
naming the setting, when it did not.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from factlens.runner.method_settings import upgrade_method_settings

__all__ = ["upgrade_stored", "without_added_eval_fields", "added_eval_flags", "with_added_eval_fields",
           "with_suite_defaults", "stored_inputs"]

#: Input labels of older run folders -> the labels now (:func:`upgrade_stored`).
_RENAMED_INPUTS: dict[str, str] = {"eval.text_source": "eval.text.source",
                                   "eval.mmlu_source": "eval.side_effects.mmlu_source"}

#: Evaluation settings added after run folders were first written: dotted path -> the value
#: that reproduces what the versions before them did (a stored record without the key ran so).
#: (``relearning.checkpoint`` is absent on purpose: it changes no result, so an older record
#: takes today's default and resumes. ``lora_forward`` is here although both forms train the
#: same adapters: they differ in float rounding, which can flip a fact near a tie, so the
#: units of one folder keep one form.)
_ADDED_EVAL_FIELDS: dict[str, Any] = {"relearning.both_halves": False, "relearning.lora_forward": "merged",
                                      "relearning.retain_avoids_subjects": False, "side_effects.held_out_text": False,
                                      "mcq_shots": "dataset", "direction_ablation.search_layers": "from_mask",
                                      "unrelated_finetune.lora_forward": "merged",
                                      # the attacks' training batches were the shared forward-pass sizes
                                      "relearning.text_batch_size": ("text.batch_size", 4),
                                      "unrelated_finetune.text_batch_size": ("text.batch_size", 4),
                                      "soft_prompts.batch_size": ("batch_size", 16),
                                      # quantized / measured the loaded weights, norm scales folded in
                                      "quantization.unfold_norms": False, "update_size.unfold_norms": False,
                                      # candidates compared by their summed log-probabilities
                                      "candidate_score": "sum"}
#: (A tuple ``(path, default)`` as the value: the setting took the value of that other setting,
#: ``default`` when the record lacks it too.)
#: The same for edit settings: the methods' own tables, adaptive RMU and checkpointing did not
#: exist, which is what their values below do. (Fields of the methods' own settings:
#: :data:`factlens.runner.method_settings._ADDED_METHOD_FIELDS`.)
_ADDED_EDIT_FIELDS: dict[str, Any] = {"methods": {}, "rmu_adaptive_scale": None, "checkpoint": False, "objectives": {}}


def reads_multiple_choice(eval_table: Mapping[str, Any], suites) -> bool:
    """Whether an evaluation with these (nested) settings and ``suites`` scores multiple-choice
    prompts: the formats suite, or a suite whose own ``formats`` include ``"mcq"``. Only then do
    the multiple-choice settings (``mcq_shots``) decide any of its numbers.

    Example:
        >>> reads_multiple_choice({"quantization": {"formats": ["default", "mcq"]}}, ["quantization"])
        True
        >>> reads_multiple_choice({"quantization": {"formats": ["default"]}}, ["standard", "quantization"])
        False
    """
    suites = tuple(suites)
    tables = [eval_table[k] for k in suites if isinstance(eval_table.get(k), Mapping)]
    return "formats" in suites or any("mcq" in (t.get("formats") or ()) for t in tables)


def without_added_eval_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's given settings without the :data:`_ADDED_EVAL_FIELDS` in its ``eval`` table.

    The resume check compares those settings through the resolved records only (the upgraded
    stored one holds the old value): so a user who resumes an older folder by spelling out the
    value it ran with (``--eval relearning.lora_forward=merged``) is not refused for having
    given an option the folder's own command did not.

    Example:
        >>> without_added_eval_fields({"eval": {"relearning": {"steps": 2, "lora_forward": "merged"}}, "seeds": [0]})
        {'eval': {'relearning': {'steps': 2}}, 'seeds': [0]}
    """
    out = dict(record)
    ev = out.get("eval")
    if not isinstance(ev, Mapping):
        return out
    ev = copy.deepcopy(dict(ev))
    for path in _ADDED_EVAL_FIELDS:
        ev.pop(path, None)  # a dotted key as given
        section, _, leaf = path.rpartition(".")
        node = ev.get(section)
        if isinstance(node, dict):
            node.pop(leaf, None)
            if not node:
                del ev[section]
    out["eval"] = ev
    return out


def added_eval_flags(stored_eval: Mapping[str, Any], now_eval: Mapping[str, Any]) -> list[str]:
    """``--eval path=value`` that resumes a folder whose (upgraded) resolved evaluation settings
    differ from today's in an :data:`_ADDED_EVAL_FIELDS` setting (the value the folder ran with).

    Each value is written as ``--eval`` reads it back (JSON): ``False`` as ``false`` (printed
    with ``str``, the flag suggested was refused as a string).

    Example:
        >>> added_eval_flags({"relearning": {"lora_forward": "merged", "both_halves": False}},
        ...                  {"relearning": {"lora_forward": "factored", "both_halves": True}})
        ['--eval relearning.both_halves=false', '--eval relearning.lora_forward=merged']
    """
    return [f"--eval {path}={_flag_value(_get(stored_eval, path))}" for path in _ADDED_EVAL_FIELDS
            if _get(stored_eval, path) is not None and _get(stored_eval, path) != _get(now_eval, path)]


def _flag_value(value: Any) -> str:
    """``value`` as a ``KEY=VALUE`` option reads it back: JSON (``false``, ``4``), a plain word bare
    (``merged``: read as a string, since it is no JSON)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value) \
            and value.lower() not in ("true", "false", "null", "nan", "infinity", "inf"):
        return value
    return json.dumps(value)


def _get(table: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a nested table (``None`` when absent)."""
    node: Any = table
    for key in path.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def with_added_eval_fields(table: Mapping[str, Any]) -> dict[str, Any]:
    """A stored evaluation table (an ``EvalResult``'s ``meta["config"]``, nested or in an older
    flat form) in today's nested form, each setting added since at the value it ran with.

    Example:
        >>> t = with_added_eval_fields({"text": {"batch_size": 2}, "relearning": {"steps": 3}})
        >>> t["relearning"]["text_batch_size"], t["soft_prompts"]["batch_size"], t["relearning"]["both_halves"]
        (2, 16, False)
    """
    from factlens.evaluation import EvalConfig

    if not table:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return _with_added_fields(EvalConfig.normalize(dict(table)))
        except (TypeError, ValueError):
            return dict(table)  # settings this version no longer has: compared as stored


def _with_added_fields(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` (nested, normalized) with each absent :data:`_ADDED_EVAL_FIELDS` entry at its old value."""
    out = copy.deepcopy(table)
    for path, old_value in _ADDED_EVAL_FIELDS.items():
        if isinstance(old_value, tuple):  # the value of the setting it was read from before
            source, default = old_value
            old_value = _get(table, source)
            old_value = default if old_value is None else old_value
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(leaf, old_value)
    return out


def upgrade_stored(stored: Mapping[str, Any], run_files: Iterable[Path] = ()) -> dict[str, Any]:
    """A run folder's ``run_config.json`` record with the settings in today's form.

    Older versions wrote the resolved evaluation settings flat (``relearn_steps``,
    ``text_source``...) and labelled the input files ``eval.text_source`` /
    ``eval.mmlu_source``; the resume check compares this upgraded record with the current
    run, so such a folder resumes when its settings are the same. A setting added since
    (``relearning.both_halves``) that the record lacks gets the value that reproduces what the
    older version did (one half), not today's default. The edit methods the run used get every
    field of their settings (records before it kept only the user's tables): a field that
    changed meaning takes the value the folder's finished units (``run_files``) ran with, or,
    when none finished, the old value (MEMIT's ``norm_weight_floor``: 0, as MEMIT ran before
    the floor existed; :func:`~factlens.runner.method_settings.upgrade_method_settings`).
    The suites of the run that keep their settings in ``eval.other_suites`` get every field too
    (records before it kept only the fields given), at today's defaults.
    (The ``config`` part is read by :meth:`RunConfig.from_dict`, which maps the flat keys itself.)

    Example:
        >>> old = {"resolved": {"eval": {"relearn_steps": 5}}, "inputs": {"eval.text_source": {"sha256": None}}}
        >>> up = upgrade_stored(old)
        >>> up["resolved"]["eval"]["relearning"]["steps"], list(up["inputs"])
        (5, ['eval.text.source'])
    """
    out = dict(stored)
    resolved = dict(out.get("resolved") or {})
    ev = resolved.get("eval")
    if isinstance(ev, Mapping) and "error" not in ev:
        from factlens.evaluation import EvalConfig

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                upgraded = EvalConfig.from_dict(_with_added_fields(EvalConfig.normalize(ev)))
                resolved["eval"] = upgraded.with_suite_defaults(_stored_suites(out)).to_dict()
            except (TypeError, ValueError):
                pass  # settings this version no longer has: the resume check reports the difference
        out["resolved"] = resolved
    ed = resolved.get("edit")
    if isinstance(ed, Mapping) and "error" not in ed:
        ed = {**{k: copy.deepcopy(v) for k, v in _ADDED_EDIT_FIELDS.items()}, **ed}
        config = out.get("config") if isinstance(out.get("config"), Mapping) else {}
        methods = config.get("methods") or _default_methods()  # absent: written before methods existed
        resolved["edit"] = upgrade_method_settings(ed, resolved.get("eval"), methods, run_files)
        out["resolved"] = resolved
    if isinstance(out.get("inputs"), Mapping):
        out["inputs"] = stored_inputs(out)
    return out


def stored_inputs(stored: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A ``run_config.json`` record's input files (``{option: {"path", "sha256", ...}}``) under
    today's option names; ``{}`` for a folder written before their digests were kept.

    Example:
        >>> stored_inputs({"inputs": {"eval.text_source": {"path": "t.txt", "sha256": "ab"}}})
        {'eval.text.source': {'path': 't.txt', 'sha256': 'ab'}}
        >>> stored_inputs({})
        {}
    """
    inputs = stored.get("inputs")
    if not isinstance(inputs, Mapping):
        return {}
    return {_RENAMED_INPUTS.get(k, k): v for k, v in inputs.items() if isinstance(v, Mapping)}


def with_suite_defaults(table: Mapping[str, Any], suites: Iterable[str]) -> dict[str, Any]:
    """A nested evaluation table whose ``other_suites`` hold every field of each of ``suites``
    that keeps its settings there (:meth:`~factlens.evaluation.EvalConfig.with_suite_defaults`),
    so that a stored table of the fields given and the same settings written out compare equal;
    ``table`` as given when this version cannot read its ``other_suites``.

    Example:
        >>> with_suite_defaults({"seed": 0, "other_suites": {}}, ["logit_lens"])["other_suites"]["logit_lens"]["top_k"]
        20
    """
    from factlens.evaluation import EvalConfig

    out = dict(table)
    try:
        out["other_suites"] = EvalConfig(other_suites=table.get("other_suites") or {}).with_suite_defaults(
            suites).to_dict()["other_suites"]
    except (TypeError, ValueError):
        pass  # settings this version no longer has: compared as stored
    return out


def _stored_suites(stored: Mapping[str, Any]) -> tuple[str, ...]:
    """The suites of a stored run record (``RunConfig``'s default when its config lacks them)."""
    from factlens.runner.config import RunConfig

    config = stored.get("config") if isinstance(stored.get("config"), Mapping) else {}
    suites = config.get("suites")
    if isinstance(suites, str):  # as given on the command line
        suites = [s.strip() for s in suites.split(",") if s.strip()]
    return tuple(suites) if isinstance(suites, (list, tuple)) else RunConfig.suites


def _default_methods() -> tuple[str, ...]:
    """The edit methods of a run whose record predates the ``methods`` field (``RunConfig``'s default)."""
    from factlens.runner.config import RunConfig  # here: config re-exports this module's functions

    return RunConfig.methods
