"""Direction ablation (Lucki et al. 2024; Arditi et al. 2024): is the edit one removable direction?

An edit that suppresses facts may do so by writing one direction into the residual stream
whenever a forget fact comes up (a "refusal"-like feature) while the knowledge stays
readable. Lucki et al. recovered most of what RMU removed by projecting such a direction
out of the activations. For each layer ``L`` (all of them by default) and each position, the
suite

1. fits a direction at ``resid_post`` of ``L`` (``direction``; the layers are the same for
   every mask: ``search_layers``): ``"forget_vs_contrast"``,
   the difference of means between the edited model's forget facts and facts it was not
   meant to change (``task.retain``, or ``task.maintain`` without a retain set), the recipe
   of Arditi et al.; or ``"edit_shift"``, the edited model's mean minus the unedited model's
   mean on the same forget prompts: what the edit added to the stream there;
2. removes it (``scope``): from every residual-stream read of every layer, as Arditi et al.
   ablate (``"every_layer"``, :func:`factlens.components.project_out_everywhere_hooks`), or
   from ``resid_post`` of ``L`` only (``"layer"``); at every position, hooks on for the
   scoring only;
3. scores the forget facts it was fitted on and as many retain facts (``selection``): the
   (position, layer) variant with the most forget wins plus retain wins is the attack (an
   ablation that makes the model give one answer to everyone does not win; ``"forget"``
   counts forget wins only). A random direction removed at the same places
   (``random_control``) gives the attack's null, ``ablation_random_*``; and each forget fact's
   win minus the rate at which its fold's ablation gives the fact's answer to its control
   athletes is ``ablation_selective_recovery`` (with ``ablation_control_bias``, the rate;
   :mod:`~factlens.evaluation.selectivity`): an ablation that tilts every answer towards the
   forget set's brings back nothing net of that bias.

**Cross-fitting** (``folds``, default 2): the forget facts are split at random (``seed``)
into ``folds`` parts; the direction of each part is fitted and its variant chosen on the
*other* parts, and the part is scored under it. Every forget fact's outcome thus comes from
a direction and a variant chosen without it, so ``ablation_forget_accuracy`` and
``ablation_edit_accuracy`` are plain accuracies over the facts (Wilson intervals, paired by
:func:`factlens.compare`) rather than the best of many variants on the facts that chose it.
The maintain facts are scored under each fold's choice and averaged. ``folds=1`` fits,
chooses and scores on the same facts (the suite's only mode until 2026-12-05): those metrics
are marked selected and get the interval of a maximum.

The control is the unedited model with the same directions removed at the same places: if
that costs it accuracy, the direction carries the facts themselves and what it brings back is
not a suppression undone (:func:`~factlens.evaluation.attacks.attack_damage`, flagged in
``extra["attack_damage"]``). Until 2026-12-04 the control removed the unedited model's *own*
forget-vs-contrast direction, which on a model that knows the facts points along their
answers; until 2026-12-05 the direction was removed at one layer only, a weaker attack than
the one cited, and fitted, chosen and scored on the same facts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from factlens.components import project_out_everywhere_hooks, project_out_hook
from factlens.config import ConfigBase, check_numbers, layer_indices
from factlens.evaluation.attacks import (DAMAGE_TOLERANCE, TaskScores, _task_items, attack_damage, attack_metrics,
                                       fact_rows, score_task, scores_before, suite_settings, task_key)
from factlens.evaluation.baseline_cache import BaselineCache, arrays_key, bound, cached, config_key
from factlens.evaluation.result import Metric, SuiteResult
from factlens.evaluation.selectivity import selectivity_metrics
from factlens.progress_bars import progress_bar

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests DirectionAblationConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["DirectionAblationConfig", "POSITIONS", "DIRECTIONS", "SCOPES", "SELECTIONS", "mean_difference_directions",
           "ablation_layers", "fact_folds", "run_direction_ablation"]

#: Token positions at which the directions are taken.
POSITIONS: tuple[str, ...] = ("subject_last", "final")
#: How the direction is fitted (see the module docstring).
DIRECTIONS: tuple[str, ...] = ("forget_vs_contrast", "edit_shift")
#: Where it is removed: every residual-stream read of every layer, or ``resid_post`` of its own layer.
SCOPES: tuple[str, ...] = ("every_layer", "layer")
#: Which layers' directions are tried when ``layers`` is not given.
SEARCH_LAYERS: tuple[str, ...] = ("all", "from_mask")
#: How the (position, layer) variant is chosen on the fitting facts.
SELECTIONS: tuple[str, ...] = ("selective", "forget")


@dataclass(frozen=True)
class DirectionAblationConfig(ConfigBase):
    """Settings of the ``direction_ablation`` suite (``EvalConfig.direction_ablation``).

    Attributes:
        positions: Where the directions are taken (:data:`POSITIONS`).
        layers: Layers whose directions are tried (``None``: as ``search_layers`` says).
        search_layers: Without ``layers``: ``"all"``, every layer, whatever the mask, so that
            every localization faces the same attack (an attacker does not know where the edit
            is); ``"from_mask"``, the mask's first layer and every later one (the only choice
            before 2026-12-05, which older run folders resume with): a mask that starts late
            was attacked with fewer directions than one that starts early. (Layers the edit
            has not reached give ``"edit_shift"`` a zero direction, scored as no ablation.)
        direction: How each direction is fitted (:data:`DIRECTIONS`); ``"edit_shift"`` needs
            the unedited model (``original=``).
        scope: Where it is removed (:data:`SCOPES`).
        folds: Cross-fitting folds over the forget facts (``>= 2``: each fact is scored under a
            direction and variant chosen on the other folds; ``1``: on the facts themselves).
        selection: How the variant is chosen (:data:`SELECTIONS`): ``"selective"``, the most
            forget wins on the fitting facts plus true-answer wins on as many retain facts, among
            the variants that keep those retain facts readable: above what giving every retain fact
            the most common answer scores, + 2 binomial standard errors; when no variant clears
            that, above uniform chance + 2 standard errors; when none clears either, all variants
            (:func:`~factlens.evaluation.standard.readable`): an ablation that makes the model give
            one answer to everyone does not win;
            ``"forget"``, forget wins only.
        random_control: Also remove a random direction (seeded) at each chosen place, from the
            edited model and the original: the ``ablation_random_*`` metrics, what removing *a*
            direction there costs or brings back.
        damage_tolerance: See :func:`~factlens.evaluation.attacks.attack_damage`.
    """

    positions: tuple[str, ...] = POSITIONS
    layers: tuple[int, ...] | None = None
    search_layers: str = "all"
    direction: str = "forget_vs_contrast"
    scope: str = "every_layer"
    folds: int = 2
    selection: str = "selective"
    random_control: bool = True
    damage_tolerance: float = DAMAGE_TOLERANCE

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        v = self.positions
        object.__setattr__(self, "positions", (v,) if isinstance(v, str) else tuple(v))
        object.__setattr__(self, "layers", layer_indices(self.layers, where="DirectionAblationConfig.layers",
                                                         none_means="search_layers to choose"))
        if not self.positions or any(p not in POSITIONS for p in self.positions):
            raise ValueError(f"DirectionAblationConfig.positions must be a non-empty subset of {list(POSITIONS)}, "
                             f"got {self.positions}")
        if self.search_layers not in SEARCH_LAYERS:
            raise ValueError(f"DirectionAblationConfig.search_layers must be one of {list(SEARCH_LAYERS)}, "
                             f"got {self.search_layers!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"DirectionAblationConfig.direction must be one of {list(DIRECTIONS)}, got {self.direction!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"DirectionAblationConfig.scope must be one of {list(SCOPES)}, got {self.scope!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"DirectionAblationConfig.selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.folds < 1:
            raise ValueError(f"DirectionAblationConfig.folds must be an integer >= 1 (2 or more cross-fits), "
                             f"got {self.folds!r}")
        if not 0 <= self.damage_tolerance <= 1:
            raise ValueError(f"DirectionAblationConfig.damage_tolerance must be in [0, 1], got {self.damage_tolerance}")


def ablation_layers(model, *, mask=None, layers: Sequence[int] | None = None) -> list[int]:
    """``layers`` if given, else from the mask's first layer to the last layer (all without a mask).

    Raises:
        ValueError: A layer outside the model.
    """
    n = int(model.cfg.n_layers)
    if layers is not None:
        out = sorted({int(x) for x in layers})
    elif mask is not None and len(mask):
        out = list(range(min(c.layer for c in mask), n))
    else:
        out = list(range(n))
    bad = [x for x in out if x >= n]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a model with {n} layers")
    return out


def mean_difference_directions(model, facts, contrast, *, layers: Sequence[int], position: str = "subject_last",
                               batch_size: int = 16, contrast_model=None) -> np.ndarray:
    """``mean(resid_post[facts]) - mean(resid_post[contrast])`` per layer at ``position``: ``[len(layers), d_model]``.

    The contrast's activations come from ``contrast_model`` when given (the edit's shift: the
    edited model on the forget facts minus the unedited model on the same facts).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> mean_difference_directions(p.model, p.task.forget, p.task.retain, layers=[1, 2]).shape
        (2, 96)
        >>> float(abs(mean_difference_directions(p.model, p.task.forget, p.task.forget, layers=[1],
        ...                                      contrast_model=p.model)).max())
        0.0
    """
    b = _mean_activations(model if contrast_model is None else contrast_model, contrast, layers, position, batch_size)
    return _mean_activations(model, facts, layers, position, batch_size) - b


def _mean_activations(model, facts, layers: Sequence[int], position: str, batch_size: int) -> np.ndarray:
    """Mean ``resid_post`` of ``facts`` per layer at ``position`` (float64): ``[len(layers), d_model]``."""
    from factlens.evaluation.probes import collect_activations

    acts = collect_activations(model, facts, layers=layers, position=position, batch_size=batch_size)
    return acts.astype(np.float64).mean(0)


def fact_folds(ids: Sequence[str], folds: int, *, seed: int = 0,
               subjects: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    """``ids`` split at random into ``folds`` parts of near-equal size (one part, all of them, for ``folds=1``).

    ``subjects`` (one per id): facts about one subject go to one fold
    (:func:`~factlens.data.records.grouped_parts`), so no fact is scored under a direction
    fitted on another fact's activations at its own subject; without shared subjects the
    folds are the same as without ``subjects``.

    Example:
        >>> [len(p) for p in fact_folds([str(i) for i in range(7)], 2)]
        [4, 3]

    Raises:
        ValueError: Fewer facts (or subjects) than folds (a fold would be empty).
    """
    from factlens.data.records import grouped_parts

    if folds > len(ids):
        raise ValueError(f"direction ablation cannot cross-fit {len(ids)} forget facts in {folds} folds: every fold "
                         f"needs a fact; lower direction_ablation.folds (1 fits, chooses and scores on the same facts)")
    order = np.random.default_rng(seed).permutation(len(ids))
    sizes = [len(part) for part in np.array_split(order, folds)]
    parts = grouped_parts([int(i) for i in order], list(ids) if subjects is None else list(subjects), sizes)
    if not all(parts):
        raise ValueError(f"cannot cross-fit {len(ids)} forget facts about {len(set(subjects or ids))} subjects in "
                         f"{folds} folds: facts about one subject share a fold, and every fold needs one; lower the "
                         "suite's folds setting (1 fits, chooses and scores on the same facts)")
    return [tuple(ids[i] for i in sorted(part)) for part in parts]


def _directions(model, original, facts, contrast_means: dict[str, np.ndarray] | None, st: DirectionAblationConfig,
                layers: list[int], batch_size: int) -> dict[str, np.ndarray]:
    """The directions fitted on ``facts``: position -> ``[len(layers), d_model]`` (see ``direction``).
    ``contrast_means``: the contrast facts' mean activations per position, the same for every fold
    (``"forget_vs_contrast"``; computed once by the caller)."""
    out = {}
    for pos in st.positions:
        other = (_mean_activations(original, facts, layers, pos, batch_size) if st.direction == "edit_shift"
                 else contrast_means[pos])
        out[pos] = _mean_activations(model, facts, layers, pos, batch_size) - other
    return out


def _ablated(model, task, config: EvalConfig, direction: np.ndarray, layer: int, scope: str) -> TaskScores:
    """``model``'s scores on ``task`` with ``direction`` removed (``scope``); unchanged for a zero direction."""
    d = torch.from_numpy(np.asarray(direction)).float()
    if not float(d.norm()) > 0:
        return score_task(model, task, config)  # no direction: nothing to remove
    hooks = (project_out_everywhere_hooks(d, model.cfg) if scope == "every_layer" else [project_out_hook(layer, d)])
    with model.hooks(fwd_hooks=hooks):
        return score_task(model, task, config)


