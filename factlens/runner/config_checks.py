"""The checks of a :class:`~factlens.runner.config.RunConfig` beyond its fields' own: options the
run would never read, settings that used to fail only inside a job, the device, the seeds.

They run before any file is written (``RunConfig.validate``; the device in ``factlens run`` and
:func:`~factlens.runner.run_experiment`), so that a bad setting costs an exit 2 with a message,
not a traceback after minutes of work and a folder that keeps the bad settings. The checks that
need a seed's model and task (:func:`check_retain_kl`, :func:`check_suite_tasks`) run in its plan
job, before the FLU and any localization.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from factlens.runner.inputs import _looks_local

if TYPE_CHECKING:
    from factlens.runner.config import RunConfig

__all__ = ["late_failures", "unused_options", "unread_settings", "check_device", "as_seed", "as_list_field",
           "check_retain_kl", "check_suite_tasks"]


def _text_readers() -> tuple[str, ...]:
    """The suites that read the general text (``Suite.reads_text`` in the registry), sorted."""
    from factlens.evaluation import text_readers

    return tuple(sorted(text_readers()))


def _text_covariance() -> tuple[str, ...]:
    """The edit methods whose settings have a ``text_source`` (their key covariance is estimated on
    the run's text too: ROME, MEMIT, AlphaEdit, and any registered method of that kind)."""
    from factlens.editing.registry import EDIT_METHODS
    from factlens.runner.method_settings import reads_covariance_text

    return tuple(name for name in EDIT_METHODS.names() if reads_covariance_text(name))


def late_failures(config: "RunConfig") -> list[str]:
    """Settings that pass :meth:`RunConfig.validate`'s field checks but failed inside a job, after
    files were written and minutes of work (each a traceback, and the folder kept the bad settings):
    one line per problem, ``[]`` when there is none."""
    from factlens.editing.registry import OBJECTIVES
    from factlens.localization.registry import LOCALIZATIONS
    from factlens.runner.pipeline import _localize_options

    bad = []
    for k, v in config.input_files().items():
        if not v.strip():  # (--text-source= ): read as the current folder, it failed in the job as ". is a folder"
            bad.append(f"{k}={v!r} is empty; give a file's path, or leave the setting out for its default")
            continue
        p = Path(v).expanduser()
        if not (_looks_local(v) and p.exists()):
            continue
        if p.is_dir() and k in ("eval.text.source", "edit.sft_source"):
            bad.append(f"{k}={v!r} is a folder; give a text file (e.g. {p}/train.txt)")
        elif p.is_dir() and k == "eval.side_effects.mmlu_source" and not any(p.glob("*.csv")):
            bad.append(f"{k}={v!r} has no .csv files; expected the MMLU CSVs (e.g. abstract_algebra_dev.csv)")
        elif p.is_file() and p.stat().st_size == 0:
            bad.append(f"{k}={v!r} is an empty file")
        elif not p.is_dir() and not p.is_file():  # /dev/null, a pipe: was reported as missing, late
            bad.append(f"{k}={v!r} is not a regular file (a device or pipe cannot be read again to resume or "
                       "reproduce a run); give a file")
    for loc in config.localizations:
        method = LOCALIZATIONS.get(loc).scoring
        missing = [o for o in (method.required if method else ()) if o not in _localize_options(config, loc)]
        if missing:
            bad.append(f"localization {loc!r} needs the option(s) {missing}: set them in the config file's "
                       f"[localize_options.{method.name}] table (e.g. components = [\"L3.mlp\"])")
    if config.default_objective == "unlearn":  # no target_new on the facts of an unlearning task
        bad += [f"objective {o!r} trains towards a new answer (target_new), which task {config.task!r} does not "
                "give: choose an unlearning objective" for o in config.objectives if OBJECTIVES.get(o).needs_target_new]
    bad += _task_option_types(config) + _edit_to_the_sport(config) + _settings_types(config) + _too_few_facts(config)
    from factlens.evaluation import SUITES

    stray = sorted(n for n in config.eval.to_dict().get("other_suites", {}) if n not in SUITES)
    if stray:  # evaluate refused them inside the first job, after its localization and edit
        bad.append(f"eval.other_suites has settings for {stray}, which is no registered suite (suites with "
                   f"settings: {sorted(n for n in SUITES.names() if SUITES.get(n).config_type is not None)})")
    if config.gpus_per_job < 0 or config.cpus_per_job <= 0:
        bad.append(f"gpus_per_job must be >= 0 and cpus_per_job > 0, got {config.gpus_per_job}, {config.cpus_per_job}")
    return bad


def unused_options(config: "RunConfig") -> list[str]:
    """Options that are set but that this task / executor / suite selection never reads."""
    out: list[str] = []
    if config.task == "planted" or config.model == "planted":  # the planted model brings its own facts, whatever the task
        who = "task 'planted'" if config.task == "planted" else "--model planted"
        out += [f"{f}={getattr(config, f)!r}: {who} uses the planted model's built-in facts and never reads "
                f"--{f.replace('_', '-')}" for f in ("data", "mcq_data") if getattr(config, f) is not None]
    elif config.mcq_data is not None and not config.task.startswith(("counterfact", "sequential")):
        out.append(f"mcq_data={config.mcq_data!r}: only the CounterFact tasks read multiple-choice questions; "
                   f"task {config.task!r} does not")
    if config.executor == "local":
        defaults = {"ray_address": None, "gpus_per_job": 0.0, "cpus_per_job": 1.0}
        out += [f"{k}={getattr(config, k)!r}: only the Ray executor uses it (add --executor ray)"
                for k, v in defaults.items() if getattr(config, k) != v]
    elif config.workers != 1:
        out.append(f"workers={config.workers!r}: only the local executor uses worker processes (Ray schedules its "
                   "own; use --cpus-per-job)")
    mmlu, text = config.eval.get_path("side_effects.mmlu_source"), config.eval.get_path("text.source")
    if mmlu is not None and "side_effects" not in config.suites:
        out.append(f"eval.side_effects.mmlu_source={mmlu!r}: only the side_effects suite reads it, and "
                   f"the suites are {list(config.suites)}")
    readers, covariance = _text_readers(), _text_covariance()
    if text is not None and not set(readers) & set(config.suites) and not set(covariance) & set(config.methods):
        out.append(f"eval.text.source={text!r}: only the {', '.join(readers)} suites and the key covariance of "
                   f"{', '.join(covariance)} read it, and the suites are {list(config.suites)}")
    if config.param_budget is not None:
        from factlens.runner.pipeline import unbudgeted

        if set(config.localizations) <= unbudgeted():  # each record said param_budget=N though no mask used it
            out.append(f"param_budget={config.param_budget!r}: only budgeted localizations (random, causal_tracing, "
                       f"...) take it, and {list(config.localizations)} take none (FLU sets its own size)")
    out += _unused_task_options(config)
    return out


def unread_settings(config: "RunConfig", *, methods: tuple[str, ...] | None = None,
                    objectives: tuple[str, ...] | None = None) -> list[str]:
    """Settings that this run accepts but that change none of its numbers, or that make its
    comparisons unequal; one line each, warned at the start of :func:`~factlens.runner.run_experiment`.

    Warned, not refused (as :func:`unused_options` are): one config file often serves runs of
    other ``--suites`` / ``--methods``. Before, they passed without a word, and a user who set
    ``relearning.steps`` with ``--suites standard`` read no relearning number and no reason.
    ``methods``: the edit methods whose settings count (default ``config.methods``; a resumed
    folder's stored methods too, whose settings are compared with the stored ones); ``objectives``
    likewise (default ``config.objectives``, or the task's own objective when it names none).
    """
    from factlens.evaluation import SUITES
    from factlens.runner.pipeline import unbudgeted

    out = []
    ev = config.eval.to_dict()
    tables = [k for k in (*ev, *(ev.get("other_suites") or {})) if k in SUITES and k not in config.suites]
    if tables:
        out.append(f"eval settings of suite(s) {tables} change nothing: the run's suites are {list(config.suites)}")
    used = config.methods if methods is None else methods
    unused = [m for m in (config.edit.get_path("methods") or {}) if m not in used]
    if unused:
        out.append(f"edit settings of method(s) {unused} change nothing: the run's edit methods are {list(used)}")
    trained = (config.objectives or (config.default_objective,)) if objectives is None else objectives
    unused = [o for o in (config.edit.get_path("objectives") or {}) if o not in trained]
    if unused:  # (before, silently: objectives.graddiff.reduction=token in a run without --objectives graddiff)
        out.append(f"edit settings of objective(s) {unused} change nothing: the run's objectives are "
                   f"{list(trained)} (add them with --objectives)")
    out += _unread_text(ev.get("text") or {}, config.suites, used)
    out += _side_effects_on_trained_text(config)
    budgeted = [loc for loc in config.localizations if loc not in unbudgeted()]
    if config.param_budget is not None and "flu" in config.localizations and budgeted:
        out.append(f"param_budget={config.param_budget:,} sizes {budgeted}; flu keeps its own mask and size, so their "
                   "comparisons with flu are not at an equal budget (leave out --param-budget to give them flu's size)")
    return out


def _unread_text(text: dict[str, Any], suites: tuple[str, ...], methods: tuple[str, ...]) -> list[str]:
    """A warning for the general-text settings (``eval.text.<field>``) that none of ``suites``
    reads (``Suite.reads_text``) nor, for ``source``, the key covariance of ``methods``.

    Per field: the linear lens reads ``source`` alone (its chunks are its own settings), so
    ``text.n_chunks`` in a run whose only text reader is the linear lens changes nothing, and was
    not reported while the suites were counted as reading the whole text or none of it.
    """
    from factlens.evaluation import SUITES, text_fields

    covariance = _text_covariance()
    read = set(text_fields(suites)) | ({"source"} if set(covariance) & set(methods) else set())
    unread = sorted(set(text) - read)
    if not unread:
        return []
    if not read:
        return [f"eval settings of the general text {unread} change nothing: only the "
                f"{', '.join(_text_readers())} suites and the key covariance of {', '.join(covariance)} read it"]
    readers = {f: [s.name for s in SUITES if f in s.reads_text] for f in unread}
    return [f"eval settings of the general text {unread} change nothing in this run: it reads only "
            f"{sorted(read)} (" + "; ".join(f"text.{f} is read by {', '.join(r) or 'no suite'}"
                                            for f, r in readers.items()) + ")"]


def _side_effects_on_trained_text(config: "RunConfig") -> list[str]:
    """The side effects measured on the text the editor's KL/SFT term trains on (one file given as
    both ``edit.sft_source`` and ``eval.text.source``): the damage there is what the edit was told
    to avoid, so it understates the damage elsewhere. (With neither given, the suite reads
    built-in passages nothing trains on: ``SideEffectsConfig.held_out_text``.)"""
    from factlens.data.text import same_text_source

    eval_text = config.eval.get_path("text.source")
    if "side_effects" not in config.suites or not same_text_source(config.edit.get_path("sft_source"), eval_text):
        return []
    return [f"eval.text.source and edit.sft_source are both {str(eval_text)!r}: the side_effects suite measures general "
            "text where the editor's KL term trained the edit to keep it (its chunks can be the editor's own), which "
            "understates the damage; give the evaluation another text (e.g. a held-out split)"]


def _task_entry(config: "RunConfig"):
    """The run's task's :class:`~factlens.tasks.TaskEntry` (``planted``: Sports-Athlete-Editing's)."""
    from factlens.tasks import task_entry

    return task_entry("sports-athlete-editing" if config.task == "planted" else config.task)


def _unused_task_options(config: "RunConfig") -> list[str]:
    params = _task_entry(config).options.names()  # the size and the seed are the runner's (forget_size, seeds)
    accepted = sorted(params)
    out = []
    # the runner passes these itself: given twice, the job failed late with a message blaming n_forget
    given = {"seed": "the seed is set per run by --seeds (the config's seeds)",
             "dataset": "the facts are set by the data options (--data, --max-facts, --no-filter-known)"}
    for k in config.task_options:
        if k in ("n_forget", "chunk_size"):
            out.append(f"task_options.{k}: set forget_size (--forget-size) instead")
        elif k in given:
            out.append(f"task_options.{k}: {given[k]}, not by a task option")
        elif k not in params:
            out.append(f"task_options.{k}: task {config.task!r} does not take it (it takes {accepted})")
    return out


def _too_few_facts(config: "RunConfig") -> list[str]:
    """Suites whose settings need more forget facts than the run edits (a settings type's
    ``forget_facts_needed()``: the in-context attack's shots): the suite failed after the first
    unit's localization and edit."""
    if config.forget_size is None or _task_entry(config).size_option != "n_forget":
        return []
    try:
        ev = config.eval_config(0)
        typed = _suite_settings(config, ev)
    except (TypeError, ValueError, ImportError):  # bad settings are reported by the checks that read them
        return []
    out = []
    for n, st in typed.items():
        where = f"{n}" if n in type(ev).suite_fields() else f"other_suites.{n}"
        need = st.forget_facts_needed() if hasattr(st, "forget_facts_needed") else 1
        if config.forget_size < need:
            out.append(f"suite {n!r} needs at least {need} forget facts with its settings ({type(st).__name__}), and "
                       f"--forget-size is {config.forget_size}: raise --forget-size or change the suite's settings "
                       f"(--eval {where}.FIELD=...)")
    return out


def _settings_types(config: "RunConfig") -> list[str]:
    """The run's suites, edit methods and objectives whose ``config_type`` is no settings type (a plain
    dataclass named by a ``Ref``, checked only when loaded): it failed as a traceback once the folder
    was being opened (the suites) or inside the job (methods, objectives)."""
    from factlens.config import check_config_type
    from factlens.editing.config import _settings_class
    from factlens.editing.registry import EDIT_METHODS, OBJECTIVES
    from factlens.evaluation import SUITES, EvalConfig
    from factlens.registry import load

    checks = [(f"suite {n!r}", SUITES.get(n), check_config_type) for n in config.suites
              if n in SUITES and n not in EvalConfig.suite_fields()]
    checks += [(f"edit method {n!r}", EDIT_METHODS.get(n), _settings_class) for n in config.methods if n in EDIT_METHODS]
    checks += [(f"objective {n!r}", OBJECTIVES.get(n), _settings_class)
               for n in config.objectives or (config.default_objective,) if n in OBJECTIVES]
    own = {id(e) for e in (*SUITES.entries, *EDIT_METHODS.entries, *OBJECTIVES.entries)}  # their modules stay unread
    bad = []
    for where, entry, check in checks:
        config_type = entry.config_type
        if config_type is not None and id(entry) not in own:
            try:
                check(load(config_type), where=where)
            except (TypeError, ImportError) as e:
                bad.append(str(e))
    return bad


def _task_option_types(config: "RunConfig") -> list[str]:
    """Task options of a type the task's :class:`~factlens.tasks.TaskOptions` field excludes
    (``n_maintain = "8"`` failed in the job as "does not accept options", after the folder was
    written); unknown options are :func:`_unused_task_options`'."""
    from factlens.value_checks import annotation_problem

    types = _task_entry(config).options.types()
    return [f"task_options.{k}={v!r}: {p}" for k, v in config.task_options.items() if k in types
            for p in [annotation_problem(types[k], v)] if p]


def _edit_to_the_sport(config: "RunConfig") -> list[str]:
    """Full-Sports-Editing with its edit target equal to its sport (``task_options.target = "basketball"``):
    an edit to the true answer, refused by the task only inside the job."""
    from factlens.tasks import FullSportsOptions as opts

    if config.task != "full-sports-editing":
        return []
    sport, target = (config.task_options.get(k, opts.default(k)) for k in ("sport", "target"))
    if target != sport:
        return []
    return [f"task_options: the edit target {target!r} is the edited athletes' sport {sport!r} (task_options.target "
            f"and .sport, by default {opts.default('target')!r} and {opts.default('sport')!r}): an edit to the "
            "true answer changes nothing; choose another target or sport"]


def check_device(config: "RunConfig", *, local: bool | None = None) -> None:
    """Refuse a device this machine cannot hold the model on, before any file is written
    (``local``: whether the jobs run in this machine's processes; ``None``: as ``config.executor`` says).

    Checked for the run asked for now (``factlens run``, :func:`~factlens.runner.run_experiment`),
    not in :meth:`RunConfig.validate`: a stored folder's settings name the device it ran on, which
    need not exist where it is resumed or reported (a GPU run resumed through Ray from a CPU
    driver).

    With ``config.executor == "ray"`` and ``local=None``, also that ray is installed.

    Raises:
        ValueError: What is wrong and what to use instead.
    """
    bad = _device_problems(config.device, local=config.executor == "local" if local is None else local)
    if local is None and config.executor == "ray" and importlib.util.find_spec("ray") is None:
        # (the executor is made from the config): it failed at the first job, with a traceback
        bad.append('executor="ray" needs ray, which is not installed here: pip install "factlens[ray]" (or pip '
                   "install ray), or run with --executor local")
    if bad:
        raise ValueError("bad settings (found before any file is written):\n  " + "\n  ".join(bad))


def _device_problems(device: str, *, local: bool) -> list[str]:
    """Why ``device`` cannot hold the model here (a misspelt name; CUDA on a machine without it,
    checked for the local executor only: Ray workers may have GPUs the driver lacks)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        return [f"device={device!r} is not a device torch knows ({e}); e.g. cpu, cuda, cuda:1, mps"]
    if local and dev.type == "cuda" and not torch.cuda.is_available():
        return [f"device={device!r}: this torch has no usable CUDA device here (torch {torch.__version__}); use "
                "--device cpu, or --executor ray for GPUs on other machines"]
    if local and dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return [f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here"]
    return []


def as_seed(value: Any) -> int:
    """A seed as an int: a whole number in numpy's range (0 ... 2**32 - 1), or its decimal string
    (``--seeds 0,1``); a float such as 0.5 was silently run as seed 0, -1 failed inside a job."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, np.integer) or (isinstance(value, float) and value.is_integer()):
        value = int(value)  # np.arange(3), or 1.0 from a YAML file: whole numbers
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"seeds must be whole numbers from 0 to 2**32 - 1, got {value!r}")
    return value


