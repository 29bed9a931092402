"""The standard suite: forget, edit and maintain accuracy in the trained prompt format.

Paper section 3: *forget accuracy* is how often the true answer of an edited fact still
wins among the candidate answers, *edit accuracy* how often the edit target wins (inject
tasks), *maintain accuracy* how often held-out facts keep their answer. Each comes as an
argmax-among-candidates accuracy and as a continuous score: the mean probability of the
true answer / target normalized over the candidates (``forget_prob``, ``edit_prob``,
``maintain_prob``). Candidates are the dataset's answer set (sports) or, for open-vocabulary
data such as CounterFact, the true answer and the edit target.

The helpers here (per-fact aggregation, chance tests) are shared with the other suites.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import numpy as np

from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.data.known import prompt_chance
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached, items_key
from factlens.evaluation.result import Metric, SuiteResult
from factlens.prompt_scores import PromptScores, score_prompts

if TYPE_CHECKING:  # factlens.evaluation.config imports the suite modules (it nests their settings)
    from factlens.evaluation.config import EvalConfig

__all__ = ["run_standard", "fact_means", "not_above_chance", "n_facts", "constant_bar", "SplitTally", "tally",
           "answer_bias_bar", "chance_flags", "readable", "mean_metric", "json_value"]


# -- shared helpers --------------------------------------------------------------------------
def json_value(x: Any) -> Any:
    """A JSON-friendly scalar (numpy -> python, NaN -> None)."""
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else x
    return x


def fact_means(scores: PromptScores, values: np.ndarray) -> dict[str, float]:
    """Mean of a per-prompt array per fact (``record_id`` -> mean over that fact's prompts).

    NaN entries (e.g. no target) are ignored; a fact with only NaNs maps to NaN.
    """
    out: dict[str, float] = {}
    vals = np.asarray(values, dtype=float)
    for rid, idx in scores.by_record().items():
        v = vals[idx]
        v = v[~np.isnan(v)]
        out[rid] = float(v.mean()) if len(v) else float("nan")
    return out


def not_above_chance(accuracy: float, chance: float, n: int) -> bool:
    """True when ``accuracy`` is below chance + 2 binomial standard errors (the rule of
    :func:`factlens.data.known.format_accuracy`). ``n`` is the number of independent units; on
    scored prompts that is the number of facts (:func:`n_facts`), not of prompts.

    Example:
        >>> not_above_chance(0.4, 1 / 3, 30), not_above_chance(0.9, 1 / 3, 30)
        (True, False)
    """
    if n == 0 or math.isnan(accuracy) or math.isnan(chance):
        return True
    se = math.sqrt(max(chance * (1 - chance), 1e-12) / n)
    return bool(accuracy < chance + 2 * se)


def n_facts(items: Sequence[FormattedPrompt]) -> int:
    """The number of distinct facts (``record_id``) among ``items``: the sample size of every at-chance
    test on scored prompts. Units are facts (docs/statistics.md): a fact's prompts share one answer
    and are not independent trials.

    Example:
        >>> from factlens.data.formats import FormattedPrompt
        >>> n_facts([FormattedPrompt(f"q{k}", "a", None, ("a", "b"), f"f{k // 10}", "neighborhood") for k in range(30)])
        3
    """
    return len({it.record_id for it in items})


def constant_bar(items: Sequence[FormattedPrompt]) -> float:
    """What a reader that gives one candidate to every prompt scores on ``items`` at best: the
    largest share of one answer (or uniform chance, if higher). A blind layer or a collapsed model
    does exactly that, and on unbalanced facts it beats uniform chance: 32 athletes half of whom
    play baseball are "read" at 0.5 by a layer that says baseball to everyone.

    Example:
        >>> from factlens.data.formats import FormattedPrompt
        >>> sports = ("basketball", "baseball", "football")
        >>> answers = ["baseball"] * 2 + ["football"] * 2
        >>> items = [FormattedPrompt("q", a, None, sports, str(i), "default") for i, a in enumerate(answers)]
        >>> round(chance_of(items), 3), constant_bar(items)
        (0.333, 0.5)
    """
    items = list(items)
    if not items:
        return float("nan")
    answers = [it.answer for it in items]
    return max(chance_of(items), max(answers.count(a) for a in set(answers)) / len(answers))


class SplitTally(NamedTuple):
    """What the at-chance rule (:func:`chance_flags`) needs of the unedited model on one split of a
    task (forget, maintain, or a part of them such as a half of the forget facts).

    Attributes:
        accuracy: Its accuracy on the split (the one its own chance check tests).
        n: Number of prompts.
        chance: The split's chance level (:func:`chance_of`).
        answers: True answer -> share of the split's prompts with that answer.
        said: Candidate -> share of the split's prompts on which the model predicts it
            (:meth:`~factlens.prompt_scores.PromptScores.predicted`; ties count for none);
            ``None``: not known.
        facts: The split's fact ids (empty: not known), to tell which splits are "other" and to
            count the split's independent units (:attr:`units`).
    """

    accuracy: float
    n: int
    chance: float
    answers: Mapping[str, float]
    said: Mapping[str, float] | None
    facts: frozenset[str] = frozenset()

    @property
    def units(self) -> int:
        """The sample size of the split's chance tests: its number of facts, ``n`` (prompts) when the
        facts are not known. A fact's prompts (CounterFact: ~10 neighborhood prompts, 2 paraphrases, one
        answer) are not independent trials, so counting them overstated the evidence: 11 of 16 facts
        right, 10 prompts each, passed chance + 2 SE with n = 160 but not with n = 16."""
        return len(self.facts) or self.n


def shares(values: Sequence[str | None]) -> dict[str, float]:
    """Each value's share of ``values`` (``None``, a tie without an answer, counts in the total only).

    Example:
        >>> shares(["a", "b", "a", None])
        {'a': 0.5, 'b': 0.25}
    """
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    return {k: c / len(values) for k, c in counts.items()}


def tally(scores: PromptScores, *, accuracy: float | None = None, chance: float | None = None) -> SplitTally:
    """The :class:`SplitTally` of the unedited model's scores of one split (``accuracy`` and
    ``chance``: the values its own chance check uses, by default the prompts' accuracy and
    :func:`chance_of`). Its ``facts`` are the prompts' ``record_id``: the chance tests count facts
    (:attr:`SplitTally.units`), the answer-bias bar weighs prompts."""
    return SplitTally(scores.accuracy() if accuracy is None else float(accuracy), len(scores),
                      chance_of(scores.items) if chance is None else float(chance),
                      shares([it.answer for it in scores.items]), shares(scores.predicted()),
                      frozenset(it.record_id for it in scores.items))


def answer_bias_bar(split: SplitTally, others: Sequence[SplitTally]) -> float | None:
    """What a reader that knows no fact and answers like the model does elsewhere scores on ``split``:
    the sum over answers ``a`` of ``a``'s share of the split's true answers times the share of the
    ``others``' prompts (pooled) on which the model says ``a``. ``None`` without such prompts.

    Example:
        >>> forget = SplitTally(1.0, 12, 1 / 3, {"basketball": 1.0}, None)
        >>> maintain = SplitTally(0.25, 16, 1 / 3, {"baseball": 0.5, "football": 0.5}, {"basketball": 1.0})
        >>> answer_bias_bar(forget, [maintain]), answer_bias_bar(maintain, [forget])
        (1.0, None)
    """
    ys = [y for y in others if y.n and y.said is not None]
    n = sum(y.n for y in ys)
    if not n:
        return None
    return float(sum(s * sum(y.n * y.said.get(a, 0.0) for y in ys) / n for a, s in split.answers.items()))


def chance_flags(tallies: Mapping[str, SplitTally | None], own: Mapping[str, bool], *,
                 others: Mapping[str, Sequence[str]] | None = None) -> tuple[dict[str, bool], dict[str, Any]]:
    """The at-chance flags of a task's splits on the unedited model, and which check decided.

    A split ``X`` in ``own`` is flagged when its own check flags it (``own[X]``: its accuracy
    against its chance level, :func:`not_above_chance`), or when ``bar`` is above chance and its
    accuracy is not above ``bar`` by 2 standard errors, ``bar`` being :func:`answer_bias_bar` of ``X``
    against the other splits (the other entries of ``tallies`` that share no fact with ``X``): what
    a reader scores whose answers are independent of the facts and distributed like the model's
    on the other prompts of the task. In Sports-Unlearning every forget fact is a basketball
    player; a model that says basketball to every athlete scores 1.0 there (chance: 1/3), and
    says basketball to every maintain athlete too: bar 1.0, flagged. A model that knows its
    forget facts but not its maintain facts, on facts with candidates of their own (CounterFact),
    gets a bar below chance there and its forget facts are not flagged. Without another split's scores: the own check alone.
    ``others`` (split -> the splits its bar is read from) narrows the other splits: parts of the
    forget facts (soft prompts' halves, relearning's roles) are read against the maintain facts
    only, since a model that knows the other half's basketball players says basketball there
    too (halves of Sports-Unlearning's forget facts were flagged with a bar of 0.8 when the
    maintain split was small). Every suite that flags forget or maintain metrics goes through
    here (the formats suite per format, pooled: its one flag per format tests the format's
    pooled accuracy against the prompt-weighted mean of its splits' bars).

    Returns:
        The flags (split -> bool), and for the suite's ``extra["at_chance_bar"]``, per split:
        ``bar`` (``None``: not computed), ``accuracy``, ``chance``, ``n`` (the test's sample size: the
        split's facts, :attr:`SplitTally.units`) and ``decided_by``
        (``"split chance"``, ``"answer bias"``, or ``None`` when not at chance); ``None`` for a
        split without a tally.

    Example:
        >>> forget = SplitTally(1.0, 12, 1 / 3, {"basketball": 1.0}, {"basketball": 1.0})
        >>> maintain = SplitTally(0.25, 16, 1 / 3, {"baseball": 0.5, "football": 0.5}, {"basketball": 1.0})
        >>> flags, why = chance_flags({"forget": forget, "maintain": maintain}, {"forget": False, "maintain": True})
        >>> flags, why["forget"]["decided_by"], why["forget"]["bar"], why["maintain"]["decided_by"]
        ({'forget': True, 'maintain': True}, 'answer bias', 1.0, 'split chance')
    """
    flags: dict[str, bool] = {}
    record: dict[str, Any] = {}
    for split, own_flag in own.items():
        x = tallies.get(split)
        if x is None:
            flags[split], record[split] = bool(own_flag), None
            continue
        keys = [k for k in tallies if k != split] if others is None or split not in others else others[split]
        ys = [y for k in keys if (y := tallies.get(k)) is not None and not y.facts & x.facts]
        bar = answer_bias_bar(x, ys)
        # a bar at or below chance adds nothing to the own check (the formats suite, whose own check is pooled,
        # would otherwise flag a split of a format for its own chance alone)
        biased = bar is not None and bar > x.chance and not_above_chance(x.accuracy, bar, x.units)
        flags[split] = bool(own_flag or biased)
        record[split] = {"bar": json_value(bar), "accuracy": json_value(x.accuracy), "chance": json_value(x.chance),
                         "n": int(x.units),
                         "decided_by": "split chance" if own_flag else "answer bias" if biased else None}
    return flags, record


def readable(accuracies: Sequence[float], items: Sequence[FormattedPrompt]) -> tuple[np.ndarray, str]:
    """Which of several readings of ``items`` (accuracies per layer or variant) carry facts, and
    by which bar: the attacks choose a layer or variant only among these.

    First bar: above what one answer for everyone scores (:func:`constant_bar`) by 2 binomial
    standard errors (over the facts, :func:`n_facts`). A small or one-sided set can make that bar
    unreachable (4 facts, 3 of one answer: 0.75 + 0.43); then the second bar, uniform chance + 2 SE,
    still keeps out a reading that is plainly blind; when none passes either, every reading is
    eligible (a rule that leaves nothing to choose from would be no rule). Returns the mask and the bar that decided it
    (``"constant answer"``, ``"uniform chance"`` or ``"none"``).

    Example:
        >>> from factlens.data.formats import FormattedPrompt
        >>> sports = ("basketball", "baseball", "football")
        >>> items = [FormattedPrompt("q", a, None, sports, str(i), "default")
        ...          for i, a in enumerate(["baseball", "football"] * 32)]
        >>> [(m.tolist(), bar) for m, bar in (readable([0.5, 0.9], items), readable([0.5, 0.55], items),
        ...                                   readable([0.3], items))]
        [([False, True], 'constant answer'), ([True, True], 'uniform chance'), ([True], 'none')]
    """
    items, acc = list(items), [float(a) for a in accuracies]
    n = n_facts(items)
    if n:
        for name, bar in (("constant answer", constant_bar(items)), ("uniform chance", chance_of(items))):
            ok = np.array([not not_above_chance(a, bar, n) for a in acc], dtype=bool)
            if ok.any():
                return ok, name
    return np.ones(len(acc), dtype=bool), "none"


def mean_metric(name: str, per_fact: dict[str, float], *, baseline: dict[str, float] | None = None, unit: str = "facts",
                higher_is_better: bool = True, at_chance: bool = False) -> Metric | None:
    """Aggregate per-fact values into a :class:`Metric` with its 95 % interval and the per-fact
    ``samples`` (:meth:`Metric.from_samples`); ``None`` when no fact has a value."""
    if all(math.isnan(x) for x in per_fact.values()):
        return None
    base = None
    if baseline is not None:
        b = np.array([x for x in baseline.values() if not math.isnan(x)], dtype=float)
        base = float(b.mean()) if len(b) else None
    return Metric.from_samples(name, per_fact, unit=unit, baseline=base, at_chance=at_chance,
                               higher_is_better=higher_is_better)


def score_items(model, items: Sequence[FormattedPrompt], config: EvalConfig) -> PromptScores:
    """``score_prompts`` with the config's batch size and candidate rule (no model call for an empty list)."""
    return score_prompts(model, items, batch_size=config.batch_size, candidate_score=config.candidate_score)


def scores_key(items: Sequence[FormattedPrompt], config: EvalConfig) -> tuple:
    """The :class:`~factlens.evaluation.BaselineCache` key of :func:`score_items` (every suite
    caches the original's prompt scores under it, so they are computed once per unit)."""
    return "scores", items_key(items), config.batch_size, config.candidate_score


def score_both(model, original, items: Sequence[FormattedPrompt], config: EvalConfig,
               baselines: BaselineCache | None = None) -> tuple[PromptScores, PromptScores | None]:
    """Scores on the model and on the original (reused when ``original is model``, or from ``baselines``)."""
    s = score_items(model, items, config)
    if original is None:
        return s, None
    if original is model:
        return s, s
    return s, cached(baselines, scores_key(items, config), lambda: score_items(original, items, config))


def chance_of(items: Sequence[FormattedPrompt]) -> float:
    """:func:`factlens.data.known.prompt_chance`: uniform guessing; for option letters at least the best
    constant letter."""
    return prompt_chance(items)


def original_note(original) -> dict[str, str]:
    if original is None:
        return {"baseline_note": "original=None: no baselines and no at-chance flags were computed; pass "
                                 "original=<the unedited model> to get them"}
    return {}


# -- the suite ---------------------------------------------------------------------------
def _rows(split: str, items: Sequence[FormattedPrompt], subjects: dict[str, str], s: PromptScores,
          b: PromptScores | None) -> list[dict[str, Any]]:
    rows = []
    for i, it in enumerate(items):
        row = {"record_id": it.record_id, "split": split, "subject": subjects.get(it.record_id), "answer": it.answer,
               "target": it.target, "answer_wins": json_value(s.answer_wins[i]), "p_answer": json_value(s.p_answer_norm[i]),
               "logp_answer": json_value(s.logp_answer[i])}
        if it.target is not None:
            row.update(target_wins=json_value(s.target_wins[i]), p_target=json_value(s.p_target_norm[i]),
                       logp_target=json_value(s.logp_target[i]))
        if b is not None:
            row.update(baseline_answer_wins=json_value(b.answer_wins[i]), baseline_p_answer=json_value(b.p_answer_norm[i]))
            if it.target is not None:
                row.update(baseline_target_wins=json_value(b.target_wins[i]),
                           baseline_p_target=json_value(b.p_target_norm[i]))
        rows.append(row)
    return rows


def _baseline_flags(scored: dict[str, tuple], extra: dict[str, Any]) -> dict[str, bool]:
    """The at-chance flag of each split (:func:`chance_flags`; none without the original), with
    the original's accuracy per split and the bar that decided in ``extra``."""
    based = {split: (items, b) for split, (items, _, b) in scored.items() if b is not None}
    if not based:
        return {}
    own = {split: not_above_chance(b.accuracy(), chance_of(items), n_facts(items))  # units are facts
           for split, (items, b) in based.items()}
    flags, extra["at_chance_bar"] = chance_flags({split: tally(b) for split, (_, b) in based.items()}, own)
    for split, (items, b) in based.items():
        extra[f"{split}_baseline"] = {"accuracy": b.accuracy(), "chance": chance_of(items), "n": len(items),
                                      "at_chance": flags[split]}
    return flags


def _split_metrics(split: str, items: Sequence[FormattedPrompt], s: PromptScores, b: PromptScores | None, *,
                   inject: bool, at_chance: bool, extra: dict[str, Any]) -> list[Metric]:
    """A split's accuracy and probability metrics (forget facts of inject tasks: also the edit's)."""
    metrics: list[Metric] = []
    hib = split != "forget"  # forgetting: lower true-answer accuracy is the goal
    pairs = [("accuracy", s.answer_wins.astype(float), b.answer_wins.astype(float) if b else None),
             ("prob", s.p_answer_norm, b.p_answer_norm if b else None)]
    for kind, vals, bvals in pairs:
        m = mean_metric(f"{split}_{kind}", fact_means(s, vals), baseline=fact_means(b, bvals) if b else None,
                        higher_is_better=hib, at_chance=at_chance)
        if m is not None:
            metrics.append(m)
    if split == "forget" and inject:
        has_t = np.array([it.target is not None for it in items])
        if has_t.any():
            for kind, vals, bvals in [("accuracy", np.where(has_t, s.target_wins, np.nan),
                                       np.where(has_t, b.target_wins, np.nan) if b else None),
                                      ("prob", s.p_target_norm, b.p_target_norm if b else None)]:
                m = mean_metric(f"edit_{kind}", fact_means(s, vals), baseline=fact_means(b, bvals) if b else None,
                                at_chance=at_chance)
                if m is not None:
                    metrics.append(m)
        else:
            extra["edit_note"] = "no forget fact has an edit target: no edit metrics"
    return metrics


def run_standard(model, task, *, original=None, config: EvalConfig | None = None,
                 baselines: BaselineCache | None = None) -> SuiteResult:
    """Forget / edit / maintain accuracy and probability in the trained ("default") format.

    Args:
        model: The evaluated model.
        task: The task (``forget`` and ``maintain`` facts are scored).
        original: The unedited model (baselines and at-chance flags); ``None`` to skip.
        config: Evaluation settings (``batch_size``, ``seed``; ``None``: ``EvalConfig()``).

    Returns:
        Metrics ``forget_accuracy``, ``forget_prob`` (lower is better), ``edit_accuracy``,
        ``edit_prob`` (inject tasks with targets), ``maintain_accuracy``, ``maintain_prob``;
        one per-fact row per forget and maintain fact (``split`` says which). With ``original``,
        ``extra["<split>_baseline"]`` holds its accuracy, chance level and at-chance flag per split,
        and ``extra["at_chance_bar"]`` which check flagged a split (:func:`chance_flags`: its own
        chance, or the answer-bias bar of the model's answers on the other split).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_standard(p.model, p.task, original=p.model)
        >>> r["maintain_accuracy"].value, r["maintain_accuracy"].baseline, len(r.per_fact) == len(p.task.forget) + len(p.task.maintain)
        (1.0, 1.0, True)
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default

    config = or_default(config)
    t0 = time.perf_counter()
    metrics: list[Metric] = []
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"format": "default", **original_note(original)}
    scored: dict[str, tuple] = {}
    for split, ds in (("forget", task.forget), ("maintain", task.maintain)):
        items = format_prompts(ds, "default", seed=config.seed)
        if not items:
            extra[f"{split}_note"] = f"task.{split} is empty: no {split} metrics"
            continue
        s, b = score_both(model, original, items, config, baselines)
        rows += _rows(split, items, {r.id: r.subject for r in ds}, s, b)
        scored[split] = (items, s, b)
    flags = _baseline_flags(scored, extra)
    for split, (items, s, b) in scored.items():
        metrics += _split_metrics(split, items, s, b, inject=task.objective == "inject",
                                  at_chance=flags.get(split, False), extra=extra)
    return SuiteResult("standard", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)