def _choose(model, task, config: EvalConfig, dirs: dict[str, np.ndarray], layers: list[int],
            st: DirectionAblationConfig, desc: str
            ) -> tuple[tuple[str, int], dict[tuple[str, int], TaskScores], str, list[tuple[str, int]]]:
    """Score ``task``'s forget facts (and its maintain slot, the retain guard of ``"selective"``)
    under each (position, layer) variant; the best (ties: the earlier layer, then the earlier
    position), every variant's scores, the guard's bar and the variants it left eligible (the
    ones the best was chosen among)."""
    runs: dict[tuple[str, int], TaskScores] = {}
    for pos in st.positions:
        for j, layer in enumerate(progress_bar(layers, desc=f"{desc} ({pos})", leave=False)):
            runs[(pos, layer)] = _ablated(model, task, config, dirs[pos][j], layer, st.scope)

    def score(k):
        r = runs[k]
        return r.accuracy("forget") + (r.accuracy("maintain") if r.maintain else 0.0)

    # a variant under which the retain guard is answered no better than by one answer for everyone has
    # collapsed the model (it "recovers" the forget facts of that answer): only the variants that read
    # the guard are chosen (standard.readable: that bar, else uniform chance, else all)
    keys = list(runs)
    ok, bar = _guard_readable([runs[k] for k in keys], _task_items(task, config, "default")["maintain"])
    keep = [k for k, o in zip(keys, ok) if o]
    best = max(keep, key=lambda k: (score(k), -k[1], -st.positions.index(k[0])))
    return best, runs, bar, keep