#: What each list field of a ``RunConfig`` takes (:func:`as_list_field`'s error messages).
_LIST_ITEMS: dict[str, str] = {"localizations": "localization names", "seeds": "seeds (whole numbers)",
                               "suites": "evaluation suite names", "methods": "edit method names",
                               "objectives": "objective names"}


def as_list_field(name: str, value: Any) -> tuple[Any, ...]:
    """A list field of a ``RunConfig`` (``localizations``, ``seeds``...) as a tuple: a list, a
    comma-separated string, or one seed. A config file's ``seeds = 0.5`` was a TypeError traceback
    ("'float' object is not iterable"), ``suites = [{a = 1}]`` an unhashable-type one; each is
    now a ``ValueError`` naming the field and what it takes.

    Example:
        >>> as_list_field("localizations", "flu, random"), as_list_field("seeds", 3)
        (('flu', 'random'), (3,))
    """
    what = _LIST_ITEMS.get(name, "values")
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, int):  # one seed (a bool is refused by as_seed or as no name below)
        value = [value]
    if isinstance(value, (Mapping, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"config field {name!r} must be a list (or a comma-separated string) of {what}, "
                         f"got {value!r} ({type(value).__name__})")
    items = tuple(value)
    bad = [x for x in items if not isinstance(x, str)] if name != "seeds" else []
    if bad:
        raise ValueError(f"config field {name!r} must be a list of {what} (strings), got {list(items)!r}")
    return items


def check_retain_kl(model, task, config: "RunConfig", seed: int) -> None:
    """Refuse, before the FLU and the localizations, an objective whose KL retain term would not fit
    its cache (:func:`~factlens.editing.editor.check_retain_kl_fits`): otherwise every unit failed
    only when its edit started, after its localization."""
    from factlens.editing.editor import check_retain_kl_fits

    ec = config.edit_config(seed)
    for objective in config.objectives or (config.default_objective,):
        check_retain_kl_fits(model, task, objective=objective, config=ec)


def check_suite_tasks(task, config: "RunConfig", seed: int) -> None:
    """Refuse, before the FLU and the localizations, a task that a suite's settings cannot evaluate
    (a settings type's ``check_task(task, eval_config)``: the in-context attack's shots): otherwise
    the suite failed after the first unit's localization and edit."""
    ev = config.eval_config(seed)
    for settings in _suite_settings(config, ev).values():
        if hasattr(settings, "check_task"):
            settings.check_task(task, ev)


def _suite_settings(config: "RunConfig", ev) -> dict[str, Any]:
    """The settings of each of the run's suites that has a settings type, read from ``ev`` (the
    run's ``EvalConfig``)."""
    from factlens.evaluation import SUITES

    return {n: ev.suite_config(n) for n in config.suites if n in SUITES and SUITES.get(n).config_type is not None}
