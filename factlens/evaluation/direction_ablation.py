"""Direction ablation (Lucki et al. 2024; Arditi et al. 2024): is the edit one removable direction?

An edit that suppresses facts may do so by writing one direction into the residual stream
whenever a forget fact comes up (a "refusal"-like feature) while the knowledge stays
readable. Lucki et al. recovered most of what RMU removed by projecting such a direction
out of the activations. This suite looks for it at each layer ``L`` of the mask and after:

1. the difference-of-means direction ``d = mean(forget) - mean(contrast)`` of the edited
   model's residual stream (``resid_post`` of ``L``) between the forget facts and facts it
   was not meant to change (``task.retain``, or ``task.maintain`` when there is no retain
   set), at the subject's last token and at the final token (one direction each);
2. ``d`` projected out of ``resid_post`` of ``L`` at every position
   (:func:`factlens.components.project_out_hook`, on for the scoring only);
3. forget / edit / maintain accuracy of the ablated model.

The layer and position with the highest forget accuracy (the most recovery) are reported as
the attack's result; picking the best of many variants flatters the attack, so the per-layer
curves are in ``extra``. The control is the unedited model with the same direction removed
(the edited model's, same layer and position): if removing it costs the unedited model
accuracy, the direction carries the facts themselves and what it brings back is not a
suppression undone, so the variant is flagged as damaging
(:func:`~factlens.evaluation.attacks.attack_damage`). Until 2026-12-04 the control removed
the unedited model's *own* forget-vs-contrast direction, which on a model that knows the
facts points along their answers: it cost the control accuracy the attack on the edited model
never removed, deflated the baselines and flagged variants as damaging for that reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from factlens.components import project_out_hook
from factlens.config import ConfigBase, check_numbers
from factlens.evaluation.attacks import (DAMAGE_TOLERANCE, TaskScores, attack_damage, attack_metrics, fact_rows,
                                       score_task, suite_settings, task_key)
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached, config_key
from factlens.evaluation.result import Metric, SuiteResult
from factlens.progress_bars import progress_bar

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests DirectionAblationConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["DirectionAblationConfig", "POSITIONS", "mean_difference_directions", "ablation_layers",
           "run_direction_ablation"]

#: Token positions at which the directions are taken.
POSITIONS: tuple[str, ...] = ("subject_last", "final")


@dataclass(frozen=True)
class DirectionAblationConfig(ConfigBase):
    """Settings of the ``direction_ablation`` suite (``EvalConfig.direction_ablation``).

    Attributes:
        positions: Where the directions are taken (:data:`POSITIONS`).
        layers: Layers to ablate (``None``: the first layer of the mask and every later layer;
            all layers when no mask is given).
        damage_tolerance: See :func:`~factlens.evaluation.attacks.attack_damage`.
    """

    positions: tuple[str, ...] = POSITIONS
    layers: tuple[int, ...] | None = None
    damage_tolerance: float = DAMAGE_TOLERANCE

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        v = self.positions
        object.__setattr__(self, "positions", (v,) if isinstance(v, str) else tuple(v))
        if self.layers is not None:
            object.__setattr__(self, "layers", (self.layers,) if isinstance(self.layers, int) else tuple(self.layers))
            if not self.layers or any(int(x) < 0 for x in self.layers):
                raise ValueError(f"DirectionAblationConfig.layers must be non-negative layer indices, got {self.layers}")
        if not self.positions or any(p not in POSITIONS for p in self.positions):
            raise ValueError(f"DirectionAblationConfig.positions must be a non-empty subset of {list(POSITIONS)}, "
                             f"got {self.positions}")
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
                               batch_size: int = 16) -> np.ndarray:
    """``mean(resid_post[facts]) - mean(resid_post[contrast])`` per layer at ``position``: ``[len(layers), d_model]``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> mean_difference_directions(p.model, p.task.forget, p.task.retain, layers=[1, 2]).shape
        (2, 96)
    """
    from factlens.evaluation.probes import collect_activations

    a = collect_activations(model, facts, layers=layers, position=position, batch_size=batch_size)
    b = collect_activations(model, contrast, layers=layers, position=position, batch_size=batch_size)
    return a.astype(np.float64).mean(0) - b.astype(np.float64).mean(0)


def _directions(model, task, config: EvalConfig, contrast, layers: list[int],
                positions: Sequence[str]) -> dict[str, np.ndarray]:
    """The edited model's forget-vs-contrast directions: position -> ``[len(layers), d_model]``."""
    return {pos: mean_difference_directions(model, task.forget, contrast, layers=layers, position=pos,
                                            batch_size=config.batch_size) for pos in positions}