def _guard_readable(scores: Sequence[TaskScores], items) -> tuple[np.ndarray, str]:
    """Which variants answer the retain guard as a model that carries facts does
    (:func:`~factlens.evaluation.standard.readable`), and the bar used; all (``"no guard"``)
    without one."""
    from factlens.evaluation.standard import readable

    if not items or not all(r.maintain for r in scores):
        return np.ones(len(scores), dtype=bool), "no guard"
    return readable([r.accuracy("maintain") for r in scores], items)


def _merge(parts: Sequence[TaskScores], before: TaskScores) -> TaskScores:
    """The folds' scores as one: forget and edit facts from the fold that held them out, each
    maintain fact the mean over the folds."""
    maintain = {k: float(np.mean([p.maintain[k] for p in parts])) for k in parts[0].maintain}
    return TaskScores(forget={k: v for p in parts for k, v in p.forget.items()},
                      edit={k: v for p in parts for k, v in p.edit.items()}, maintain=maintain,
                      chance=dict(before.chance), n_prompts=dict(before.n_prompts))


@dataclass(frozen=True, eq=False)
class _Fold:
    """One cross-fit: the held-out forget facts, the variant chosen on the others and its direction."""

    held_out: tuple[str, ...]
    best: tuple[str, int]
    direction: np.ndarray
    fit_accuracy: dict[str, list[float]]  # position -> forget accuracy per layer on the fitting facts
    guard_accuracy: dict[str, list[float]]  # position -> accuracy per layer on the retain guard (if any)
    guard_bar: str = "no guard"  # the bar that made variants eligible (standard.readable)

    def to_dict(self, layers: list[int]) -> dict[str, Any]:
        return {"held_out": list(self.held_out), "n_held_out": len(self.held_out), "position": self.best[0],
                "layer": self.best[1],
                "layers": layers, "fit_forget_accuracy": self.fit_accuracy,
                "guard_retain_accuracy": self.guard_accuracy, "guard_bar": self.guard_bar}


