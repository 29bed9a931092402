"""The relearning attack's collapse guard: did relearning make the model answer regardless of the fact?

A relearned forget accuracy counts as recovered knowledge only if the relearned model still
tells facts apart: on the maintain facts (never trained on by the attack) it must score above
what answers independent of the facts would (:func:`collapse_check`). Every attack is checked
(:func:`collapse_checks`): with ``both_halves`` each pools its held-out facts into the metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from factlens.evaluation.standard import answer_bias_bar, not_above_chance, tally
from factlens.prompt_scores import PromptScores

__all__ = ["collapse_check", "collapse_checks", "collapsed", "wins", "chance", "not_above"]


def wins(s: PromptScores) -> np.ndarray:
    """1.0 where the true answer won, per prompt."""
    return s.answer_wins.astype(float)


def chance(s: PromptScores) -> float:
    """The mean uniform chance of the prompts (1 / candidates)."""
    return float(np.mean([1.0 / len(it.candidates) for it in s.items])) if len(s) else float("nan")


def not_above(w: np.ndarray, chance_level: float) -> bool:
    """Whether the wins ``w`` are not above ``chance_level`` by 2 standard errors."""
    return not_above_chance(float(np.mean(w)) if len(w) else float("nan"), chance_level, len(w))


def collapse_check(before: PromptScores | None, after: PromptScores | None) -> dict[str, Any]:
    """Did relearning collapse the model's answers? Its maintain accuracy after the attack, and whether that is
    not above, by 2 SE, what a reader scores whose answers are independent of the facts and distributed as the
    model's own answers there (``bar`` ``"answer agreement"``: the sum over answers of their share of the true
    answers times their share of the model's, Cohen's expected agreement, :func:`answer_bias_bar`; one answer
    for everyone scores exactly it), nor above uniform chance (``"uniform chance"``, also where a perfect score
    could not clear the agreement, e.g. 4 facts): then the relearned model answers (nearly) regardless of the
    athlete, and a high relearned forget accuracy says nothing about recovered knowledge."""
    if before is None or after is None or not len(after):
        return {"collapsed": None, "note": "no maintain facts"}
    t, level, n = tally(after), chance(after), len(after)
    agreement = answer_bias_bar(t, [t])
    bar = ("answer agreement" if agreement is not None and agreement > level
           and not not_above_chance(1.0, agreement, n) else "uniform chance")
    value = agreement if bar == "answer agreement" else level
    return {"collapsed": not_above(wins(after), value), "maintain_before": float(wins(before).mean()),
            "maintain_after": float(wins(after).mean()), "chance": level, "bar": bar, "bar_value": value, "n": n}


def collapse_checks(before: PromptScores | None, controls: dict[str, PromptScores], attacks: list) -> dict[str, Any]:
    """:func:`collapse_check` after every attack: the first attack's numbers (those of
    ``relearn_maintain_accuracy``), ``collapsed`` when any attack collapsed the model (each pools
    its held-out facts into the relearned forget accuracy; only the first was checked before
    2026-12-06), and with two attacks ``per_attack`` (held-out half -> its check)."""
    per = {a["held_out"]: collapse_check(before, controls.get(a["held_out"])) for a in attacks}
    out = dict(per[attacks[0]["held_out"]])
    seen = [p["collapsed"] for p in per.values() if p["collapsed"] is not None]
    out["collapsed"] = any(seen) if seen else None
    if len(per) > 1:
        out["per_attack"] = per
    return out


def collapsed(suite) -> bool:
    """Whether a suite result (``SuiteResult`` or ``None``) records a collapse: its
    ``extra["maintain_collapse"]["collapsed"]`` (the one place the report, its plots and
    ``factlens.compare`` read the flag)."""
    return bool(suite is not None and ((suite.extra or {}).get("maintain_collapse") or {}).get("collapsed"))
