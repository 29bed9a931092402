"""The steps of one run: prepare -> budget -> localize -> mask -> edit -> evaluate -> revert.

Every step here is a plain function of a :class:`~factlens.runner.config.RunConfig` (as a
dict, so that jobs pickle cheaply for Ray) and a seed. The model, its pristine copy (the
``original`` of the evaluation, and the reference used to check that every edit was
reverted) and the filtered data live in a :class:`~factlens.runner.workspace.Workspace` that an executor passes to
the jobs it runs in one process, so that they are built once and reused.

The model is edited **in place** and reverted after the evaluation (``EditResult.revert()``);
the runner then checks every parameter bit for bit against the unedited model, so that one
localization can never leak into the next. The unedited model is an
:class:`~factlens.runner.pristine.OriginalView` (default): module objects that share the
model's weights, showing the edit's saved old values for the parameters it changed, so no
second copy of the weights exists (``Workspace(original="copy")`` keeps a ``deepcopy``
instead, twice the memory; both give the same results).
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from factlens.localization import registry as _registry
from factlens.editing.memory_editing import MaskNotSupported
from factlens.editing.result import EditChangedError
from factlens.memory import StagePeaks, release_memory
from factlens.progress_bars import progress
from factlens.runner.config import RunConfig
from factlens.runner.config_checks import check_retain_kl, check_suite_tasks
from factlens.runner.pristine import (check_pristine, check_restored, recorded_parameters,  # check_restored: also
                                      restore_from)  # importable from here
from factlens.runner.provenance import now as _now
from factlens.runner.provenance import versions  # noqa: F401 - also importable from here, as before
from factlens.runner.defects import defect_location, defects_named  # noqa: F401 - defect_location re-exported
from factlens.runner.workspace import Workspace  # noqa: F401 - also importable from here, as before

__all__ = [
    "Prepared", "prepare", "plan_budget", "run_localization", "plan_job", "run_job", "run_plan_or_job", "Job", "PlanJob",
    "versions", "check_restored", "EmptyMask", "Unsupported", "UNBUDGETED", "unbudgeted", "plan_mechanisms",
    "defect_location",
]


@dataclass(frozen=True)
class Prepared:
    """What every job of one seed shares.

    Attributes:
        model: The model that is edited in place (and reverted) by each job.
        original: The unedited model (evaluation baselines; restore check): ``pristine.view``.
        dataset: The facts after ``filter_known`` / ``max_facts``.
        task: The task of this seed.
        meta: Model name, data source, known-fact counts, load times.
        baselines: The workspace's :class:`~factlens.evaluation.baseline_cache.BaselineCache` for ``original``.
        pristine: The :class:`~factlens.runner.pristine.OriginalView` (or ``PristineCopy``)
            behind ``original``.
    """

    model: Any
    original: Any
    dataset: Any
    task: Any
    meta: dict[str, Any]
    baselines: Any = None
    pristine: Any = None


@dataclass(frozen=True)
class PlanJob:
    """Compute the parameter budget (FLU mask) of one seed.

    ``show_progress`` is the job's progress setting (:func:`factlens.progress`), passed in the
    job because a worker process does not inherit the driver's context. ``mechanisms``: the
    mechanisms of the seed's stored plan, kept when a resume recomputes the plan for its budget
    (finished units were scored against them; recomputing rewrote them).
    """

    config: dict[str, Any]
    seed: int
    show_progress: bool = True
    need_budget: bool = True
    mechanisms: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"plan/seed{self.seed}"


@dataclass(frozen=True)
class Job:
    """One localization of one seed: localize -> mask -> edit -> evaluate -> revert.

    ``show_progress``: the job's progress setting, as in :class:`PlanJob`. ``plan`` is
    ``None`` when the job may start before its seed's plan is done: it then reads the plan
    from the ``plan_handoff`` folder where it first needs it (:mod:`factlens.runner.plan_handoff`).
    """

    config: dict[str, Any]
    seed: int
    localization: str
    plan: dict[str, Any] | None
    show_progress: bool = True
    plan_handoff: str | None = None  # plan None: read it from this PlanHandoff folder when needed

    @property
    def key(self) -> str:
        return f"seed{self.seed}/{self.localization}"


@dataclass(frozen=True)
class Unsupported:
    """What :func:`run_job` returns for a unit whose edit method cannot edit its mask
    (:class:`MaskNotSupported`): the run finishes the other units, then names every such unit."""

    key: str
    message: str


def build_task(cfg: RunConfig, dataset, seed: int):
    """The task of ``cfg`` on ``dataset`` for ``seed``.

    ``eval_preset="small"``: at most :data:`~factlens.runner.config.SMALL_N_MAINTAIN` maintain facts when the
    task built without the cap leaves twice as many to retain and maintain. (Until 2026-12-06 that count
    subtracted ``forget_size`` from the data set, and nothing where it was unset, as for a whole sport: the
    cap could then leave no retain facts.)
    """
    from factlens.runner.config import SMALL_N_MAINTAIN
    from factlens.tasks import task_entry

    entry = task_entry("sports-athlete-editing" if cfg.task == "planted" else cfg.task)
    kw: dict[str, Any] = dict(cfg.task_options)
    if cfg.forget_size is not None:
        kw[entry.size_option] = cfg.forget_size
    try:
        task = entry.fn(dataset, seed=seed, **kw)
        if cfg.eval_preset == "small" and "n_maintain" not in kw and "n_retain" not in kw \
                and len(task.retain) + len(task.maintain) >= 2 * SMALL_N_MAINTAIN:
            task = entry.fn(dataset, seed=seed, **kw, n_maintain=SMALL_N_MAINTAIN)
        return task
    except TypeError as e:
        raise ValueError(f"task {cfg.task!r} does not accept options {sorted(cfg.task_options)} ({e})") from e


def prepare(config: RunConfig | dict[str, Any], seed: int, *, workspace: Workspace | None = None) -> Prepared:
    """Load (or reuse from ``workspace``) the model, its pristine copy, the data and the task of ``seed``."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    ws = workspace if workspace is not None else Workspace()
    model, original, builtin, mmeta = ws.models(cfg)
    ds, dmeta = ws.dataset(cfg, model, builtin)
    task = build_task(cfg, ds, seed)
    return Prepared(model, original, ds, task, {**mmeta, **dmeta}, ws.baselines(), ws.pristine())