def _guard(task, n: int, st: DirectionAblationConfig, seed: int):
    """Up to ``n`` retain facts whose true answers the ``"selective"`` choice rewards (none for
    ``"forget"`` or without retain facts: the maintain facts are scored and must not choose)."""
    if st.selection != "selective" or not len(task.retain):
        return task.maintain[:0]
    return task.retain.shuffled(seed)[:n]


def _cross_fit(model, original, task, config: EvalConfig, contrast, layers: list[int],
               st: DirectionAblationConfig) -> tuple[list[_Fold], dict[tuple[str, int], TaskScores]]:
    """Each fold's direction and variant, chosen on the other folds' forget facts (on all of them
    for ``folds=1``); and, for ``folds=1``, the scores of every variant the choice was made among
    (the retain guard's eligible ones: the interval of the maximum, :func:`_selected`)."""
    ids = [r.id for r in task.forget]
    parts = fact_folds(ids, int(st.folds), seed=config.seed, subjects=[r.subject for r in task.forget])
    folds, eligible = [], {}
    contrast_means = None if st.direction == "edit_shift" else {
        pos: _mean_activations(model, contrast, layers, pos, config.batch_size) for pos in st.positions}
    for k, held in enumerate(parts):
        fit_ids = set(ids) - set(held) if len(parts) > 1 else set(ids)
        fit = task.forget.filter(lambda r: r.id in fit_ids)
        dirs = _directions(model, original, fit, contrast_means, st, layers, config.batch_size)
        fit_task = replace(task, forget=fit, maintain=_guard(task, len(fit), st, config.seed + k))
        best, runs, bar, keep = _choose(model, fit_task, config, dirs, layers, st,
                                        desc=f"ablation fold {k + 1}/{len(parts)}")
        eligible = {key: runs[key] for key in keep}
        curves = [{pos: [runs[(pos, layer)].accuracy(split) if getattr(runs[(pos, layer)], split) else None
                         for layer in layers] for pos in st.positions} for split in ("forget", "maintain")]
        folds.append(_Fold(tuple(held), best, dirs[best[0]][layers.index(best[1])], *curves, guard_bar=bar))
    return folds, (eligible if len(parts) == 1 else {})


