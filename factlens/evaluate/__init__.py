"""Evaluation of edited / unlearned models: the paper's robustness suites.

:func:`evaluate` runs named suites on a model and a :class:`~factlens.tasks.Task` and
returns an :class:`EvalResult`. Each suite is a function
``run_<suite>(model, task, *, original, config, **kw) -> SuiteResult`` registered in
:data:`SUITES` as a ``"module:function"`` string and imported only when it runs.

Suites:
    ``standard``: forget / edit / maintain accuracy and probability in the trained format.
    ``formats``: the same facts asked differently (multiple choice, paraphrases,
        neighborhood prompts, other sports phrasings), with the unedited model's accuracy
        per format and at-chance flags.
    ``side_effects``: next-token accuracy, loss and KL to the original on general text; MMLU.
    ``relearning``, ``probes``, ``soft_prompts``, ``mechanisms``: adversarial relearning,
        linear probes, soft-prompt attacks and mechanism comparisons.
"""

from __future__ import annotations

import importlib
import inspect
import time
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from factlens.evaluate.baselines import BaselineCache
from factlens.evaluate.config import EvalConfig
from factlens.evaluate.result import EvalResult, Metric, SuiteResult

__all__ = ["evaluate", "SUITES", "DEFAULT_SUITES", "suite_function", "EvalConfig", "EvalResult", "Metric",
           "SuiteResult", "BaselineCache"]

#: Suite name -> ``"module:function"`` (imported lazily).
SUITES: dict[str, str] = {
    "standard": "factlens.evaluate.standard:run_standard",
    "formats": "factlens.evaluate.formats:run_formats",
    "side_effects": "factlens.evaluate.side_effects:run_side_effects",
    "relearning": "factlens.evaluate.relearning:run_relearning",
    "probes": "factlens.evaluate.probes:run_probes",
    "soft_prompts": "factlens.evaluate.soft_prompts:run_soft_prompts",
    "mechanisms": "factlens.evaluate.mechanisms:run_mechanisms",
}

DEFAULT_SUITES: tuple[str, ...] = ("standard", "formats", "side_effects", "relearning", "probes", "soft_prompts")