def _directions_key(dirs: dict[str, np.ndarray]) -> str:
    """sha256 of the directions (the original's sweep is keyed by what it removes)."""
    import hashlib

    h = hashlib.sha256()
    for pos in sorted(dirs):
        a = np.ascontiguousarray(dirs[pos], dtype=np.float64)
        h.update(f"{pos}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _sweep(model, task, config: EvalConfig, dirs: dict[str, np.ndarray], layers: list[int],
           positions: Sequence[str]) -> dict[tuple[str, int], TaskScores]:
    """Scores of ``model`` with each (position, layer) direction of ``dirs`` projected out."""
    out: dict[tuple[str, int], TaskScores] = {}
    for pos in positions:
        for j, layer in enumerate(progress_bar(layers, desc=f"ablation ({pos})", leave=False)):
            d = torch.from_numpy(dirs[pos][j]).float()
            if not float(d.norm()) > 0:
                out[(pos, layer)] = score_task(model, task, config)  # no direction: nothing to remove
                continue
            with model.hooks(fwd_hooks=[project_out_hook(layer, d)]):
                out[(pos, layer)] = score_task(model, task, config)
    return out


def _curves(runs: dict[tuple[str, int], TaskScores], base_runs: dict[tuple[str, int], TaskScores] | None,
            base_before: TaskScores | None, layers: list[int],
            st: DirectionAblationConfig) -> tuple[dict[str, Any], list[str]]:
    """Per position, the accuracies after ablating at each layer (and the original's, with damage
    flags); and the variants ``"<position>:L<layer>"`` whose ablation damages the original."""
    curves: dict[str, Any] = {}
    damaged: list[str] = []
    for pos in st.positions:
        c: dict[str, list] = {k: [] for k in ("forget_accuracy", "edit_accuracy", "maintain_accuracy",
                                              "baseline_forget_accuracy", "baseline_maintain_accuracy", "damaged")}
        for layer in layers:
            s = runs[(pos, layer)]
            c["forget_accuracy"].append(s.accuracy("forget"))
            c["edit_accuracy"].append(s.accuracy("edit") if s.edit else None)
            c["maintain_accuracy"].append(s.accuracy("maintain") if s.maintain else None)
            b = base_runs[(pos, layer)] if base_runs else None
            c["baseline_forget_accuracy"].append(b.accuracy("forget") if b else None)
            c["baseline_maintain_accuracy"].append(b.accuracy("maintain") if b and b.maintain else None)
            dmg = attack_damage(base_before, b, tolerance=st.damage_tolerance)["damaged"]
            c["damaged"].append(dmg)
            if dmg:
                damaged.append(f"{pos}:L{layer}")
        curves[pos] = c
    return curves, damaged


def _selected(metrics: list[Metric], runs: dict[tuple[str, int], TaskScores]) -> list[Metric]:
    """The best variant's forget metrics are chosen on the same facts: the forget accuracy gets the
    interval of the largest of the variants' accuracies (``"wilson-max"``), the recovery is marked
    ``"bootstrap-selected"``. The edit accuracy is measured on those facts too, and a prompt
    cannot give the true answer and the new one at once, so the variant with the most forget
    wins tends to have the fewest edit wins: it is marked selected as well (``"wilson-selected"``
    or ``"bootstrap-selected"``, its own variant's interval). None of them is tested as paired
    facts by :func:`factlens.compare` (two localizations' best variants differ, and their number
    with the mask's first layer). The maintain facts were not the choice's criterion."""
    from dataclasses import replace

    from factlens.stats import max_wilson_interval

    out = []
    binary = all(v in (0.0, 1.0) for r in runs.values() for v in r.forget.values() if not math.isnan(v))
    for m in metrics:
        if m.name == "ablation_forget_accuracy" and m.n > 0 and binary:
            ks = [int(np.nansum(list(r.forget.values()))) for r in runs.values()]
            lo, hi = max_wilson_interval(ks, m.n)
            m = replace(m, ci_low=lo, ci_high=hi, ci_method="wilson-max")
        elif m.name in ("ablation_forget_accuracy", "ablation_forget_recovery") and m.ci_method is not None:
            m = replace(m, ci_method="bootstrap-selected")  # fractional outcomes (several prompts per fact)
        elif m.name == "ablation_edit_accuracy" and m.ci_method is not None:
            m = replace(m, ci_method="wilson-selected" if m.ci_method == "wilson" else "bootstrap-selected")
        out.append(m)
    return out