def _random_folds(folds: list[_Fold], d_model: int, seed: int) -> list[_Fold]:
    """The folds with their directions replaced by random ones (Gaussian, seeded per fold)."""
    return [replace(f, direction=np.random.default_rng([seed, k]).standard_normal(d_model))
            for k, f in enumerate(folds)]


def _score_folds(model, task, config: EvalConfig, folds: list[_Fold], st: DirectionAblationConfig) -> list[TaskScores]:
    """``model`` with each fold's direction removed, scored on that fold's forget facts and every
    maintain fact (one :class:`TaskScores` per fold; :func:`_merge` joins them)."""
    parts = []
    for f in folds:
        held = set(f.held_out)
        held_task = replace(task, forget=task.forget.filter(lambda r: r.id in held))
        parts.append(_ablated(model, held_task, config, f.direction, f.best[1], st.scope))
    return parts


def _selectivity(task, config: EvalConfig, folds: list[_Fold], parts: list[TaskScores]):
    """Each forget fact's win under its fold's ablation minus the rate at which that ablation gives
    the fact's answer to its control athletes (:mod:`~factlens.evaluation.selectivity`); ``None``
    without one prompt per fact or without controls."""
    from factlens.evaluation.selectivity import selectivity_of

    items = _task_items(task, config, "default")
    f_items, m_items = items["forget"], items["maintain"]
    if (not m_items or not all(p.maintain_said for p in parts)
            or len({it.record_id for it in f_items}) != len(f_items)):
        return None
    fold_of = {rid: k for k, f in enumerate(folds) for rid in f.held_out}
    wins = {rid: v for p in parts for rid, v in p.forget.items()}
    return selectivity_of(f_items, [wins[it.record_id] for it in f_items], [fold_of[it.record_id] for it in f_items],
                          {k: p.maintain_said for k, p in enumerate(parts)}, m_items, seed=config.seed)


