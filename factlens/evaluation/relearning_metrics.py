"""The relearning suite's metrics: per-fact values to metrics, at-chance flags, selectivity and per-fact rows.

What :func:`~factlens.evaluation.relearning.run_relearning` makes of the scores of the attacked
facts once the attacks have run (the held-out and trained-on roles, their at-chance flags, the
selective recovery net of the attack's control bias, one row per forget fact). Split from
:mod:`factlens.evaluation.relearning` to keep it small; that module imports what it uses back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from factlens.evaluation.relearning_collapse import chance as _chance
from factlens.evaluation.relearning_collapse import not_above as _not_above
from factlens.evaluation.relearning_collapse import wins as _wins
from factlens.evaluation.result import Metric
from factlens.evaluation.selectivity import selectivity, selectivity_metrics
from factlens.evaluation.standard import chance_flags, fact_means, tally
from factlens.prompt_scores import PromptScores


def _mean(x: np.ndarray) -> tuple[float, float | None]:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan"), None
    return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None)


def _metric(name: str, scores: PromptScores, values: np.ndarray, *, baseline: np.ndarray | None = None,
            higher_is_better: bool = False, at_chance: bool = False) -> Metric:
    """Per-fact values (keyed by ``record_id``) -> a metric with its interval (``Metric.from_samples``)."""
    b = _mean(baseline)[0] if baseline is not None else None
    return Metric.from_samples(name, fact_means(scores, values), baseline=None if b is None or math.isnan(b) else b,
                               at_chance=at_chance, higher_is_better=higher_is_better)


def _selectivity_metrics(held: dict[str, PromptScores], controls: dict[str, PromptScores],
                         base: dict[str, PromptScores] | None, original_maintain: PromptScores | None, *,
                         at_chance: bool, seed: int) -> tuple[list[Metric], dict[str, Any]]:
    """``relearn_selective_recovery`` (each held-out fact's win minus the rate at which the attack
    gives its answer to its own control facts) and ``relearn_control_bias`` (that rate), with
    the original model's values as baselines, and the controls dealt to each fact; nothing
    when no held-out fact has a control (:mod:`factlens.evaluation.selectivity`)."""
    hs = sorted(held, key=lambda h: h != "B")
    attack_of = [h for h in hs for _ in range(len(held[h]))]
    sel = selectivity(_concat([held[h] for h in hs]), attack_of, controls, seed=seed)
    if sel is None:
        return [], {"note": "no held-out fact has a control (a maintain fact that could be given its answer)"}
    b_sel = None
    if base is not None and original_maintain is not None:
        b_sel = selectivity(_concat([base[h] for h in hs]), attack_of, dict.fromkeys(controls, original_maintain),
                            seed=seed)
    return selectivity_metrics("relearn", sel, b_sel, at_chance=at_chance), {
        "controls": {k: list(v) for k, v in sel.controls.items()}}


def _concat(parts: Sequence[PromptScores]) -> PromptScores:
    """The prompts of several :class:`PromptScores` as one (in order)."""
    if len(parts) == 1:
        return parts[0]
    return PromptScores(**{f.name: (tuple(x for p in parts for x in p.items) if f.name == "items"
                                    else np.concatenate([getattr(p, f.name) for p in parts]))
                           for f in dataclasses.fields(PromptScores)})


@dataclass(frozen=True)
class _Role:
    """The facts of one role (held out / trained on) of every attack: their scores after the
    attack, before it, and on the original (``None`` without it)."""

    after: PromptScores
    before: PromptScores
    base: PromptScores | None


def _roles(after: dict[str, PromptScores], before: dict[str, PromptScores],
           base: dict[str, PromptScores] | None) -> _Role:
    hs = sorted(after, key=lambda h: h != "B")  # half B first: the one-half attack's held-out half
    return _Role(_concat([after[h] for h in hs]), _concat([before[h] for h in hs]),
                 _concat([base[h] for h in hs]) if base is not None else None)


def _flags(roles: dict[str, _Role], maintain: PromptScores | None) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each role's at-chance flag on the original (its chance, or the answer bias of its answers on the task's
    other facts: :func:`chance_flags`), and which check decided; no flags without the original."""
    tallies = {k: tally(r.base, chance=_chance(r.base)) for k, r in roles.items() if r.base is not None}
    if maintain is not None and len(maintain):
        tallies["maintain"] = tally(maintain)
    own = {k: r.base is not None and _not_above(_wins(r.base), _chance(r.base)) for k, r in roles.items()}
    others: dict[str, list[str]] = {k: ["maintain"] for k in roles}  # roles: forget facts alike
    if maintain is not None and len(maintain):  # the maintain metric is flagged too, as the other attacks flag it
        own["maintain"], others["maintain"] = _not_above(_wins(maintain), _chance(maintain)), ["held"]
    return chance_flags(tallies, own, others=others)


def _metrics(task, held: _Role, trained: _Role, at_chance: dict[str, bool]) -> list[Metric]:
    """Forget accuracy of the held-out facts and train accuracy of the trained-on facts before /
    after relearning (baseline: the original; ``at_chance``: per role, from ``chance_flags``), and
    the held-out edit accuracy (inject tasks; baseline: before relearning)."""
    def base(role: _Role):
        return _wins(role.base) if role.base is not None else None

    metrics = [_metric(f"relearn_{name}{suffix}", s, _wins(s), baseline=base(role), at_chance=at_chance[k])
               for name, k, role in (("forget_accuracy", "held", held), ("train_accuracy", "trained", trained))
               for suffix, s in (("", role.after), ("_before", role.before))]
    has_t = np.array([it.target is not None for it in held.after.items])
    if task.objective == "inject" and has_t.any():
        metrics.append(_metric("relearn_edit_accuracy", held.after, np.where(has_t, held.after.target_wins, np.nan),
                               baseline=np.where(has_t, held.before.target_wins, np.nan), higher_is_better=True,
                               at_chance=at_chance.get("held", False)))  # the held-out facts' flag, as the others
    return metrics


def _fact_rows(before: dict[str, PromptScores], trained: dict[str, PromptScores], held: dict[str, PromptScores],
               base: dict[str, PromptScores] | None) -> list[dict[str, Any]]:
    """One row per forget fact: wins and answer probability before / after relearning.

    ``held_out`` says which attack the ``_after`` columns come from: the one that held the fact
    out (every fact with ``both_halves``; half B otherwise) or the one trained on it (half A of
    a one-half attack). With both halves, ``answer_wins_after_trained`` is the trained-on result."""
    rows: list[dict[str, Any]] = []
    for h in ("A", "B"):
        b = before[h]
        a = held[h] if h in held else trained[h]
        for i, it in enumerate(a.items):
            row = {"record_id": it.record_id, "half": h, "held_out": h in held, "answer": it.answer,
                   "target": it.target, "answer_wins_before": bool(b.answer_wins[i]),
                   "answer_wins_after": bool(a.answer_wins[i]), "p_answer_before": float(b.p_answer_norm[i]),
                   "p_answer_after": float(a.p_answer_norm[i])}
            if h in held and h in trained:
                row["answer_wins_after_trained"] = bool(trained[h].answer_wins[i])
            if it.target is not None:
                row.update(target_wins_before=bool(b.target_wins[i]), target_wins_after=bool(a.target_wins[i]))
            if base is not None:
                row["baseline_answer_wins"] = bool(base[h].answer_wins[i])
            rows.append(row)
    return rows