def run_direction_ablation(model, task, *, original=None, config: EvalConfig | None = None,
                           baselines: BaselineCache | None = None, mask=None, edit_result=None,
                           direction_ablation_config: DirectionAblationConfig | None = None) -> SuiteResult:
    """Project the forget-vs-contrast direction out of each layer; do the edited facts come back?

    Args:
        model: The evaluated (edited) model; hooks are attached only while scoring and always
            removed.
        task: The task (forget facts vs ``task.retain``, or ``task.maintain`` if retain is empty).
        original: The unedited model, attacked the same way (baselines, damage flags).
        config: Evaluation settings (``batch_size``, ``seed``).
        baselines: Cache of computations on ``original``. The original's sweep is keyed by the
            directions it removes (the edited model's) as well as the task and settings, so it is
            reused only for the same edit.
        mask: The edited localization (its first layer is where the sweep starts).
        edit_result: Used for its mask when ``mask`` is not given.
        direction_ablation_config: The suite's settings (default: ``config.direction_ablation``).

    Returns:
        At the (position, layer) with the highest forget accuracy: ``ablation_forget_accuracy``,
        ``ablation_forget_recovery``, ``ablation_edit_accuracy``, ``ablation_maintain_accuracy``
        (baselines: the original with the same direction, the edited model's, removed at the same
        place).
        ``extra``: ``layers``, per position the curves (``forget_accuracy``,
        ``edit_accuracy``, ``maintain_accuracy`` and the original's ``baseline_*``,
        ``damaged`` per layer), ``best`` (layer, position, recovery), ``attack_damage`` at the
        best variant and ``damaged`` (flagged variants ``"<position>:L<layer>"``).
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    t0 = time.perf_counter()
    from factlens.evaluation.config import or_default

    config = or_default(config)
    st = suite_settings(config, "direction_ablation", DirectionAblationConfig, direction_ablation_config)
    if mask is None and edit_result is not None:
        mask = edit_result.mask
    layers = ablation_layers(model, mask=mask, layers=st.layers)
    contrast, contrast_name = (task.retain, "retain") if len(task.retain) else (task.maintain, "maintain")
    if len(task.forget) == 0 or len(contrast) == 0:
        raise ValueError("direction ablation needs forget facts and retain (or maintain) facts for the direction")
    before = score_task(model, task, config)
    dirs = _directions(model, task, config, contrast, layers, st.positions)
    runs = _sweep(model, task, config, dirs, layers, st.positions)
    base_before = base_runs = None
    if original is not None:
        base_before = before if original is model else cached(
            baselines, ("task_scores", task_key(task, config)), lambda: score_task(original, task, config))
        # the control removes the very directions removed from the edited model: key them
        key = ("direction_ablation", tuple(layers), st.positions, _directions_key(dirs), config_key(config),
               task_key(task, config))
        base_runs = runs if original is model else cached(
            baselines, key, lambda: _sweep(original, task, config, dirs, layers, st.positions))
    best = max(runs, key=lambda k: (runs[k].accuracy("forget"), -k[1], -st.positions.index(k[0])))
    attacked, base = runs[best], base_runs[best] if base_runs else None
    metrics: list[Metric] = _selected(attack_metrics("ablation", attacked, before, base_attacked=base,
                                                     base_before=base_before), runs)
    curves, damaged = _curves(runs, base_runs, base_before, layers, st)
    columns: dict[str, dict[str, float]] = {"answer_wins_before": {**before.forget, **before.maintain},
                                            "ablation_answer_wins": {**attacked.forget, **attacked.maintain}}
    if attacked.edit:
        columns.update(target_wins_before=before.edit, ablation_target_wins=attacked.edit)
    if base is not None:
        columns["baseline_ablation_answer_wins"] = {**base.forget, **base.maintain}
    extra: dict[str, Any] = {
        "settings": st.to_dict(), "layers": layers, "positions": list(st.positions), "contrast": contrast_name,
        "curves": curves, "damaged": damaged,
        "best": {"position": best[0], "layer": best[1],
                 "recovery": attacked.accuracy("forget") - before.accuracy("forget")},
        "attack_damage": attack_damage(base_before, base, tolerance=st.damage_tolerance),
        "note": (f"metrics at the best of {len(runs)} (position, layer) variants by forget accuracy (optimistic for "
                 "the attack); baselines: the unedited model with the same direction (the edited model's) removed "
                 "at the same place"),
    }
    if original is None:
        extra["baseline_note"] = "original=None: the ablated original (control) was not evaluated"
    return SuiteResult("direction_ablation", tuple(metrics), tuple(fact_rows(task, columns)), extra,
                       time.perf_counter() - t0)