def _check_inputs(task, contrast, original, st: DirectionAblationConfig) -> None:
    if len(task.forget) == 0:
        raise ValueError("direction ablation needs forget facts")
    if st.direction == "forget_vs_contrast" and len(contrast) == 0:
        raise ValueError("direction ablation needs retain (or maintain) facts for a forget-vs-contrast direction; "
                         "give the task some, or use direction_ablation.direction='edit_shift'")
    if st.direction == "edit_shift" and original is None:
        raise ValueError("direction_ablation.direction='edit_shift' fits the edited minus the unedited model's "
                         "activations: pass original= (the unedited model)")


def _attack_and_control(model, original, task, config: EvalConfig, folds: list[_Fold], st: DirectionAblationConfig,
                        baselines: BaselineCache | None, tag: str) -> tuple[list[TaskScores], list[TaskScores] | None]:
    """Per fold, ``model`` and the original (``None`` without one) with the fold's direction
    removed; the original's scores are cached under the directions and places they remove."""
    attacked = _score_folds(model, task, config, folds, st)
    if original is None or original is model:
        return attacked, (None if original is None else attacked)
    # where a direction is removed depends on the chosen layer only for scope="layer"; every_layer removes it
    # everywhere, so the variant is not part of the key (the random control is then shared by every edit)
    places = tuple((f.held_out, f.best[1] if st.scope == "layer" else None) for f in folds)
    key = (tag, st.scope, places, arrays_key({str(i): f.direction for i, f in enumerate(folds)}), config_key(config),
           task_key(task, config))
    return attacked, cached(baselines, key, lambda: _score_folds(original, task, config, folds, st))