# ---------------------------------------------------------------------------------------------
# steps


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _localize_dataset(prep: Prepared, cfg: RunConfig, localization: str):
    """The facts ``localization`` runs on (see ``RunConfig.localize_on``)."""
    if cfg.localize_on == "auto":
        probing_flu = localization == "flu" and not cfg.task.startswith(("counterfact", "sequential"))
        return prep.dataset if probing_flu else prep.task.forget
    return prep.task.forget if cfg.localize_on == "forget" else prep.dataset


class EmptyMask(ValueError):
    """A localization selected no component (a setting to change: ``factlens run`` exits 2)."""


def _localize_options(cfg: RunConfig, localization: str) -> dict[str, Any]:
    """Options for ``localization_mask``: shared ones the method accepts, then the table of the
    scoring method (``localize_options["causal_tracing"]`` applies to ``causal_tracing``,
    ``causal_tracing_mlps`` and ``causal_tracing_top_mlp`` alike, so their scores agree), then
    the localization's own table (``localize_options["causal_tracing_mlps"]``)."""
    from factlens.localization.registry import LOCALIZATIONS, METHODS

    names = set(LOCALIZATIONS.names()) | set(METHODS.names())
    shared = {k: v for k, v in cfg.localize_options.items() if k not in names}
    method = LOCALIZATIONS.get(localization).scoring
    if method is None or not method.user_options:  # random: the run sets its seed and mlps_only
        return {}
    opts = {k: v for k, v in shared.items() if method.accepts(k)}
    if method.name != localization:
        opts.update(cfg.localize_options.get(method.name, {}))
    opts.update(cfg.localize_options.get(localization, {}))
    return opts


def _partners(prep: Prepared, cfg: RunConfig, localization: str) -> dict[str, Any]:
    """``partners=``: every known fact may corrupt the localized facts (patching methods), so a
    fact of the forget set whose relation has no aligned partner there is still paired."""
    from factlens.localization.registry import LOCALIZATIONS

    method = LOCALIZATIONS.get(localization).scoring
    facts = _localize_dataset(prep, cfg, localization)
    if method is None or not method.accepts("partners") or facts is prep.dataset:
        return {}
    return {"partners": prep.dataset}