def suite_function(name: str) -> Callable[..., SuiteResult]:
    """The ``run_<suite>`` function registered under ``name``.

    Raises:
        ValueError: ``name`` is not a known suite (the message lists the known ones).
        ImportError: The suite's module cannot be imported.

    Example:
        >>> suite_function("standard").__name__
        'run_standard'
    """
    if name not in SUITES:
        raise ValueError(f"unknown evaluation suite {name!r}; known suites: {sorted(SUITES)}")
    mod, _, attr = SUITES[name].partition(":")
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise ImportError(f"evaluation suite {name!r} could not be imported from {mod} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ImportError(f"evaluation suite {name!r}: {mod} has no function {attr!r}") from e


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` accepts (all of them if it takes ``**kw``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _model_name(model) -> str:
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "model_name", None) or type(model).__name__)


def evaluate(model, task, *, original=None, suites: Sequence[str] = DEFAULT_SUITES, config: EvalConfig = EvalConfig(),
             mask=None, mechanisms=None, weight_mask=None, weight_mask_threshold: float | None = None,
             baselines: BaselineCache | None = None, show_progress: bool = True) -> EvalResult:
    """Evaluate an (edited) model on a task with the named suites.

    Args:
        model: The model to evaluate (a ``HookedTransformer``); it is not changed.
        task: The :class:`~factlens.tasks.Task` whose facts were edited / unlearned.
        original: The unedited model. When given, every metric gets its value on the
            original as ``baseline`` and the at-chance flags are computed on it; when
            ``None``, baselines are ``None`` and the suites say so in ``extra``.
        suites: Suite names, run in this order (see :data:`SUITES`).
        config: Evaluation settings.
        mask: The localization mask that was edited (``mechanisms`` suite; recorded in meta).
        mechanisms: Mechanism components to compare (``mechanisms`` suite).
        weight_mask: A learned weight mask (:func:`factlens.edit.weight_mask.learn_weight_mask`'s
            result) whose masked weights the ``mechanisms`` suite counts per mechanism (the
            paper's Table 3).
        weight_mask_threshold: Discretization threshold for ``weight_mask`` (``None``: its default).
        baselines: A :class:`~factlens.evaluate.baselines.BaselineCache`: the computations on
            ``original`` are made once and reused by later calls with the same cache (the
            runner evaluates six edits of one model against one original). Results are
            identical with and without it.
        show_progress: Show tqdm progress bars.

    Returns:
        One :class:`SuiteResult` per suite; ``meta`` holds the model name, the time per
        suite and the config.

    Raises:
        ValueError: Unknown suite name, or ``mechanisms`` requested without a ``mask`` or
            ``mechanisms``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> res = evaluate(p.model, p.task, original=p.model, suites=["standard"], show_progress=False)
        >>> res["standard"]["forget_accuracy"].value, res["standard"]["edit_accuracy"].value
        (1.0, 0.0)
    """
    if isinstance(suites, str):
        suites = (suites,)
    suites = tuple(dict.fromkeys(suites))
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown evaluation suite(s) {unknown}; known suites: {sorted(SUITES)}")
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
    if "mechanisms" in suites and mask is None and mechanisms is None:
        raise ValueError("the 'mechanisms' suite needs mask=... (the edited localization) and/or mechanisms=...")
    fns = {s: suite_function(s) for s in suites}  # fail on import errors before running anything
    if baselines is not None:
        if not isinstance(baselines, BaselineCache):
            raise TypeError(f"baselines must be a factlens.evaluate.BaselineCache, got {type(baselines).__name__}")
        if original is not None and original is not model:
            baselines.bind(original)
        else:
            baselines = None  # nothing to reuse: no original, or the original is the model itself

    results: dict[str, SuiteResult] = {}
    timings: dict[str, float] = {}
    modes = [(m, m.training) for m in (model, original) if m is not None and hasattr(m, "training")]
    for m, _ in modes:
        m.eval()
    try:
        for name in tqdm(suites, desc="evaluate", disable=not show_progress):
            kw = _accepted(fns[name], {"original": original, "config": config, "mask": mask, "mechanisms": mechanisms,
                                       "baselines": baselines, "show_progress": show_progress})
            if name == "mechanisms" and weight_mask is not None:
                kw.update(weight_mask=weight_mask, weight_mask_threshold=weight_mask_threshold)
            t0 = time.perf_counter()
            res = fns[name](model, task, **kw)
            timings[name] = time.perf_counter() - t0
            if not isinstance(res, SuiteResult):
                raise TypeError(f"suite {name!r} returned {type(res).__name__}, expected SuiteResult")
            results[name] = res
    finally:
        for m, was_training in modes:
            m.train(was_training)

    meta: dict[str, Any] = {
        "model": _model_name(model),
        "original": _model_name(original) if original is not None else None,
        "original_is_model": original is model,
        "suites": list(suites),
        "seconds": timings,
        "total_seconds": sum(timings.values()),
        "config": config.to_dict(),
    }
    if mask is not None:
        meta["mask"] = sorted(c.label for c in mask) if hasattr(mask, "__iter__") else str(mask)
    if weight_mask is not None:
        meta["weight_mask_threshold"] = weight_mask_threshold
    if mechanisms is not None:
        meta["mechanisms"] = str(mechanisms) if not isinstance(mechanisms, (list, tuple, dict)) else (
            {k: str(v) for k, v in mechanisms.items()} if isinstance(mechanisms, dict) else [str(m) for m in mechanisms])
    summary = task.summary() if hasattr(task, "summary") else {"name": str(task)}
    return EvalResult(results, summary, meta)