def _selected(metrics: list[Metric], runs: dict[tuple[str, int], TaskScores]) -> list[Metric]:
    """With ``folds=1`` the variant is chosen on the facts it is scored on: the forget accuracy gets
    the interval of the largest of the variants' accuracies (``"wilson-max"``), the recovery is
    marked ``"bootstrap-selected"``.

    ``runs`` are the variants the choice was made among: those the retain guard left eligible
    (:func:`_choose`). Until 2026-12-06 every variant's accuracy entered the maximum, so a variant
    the guard had excluded (a collapsed model that "recovers" 8 of 8) set the interval (0.61, 1.0)
    of the chosen variant's 0.25. The ``"selective"`` choice also rewards the guard, so the chosen
    variant need not have the most forget wins: the lower end is then the chosen accuracy's own
    Wilson lower end at the same Bonferroni level (the ``J`` intervals hold together with
    probability >= 0.95, so the interval covers the chosen variant's and the best eligible
    variant's true accuracy, and always the reported value).

    The edit accuracy is measured on those facts too, and a prompt cannot give the true answer
    and the new one at once, so the variant with the most forget wins tends to have the fewest
    edit wins: it is marked selected as well
    (``"wilson-selected"`` or ``"bootstrap-selected"``, its own variant's interval). None of them
    is tested as paired facts by :func:`factlens.compare`. The maintain facts were not the
    choice's criterion."""
    from factlens.stats import max_wilson_interval, wilson_interval

    out, confidence = [], 0.95
    binary = all(v in (0.0, 1.0) for r in runs.values() for v in r.forget.values() if not math.isnan(v))
    for m in metrics:
        if m.name == "ablation_forget_accuracy" and m.n > 0 and binary:
            ks = [int(np.nansum(list(r.forget.values()))) for r in runs.values()]
            lo, hi = max_wilson_interval(ks, m.n, confidence=confidence)
            own = round(m.value * m.n)  # the chosen variant's wins (the reported value)
            lo = min(lo, wilson_interval(own, m.n, confidence=1 - (1 - confidence) / len(ks))[0])
            m = replace(m, ci_low=lo, ci_high=hi, ci_method="wilson-max")
        elif (m.name in ("ablation_forget_accuracy", "ablation_forget_recovery", "ablation_selective_recovery")
              and m.ci_method is not None):
            m = replace(m, ci_method="bootstrap-selected")  # fractional outcomes (several prompts per fact)
        elif m.name == "ablation_edit_accuracy" and m.ci_method is not None:
            m = replace(m, ci_method="wilson-selected" if m.ci_method == "wilson" else "bootstrap-selected")
        out.append(m)
    return out


