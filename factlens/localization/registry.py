"""Scoring methods and the paper's named localizations, as typed registries.

A scoring method is a function ``fn(model, dataset, **options) -> ComponentScores`` in its own
module, registered as one :class:`ScoringMethod` in :data:`METHODS`. A localization (the
paper's names: ``flu``, ``causal_tracing_mlps``, ``random``...) is one :class:`Localization`
in :data:`LOCALIZATIONS`: which method scores the components, whether only MLPs count,
whether a parameter budget picks the mask, or which fixed mask it is. The runner asks the
entries what they need (``options``, ``budgeted``, ``seeded``) instead of inspecting
signatures; ``tests/localization/test_registry.py`` checks that the declared options match the
functions.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Literal

from collections.abc import Iterable
from functools import partial

from factlens.components import COMPONENT_KEYWORDS, Component, Mask, ModelShape, resolve_components
from factlens.plugins import PluginError, plugin_entries
from factlens.progress_bars import takes_show_progress
from factlens.registry import Ref, Registry, load
from factlens.scores import ComponentScores

__all__ = ["ScoringMethod", "Localization", "METHODS", "LOCALIZATIONS", "localize", "get_method", "localization_mask",
           "localization_scores", "mask_from_scores", "check_localize_options"]

_COMMON = ("seed", "batch_size")


@dataclass(frozen=True)
class ScoringMethod:
    """One way of scoring components.

    Attributes:
        name: What users pass as ``method=``.
        fn: The scoring function ``fn(model, dataset, **options) -> ComponentScores`` (a
            :class:`~factlens.registry.Ref`, or the function itself for methods defined elsewhere).
        options: The keyword options ``fn`` accepts (the runner passes only these).
        doc: One line for listings.
        heavy: Scoring runs the model once or more per component and fact (patching,
            tracing), which makes it the longest part of a job: the runner starts the jobs of
            such localizations first, so that a long job does not end the run alone on one
            worker while the others idle (causal tracing: 326 of its job's 750 CPU seconds in
            the main job, docs/performance.md).
        compared: The paper's comparison includes it: :data:`LOCALIZATIONS` gets the named
            localizations ``<name>`` (top components at the parameter budget) and
            ``<name>_mlps`` (top MLPs), which ``factlens run --localizations`` takes. A
            method of your own with ``compared=True`` in :data:`METHODS` gets them too, with
            no second entry.
        required: Options the method cannot run without (``manual``: ``components``); the
            runner refuses a run that does not give them before any file is written.
        seeded: The method draws with the run's seed (``random``): the localizations that
            ``compared=True`` gives it are seeded, so that each run seed gets its own draw (the
            runner passes its seed to seeded localizations only). Needs ``"seed"`` in ``options``.
    """

    name: str
    fn: Ref | Callable[..., ComponentScores]
    options: tuple[str, ...]
    doc: str = ""
    heavy: bool = False
    compared: bool = False
    required: tuple[str, ...] = ()
    seeded: bool = False

    def __post_init__(self) -> None:
        for field_name in ("options", "required"):  # a bare string passed every check, as its letters
            if isinstance(getattr(self, field_name), str):
                value = getattr(self, field_name)
                raise ValueError(f"scoring method {self.name!r}: {field_name} is a tuple of option names, got the "
                                 f"string {value!r}; write {field_name}=({value!r},)")
        if self.seeded and "seed" not in self.options:
            raise ValueError(f"scoring method {self.name!r}: seeded=True passes the run's seed as seed=, but "
                             f"'seed' is not among its options {list(self.options)}; add it (or seeded=False)")
        if not set(self.required) <= set(self.options):
            raise ValueError(f"scoring method {self.name!r}: required options {list(self.required)} must be among "
                             f"its options {list(self.options)}")

    def accepts(self, option: str) -> bool:
        return option in self.options

    @property
    def user_options(self) -> tuple[str, ...]:
        """The options a run's ``localize_options`` may set: all but those the run sets itself
        (``seed``, ``mlps_only``, ``param_budget``...). ``random`` has none."""
        return tuple(o for o in self.options if o not in _SET_BY_CALLER)

    def __call__(self, model, dataset, **options: Any) -> ComponentScores:
        """Score with ``fn`` after checking the options and the model (a ``TypeError`` for anything but a
        TransformerLens model: patching, tracing and attribution failed with "'NoneType' object has
        no attribute 'cfg'", the other methods with a clear message)."""
        from factlens.editing.editor import check_model

        bad = sorted(set(options) - set(self.options))
        if bad:
            raise TypeError(f"localization method {self.name!r} got unknown option(s) {bad}; "
                            f"it accepts {sorted(self.options)}")
        check_model(model)
        return load(self.fn)(model, dataset, **options)


@dataclass(frozen=True)
class Localization:
    """One of the paper's named localizations.

    Attributes:
        name: The name used by ``localization_mask`` and ``factlens run --localizations``.
        method: The scoring method's name or entry (``None`` for a fixed mask, and only then).
        mlps_only: Keep only MLP scores before selecting.
        budgeted: The mask is the top components within a parameter budget (the FLU's size
            in the paper's comparison); otherwise the scores select by ``threshold``.
        fixed: ``"all_mlps"`` or ``"everything"`` for the masks that need no scores (with
            ``method=None``).
        threshold: Score threshold of unbudgeted, scored localizations (FLU scores are 1/0).
        top_k: Select the ``top_k`` components with the largest ``|score|`` instead (unbudgeted):
            ``causal_tracing_top_mlp`` is ROME's choice of the one MLP layer to edit.
        seeded: The run's seed is passed on to the method (random draws, FLU probe folds;
            ``seed=None`` means 0). Other methods (the corrupting subjects of patching, causal
            tracing's noise) use their own default seed 0 unless ``localization_mask`` /
            ``localization_scores`` get ``seed=`` explicitly: the runner passes its seed to
            seeded localizations only, so their scores do not depend on the run's seed.
        doc: One line for listings.
    """

    name: str
    method: str | ScoringMethod | None
    mlps_only: bool = False
    budgeted: bool = True
    fixed: Literal["all_mlps", "everything"] | None = None
    threshold: float = 0.5
    top_k: int | None = None
    seeded: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.top_k is not None and (self.top_k < 1 or self.budgeted):
            raise ValueError(f"localization {self.name!r}: top_k must be >= 1 and needs budgeted=False")
        _check_fixed(self)
        if isinstance(self.method, ScoringMethod):  # a name is checked when the entry is used (plugins: on load)
            problem = _seed_problem(self, self.method)
            if problem:
                raise ValueError(f"localization {self.name!r}: {problem}")

    @property
    def scoring(self) -> ScoringMethod | None:
        return None if self.method is None else METHODS.get(self.method)


_FIXED = ("all_mlps", "everything")


def _check_fixed(loc: Localization) -> None:
    """Refuse an entry that is neither scored nor fixed, or both: a misspelt ``fixed`` failed only when
    the mask was selected ("selects its mask from scores; got scores=None"), no method and no
    ``fixed`` was a bare AssertionError, and a method beside ``fixed`` was ignored without a word."""
    where = f"localization {loc.name!r}"
    if loc.fixed is not None and loc.fixed not in _FIXED:
        raise ValueError(f"{where}: fixed={loc.fixed!r} is no fixed mask; use one of {list(_FIXED)}, or fixed=None "
                         "with a scoring method")
    if loc.fixed is None and loc.method is None:
        raise ValueError(f"{where} has neither a scoring method nor a fixed mask; give method= (a scoring method's "
                         f"name or entry) or fixed= (one of {list(_FIXED)})")
    if loc.fixed is not None and loc.method is not None:
        name = getattr(loc.method, "name", loc.method)
        raise ValueError(f"{where}: fixed={loc.fixed!r} takes no scores, but method={name!r} is given and would "
                         "be ignored; give method=None for the fixed mask, or fixed=None to select from the scores")


def _seed_problem(loc: Localization, method: ScoringMethod) -> str | None:
    """Why ``loc`` cannot pass the run's seed to ``method``, or ``None``: ``seeded=True`` with a method
    that has no ``seed`` option failed inside the job ("unknown option(s) ['seed']")."""
    if not loc.seeded or method.accepts("seed"):
        return None
    return (f"seeded=True passes the run's seed as seed=, but its scoring method {method.name!r} has no 'seed' "
            f"option (its options: {list(method.options)}); add 'seed' to the method's options, or give seeded=False")


METHODS: Registry[ScoringMethod] = Registry("localization method", (
    ScoringMethod("activation_patching", Ref("factlens.localization.activation", "activation_patching"),
                  ("components", "direction", "metric", "normalize", "corrupted_prompts", "corrupted_answers",
                   "partners", "include_resid", *_COMMON), "exact activation patching of clean/corrupted pairs", heavy=True,
                  compared=True),
    ScoringMethod("causal_tracing", Ref("factlens.localization.causal_tracing", "causal_tracing"),
                  ("noise_scale", "n_samples", "window", "components", "include_resid", *_COMMON),
                  "ROME's causal tracing: noise the subject, restore one component", heavy=True, compared=True),
    ScoringMethod("attribution_patching", Ref("factlens.localization.attribution", "attribution_patching"),
                  ("metric", "direction", "ig_steps", "normalize", "corrupted_prompts", "corrupted_answers", "partners",
                   *_COMMON),
                  "gradient (first-order) approximation of activation patching", compared=True),
    ScoringMethod("path_patching", Ref("factlens.localization.path_patching", "path_patching"),
                  ("receivers", "senders", "metric", "corrupted_prompts", "corrupted_answers", "partners", *_COMMON),
                  "effect of each sender through the receivers (or directly on the logits)", heavy=True,
                  compared=True),
    ScoringMethod("probing", Ref("factlens.localization.probing", "probing"),
                  ("positions", "layers", "cv", "C", "scaling", "repeats", *_COMMON),
                  "linear probes for the answer attribute on the residual stream, per layer", compared=True),
    ScoringMethod("flu", Ref("factlens.localization.flu", "flu_scores"),
                  ("rule_threshold", "approach", "n_std", "extraction_k", "min_fact_fraction", "positions", "layers",
                   "cv", "C", "scaling", "repeats", "metric", "corrupted_prompts", "corrupted_answers", "partners",
                   *_COMMON),
                  "the paper's fact-lookup MLPs (probing for sports, path patching otherwise)"),
    ScoringMethod("random", Ref("factlens.localization.controls", "random_scores"), ("seed", "mlps_only"),
                  "uniform random scores (the equal-budget control)", compared=True, seeded=True),
    ScoringMethod("manual", Ref("factlens.localization.controls", "manual_scores"), ("components",),
                  "1 for the given components, 0 elsewhere", required=("components",)),
), plugins=partial(plugin_entries, "localization method", ScoringMethod))


def _compared(methods: "Iterable[ScoringMethod]") -> list[Localization]:
    """``<name>`` and ``<name>_mlps`` of each method with ``compared=True``, seeded as the method is
    (``ScoringMethod.seeded``: a plugin's seeded method was unseeded, its masks equal in every run seed)."""
    out = []
    for m, seeded in ((e.name, e.seeded) for e in methods if e.compared):
        out.append(Localization(m, m, seeded=seeded, doc=f"top {m} components at the budget"))
        out.append(Localization(f"{m}_mlps", m, mlps_only=True, seeded=seeded, doc=f"top {m} MLPs at the budget"))
    return out


def _localizations(methods: "Iterable[ScoringMethod] | None" = None) -> tuple[Localization, ...]:
    """The named localizations of ``methods`` (default: every registered scoring method)."""
    out = [
        Localization("flu", "flu", budgeted=False, seeded=True, doc="fact-lookup MLPs (sets the budget of the others)"),
        Localization("all_mlps", None, budgeted=False, fixed="all_mlps", doc="every MLP layer"),
        Localization("nonlocalized", None, budgeted=False, fixed="everything", doc="every head and MLP"),
        *_compared(METHODS if methods is None else methods),
    ]
    for m in ("causal_tracing", "attribution_patching"):  # ROME edits one MLP: the top one of a method
        out.append(Localization(f"{m}_top_mlp", m, mlps_only=True, budgeted=False, top_k=1,
                                doc=f"the one MLP with the largest {m} score (for method='rome')"))
    out.append(Localization("manual", "manual", budgeted=False, doc="the components given as options"))
    return tuple(out)


def _plugin_localizations(builtin: tuple[str, ...]) -> tuple[Localization, ...]:
    """The localizations installed packages add: their own entries, and ``<name>`` /
    ``<name>_mlps`` of their scoring methods with ``compared=True``."""
    own = plugin_entries("localization", Localization, builtin)
    for loc in own:
        _check_plugin_localization(loc)
    derived = _compared(METHODS.all_entries()[len(METHODS.entries):])
    taken = {*builtin, *(e.name for e in own)}
    names = [e.name for e in derived]  # two methods "wn" and "wn_mlps" both give "wn_mlps"
    clash = sorted({n for n in names if n in taken or names.count(n) > 1})
    if clash:
        raise PluginError(f"an installed scoring method with compared=True gives the localizations {clash}, "
                          "which already exist; rename the method (factlens.plugins)")
    return own + tuple(derived)


def _check_plugin_localization(loc: Localization) -> None:
    """Refuse an installed localization whose scoring method is no registered one (it loaded, and failed
    only when a run selected it) or cannot take the run's seed although ``seeded=True`` (it failed inside
    the job): a :class:`PluginError` naming the entry point and its package."""
    from factlens.plugins import GROUPS, _installed, _where

    if not isinstance(loc.method, str):  # an entry (checked when built) or a fixed mask
        return
    if loc.method not in METHODS.names():
        problem = (f"method={loc.method!r} is no registered scoring method (known: "
                   f"{list(METHODS.names())}); register it (group 'factlens.localization_methods') or give its "
                   "ScoringMethod entry as method=")
    else:
        problem = _seed_problem(loc, METHODS.get(loc.method))
    if problem:
        eps = {ep.name: ep for ep, _ in _installed(GROUPS["localization"])}
        where = _where(eps[loc.name]) if loc.name in eps else f"the installed localization {loc.name!r}"
        raise PluginError(f"{where}: localization {loc.name!r}: {problem}")


# factlens's own scoring methods only: an installed package's are read at the first lookup
# (importing a plugin while factlens is being imported could not work)
LOCALIZATIONS: Registry[Localization] = Registry("localization", _localizations(METHODS.entries),
                                                 plugins=_plugin_localizations)


def get_method(method: str | ScoringMethod) -> Callable[..., ComponentScores]:
    """The function implementing ``method`` (raises with the list of known methods)."""
    return load(METHODS.get(method).fn)


@takes_show_progress
def localize(model, dataset, method: str | ScoringMethod = "attribution_patching", *, show_progress: bool | None = None,
             **options: Any) -> ComponentScores:
    """Score every component of ``model`` for the facts in ``dataset``.

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks remain, no parameter or
            device changes).
        dataset: A :class:`~factlens.data.FactDataset` (or a list of records).
        method: A name in :data:`METHODS` (``"flu"`` gives the paper's fact-lookup MLPs), or
            a :class:`ScoringMethod` entry of your own.
        show_progress: Draw (``True``) or hide (``False``) the progress bars of this call;
            ``None`` (default) follows :func:`factlens.progress`.
        **options: Method options (keyword-only in each method), e.g. ``metric=``,
            ``batch_size=``, ``seed=``; unknown options raise, listing the accepted ones.

    Returns:
        The component scores; ``.plot()`` draws them, ``.to_mask(...)`` selects components.

    Example:
        >>> import factlens
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> scores = factlens.localize(p.model, p.dataset, method="activation_patching")
        >>> p.lookup_mlp in scores.top(3) and p.extraction_head in scores.top(3)
        True
    """
    entry = METHODS.get(method)
    scores = entry(model, dataset, **options)
    if isinstance(scores, ComponentScores) and scores.method != entry.name:
        # a method of your own built on another's function (manual_scores) is named as its entry, not "manual"
        scores = dataclasses.replace(scores, method=entry.name, name=entry.name)
    return scores


@takes_show_progress
def localization_mask(
    model,
    dataset,
    localization: str | Localization,
    *,
    param_budget: int | None = None,
    seed: int | None = None,
    show_progress: bool | None = None,
    **options: Any,
) -> tuple[Mask, ComponentScores | None]:
    """The mask of one of the paper's named localizations (:data:`LOCALIZATIONS`).

    ``flu`` is probing (sports, relation ``"sport"``) or path patching through the
    extraction heads (other relations); ``*_mlps`` restrict a method to MLP layers; budgeted
    localizations (``random``, ``causal_tracing``, ``attribution_patching``...) take the top
    components within ``param_budget``. The others (``budgeted=False``) select by their own rule
    and ignore the budget: ``flu``, ``manual`` (score threshold) and the ``*_top_mlp`` ones (top
    ``k``) with a ``UserWarning`` when it is given, the fixed ``all_mlps`` and ``nonlocalized``
    without one (the whole-model controls of a comparison at one budget).
    The same as :func:`localization_scores` followed by :func:`mask_from_scores`.

    ``seed``: the seed of the seeded localizations (``random``, ``flu``; ``None`` = 0); the other
    scoring methods (patching's corrupting subjects, causal tracing's noise) get it only when it is
    given (``None`` keeps their default 0). ``show_progress`` draws (``True``) or hides (``False``) the
    progress bars of this call; ``None`` (default) follows :func:`factlens.progress`. Other ``options``
    go to the method.

    Returns:
        The mask and the scores it came from (``None`` for ``all_mlps``/``nonlocalized``).
    """
    loc = LOCALIZATIONS.get(localization)
    if loc.budgeted and param_budget is None:
        raise ValueError(f"localization {loc.name!r} needs param_budget= (e.g. the FLU mask's n_params)")
    _warn_unused_budget(loc, param_budget, stacklevel=4)  # before the scoring, which can take minutes
    scores = localization_scores(model, dataset, loc, seed=seed, **options)
    return mask_from_scores(model, loc, scores, param_budget=param_budget if loc.budgeted else None), scores


@takes_show_progress
def localization_scores(model, dataset, localization: str | Localization, *, seed: int | None = None,
                        show_progress: bool | None = None, **options: Any) -> ComponentScores | None:
    """The scores a named localization selects its mask from (``None`` for the fixed masks).

    The expensive half of :func:`localization_mask`, which needs no parameter budget: the
    runner scores a budgeted localization while the FLU budget is still being computed
    elsewhere, then selects with :func:`mask_from_scores`. Options as in :func:`localization_mask`.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> s = localization_scores(p.model, p.dataset, "random", seed=1)
        >>> m = mask_from_scores(p.model, "random", s, param_budget=1000)
        >>> (s.name, m) == ("random", localization_mask(p.model, p.dataset, "random", param_budget=1000, seed=1)[0])
        True
    """
    loc = LOCALIZATIONS.get(localization)
    if loc.fixed is not None:
        return None
    method = loc.scoring
    assert method is not None
    _check_has_mlps(model, loc)
    _check_components_have_mlps(loc, options.get("components"), model)
    opts = dict(options)
    if loc.seeded:
        opts["seed"] = 0 if seed is None else seed
    elif seed is not None and method.accepts("seed"):  # asked for explicitly (the runner never does)
        opts["seed"] = seed
    if method.accepts("mlps_only"):
        opts["mlps_only"] = loc.mlps_only
    scores = method(model, dataset, **opts)
    if loc.mlps_only:
        scores = scores.restrict("mlp")
    if scores.name != loc.name or scores.method != method.name:
        # named as the localization, and (as localize does) the method as its entry: a method of your own
        # built on another's function (manual_scores) was recorded as "manual"
        scores = _renamed(scores, loc.name, method=method.name)
    return scores


def mask_from_scores(model, localization: str | Localization, scores: ComponentScores | None, *,
                     param_budget: int | None = None) -> Mask:
    """The mask a named localization selects from its :func:`localization_scores` (see :func:`localization_mask`;
    a ``param_budget`` given to a scored localization that does not use it warns as there)."""
    loc = LOCALIZATIONS.get(localization)
    _warn_unused_budget(loc, param_budget, stacklevel=3)
    if loc.fixed == "all_mlps":
        return Mask.all_mlps(model)
    if loc.fixed == "everything":
        return Mask.everything(model)
    if scores is None:
        raise ValueError(f"localization {loc.name!r} selects its mask from scores; got scores=None")
    if loc.mlps_only:  # scores of the unrestricted method (e.g. "random"'s) must not put heads in an MLP mask
        _check_has_mlps(model, loc)
        scores = scores.restrict("mlp")
    if loc.top_k is not None:
        return scores.to_mask(top_k=loc.top_k, name=loc.name)
    if not loc.budgeted:
        return scores.to_mask(threshold=loc.threshold, name=loc.name)
    if param_budget is None:
        raise ValueError(f"localization {loc.name!r} needs param_budget= (e.g. the FLU mask's n_params)")
    return scores.to_mask(param_budget=param_budget, name=loc.name)


def _warn_unused_budget(loc: Localization, param_budget: int | None, *, stacklevel: int) -> None:
    """Warn that a scored localization with ``budgeted=False`` (``flu``, ``manual``, ``*_top_mlp``) ignores
    ``param_budget``: its mask came back at its own size without a word (``flu`` at ``param_budget=100``:
    12,448 parameters). The fixed masks (``all_mlps``, ``nonlocalized``) ignore it as documented, silently."""
    if param_budget is None or loc.budgeted or loc.fixed is not None:
        return
    rule = f"its top {loc.top_k} component(s) by score" if loc.top_k is not None else \
        f"the components scoring >= {loc.threshold}"
    warnings.warn(f"localization {loc.name!r} selects its mask by its own rule ({rule}), not by a parameter budget: "
                  f"param_budget={param_budget!r} is ignored; leave it out, or use a budgeted localization "
                  "(e.g. 'random', 'causal_tracing') for a mask of that size", UserWarning, stacklevel=stacklevel)


def _check_has_mlps(model, loc: Localization) -> None:
    """Refuse an MLP-only localization of an attention-only model before any scoring: it ran the whole
    method and returned an empty mask (``random_mlps`` alone raised)."""
    if loc.mlps_only and (model if isinstance(model, ModelShape) else ModelShape.of(model)).attn_only:
        method = loc.scoring.name if loc.scoring is not None else None
        other = f" (e.g. {method!r})" if method in LOCALIZATIONS.names() else ""
        raise ValueError(f"localization {loc.name!r} chooses among MLPs only, but the model has no MLPs to choose "
                         f"from (attention-only); use a localization that is not restricted to MLPs{other}")


def _check_components_have_mlps(loc: Localization, components: Any, model=None, *,
                                where: str = "components") -> None:
    """Refuse an MLP-only localization whose ``components=`` names no MLP (``"heads"``): the method scored
    only heads, the MLP restriction dropped them all and the mask came back empty without a word.

    With ``model=None`` (a run's options, before any model is loaded) only what the spelling alone
    tells is checked (``"heads"``, a list of head labels); bad spellings are left to the method.
    """
    if not loc.mlps_only or components is None:
        return
    if model is not None:
        shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
        chosen = resolve_components(shape, components, neurons=True, what=where)
    elif isinstance(components, str) and components in COMPONENT_KEYWORDS:
        chosen = [] if COMPONENT_KEYWORDS[components] == "head" else None
    else:
        items = [components] if isinstance(components, (str, Component)) else components
        try:
            chosen = [it if isinstance(it, Component) else Component.parse(it) for it in items]
        except (TypeError, ValueError, AttributeError):
            return  # the method refuses it with its own message
    if chosen is not None and not any(c.kind == "mlp" for c in chosen):
        raise ValueError(f"{where}={components!r}: localization {loc.name!r} keeps only MLP scores, but these "
                         f"components include no MLP, so its mask would be empty; name MLPs (e.g. \"mlps\" or "
                         f"[\"L1.mlp\"]), or use {loc.scoring.name!r} for heads")


def _renamed(scores: ComponentScores, name: str, *, method: str) -> ComponentScores:
    return dataclasses.replace(scores, extra=dict(scores.extra), name=name, method=method)  # keeps the typed fields


#: Options the caller of :func:`localization_scores` never passes: set from the localization or the run.
_SET_BY_CALLER = ("seed", "mlps_only", "param_budget", "partners", "show_progress")


def check_localize_options(options: Mapping[str, Any]) -> None:
    """Refuse run-level ``localize_options`` that no localization would take, before any job runs.

    ``options`` holds shared options (``batch_size``: passed to every method that declares it)
    and tables per scoring method or named localization (``{"causal_tracing": {"n_samples": 4}}``).

    Raises:
        ValueError: A table names no method or localization, or a localization without scores;
            an option its method does not declare; a shared option no method declares; an option
            set by the runner itself (``seed``, ``mlps_only``...); a value of the wrong type, or a
            probe ``C`` of ``probing`` / ``flu`` that is not a finite number > 0.

    Example:
        >>> check_localize_options({"batch_size": 4, "causal_tracing": {"n_samples": 4}})
        >>> check_localize_options({"causal_tracing": {"n_sample": 4}})
        Traceback (most recent call last):
        ...
        ValueError: localize_options.causal_tracing: unknown option(s) ['n_sample'] of scoring method 'causal_tracing'; it accepts [...]
    """
    for key, value in options.items():
        if key in _SET_BY_CALLER:
            raise ValueError(f"localize_options.{key}: set by the run itself (per seed and localization); remove it")
        if not isinstance(value, Mapping):
            if not any(m.accepts(key) for m in METHODS):
                raise ValueError(f"localize_options.{key}: no scoring method takes this option; shared options are "
                                 f"{sorted({o for m in METHODS for o in m.options} - set(_SET_BY_CALLER))}, tables are "
                                 "named after a method or localization")
            continue
        if key in METHODS.names():
            method = METHODS.get(key)
        elif key in LOCALIZATIONS.names():
            method = LOCALIZATIONS.get(key).scoring
            if method is None or not method.user_options:
                raise ValueError(f"localize_options.{key}: localization {key!r} takes no options (it is not scored, "
                                 "or the run sets all its options)")
        else:
            raise ValueError(f"localize_options.{key}: no scoring method or localization of that name; methods: "
                             f"{list(METHODS.names())}, localizations: {list(LOCALIZATIONS.names())}")
        reserved = sorted(set(value) & set(_SET_BY_CALLER))
        if reserved:
            raise ValueError(f"localize_options.{key}: {reserved} set by the run itself; remove them")
        bad = sorted(set(value) - set(method.options))
        if bad:
            raise ValueError(f"localize_options.{key}: unknown option(s) {bad} of scoring method {method.name!r}; "
                             f"it accepts {sorted(method.user_options)}")
        for option, v in value.items():
            _check_option_type(method, f"localize_options.{key}.{option}", option, v)
        if key in LOCALIZATIONS.names():
            _check_components_have_mlps(LOCALIZATIONS.get(key), value.get("components"),
                                        where=f"localize_options.{key}.components")
    for key, value in options.items():  # shared options, against every method that takes them
        if not isinstance(value, Mapping):
            for m in METHODS:
                if m.accepts(key):
                    _check_option_type(m, f"localize_options.{key}", key, value)


def _check_option_type(method: ScoringMethod, where: str, option: str, value: Any) -> None:
    """Refuse a value its scoring function's annotation excludes (``n_samples = "5"`` from a config
    file failed inside the job, after the folder was written). Which options a method takes is its
    entry's ``options``; the annotation only checks a value's type (and the probes' ``C`` of
    ``probing`` / ``flu`` its range)."""
    from factlens.config import keyword_problem

    fn = load(method.fn) if isinstance(method.fn, (str, Ref)) else method.fn
    problem = keyword_problem(fn, option, value)
    if problem:
        raise ValueError(f"{where}={value!r}: {problem} ({method.name})")
    if option == "C" and method.name in ("probing", "flu"):  # the probes' C: 0 failed in sklearn, inside the job
        from factlens.localization.probing import check_probe_C

        try:
            check_probe_C(value)
        except ValueError as e:
            raise ValueError(f"{where}={value!r}: {e} ({method.name})") from None