def _dropped_facts(scores) -> dict[str, Any] | None:
    """Facts a patching localization left out (no aligned corrupting subject), for the job's JSON."""
    if scores is None or scores.dropped_ids is None:
        return None
    return {"n_dropped": scores.n_dropped, "dropped_ids": list(scores.dropped_ids)}


def unbudgeted() -> frozenset[str]:
    """Localizations that take no parameter budget, from the registry's ``budgeted`` flags as
    they are when called (an entry added after import counts; a snapshot taken at import
    recorded such a localization as budgeted)."""
    from factlens.localization import registry

    return frozenset(loc.name for loc in registry.LOCALIZATIONS if not loc.budgeted)


#: The built-in localizations without a budget (the runner calls :func:`unbudgeted`, which counts
#: plugins'). Built-in only: reading the plugins here, at import, turned an installed plugin's
#: error into a traceback of every ``factlens`` command instead of its message.
UNBUDGETED: frozenset[str] = frozenset(loc.name for loc in _registry.LOCALIZATIONS.entries if not loc.budgeted)


def plan_budget(prep: Prepared, cfg: RunConfig, seed: int, *, need_budget: bool = True,
                need_flu: bool = False) -> dict[str, Any]:
    """The parameter budget of the budgeted localizations (the FLU mask's size by default).

    ``need_flu``: compute the FLU even when no localization needs a budget (the mechanisms
    suite's fact-lookup MLPs); its size is then the plan's budget too.

    Returns:
        ``{"seed", "param_budget", "budget_source", "flu": {"mask", "scores", "seconds"} | None}``
        (``param_budget`` is ``None`` when neither a budget nor the FLU is needed: only
        unbudgeted localizations run).
    """
    if cfg.param_budget is not None:
        return {"seed": seed, "param_budget": int(cfg.param_budget), "budget_source": "config", "flu": None}
    if not (need_budget or need_flu):
        return {"seed": seed, "param_budget": None, "budget_source": None, "flu": None}
    t0, c0 = time.perf_counter(), time.process_time()
    mask, scores = _run_flu(prep, cfg, seed)
    n = int(mask.n_params(prep.model))
    if n == 0 and need_budget:
        raise RuntimeError("the FLU mask is empty, so it gives no parameter budget; set param_budget= in the config")
    return {"seed": seed, "param_budget": n or None, "budget_source": "flu" if n else None, "flu": {
        "mask": mask.to_dict(), "scores": scores.to_dict() if scores is not None else None,
        "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}}


def _run_flu(prep: Prepared, cfg: RunConfig, seed: int):
    """The run's FLU: ``(mask, scores)`` on its facts with its options (``localize_options.flu``)."""
    from factlens.localization import localization_mask

    _seed_everything(seed)
    return localization_mask(prep.model, _localize_dataset(prep, cfg, "flu"), "flu", seed=seed,
                             **_localize_options(cfg, "flu"), **_partners(prep, cfg, "flu"))


def plan_mechanisms(prep: Prepared, cfg: RunConfig, seed: int, plan: dict[str, Any]) -> dict[str, Any]:
    """The paper's mechanisms (fact-lookup MLPs, extraction heads/MLPs) on the unedited model.

    The fact-lookup MLPs come from the run's FLU: the plan's, or, when the budget came from
    ``param_budget`` (no FLU in the plan), the same FLU computed here. (Before, such a run's
    mechanisms used an FLU of their own, with default options and on the forget facts only, so
    a ROME or ``all_mlps`` folder and the fine-tuning folder it is compared with had different
    mechanisms.)

    Returns:
        ``{"masks": {name: Mask.to_dict()}, "seconds"}`` (the ``mechanisms`` suite compares
        every localization's mask with them).
    """
    from factlens.components import Mask
    from factlens.evaluation.mechanisms import default_mechanisms
    from factlens.scores import ComponentScores

    t0, c0 = time.perf_counter(), time.process_time()
    flu = plan.get("flu") or {}
    flu_scores = None
    if flu.get("scores"):
        flu_scores = ComponentScores.from_dict(flu["scores"])
    elif flu.get("mask"):
        flu_scores = Mask.from_dict(flu["mask"])
    else:
        mask, scores = _run_flu(prep, cfg, seed)
        flu_scores = scores if scores is not None else mask
    mech = default_mechanisms(prep.model, _localize_dataset(prep, cfg, "mechanisms"), flu_scores=flu_scores, seed=seed)
    return {"masks": {k: m.to_dict() for k, m in mech.items()}, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def _mechanisms(plan: Mapping[str, Any]) -> dict[str, Any] | None:
    from factlens.components import Mask

    mech = plan.get("mechanisms")
    if not mech:
        return None
    return {k: Mask.from_dict(d) for k, d in mech["masks"].items()}


def _mask_and_scores(prep: Prepared, cfg: RunConfig, seed: int, localization: str, plan: Mapping[str, Any]):
    """``(mask, scores, reused, waited)``: the FLU mask of the plan (``reused``), or the
    localization's scores, computed before the plan is read (an awaited plan may not be done
    yet), and its mask; ``waited``: seconds spent waiting for the plan."""
    from factlens.components import Mask
    from factlens.localization import LOCALIZATIONS, localization_scores, mask_from_scores
    from factlens.scores import ComponentScores

    loc = LOCALIZATIONS.get(localization)
    if localization == "flu":
        flu = plan.get("flu")  # reads the plan
        if flu is not None:
            scores = ComponentScores.from_dict(flu["scores"]) if flu.get("scores") else None
            return Mask.from_dict(flu["mask"]), scores, True, getattr(plan, "waited", 0.0)
    scores = localization_scores(prep.model, _localize_dataset(prep, cfg, localization), loc,
                                 seed=seed if loc.seeded else None,  # the others keep their own seed (0)
                                 **_localize_options(cfg, localization), **_partners(prep, cfg, localization))
    budget = None if localization in unbudgeted() else plan["param_budget"]
    mask = mask_from_scores(prep.model, loc, scores, param_budget=budget)
    return mask, scores, False, getattr(plan, "waited", 0.0)


def method_edit_config(cfg: RunConfig, seed: int, method: str):
    """``cfg.edit_config(seed)``, with the run's general text as the key-covariance text of a
    method that estimates one (ROME, MEMIT: a ``text_source`` field in its config type),
    unless ``--edit methods.<method>.text_source=...`` set it. Without this, a run given
    ``--text-source`` still estimated ROME's and MEMIT's covariance on the built-in text
    (:func:`~factlens.runner.method_settings.covariance_text_config`, which ``RunConfig.resolved``
    also uses to record the settings)."""
    from factlens.runner.method_settings import covariance_text_config

    return covariance_text_config(cfg.edit_config(seed), method, cfg.eval.get_path("text.source"))


def _edit(prep: Prepared, mask, cfg: RunConfig, seed: int, *, method: str = "finetune",
          objective: str | None = None):
    from factlens.editing.editor import edit
    from factlens.editing.sequential import edit_sequential

    ec = method_edit_config(cfg, seed, method)
    folder = _run_folder(cfg)  # the editor's saved originals in a file there
    if prep.task.chunks:  # sequential editing: the chunks one after another, each with the run's mask
        return edit_sequential(prep.model, mask, prep.task, config=ec, inplace=True, objective=objective, offload=folder,
                               method=method)
    return edit(prep.model, mask, prep.task, method=method, objective=objective, config=ec, inplace=True,
                offload=folder)


def _edit_summary(res, config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ("seconds", "sft_kind"):
        out[k] = getattr(res, k, None)
    if out["sft_kind"] is None and getattr(res, "results", None):  # sequential: one result per chunk
        out["sft_kind"] = getattr(res.results[0], "sft_kind", None)
        out["n_edits"] = len(res.results)
    out["history"] = [dict(h) for h in getattr(res, "history", [])]
    out["config"] = config.to_dict()
    meta = getattr(res, "meta", None)
    if meta is None and getattr(res, "results", None) and any(r.meta for r in res.results):
        meta = {"chunks": [r.meta for r in res.results]}  # sequential: each chunk's own (AlphaEdit's null spaces...)
    if meta:  # method diagnostics: ROME/MEMIT per fact and layer, RMU's target norm... (JSON-safe)
        out["meta"] = json.loads(json.dumps(meta, default=str))
    try:
        dn = res.delta_norm()
        out["delta_norm"] = float(dn) if not isinstance(dn, dict) else {k: float(v) for k, v in dn.items()}
    except Exception as e:  # noqa: BLE001 - a summary number, never worth losing the run
        out["delta_norm"] = None
        out["delta_norm_error"] = f"{type(e).__name__}: {e}"
    return out


def _run_folder(cfg: RunConfig) -> Path | None:
    """The run folder, where the runner's mapped files go; ``None`` before it exists (a direct
    call of :func:`run_localization`)."""
    return Path(cfg.out) if Path(cfg.out).is_dir() else None


def _offload_record(res, cfg: RunConfig) -> int:
    """Move the edit's record (old and new values) out of memory into the run folder while the
    model is evaluated (:meth:`~factlens.editing.EditResult.offload`; bitwise the same values,
    read back by the revert); bytes moved. 0 where the run folder does not exist yet (a direct
    call of :func:`run_localization`) or the result cannot be offloaded; a failure (a full
    disk) keeps the record in memory with a warning, since the results do not depend on it."""
    folder = _run_folder(cfg)
    if not hasattr(res, "offload") or folder is None:
        return 0
    if hasattr(res, "results"):  # edit_sequential(offload=folder) mapped each chunk's record already: offloading
        return 0  # again rewrote them into a second file and counted bytes that were not in memory
    try:
        return int(res.offload(folder))
    except OSError as e:
        warnings.warn(f"the edit's record stays in memory: it could not be written to {folder} ({e})", RuntimeWarning,
                      stacklevel=2)
        return 0


def run_localization(config: RunConfig | dict[str, Any], seed: int, localization: str, *, plan: Mapping[str, Any],
                     workspace: Workspace | None = None) -> dict[str, Any]:
    """Run one unit (localization, or localization+method/objective) of one seed; return its JSON record.

    ``localization`` is a unit name of :meth:`RunConfig.units` (``"flu"``, ``"flu+memit"``,
    ``"nonlocalized+npo"``): the mask comes from its localization, the edit uses its method and
    objective. The model is edited in place, evaluated against the unedited model and reverted; the
    record's ``restore`` entry says whether every parameter came back bit-identical (if not,
    the parameters are copied back from the unedited model and ``restore["repaired"]`` is set).
    The record's ``peak_rss_gb`` gives the process's peak resident memory in each stage
    (:class:`~factlens.memory.StagePeaks`; ``prepare`` includes loading the model for the
    process's first job), and on a GPU ``peak_cuda_gb`` the peak allocated GPU memory in each
    stage (``torch.cuda.max_memory_allocated``). ``plan`` is the seed's plan (:func:`plan_job`), or an
    :class:`~factlens.runner.plan_handoff.AwaitedPlan` read where it is first needed (the
    record's ``timings["plan_wait"]`` then says how long the job waited for it).
    """
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    with StagePeaks() as peaks:
        record = _run_unit(cfg, seed, localization, plan, workspace, peaks)
    record["peak_rss_gb"] = peaks.gb()
    if peaks.cuda_by_stage:  # on a GPU the RSS leaves out the model and its activations
        record["peak_cuda_gb"] = peaks.cuda_gb()
    return record


def _run_unit(cfg: RunConfig, seed: int, localization: str, plan: Mapping[str, Any], workspace: Workspace | None,
              peaks: StagePeaks) -> dict[str, Any]:
    """The body of :func:`run_localization`; ``peaks.begin`` marks each stage."""
    from factlens.evaluation import evaluate

    peaks.begin("prepare")
    unit = localization
    localization, method, objective = cfg.split_unit(unit)
    prep = prepare(cfg, seed, workspace=workspace)
    cache_before = _cache_counts(prep.baselines)  # the workspace's cache counts every job's lookups
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}  # process CPU seconds (all threads) per step: comparable across loaded machines
    _seed_everything(seed)
    peaks.begin("localize")
    t0, c0 = time.perf_counter(), time.process_time()
    mask, scores, reused, waited = _mask_and_scores(prep, cfg, seed, localization, plan)
    timings["localize"] = (plan["flu"]["seconds"] if reused else time.perf_counter() - t0 - waited)
    cpu["localize"] = plan["flu"].get("cpu_seconds", 0.0) if reused else time.process_time() - c0
    n_params = int(mask.n_params(prep.model))
    _check_not_empty(mask, localization, plan)

    _seed_everything(seed)
    peaks.begin("edit")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        res = _edit(prep, mask, cfg, seed, method=method,
                    objective=None if objective == cfg.default_objective else objective)
    except BaseException as e:
        restore_from(prep.model, prep.original)  # a failed in-place edit must not leak into the next job
        check_pristine(prep, workspace, method=method, objective=objective)
        if isinstance(e, MaskNotSupported):
            raise MaskNotSupported(f"unit {unit!r} (seed {seed}): {e}") from None
        raise
    timings["edit"] = time.perf_counter() - t0
    cpu["edit"] = time.process_time() - c0
    restore: dict[str, Any] = {}
    try:
        if res.model is not prep.model:
            raise RuntimeError("edit(..., inplace=True) returned a different model object")
        edit_info = _edit_summary(res, method_edit_config(cfg, seed, method))
        edit_info["record_offloaded_bytes"] = _offload_record(res, cfg)
        release_memory()
        prep.pristine.show(res)  # prep.original now shows the unedited values of what the edit changed
        _seed_everything(seed)
        peaks.begin("evaluate")
        mechanisms = _mechanisms(plan)  # may wait for an awaited plan: plan_wait, not evaluate time
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate(prep.model, prep.task, original=prep.original, suites=cfg.suites, config=cfg.eval_config(seed),
                      mask=mask, mechanisms=mechanisms, edit_result=res, baselines=prep.baselines)
        timings["evaluate"] = time.perf_counter() - t0
        cpu["evaluate"] = time.process_time() - c0
        for suite, sec in ev.meta.get("seconds", {}).items():
            timings[f"evaluate.{suite}"] = sec
    finally:
        peaks.begin("revert")
        t0 = time.perf_counter()
        restore = _revert(prep, res, workspace, method=method, objective=objective)
        timings["revert"] = time.perf_counter() - t0
    if getattr(plan, "awaited", False):  # started before its seed's plan was done (factlens.runner.plan_handoff)
        timings["plan_wait"] = plan.waited
    return {
        "kind": "factlens.run", "format": 1,
        "localization": unit, "seed": seed, "model": cfg.model, "task": prep.task.summary(),
        "unit": {"localization": localization, "method": method, "objective": objective},
        "param_budget": plan.get("param_budget"), "budget_source": plan.get("budget_source"),
        "budgeted": localization not in unbudgeted(),
        "mask": mask.to_dict(), "mask_labels": sorted(c.label for c in mask), "n_params": n_params,
        "n_components": len(mask), "scores": scores.to_dict() if scores is not None else None,
        "dropped_facts": _dropped_facts(scores),
        "edit": edit_info, "eval": ev.to_dict(), "restore": restore, "timings": timings, "cpu_seconds": cpu,
        "baseline_cache": {**_cache_counts(prep.baselines, since=cache_before), "entries": len(prep.baselines)},
        "data": {k: v for k, v in prep.meta.items() if k not in ("shape",)}, "shape": prep.meta.get("shape"),
        "versions": versions(), "finished_at": _now(),
    }



def _check_not_empty(mask, localization: str, plan: Mapping[str, Any]) -> None:
    if len(mask) == 0:
        raise EmptyMask(f"localization {localization!r} selected no component at the parameter budget "
                        f"{plan.get('param_budget')} (smaller than any component, or no component scored above "
                        "zero): give a larger --param-budget, or leave it out for the FLU's size (with --overwrite "
                        "or another --out where this folder holds finished runs: they make it refuse another budget)")


def _revert(prep, res, workspace: Workspace | None, *, method: str, objective: str | None) -> dict[str, Any]:
    """Undo the edit and check every parameter is back bit for bit; the record of the restore
    (``exact``, and ``repaired`` where the model was restored from the original instead)."""
    try:
        try:
            res.revert()
        except EditChangedError:  # the evaluation changed edited entries: restored from the original below
            pass
        restore = check_restored(prep.model, prep.original)
        left = prep.pristine.changed()  # every parameter, bit for bit (also those the view shares)
        restore["exact"] = restore["exact"] and not left
        if not restore["exact"]:
            restore_from(prep.model, prep.original)
            restore["repaired"] = True
            left = prep.pristine.changed()
        prep.pristine.reset()
    except BaseException:
        # the model may still hold the edit (a failed read of the offloaded record, out of memory, Ctrl-C):
        # drop it, or this worker's next plan and its unedited-model numbers (shared with the other
        # workers through the baseline store) would come from the edited weights
        if workspace is not None:
            workspace.clear()
        raise
    release_memory()
    check_pristine(prep, workspace, left, method=method, objective=objective, recorded=recorded_parameters(res))
    return restore

def _cache_counts(cache: Any, *, since: Mapping[str, int] | None = None) -> dict[str, int]:
    """The lookups of a :class:`~factlens.evaluation.baseline_cache.BaselineCache` (since the counts
    ``since``): a record holds its unit's own, not the worker's running totals over its jobs."""
    now = {"hits": cache.hits, "store_hits": cache.store_hits, "misses": cache.misses}
    return {k: v - (since or {}).get(k, 0) for k, v in now.items()}


# ---------------------------------------------------------------------------------------------
# job entry points (top-level functions: picklable by reference for Ray)


def plan_job(job: PlanJob, workspace: Workspace | None = None) -> dict[str, Any]:
    """Executor entry point of a :class:`PlanJob`."""
    cfg = RunConfig.from_dict(job.config)
    # progress: set here, a worker process does not inherit the driver's setting
    with defects_named(job.key), progress(job.show_progress):
        prep = prepare(cfg, job.seed, workspace=workspace)
        check_retain_kl(prep.model, prep.task, cfg, job.seed)
        check_suite_tasks(prep.task, cfg, job.seed)
        mech = "mechanisms" in cfg.suites
        # with mechanisms the FLU runs anyway (their fact-lookup MLPs): its size is the budget too, so
        # that a resume adding a budgeted unit finds the plan complete instead of recomputing it
        out = plan_budget(prep, cfg, job.seed, need_budget=job.need_budget, need_flu=mech)
        if mech:
            out["mechanisms"] = job.mechanisms or plan_mechanisms(prep, cfg, job.seed, out)
    out["data"] = {k: v for k, v in prep.meta.items() if k != "shape"}
    out["task"] = prep.task.summary()
    return out


def run_job(job: Job, workspace: Workspace | None = None) -> dict[str, Any] | Unsupported:
    """Executor entry point of a :class:`Job` (looks ``run_localization`` up at call time); an
    :class:`Unsupported` when the unit's edit method cannot edit its mask. A ``ValueError`` raised
    outside factlens is raised as a ``RuntimeError`` naming the job (:func:`defect_location`)."""
    # progress: set here, a worker process does not inherit the driver's setting
    with defects_named(job.key), warnings.catch_warnings(), progress(job.show_progress):
        # trained weights in factlens.layout's layout: torch notes the grad's strides
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        plan = job.plan
        if plan is None:
            from factlens.runner.plan_handoff import AwaitedPlan

            if job.plan_handoff is None:
                raise ValueError(f"job {job.key} has neither a plan nor a plan_handoff folder to read it from")
            plan = AwaitedPlan(job.plan_handoff, job.seed)
        try:
            return run_localization(job.config, job.seed, job.localization, plan=plan, workspace=workspace)
        except MaskNotSupported as e:  # a setting of this unit only: the other units still run
            return Unsupported(job.key, str(e))


def run_plan_or_job(item: PlanJob | Job, workspace: Workspace | None = None) -> dict[str, Any]:
    """Executor entry point for a mixed list of plans and jobs (:func:`plan_job` or :func:`run_job`)."""
    return plan_job(item, workspace) if isinstance(item, PlanJob) else run_job(item, workspace)