def run_direction_ablation(model, task, *, original=None, config: EvalConfig | None = None,
                           baselines: BaselineCache | None = None, mask=None, edit_result=None,
                           direction_ablation_config: DirectionAblationConfig | None = None) -> SuiteResult:
    """Remove a fitted direction from the residual stream; do the edited facts come back?

    Args:
        model: The evaluated (edited) model; hooks are attached only while scoring and always
            removed.
        task: The task (forget facts; ``task.retain``, or ``task.maintain`` if retain is empty,
            as the contrast of ``"forget_vs_contrast"``).
        original: The unedited model: attacked the same way (the control), and the reference of
            ``"edit_shift"`` directions.
        config: Evaluation settings (``batch_size``; ``seed`` draws the folds).
        baselines: Cache of computations on ``original``; the control is keyed by the
            directions it removes as well as the task and settings, so it is reused only for the
            same edit.
        mask: The edited localization (with ``search_layers="from_mask"`` its first layer is where
            the layers start; the default searches every layer).
        edit_result: Used for its mask when ``mask`` is not given.
        direction_ablation_config: The suite's settings (default: ``config.direction_ablation``).

    Returns:
        ``ablation_forget_accuracy``, ``ablation_forget_recovery``, ``ablation_edit_accuracy``,
        ``ablation_maintain_accuracy`` (baselines: the original with the same directions removed
        at the same places); ``ablation_selective_recovery`` and ``ablation_control_bias``
        (one prompt per fact, with control athletes); with ``random_control`` the same four
        ``ablation_random_*``, a
        random direction removed at each chosen place instead. ``extra``: ``settings``,
        ``layers``, ``positions``, ``contrast``, ``selection``, ``folds`` (per fold: held-out
        facts, the chosen position and layer, every variant's accuracy on the fitting facts and
        the retain guard), ``attack_damage``, ``random_attack_damage``, ``note`` and ``at_chance_bar``
        (per split, which check set its at-chance flag: :meth:`~factlens.evaluation.attacks.TaskScores.chance_flags`).

    Raises:
        ValueError: No forget facts, no contrast facts for ``"forget_vs_contrast"``, no
            ``original`` for ``"edit_shift"``, or fewer forget facts than folds.
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    t0 = time.perf_counter()
    from factlens.evaluation.config import or_default

    config = or_default(config)
    st = suite_settings(config, "direction_ablation", DirectionAblationConfig, direction_ablation_config)
    if mask is None and edit_result is not None:
        mask = edit_result.mask
    layers = ablation_layers(model, mask=mask if st.search_layers == "from_mask" else None, layers=st.layers)
    contrast, contrast_name = (task.retain, "retain") if len(task.retain) else (task.maintain, "maintain")
    _check_inputs(task, contrast, original, st)
    before, base_before = scores_before(model, task, config, original=original, baselines=baselines)
    folds, runs = _cross_fit(model, original, task, config, contrast, layers, st)
    parts, base_parts = _attack_and_control(model, original, task, config, folds, st, baselines, "direction_ablation")
    attacked, base = _merge(parts, before), (_merge(base_parts, before) if base_parts is not None else None)
    metrics = attack_metrics("ablation", attacked, before, base_attacked=base, base_before=base_before)
    sel = _selectivity(task, config, folds, parts)
    if sel is not None:
        b_sel = _selectivity(task, config, folds, base_parts) if base_parts is not None else None
        metrics += selectivity_metrics("ablation", sel, b_sel, at_chance=metrics[0].at_chance)
    if runs:
        metrics = _selected(metrics, runs)
    columns: dict[str, dict[str, float]] = {"answer_wins_before": {**before.forget, **before.maintain},
                                            "ablation_answer_wins": {**attacked.forget, **attacked.maintain}}
    random_damage = None
    if st.random_control:  # what removing *a* direction at the same places does: the attack's null
        rand = _random_folds(folds, int(model.cfg.d_model), config.seed)
        r_parts, r_base_parts = _attack_and_control(model, original, task, config, rand, st, baselines,
                                                    "direction_ablation_random")
        r_att = _merge(r_parts, before)
        r_base = _merge(r_base_parts, before) if r_base_parts is not None else None
        metrics += attack_metrics("ablation_random", r_att, before, base_attacked=r_base, base_before=base_before)
        columns["ablation_random_answer_wins"] = {**r_att.forget, **r_att.maintain}
        if r_base is not None:
            random_damage = attack_damage(base_before, r_base, tolerance=st.damage_tolerance)
    if attacked.edit:
        columns.update(target_wins_before=before.edit, ablation_target_wins=attacked.edit)
    if base is not None:
        columns["baseline_ablation_answer_wins"] = {**base.forget, **base.maintain}
    n_variants = len(st.positions) * len(layers)
    extra: dict[str, Any] = {
        "settings": st.to_dict(), "layers": layers, "positions": list(st.positions), "contrast": contrast_name,
        "folds": [f.to_dict(layers) for f in folds],
        "attack_damage": attack_damage(base_before, base, tolerance=st.damage_tolerance),
        "random_attack_damage": random_damage,
        "at_chance_bar": base_before.chance_flags()[1] if base_before is not None else None,
        "selection": ("forget wins on the fitting facts plus true-answer wins on as many retain facts"
                      if st.selection == "selective" and len(task.retain) else "forget wins on the fitting facts"),
        "note": (f"each forget fact scored under the best of {n_variants} (position, layer) variants chosen on the "
                 f"other {len(folds) - 1} fold(s)" if len(folds) > 1 else
                 f"metrics at the best of {n_variants} (position, layer) variants chosen on the same forget facts "
                 "(optimistic for the attack)") + "; baselines: the unedited model with the same directions "
                "removed at the same places; a maintain fact lost under one fold's direction only counts half"
                + ("; the maintain facts were the contrast the directions were fitted against (no retain facts)"
                   if contrast_name == "maintain" and st.direction == "forget_vs_contrast" else ""),
    }
    if original is None:
        extra["baseline_note"] = "original=None: the ablated original (control) was not evaluated"
    return SuiteResult("direction_ablation", tuple(metrics), tuple(fact_rows(task, columns)), extra,
                       time.perf_counter() - t0)
