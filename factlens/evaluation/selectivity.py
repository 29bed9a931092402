"""Recovery net of bias: what an attack brings back on held-out facts, minus what it gives to everyone.

An attack trained on the true answers of half the forget set (relearning, a soft prompt) can raise the
held-out half's forget accuracy in two ways: by recovering facts the edit only suppressed,
or by pushing the model towards the forget answers for *every* subject. On a forget set
with one answer (Sports-Unlearning: all basketball players) the second is enough to
"relearn" every fact; measured on Gemma 3 270M, one seed's relearned FLU model called most
athletes of other sports basketball players (docs/reproduction.md); the appended soft
prompt's recovery of the main job's FLU edit was bias too. Accuracy alone cannot tell the
two apart. The relearning suite uses :func:`selectivity`; the soft-prompt suite, whose
scores are plain arrays, :func:`selectivity_of` per seed and :func:`mean_selectivity`.

The **controls** of a held-out forget fact with answer ``y`` are maintain facts whose
candidates include ``y`` and whose own answer is not ``y`` (athletes of other sports, for
``y`` = basketball). Each fact gets its own controls: the maintain facts are dealt out in a
seeded order, round robin, each fact taking one eligible control that no fact has yet while
any is left (two each for 64 maintain and 32 forget facts of one answer); a control serves
several facts only for a fact whose eligible controls are all taken. After the attack that held the fact out, its
**bias** is the fraction of its controls the model answers ``y`` (false alarms), and its
**selective recovery** is its win (0/1) minus that bias (hit minus false alarms): 0 on
average for an attack that only biases the model towards the forget answers, the forget
accuracy for one that recovers facts and leaves others alone.

Why per-fact controls rather than one bias rate over all controls subtracted from every
fact: a fact together with its own controls is one unit, so resampling or sign-flipping
facts (:meth:`~factlens.evaluation.result.Metric.from_samples`, :func:`factlens.compare`)
carries the sampling error of the bias too; a common rate would be the same constant in
every fact's value and its error would vanish from every interval and test. The controls
depend only on the facts, the maintain set and the seed, so two models evaluated on them
are paired unit by unit. The dealing is elementary bookkeeping with no library equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from factlens.data.formats import FormattedPrompt
from factlens.evaluation.result import Metric
from factlens.prompt_scores import PromptScores

__all__ = ["Selectivity", "selectivity", "selectivity_of", "mean_selectivity", "selectivity_metrics", "deal_controls"]


@dataclass(frozen=True)
class Selectivity:
    """Per-fact selective recovery and bias (see the module docstring), keyed by ``record_id``.

    Attributes:
        recovery: Fact -> its win minus its bias (facts without an eligible control are left out).
        bias: Fact -> fraction of its controls given its answer after its attack.
        controls: Fact -> the record ids of its controls.
    """

    recovery: dict[str, float]
    bias: dict[str, float]
    controls: dict[str, tuple[str, ...]]

    @property
    def value(self) -> float:
        return float(np.mean(list(self.recovery.values())))

    @property
    def mean_bias(self) -> float:
        return float(np.mean(list(self.bias.values())))


def deal_controls(facts: Sequence[tuple[str, str]], maintain: Sequence[FormattedPrompt], *,
                  seed: int) -> dict[str, tuple[str, ...]]:
    """Controls of each fact: its answer's eligible maintain facts, dealt round robin.

    Args:
        facts: ``(record_id, answer)`` of the held-out facts.
        maintain: The maintain facts' prompts (one per fact).
        seed: Seed of the dealing order.

    Returns:
        Fact id -> control record ids (empty when no maintain fact is eligible).

    Example:
        >>> from factlens.data.formats import format_prompts
        >>> from factlens.testing import planted_fact_model
        >>> t = planted_fact_model().task
        >>> c = deal_controls([(r.id, r.answer) for r in t.forget], format_prompts(t.maintain), seed=0)
        >>> sorted(len(v) for v in c.values())  # 20 maintain facts (each used once), 8 forget facts
        [2, 2, 2, 2, 3, 3, 3, 3]
    """
    rng = np.random.default_rng(seed)
    pool = sorted({u.record_id for u in maintain})
    pool = [pool[i] for i in rng.permutation(len(pool))]
    answer = {u.record_id: u.answer for u in maintain}
    cands = {u.record_id: set(u.candidates) for u in maintain}
    facts = sorted(set(facts))
    order = [facts[i] for i in rng.permutation(len(facts))]
    eligible = {rid: [u for u in pool if y in cands[u] and answer[u] != y] for rid, y in order}
    used = dict.fromkeys(pool, 0)
    dealt: dict[str, list[str]] = {rid: [] for rid, _ in order}
    progress = True
    while progress:  # rounds: every fact takes one control no fact has yet, while any is left
        progress = False
        for rid, _ in order:
            free = next((u for u in eligible[rid] if not used[u]), None)
            if free is not None:
                dealt[rid].append(free)
                used[free] += 1
                progress = True
    for rid, _ in order:  # more facts than controls: share the least used one
        if not dealt[rid] and eligible[rid]:
            u = min(eligible[rid], key=used.__getitem__)
            dealt[rid].append(u)
            used[u] += 1
    return {rid: tuple(v) for rid, v in dealt.items()}


def selectivity(held_out: PromptScores, attack_of: Sequence[str], controls: Mapping[str, PromptScores], *,
                seed: int = 0) -> Selectivity | None:
    """Selective recovery and bias of held-out forget facts against their own controls.

    Args:
        held_out: Scores of the held-out forget facts after the attack (one prompt per fact).
        attack_of: For each prompt of ``held_out``, the key in ``controls`` of the attack
            that held it out.
        controls: Attack key -> scores of the maintain facts after that attack (the same
            prompts for every attack).
        seed: Seed of :func:`deal_controls`.

    Returns:
        The per-fact values, or ``None`` when no held-out fact has a control.

    Example:
        >>> from factlens.data.formats import format_prompts
        >>> from factlens.prompt_scores import score_prompts
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> held = score_prompts(p.model, format_prompts(p.task.forget))
        >>> s = selectivity(held, ["A"] * len(held), {"A": score_prompts(p.model, format_prompts(p.task.maintain))})
        >>> s.value, len(s.recovery)  # the planted model knows every fact and gives no control a wrong answer
        (1.0, 8)
    """
    if len(attack_of) != len(held_out):
        raise ValueError(f"attack_of has {len(attack_of)} entries for {len(held_out)} held-out prompts")
    missing = sorted(set(attack_of) - set(controls))
    if missing:
        raise ValueError(f"no control scores for the attacks {missing}; pass controls for every key of attack_of")
    first = next(iter(controls.values()))
    said = {h: dict(zip((u.record_id for u in s.items), s.predicted())) for h, s in controls.items()}
    return selectivity_of(held_out.items, held_out.answer_wins, attack_of, said, first.items, seed=seed)


def selectivity_of(items: Sequence[FormattedPrompt], wins: Sequence[float], attack_of: Sequence[Hashable],
                   said: Mapping[Hashable, Mapping[str, str]], maintain: Sequence[FormattedPrompt], *,
                   seed: int) -> Selectivity | None:
    """:func:`selectivity` from plain predictions, for attacks that do not produce
    :class:`~factlens.prompt_scores.PromptScores` (the soft-prompt attack).

    Args:
        items: The held-out forget facts' prompts (one per fact).
        wins: Each prompt's outcome after the attack that held it out (1: its answer wins).
        attack_of: For each prompt, the key in ``said`` of that attack.
        said: Attack key -> maintain record id -> the candidate the model gives after that attack.
        maintain: The maintain facts' prompts (the controls are dealt from them).
        seed: Seed of :func:`deal_controls`.

    Example:
        >>> from factlens.data.formats import format_prompts
        >>> from factlens.testing import planted_fact_model
        >>> t = planted_fact_model().task
        >>> held, maintain = format_prompts(t.forget), format_prompts(t.maintain)
        >>> said = {0: {u.record_id: held[0].answer for u in maintain}}  # an attack that says one answer to all
        >>> s = selectivity_of(held, [1.0] * len(held), [0] * len(held), said, maintain, seed=0)
        >>> s.bias[held[0].record_id], s.recovery[held[0].record_id]
        (1.0, 0.0)
    """
    if len(attack_of) != len(items) or len(wins) != len(items):
        raise ValueError(f"attack_of has {len(attack_of)} entries and wins {len(wins)} for {len(items)} held-out "
                         "prompts; give one of each per prompt")
    missing = sorted(map(str, set(attack_of) - set(said)))
    if missing:
        raise ValueError(f"no control predictions for the attacks {missing}; pass them for every key of attack_of")
    ids = [it.record_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("selectivity needs one prompt per held-out fact (the default format); got repeated record ids")
    dealt = deal_controls([(it.record_id, it.answer) for it in items], maintain, seed=seed)
    recovery: dict[str, float] = {}
    bias: dict[str, float] = {}
    for it, win, attack in zip(items, wins, attack_of):
        mine = dealt.get(it.record_id, ())
        if not mine:
            continue
        b = float(np.mean([said[attack][u] == it.answer for u in mine]))
        bias[it.record_id] = b
        recovery[it.record_id] = float(win) - b
    if not recovery:
        return None
    return Selectivity(recovery, bias, {rid: dealt[rid] for rid in recovery})


def mean_selectivity(parts: Sequence[Selectivity]) -> Selectivity:
    """Per-fact mean of several runs of one attack on the same facts and controls (soft-prompt seeds).

    Example:
        >>> a = Selectivity({"f": 1.0}, {"f": 0.0}, {"f": ("m",)})
        >>> mean_selectivity([a, Selectivity({"f": 0.0}, {"f": 1.0}, {"f": ("m",)})]).recovery
        {'f': 0.5}
    """
    if not parts:
        raise ValueError("mean_selectivity needs at least one Selectivity")
    if any(p.controls != parts[0].controls for p in parts[1:]):
        raise ValueError("mean_selectivity averages runs on the same facts and controls; these differ")
    return Selectivity({k: float(np.mean([p.recovery[k] for p in parts])) for k in parts[0].recovery},
                       {k: float(np.mean([p.bias[k] for p in parts])) for k in parts[0].bias}, parts[0].controls)


def selectivity_metrics(prefix: str, sel: Selectivity, base: Selectivity | None, *, at_chance: bool) -> list[Metric]:
    """``{prefix}_selective_recovery`` and ``{prefix}_control_bias`` (lower is better), with the
    caller's baselines (``base``; ``None``: no baselines): the soft-prompt suite's are the unedited
    model under the same attack, the relearning suite's the unedited model without it.
    ``at_chance`` goes to the selective recovery, the flag of the held-out facts it scores.

    Example:
        >>> sel = Selectivity({"f": 0.0}, {"f": 1.0}, {"f": ("m",)})
        >>> [(m.name, m.value, m.baseline) for m in selectivity_metrics("relearn", sel, None, at_chance=False)]
        [('relearn_selective_recovery', 0.0, None), ('relearn_control_bias', 1.0, None)]
    """
    return [
        Metric.from_samples(f"{prefix}_selective_recovery", sel.recovery, baseline=base.value if base else None,
                            at_chance=at_chance, higher_is_better=False, proportion=False),  # -1 ... 1
        Metric.from_samples(f"{prefix}_control_bias", sel.bias, higher_is_better=False,
                            baseline=base.mean_bias if base else None),
    ]
