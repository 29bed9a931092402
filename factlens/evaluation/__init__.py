"""Evaluation of edited / unlearned models: the paper's robustness suites.

:func:`evaluate` runs named suites on a model and a :class:`~factlens.tasks.Task` and
returns an :class:`EvalResult`. Each suite is a function
``run_<suite>(model, task, *, original, config, baselines, **inputs) -> SuiteResult``
in its own module, registered as one :class:`Suite` entry in :data:`SUITES` (imported only
when it runs). The entry declares which optional inputs the suite uses (``needs``: e.g.
``mask``) and which of them it cannot run without (``requires``), so that every request is
validated before any suite runs.

Suites:
    ``standard``: forget / edit / maintain accuracy and probability in the trained format.
    ``formats``: the same facts asked differently (multiple choice, paraphrases,
        neighborhood prompts, other sports phrasings), with the unedited model's accuracy
        per format and at-chance flags.
    ``side_effects``: next-token accuracy, loss and KL to the original on general text; MMLU.
    ``relearning``, ``probes``, ``soft_prompts``, ``mechanisms``: adversarial relearning,
        linear probes, soft-prompt attacks and mechanism comparisons.
    ``quantization``, ``update_size``, ``unrelated_finetune``, ``direction_ablation``,
        ``logit_lens``, ``linear_lens``, ``in_context``: the attacks that tell removal from
        suppression (docs/attacks.md), opt-in.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from functools import partial
from dataclasses import dataclass, fields as dataclass_fields, replace
from typing import Any, Callable, Iterable, Sequence

from factlens.evaluation.baseline_cache import BaselineCache, reusable
from factlens.evaluation.baseline_store import BaselineStore
from factlens.evaluation.config import EvalConfig, TextConfig
from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.memory import release_memory
from factlens.plugins import plugin_entries
from factlens.progress_bars import progress_bar, takes_show_progress
from factlens.registry import Ref, Registry, load
from factlens.config import check_config_type

__all__ = ["evaluate", "Suite", "SUITES", "DEFAULT_SUITES", "INPUTS", "suite_function", "text_readers", "text_fields", "EvalConfig", "EvalResult",
           "Metric", "SuiteResult", "BaselineCache", "BaselineStore"]

#: The optional inputs of :func:`evaluate` that a suite can declare in ``Suite.needs``.
INPUTS: tuple[str, ...] = ("mask", "mechanisms", "weight_mask", "weight_mask_threshold", "edit_result")


@dataclass(frozen=True)
class Suite:
    """One evaluation suite.

    Attributes:
        name: The name passed in ``suites=``.
        fn: ``run_<suite>(model, task, *, original, config, baselines, **inputs)``.
        needs: Optional inputs (of :data:`INPUTS`) passed to ``fn`` when given.
        requires: Groups of inputs of which at least one must be given (checked before any
            suite runs), e.g. ``(("mask",), ("mechanisms",))``: both; ``(("mask", "weight_mask"),)``:
            either. Every input named here is also in ``needs`` (only those are passed to ``fn``).
        doc: One line for listings.
        reads_text: The fields of the general text (``EvalConfig.text``: ``source``,
            ``n_chunks``, ``seq_len``, ``batch_size``) that the suite reads; ``True``: all of them,
            ``False`` / ``()``: none (stored as a tuple). Only these decide the suite's numbers:
            the runner refuses a text source no suite reads and warns about text settings no
            suite reads, and :func:`factlens.compare` pairs folders only when the read fields
            agree (the linear lens reads ``source`` alone: its chunks are its own settings).
        config_type: The suite's settings, a frozen :class:`~factlens.config.ConfigBase` dataclass
            (or a :class:`~factlens.registry.Ref` to one); ``None``: it has none. The suite reads
            them with ``config.suite_config(name_or_entry)``: the ``EvalConfig`` field of the same
            name for the suites that have one, else the table ``EvalConfig.other_suites[name]``
            (so a new suite needs no new ``EvalConfig`` field).
    """

    name: str
    fn: Ref | Callable[..., SuiteResult]
    needs: tuple[str, ...] = ()
    requires: tuple[tuple[str, ...], ...] = ()
    doc: str = ""
    config_type: Ref | type | None = None
    reads_text: bool | tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_inputs(self)
        if self.config_type is not None and not isinstance(self.config_type, Ref):
            # a plain dataclass or a dict was accepted here and failed when its table was first built
            # (a Ref is checked when it is loaded: EvalConfig.suite_config, the runner's late_failures)
            check_config_type(self.config_type, where=f"suite {self.name!r}")
        known = tuple(f.name for f in dataclass_fields(TextConfig))
        read = known if self.reads_text is True else () if self.reads_text is False else self.reads_text
        if isinstance(read, str) or not all(isinstance(n, str) and n in known for n in read):
            raise ValueError(f"suite {self.name!r}: reads_text must be True, False or a tuple of TextConfig fields "
                             f"{list(known)}, got {self.reads_text!r}")
        object.__setattr__(self, "reads_text", tuple(read))

    def check(self, given: dict[str, Any]) -> None:
        """Raise if a required input group has no given member (the message says which)."""
        for group in self.requires:
            if all(given.get(n) is None for n in group):
                raise ValueError(f"the {self.name!r} suite needs {' and/or '.join(f'{n}=...' for n in group)}")


def _check_inputs(suite: Suite) -> None:
    """Refuse ``needs`` / ``requires`` that cannot work: a bare string (``needs="mask"`` failed with "can
    only concatenate str", ``requires=("mask",)`` named the inputs 'm', 'a', 's', 'k'), an unknown input,
    and a required input not in ``needs`` (``evaluate`` demanded it, then never passed it to the suite)."""
    where = f"suite {suite.name!r}"
    if not isinstance(suite.needs, (tuple, list)):
        spelling = f"needs=({suite.needs!r},)" if isinstance(suite.needs, str) else "e.g. needs=('mask',)"
        raise ValueError(f"{where}: needs is a tuple of input names, got {suite.needs!r}; write {spelling}")
    groups = suite.requires
    if not isinstance(groups, (tuple, list)) or not all(isinstance(g, (tuple, list)) for g in groups):
        one = next((g for g in ((groups,) if isinstance(groups, str) else groups) if isinstance(g, str)), "mask")
        raise ValueError(f"{where}: requires is a tuple of groups (tuples of input names, at least one of each group "
                         f"given), got {groups!r}; write requires=(({one!r},),) for one required input")
    required = tuple(n for g in suite.requires for n in g)
    bad = [n for n in tuple(suite.needs) + required if n not in INPUTS]
    if bad:
        raise ValueError(f"suite {suite.name!r} declares unknown inputs {bad}; known: {list(INPUTS)}")
    missing = sorted({n for n in required if n not in suite.needs})
    if missing:
        raise ValueError(f"{where} requires {missing} but does not declare them in needs={tuple(suite.needs)!r}: "
                         "evaluate passes a suite only the inputs in needs; add them to needs")


def _builtin(name: str, config: str | None = None, **kw: Any) -> Suite:
    """The entry of a suite shipped with factlens: ``run_<name>`` in ``factlens.evaluation.<name>``,
    with its settings ``config`` (a class name) from the same module."""
    module = f"factlens.evaluation.{name}"
    return Suite(name, Ref(module, f"run_{name}"), config_type=Ref(module, config) if config else None, **kw)


SUITES: Registry[Suite] = Registry("evaluation suite", (
    _builtin("standard", doc="forget / edit / maintain accuracy and probability in the trained format"),
    _builtin("formats", "FormatsConfig",
             doc="the same facts asked differently (MCQ, paraphrases, other phrasings), with at-chance flags"),
    _builtin("side_effects", "SideEffectsConfig", doc="general-text accuracy, loss and KL to the original; MMLU",
             reads_text=True),
    _builtin("relearning", "RelearningConfig",
             doc="LoRA relearning on half the forget facts, tested on the other half",
             reads_text=("source", "n_chunks", "seq_len")),  # its chunks per step are its own setting
    _builtin("probes", "ProbesConfig", doc="linear probes for the old answer in the latents"),
    _builtin("soft_prompts", "SoftPromptsConfig", doc="adversarial soft prompts that try to bring the old answer back"),
    _builtin("mechanisms", needs=("mask", "mechanisms", "weight_mask", "weight_mask_threshold"),
             requires=(("mask",), ("mechanisms",)),  # both: run_mechanisms counts the mask within each
             doc="overlap of the edited mask (or learned weight mask) with the model's mechanisms"),
    _builtin("quantization", "QuantizationConfig",
             doc="int8 / NF4 / int4 round trip of the linear weights: do the edited facts come back? "
                 "(control: original)"),
    _builtin("update_size", "UpdateSizeConfig", needs=("edit_result",), requires=(("edit_result",),),
             doc="the edit's |delta| against the quantization bin of the original weights"),
    _builtin("unrelated_finetune", "UnrelatedFinetuneConfig",
             doc="fine-tuning on retain facts / general text (no forget facts): do the edited facts come back?",
             reads_text=("source", "n_chunks", "seq_len")),
    _builtin("direction_ablation", "DirectionAblationConfig", needs=("mask", "edit_result"),
             doc="forget-vs-retain mean-difference direction projected out per layer"),
    _builtin("logit_lens", "LogitLensConfig",
             doc="every layer's residual read through the final norm and unembedding: is the forgotten "
                 "answer still there before the output? (Patil et al. 2023)"),
    _builtin("linear_lens", "LinearLensConfig",
             doc="the logit lens through a least-squares map from each layer to the last, fitted to each "
                 "model on general text: reads the middle layers the logit lens is blind to (Din et al. 2023)",
             reads_text=("source",)),  # chunks of its own size (LinearLensConfig)
    _builtin("in_context", "InContextConfig",
             doc="the facts asked after solved facts of the forget (or retain) set written into the prompt: "
                 "in-context relearning, no training (Shumailov et al. 2024)"),
), plugins=partial(plugin_entries, "evaluation suite", Suite))
DEFAULT_SUITES: tuple[str, ...] = ("standard", "formats", "side_effects", "relearning", "probes", "soft_prompts")


def text_readers() -> frozenset[str]:
    """The suites (registered plugins included) that read the general text (``Suite.reads_text``).

    Example:
        >>> sorted(text_readers())
        ['linear_lens', 'relearning', 'side_effects', 'unrelated_finetune']
    """
    return frozenset(s.name for s in SUITES if s.reads_text)


def text_fields(suites: Sequence[str]) -> frozenset[str]:
    """The fields of ``EvalConfig.text`` that any of ``suites`` reads (``Suite.reads_text``).

    Example:
        >>> sorted(text_fields(["standard", "linear_lens"]))
        ['source']
        >>> sorted(text_fields(["side_effects"]))
        ['batch_size', 'n_chunks', 'seq_len', 'source']
    """
    return frozenset(f for s in SUITES if s.name in suites for f in s.reads_text)


def suite_function(name: str | Suite) -> Callable[..., SuiteResult]:
    """The ``run_<suite>`` function registered under ``name``.

    Raises:
        ValueError: ``name`` is not a known suite (the message lists the known ones).
        ImportError: The suite's module cannot be imported.

    Example:
        >>> suite_function("standard").__name__
        'run_standard'
    """
    return load(SUITES.get(name).fn)


def _model_name(model) -> str:
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "model_name", None) or type(model).__name__)


@takes_show_progress
def evaluate(model, task, *, original=None, suites: Sequence[str | Suite] = DEFAULT_SUITES,
             config: EvalConfig = EvalConfig(), mask=None, mechanisms=None, weight_mask=None,
             weight_mask_threshold: float | None = None, edit_result=None, baselines: BaselineCache | None = None,
             show_progress: bool | None = None) -> EvalResult:
    """Evaluate an (edited) model on a task with the named suites.

    Args:
        model: The model to evaluate (a ``HookedTransformer``); it is not changed (its modules'
            train / eval modes included: each is restored as it was).
        task: The :class:`~factlens.tasks.Task` whose facts were edited / unlearned.
        original: The unedited model. When given, every metric gets its value on the
            original as ``baseline`` and the at-chance flags are computed on it; when
            ``None``, baselines are ``None`` and the suites say so in ``extra``.
        suites: Suite names (or :class:`Suite` entries of your own), run in this order (see
            :data:`SUITES`).
        config: Evaluation settings.
        mask: The localization mask that was edited (``mechanisms`` suite; recorded in meta).
        mechanisms: Mechanism components to compare (``mechanisms`` suite).
        weight_mask: A learned weight mask (:func:`factlens.editing.weight_mask.learn_weight_mask`'s
            result) whose masked weights the ``mechanisms`` suite counts per mechanism (the
            paper's Table 3).
        weight_mask_threshold: Discretization threshold for ``weight_mask`` (``None``: its default).
        edit_result: The :class:`~factlens.editing.EditResult` that produced ``model`` (suites that
            read the update itself, e.g. its size, declare it in ``Suite.needs``).
        baselines: A :class:`~factlens.evaluation.baseline_cache.BaselineCache`: the computations on
            ``original`` are made once and reused by later calls with the same cache (the
            runner evaluates six edits of one model against one original). Results are
            identical with and without it.
        show_progress: Draw (``True``) or hide (``False``) the progress bars of this call;
            ``None`` (default) follows :func:`factlens.progress`.

    Returns:
        One :class:`SuiteResult` per suite, filed and labelled (``SuiteResult.suite``) by the
        suite's entry name whatever name its function wrote; ``meta`` holds the model name, the
        time per suite, the config and, where it names files, their sha256 (``inputs``:
        :func:`factlens.compare` pairs results whose text and MMLU files have one content).

    Raises:
        ValueError: Unknown suite name, no suite, or a suite requested without an input it needs
            (``mechanisms`` needs both ``mask`` and ``mechanisms``) or a ``mask`` (without one,
            ``edit_result``'s) naming a component ``model`` does not have, before any suite runs; an
            ``original`` of another architecture or vocabulary than ``model`` (its baselines and
            at-chance flags would describe an unrelated model).
        TypeError: ``model`` or ``original`` is not a TransformerLens model (an edit's result:
            pass ``result.model``), or ``task`` is not a :class:`~factlens.tasks.Task`.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> res = evaluate(p.model, p.task, original=p.model, suites=["standard"])
        >>> res["standard"]["forget_accuracy"].value, res["standard"]["edit_accuracy"].value
        (1.0, 0.0)
    """
    entries = _entries(suites)
    suites = tuple(e.name for e in entries)
    _check_models(model, original)
    if not all(hasattr(task, a) for a in ("forget", "retain", "maintain", "objective")):
        raise TypeError(f"evaluate() needs a factlens Task, got {type(task).__name__} {str(task)[:60]!r}; build one "
                        "from the facts with a task builder of factlens.tasks (e.g. sports_athlete_editing(dataset), "
                        "counterfact_editing(dataset)): the task you edited with")
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
    inputs = {"mask": mask, "mechanisms": mechanisms, "weight_mask": weight_mask,
              "weight_mask_threshold": weight_mask_threshold, "edit_result": edit_result}
    for e in entries:  # validate every request before running anything
        e.check(inputs)
    _check_mask_fits(model, mask, edit_result)
    _check_settings(entries, config)
    fns = {e.name: load(e.fn) for e in entries}  # fail on import errors before running anything
    baselines = reusable(baselines, model, original)  # bound by held() below, once; the suites' bind() is free

    results: dict[str, SuiteResult] = {}
    timings: dict[str, float] = {}
    # every submodule's own flag: m.train(flag) on the way out put a user's eval-mode block back in train mode
    modes = {mod: mod.training for m in (model, original) if m is not None for mod in m.modules()}
    for m in (model, original):
        if m is not None:
            m.eval()
    try:
        with baselines.held(original) if baselines is not None else nullcontext():
            for name in progress_bar(suites, desc="evaluate"):
                entry = next(e for e in entries if e.name == name)
                kw = {"original": original, "config": config, "baselines": baselines,
                      **{n: inputs[n] for n in entry.needs if inputs[n] is not None}}
                t0 = time.perf_counter()
                res = fns[name](model, task, **kw)
                timings[name] = time.perf_counter() - t0
                release_memory()  # a suite's freed memory does not stay resident into the next one
                if not isinstance(res, SuiteResult):
                    raise TypeError(f"suite {name!r} returned {type(res).__name__}, expected SuiteResult")
                # filed and labelled by its entry's name (flat(), to_frame(), compare read the label): one
                # function registered twice, or a result labelled "standard", overwrote another suite's numbers
                results[name] = res if res.suite == name else replace(res, suite=name)
    finally:
        for mod, was_training in modes.items():
            mod.training = was_training

    meta = _meta(model, original, suites, timings, config, inputs)
    summary = task.summary() if hasattr(task, "summary") else {"name": str(task)}
    return EvalResult(results, summary, meta)


def _check_models(model, original) -> None:
    """Refuse a ``model`` / ``original`` that is no TransformerLens model (an edit's result: its
    ``.model`` is meant; it failed deep inside with "the model has no tokenizer"), and an
    ``original`` of another architecture or vocabulary than ``model``: it must be the unedited
    copy of the same model (an unrelated one gave baselines and at-chance flags without a word)."""
    from factlens.components import ModelShape
    from factlens.editing.editor import check_model

    for name, m in (("model", model), ("original", original)):
        if m is None and name == "original":
            continue
        if hasattr(m, "model") and not hasattr(m, "named_parameters"):  # EditResult, SequentialEditResult
            what = "pass result.model (the edited model)" if name == "model" else (
                "pass the unedited model (the one given to edit(..., inplace=False), or a copy.deepcopy taken "
                "before an in-place edit)")
            raise TypeError(f"{name} is an edit's result ({type(m).__name__}), not a model: {what}")
        check_model(m)
    if original is None or original is model:
        return
    a, b = ModelShape.of(model), ModelShape.of(original)
    va, vb = _vocab_size(model), _vocab_size(original)
    if a != b or va != vb:
        diff = {k: (v, a.to_dict()[k]) for k, v in b.to_dict().items() if v != a.to_dict()[k]}
        what = (f"architecture (original, model: {diff})" if a != b else
                f"vocabulary (unembedding rows, tokenizer size: {vb}; the model: {va})")
        raise ValueError(f"original must be the unedited copy of the same model, but {_model_name(original)} has "
                         f"another {what}: its baselines and at-chance flags would describe an unrelated model")


def _check_mask_fits(model, mask, edit_result) -> None:
    """Refuse a ``mask`` (or, without one, ``edit_result``'s mask, which the suites read in its place) with a
    component ``model`` does not have, once, before any suite runs: the mechanisms suite refused it, but
    ``direction_ablation`` with ``search_layers="from_mask"`` failed with "max() arg is an empty sequence"
    (L9.mlp of a 4-layer model) or took a head the model lacks (L1H7 of a 2-head model)."""
    from factlens.components import ModelShape
    from factlens.mask import Mask

    given, what = (mask, "mask") if mask is not None else (getattr(edit_result, "mask", None), "edit_result.mask")
    if not isinstance(given, Mask):  # none given, or not a Mask: the suites that take it say what they need
        return
    try:
        given._check_fits(ModelShape.of(model))
    except ValueError as e:
        raise ValueError(f"evaluate({what}=...): {e}; pass the mask that was edited in this model") from None


def _vocab_size(model) -> tuple[int | None, int | None]:
    """The unembedding's size (``cfg.d_vocab``) and the tokenizer's (``len``; ``None`` without one)."""
    tok = getattr(model, "tokenizer", None)
    return getattr(model.cfg, "d_vocab", None), (len(tok) if tok is not None else None)


def _entries(suites: Sequence[str | Suite] | str | Suite) -> tuple[Suite, ...]:
    """The requested entries in order, each once (an unknown name raises, listing the known ones;
    no suite at all raises: an empty result looked like a run that measured nothing wrong)."""
    if isinstance(suites, (str, Suite)):
        suites = (suites,)
    if suites is None or not isinstance(suites, Iterable):
        raise TypeError(f"suites must be a list of suite names, got {type(suites).__name__} {suites!r}; leave it out "
                        f"for the default {list(DEFAULT_SUITES)}, or name some of {list(SUITES.names())}")
    suites = list(suites)
    if not suites:
        raise ValueError(f"suites is empty: name at least one of {list(SUITES.names())} (or leave it out for the "
                         f"default {list(DEFAULT_SUITES)})")
    out: dict[str, Suite] = {}
    for e in (SUITES.get(x) for x in suites):
        if out.setdefault(e.name, e) != e:  # two different suites under one name: one would silently go
            raise ValueError(f"two different suites are both named {e.name!r}: give each its own name")
    return tuple(out.values())


def _check_settings(entries: tuple[Suite, ...], config: EvalConfig) -> None:
    """Build every requested suite's settings before any suite runs, so that a bad table fails at
    once, and refuse ``config.other_suites`` tables for a suite that is neither registered nor
    requested (a misspelt name would otherwise run the suite with its defaults)."""
    takes = [e.name for e in entries if e.config_type is not None]
    stray = sorted(n for n in config.other_suites if n not in SUITES and n not in takes)
    if stray:
        raise ValueError(f"EvalConfig.other_suites has settings for {stray}, which is no registered suite and no "
                         f"requested suite that takes settings (requested suites with settings: {takes})")
    for e in entries:
        if e.config_type is not None:
            config.suite_config(e)


def _input_files(config: EvalConfig) -> dict[str, dict[str, Any]]:
    """The evaluation's input files with their sha256 (:func:`~factlens.files.hash_input`), under a
    run folder's option names: results evaluated outside a run folder then compare their inputs by
    content, as folders do (:func:`factlens.compare` refuses to pair results whose general text or
    MMLU questions differ, and pairs the same file under two spellings)."""
    from factlens.files import hash_input

    given = {"eval.text.source": config.text.source, "eval.side_effects.mmlu_source": config.side_effects.mmlu_source}
    return {k: hash_input(v) for k, v in given.items() if v is not None}


def _meta(model, original, suites: tuple[str, ...], timings: dict[str, float], config: EvalConfig,
          inputs: dict[str, Any]) -> dict[str, Any]:
    """``EvalResult.meta``: the models, suites, time per suite, the config and the inputs given."""
    meta: dict[str, Any] = {
        "model": _model_name(model),
        "original": _model_name(original) if original is not None else None,
        "original_is_model": original is model,
        "suites": list(suites),
        "seconds": timings,
        "total_seconds": sum(timings.values()),
        "config": config.to_dict(),
    }
    if files := _input_files(config):
        meta["inputs"] = files
    mask, mechanisms = inputs["mask"], inputs["mechanisms"]
    if mask is not None:
        meta["mask"] = sorted(getattr(c, "label", str(c)) for c in mask) if hasattr(mask, "__iter__") else str(mask)
    if inputs["weight_mask"] is not None:
        meta["weight_mask_threshold"] = inputs["weight_mask_threshold"]
    if mechanisms is not None:
        meta["mechanisms"] = str(mechanisms) if not isinstance(mechanisms, (list, tuple, dict)) else (
            {k: str(v) for k, v in mechanisms.items()} if isinstance(mechanisms, dict) else [str(m) for m in mechanisms])
    return meta
