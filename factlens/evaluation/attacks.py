"""Shared pieces of the attack suites (quantization, unrelated fine-tuning, direction ablation).

An attack changes a model (rounds its weights, fine-tunes it, projects a direction out of
its residual stream) and asks whether the edited facts come back. Every attack suite here
does the same bookkeeping, collected in this module:

* :func:`score_task`: per-fact outcomes of one model on the task's facts in one prompt
  format (true answer wins / edit target wins among the candidates), with the
  ``standard`` suite's scoring helpers.
* :func:`attack_metrics`: ``<prefix>_forget_accuracy``, ``<prefix>_forget_recovery`` (forget
  accuracy after the attack minus before, per fact), ``<prefix>_edit_accuracy`` and
  ``<prefix>_maintain_accuracy``, each with the same number on the **unedited** model
  attacked the same way as ``baseline``.
* :func:`attack_damage`: whether the attack damages the unedited model itself (its
  accuracy on the task's facts falls by more than a tolerance). A recovery number of an
  attack that damages the original is flagged: its forget accuracy may move because the
  attack breaks the model, not because it undoes the edit.
* :func:`suite_settings`: a suite's own frozen settings (``QuantizationConfig``...): the
  value passed to the suite, else the nested ``EvalConfig.<suite>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TypeVar

import numpy as np

from factlens.data.formats import format_prompts
from factlens.evaluation.result import Metric

if TYPE_CHECKING:  # factlens.evaluation.config imports the attack suites (it nests their settings)
    from factlens.evaluation.config import EvalConfig
    from factlens.prompt_scores import PromptScores

__all__ = ["TaskScores", "score_task", "task_scores", "scores_before", "before_columns", "task_key", "attack_metrics", "attack_damage", "fact_rows", "outcome_columns",
           "suite_settings", "DAMAGE_TOLERANCE", "metric_prefix"]

#: Default tolerance of :func:`attack_damage`: the unedited model may lose at most this
#: fraction of its accuracy on the task's facts before the attack counts as damaging it.
DAMAGE_TOLERANCE = 0.1

C = TypeVar("C")


def suite_settings(config: EvalConfig, name: str, cls: type[C], given: C | None = None) -> C:
    """The settings of suite ``name``: ``given``, else ``config.<name>`` if that field exists, else
    the table ``config.other_suites[name]`` built into ``cls``, else ``cls()``.

    Raises:
        TypeError: ``given`` (or the nested field) is not a ``cls`` (a dict is accepted for the
            nested field and passed to ``cls``).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.evaluation.quantization import QuantizationConfig
        >>> cfg = EvalConfig(quantization=QuantizationConfig(schemes=("nf4",)))
        >>> suite_settings(cfg, "quantization", QuantizationConfig).schemes
        ('nf4',)
        >>> suite_settings(cfg, "quantization", QuantizationConfig, QuantizationConfig(schemes=("int8",))).schemes
        ('int8',)
    """
    if given is not None:
        value = given
    elif hasattr(config, "other_suites") and name not in type(config).nested_types():
        value = config.other_suites.get(name)  # a suite without a field of its own (EvalConfig.suite_config)
    else:
        value = getattr(config, name, None)
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping) and given is None:
        return cls.from_dict(value) if hasattr(cls, "from_dict") else cls(**value)
    raise TypeError(f"the {name!r} suite's settings must be a {cls.__name__}, got {type(value).__name__}")


@dataclass(frozen=True)
class TaskScores:
    """Per-fact outcomes of one model on a task's facts in one prompt format.

    Every dict maps ``record_id`` to the mean over that fact's prompts (one prompt per fact
    in the default format).

    Attributes:
        forget: True answer wins among the candidates, forget facts.
        edit: Edit target wins, forget facts with a target (inject tasks; empty otherwise).
        maintain: True answer wins, maintain facts.
        chance: Split -> chance level of the format (uniform guessing among the candidates).
        n_prompts: Split -> number of prompts.
        maintain_said: Maintain fact -> the candidate the model gives (one prompt per fact;
            empty otherwise): what :mod:`~factlens.evaluation.selectivity` needs for the bias
            of an attack.
        answer_shares: Split -> true answer -> share of the split's prompts with that answer.
        said_shares: Split -> candidate -> share of the split's prompts on which the model
            predicts it. These two give the answer-bias bar of :meth:`chance_flags`; a split
            without them is judged by its own chance level alone.
    """

    forget: dict[str, float]
    edit: dict[str, float]
    maintain: dict[str, float]
    chance: dict[str, float] = field(default_factory=dict)
    n_prompts: dict[str, int] = field(default_factory=dict)
    maintain_said: dict[str, str] = field(default_factory=dict)
    answer_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    said_shares: dict[str, dict[str, float]] = field(default_factory=dict)

    def accuracy(self, split: str) -> float:
        """Mean of a split's per-fact values (NaN when it has none)."""
        v = [x for x in getattr(self, split).values() if not math.isnan(x)]
        return float(np.mean(v)) if v else float("nan")

    def chance_flags(self) -> tuple[dict[str, bool], dict[str, Any]]:
        """At-chance flags of the forget and maintain splits (these scores being the unedited
        model's), and which check decided (:func:`~factlens.evaluation.standard.chance_flags`: each
        split's accuracy against its chance, and against the answer-bias bar of the other split)."""
        from factlens.evaluation.standard import SplitTally, chance_flags, not_above_chance

        splits = [s for s in ("forget", "maintain") if s in self.chance]
        # the tests count facts (a fact's prompts are not independent: SplitTally.units); they counted prompts
        tallies = {s: SplitTally(self.accuracy(s), self.n_prompts.get(s, 0), self.chance[s],
                                 self.answer_shares.get(s, {}), self.said_shares.get(s),
                                 frozenset(getattr(self, s))) for s in splits}
        return chance_flags(tallies, {s: not_above_chance(t.accuracy, t.chance, t.units) for s, t in tallies.items()})

    def known(self) -> dict[str, float]:
        """True answer wins on forget and maintain facts together (what :func:`attack_damage` compares)."""
        return {**{f"forget:{k}": v for k, v in self.forget.items()},
                **{f"maintain:{k}": v for k, v in self.maintain.items()}}


def _task_items(task, config: EvalConfig, fmt: str) -> dict[str, list]:
    """The formatted prompts of ``task.forget`` and ``task.maintain`` that :func:`score_task` scores."""
    return {split: format_prompts(ds, fmt, seed=config.seed, n_shots=config.n_shots, mcq_shots=config.mcq_shots)
            for split, ds in (("forget", task.forget), ("maintain", task.maintain))}


def score_task(model, task, config: EvalConfig, *, fmt: str = "default") -> TaskScores:
    """Score ``task.forget`` and ``task.maintain`` in format ``fmt`` (the standard suite's helpers).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> s = score_task(p.model, p.task, EvalConfig())
        >>> s.accuracy("forget"), s.accuracy("edit"), s.accuracy("maintain")
        (1.0, 0.0, 1.0)
    """
    from factlens.evaluation.standard import score_items

    items = _task_items(task, config, fmt)
    return task_scores({split: score_items(model, its, config) for split, its in items.items() if its},
                       objective=task.objective, n_prompts={split: len(its) for split, its in items.items()})


def task_scores(scores: Mapping[str, PromptScores], *, objective: str,
                n_prompts: Mapping[str, int] | None = None) -> TaskScores:
    """:class:`TaskScores` from the prompt scores of the ``"forget"`` and ``"maintain"`` splits
    (either may be missing): what :func:`score_task` builds from its own prompts, for attacks
    that score other prompts of the same facts (the in-context attack's, with solved facts
    before each). ``objective`` is the task's (``"inject"`` scores the edit targets);
    ``n_prompts`` defaults to the number of scored prompts per split.
    """
    from factlens.evaluation.standard import chance_of, fact_means, shares

    out: dict[str, dict[str, float]] = {"forget": {}, "edit": {}, "maintain": {}}
    chance: dict[str, float] = {}
    n: dict[str, int] = dict(n_prompts) if n_prompts is not None else {k: len(v.items) for k, v in scores.items()}
    said: dict[str, str] = {}
    answer_shares: dict[str, dict[str, float]] = {}
    said_shares: dict[str, dict[str, float]] = {}
    for split in ("forget", "maintain"):
        s = scores.get(split)
        if s is None or not len(s.items):
            continue
        items = s.items
        chance[split] = chance_of(items)
        out[split] = fact_means(s, s.answer_wins.astype(float))
        answer_shares[split], said_shares[split] = shares([it.answer for it in items]), shares(s.predicted())
        has_t = np.array([it.target is not None for it in items])
        if split == "forget" and objective == "inject" and has_t.any():
            out["edit"] = fact_means(s, np.where(has_t, s.target_wins.astype(float), np.nan))
        if split == "maintain" and len({it.record_id for it in items}) == len(items):
            said = {it.record_id: c for it, c in zip(items, s.predicted())}
    return TaskScores(out["forget"], out["edit"], out["maintain"], chance, n, said, answer_shares, said_shares)


def scores_before(model, task, config: EvalConfig, *, original=None, baselines=None
                  ) -> tuple[TaskScores, TaskScores | None]:
    """:func:`score_task` of ``model`` and of ``original`` before an attack (the original's from
    ``baselines`` under the key every attack suite shares, so it is computed once per unit;
    ``None`` without an original; the same scores when ``original is model``)."""
    from factlens.evaluation.baseline_cache import cached

    before = score_task(model, task, config)
    if original is None:
        return before, None
    if original is model:
        return before, before
    return before, cached(baselines, ("task_scores", task_key(task, config)), lambda: score_task(original, task, config))


def task_key(task, config: EvalConfig, fmt: str = "default") -> tuple:
    """A hashable key of what :func:`score_task` depends on (for :class:`~factlens.evaluation.BaselineCache`).

    That is the prompts it formats, each with its answer, target, candidate answers and fact id
    (the candidates come from the fact or else from its data set, so two tasks with the same
    facts and other data-set candidates get other keys; so do other paraphrases or questions in
    another format), the task's objective, the batch size and how candidates are compared.

    Example:
        >>> from dataclasses import replace
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> t = planted_fact_model().task
        >>> fewer = replace(t, forget=t.forget.with_candidates(t.forget.candidates[:2]))
        >>> task_key(t, EvalConfig()) == task_key(fewer, EvalConfig())
        False
    """
    items = _task_items(task, config, fmt)
    return (fmt, task.objective, *(tuple((it.prompt, it.answer, it.target, tuple(it.candidates), it.record_id)
                                         for it in items[split]) for split in ("forget", "maintain")),
            config.seed, config.n_shots, config.batch_size, config.candidate_score)


def metric_prefix(prefix: str, fmt: str = "default") -> str:
    """``"quant_nf4"`` for the default format, ``"quant_nf4_mcq"`` for another format."""
    return prefix if fmt == "default" else f"{prefix}_{fmt}"


def _mean(d: Mapping[str, float] | None) -> float | None:
    if d is None:
        return None
    v = [x for x in d.values() if not math.isnan(x)]
    return float(np.mean(v)) if v else None


def _diff(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {k: a[k] - b[k] for k in a if k in b}


def _at_chance(base: TaskScores | None, split: str) -> bool:
    """The unedited model's at-chance flag of ``split`` (:meth:`TaskScores.chance_flags`; ``False`` without it)."""
    if base is None or split not in base.chance:
        return False
    return base.chance_flags()[0][split]


def attack_metrics(prefix: str, attacked: TaskScores, before: TaskScores, *, base_attacked: TaskScores | None = None,
                   base_before: TaskScores | None = None) -> list[Metric]:
    """The metrics of one attack variant (see the module docstring).

    Args:
        prefix: Metric name prefix (``"quant_nf4"``...).
        attacked: The evaluated model after the attack.
        before: The evaluated model before the attack.
        base_attacked: The unedited model after the same attack (``baseline`` of every metric).
        base_before: The unedited model before the attack (for the baseline of the recovery
            and the at-chance flags).

    Returns:
        ``<prefix>_forget_accuracy`` (lower is better), ``<prefix>_forget_recovery`` (after
        minus before per fact; lower is better), ``<prefix>_edit_accuracy`` (inject tasks)
        and ``<prefix>_maintain_accuracy``; a split without facts gives no metric.
    """
    out: list[Metric] = []
    ch_f, ch_m = _at_chance(base_before, "forget"), _at_chance(base_before, "maintain")
    base_rec = (_mean(_diff(base_attacked.forget, base_before.forget))
                if base_attacked is not None and base_before is not None else None)
    specs = [("forget_accuracy", attacked.forget, base_attacked.forget if base_attacked else None, False, ch_f),
             ("forget_recovery", _diff(attacked.forget, before.forget), None, False, ch_f),
             ("edit_accuracy", attacked.edit, base_attacked.edit if base_attacked else None, True, ch_f),
             ("maintain_accuracy", attacked.maintain, base_attacked.maintain if base_attacked else None, True, ch_m)]
    for name, samples, base, hib, ch in specs:
        if not samples or all(math.isnan(x) for x in samples.values()):
            continue
        b = base_rec if name == "forget_recovery" else _mean(base)
        out.append(Metric.from_samples(f"{prefix}_{name}", samples, baseline=b, higher_is_better=hib, at_chance=ch,
                                       proportion=name != "forget_recovery"))  # after - before: -1 ... 1
    return out


def attack_damage(before: TaskScores | None, after: TaskScores | None, *,
                  tolerance: float = DAMAGE_TOLERANCE) -> dict[str, Any]:
    """Does the attack damage the unedited model? Compare its accuracy before and after.

    The unedited model's true-answer accuracy on the forget and maintain facts together is
    compared before and after the attack; ``damaged`` is True when it falls by more than
    ``tolerance`` (absolute). A recovery measured under such an attack is not evidence that
    the edit was undone. ``p_value`` is the exact one-sided McNemar (sign) test on the facts
    that flipped, for information: with 8-16 facts it rarely reaches significance.

    Returns:
        ``damaged`` (``None`` without an original), ``accuracy_before``, ``accuracy_after``,
        ``drop``, ``n_facts``, ``n_lost`` (right before, wrong after), ``n_gained``,
        ``p_value``, ``tolerance``, ``forget_drop``, ``maintain_drop``.

    Example:
        >>> b = TaskScores({"a": 1.0, "b": 1.0}, {}, {"c": 1.0, "d": 1.0})
        >>> a = TaskScores({"a": 0.0, "b": 1.0}, {}, {"c": 1.0, "d": 1.0})
        >>> attack_damage(b, a)["damaged"], attack_damage(b, b)["damaged"]
        (True, False)
    """
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be in [0, 1], got {tolerance}")
    if before is None or after is None:
        return {"damaged": None, "tolerance": tolerance,
                "note": "original=None: the attack was not run on the unedited model, damage unknown"}
    b, a = before.known(), after.known()
    keys = [k for k in b if k in a and not math.isnan(b[k]) and not math.isnan(a[k])]
    if not keys:
        return {"damaged": None, "tolerance": tolerance, "note": "no fact scored before and after the attack"}
    vb, va = np.array([b[k] for k in keys]), np.array([a[k] for k in keys])
    lost, gained = int(np.sum((vb > 0.5) & (va < 0.5))), int(np.sum((vb < 0.5) & (va > 0.5)))
    from scipy.stats import binomtest

    p = float(binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue) if lost + gained else 1.0
    drop = float(vb.mean() - va.mean())

    def split_drop(split: str) -> float | None:
        x, y = _mean(getattr(before, split)), _mean(getattr(after, split))
        return None if x is None or y is None else x - y

    return {"damaged": bool(drop > tolerance), "accuracy_before": float(vb.mean()), "accuracy_after": float(va.mean()),
            "drop": drop, "n_facts": len(keys), "n_lost": lost, "n_gained": gained, "p_value": p,
            "tolerance": tolerance, "forget_drop": split_drop("forget"), "maintain_drop": split_drop("maintain")}


def outcome_columns(prefix: str, scores: TaskScores, base: TaskScores | None = None) -> dict[str, dict[str, float]]:
    """The :func:`fact_rows` columns of one model state: ``<prefix>_answer_wins`` (forget and
    maintain facts), ``<prefix>_target_wins`` (when the task has edit targets) and, when ``base``
    (the original attacked the same way) is given, ``baseline_<prefix>_answer_wins``."""
    columns = {f"{prefix}_answer_wins": {**scores.forget, **scores.maintain}}
    if scores.edit:
        columns[f"{prefix}_target_wins"] = scores.edit
    if base is not None:
        columns[f"baseline_{prefix}_answer_wins"] = {**base.forget, **base.maintain}
    return columns


def before_columns(before: TaskScores) -> dict[str, dict[str, float]]:
    """The :func:`fact_rows` columns of the evaluated model before the attack: ``answer_wins_before``
    (forget and maintain facts) and, when the task has edit targets, ``target_wins_before``."""
    columns = {"answer_wins_before": {**before.forget, **before.maintain}}
    if before.edit:
        columns["target_wins_before"] = before.edit
    return columns


def fact_rows(task, columns: Mapping[str, Mapping[str, float]], *, splits: Sequence[str] = ("forget", "maintain")
              ) -> list[dict[str, Any]]:
    """One row per fact of ``splits`` (``record_id``, ``split``, ``subject``) with the given columns.

    ``columns`` maps a column name to ``{record_id: value}`` (forget and maintain facts come
    from one data set, so their ids are distinct); a fact without a value gets ``None``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> t = planted_fact_model().task
        >>> rows = fact_rows(t, {"x": {t.forget[0].id: 1.0}})
        >>> len(rows) == len(t.forget) + len(t.maintain), rows[0]["x"], rows[-1]["x"]
        (True, 1.0, None)
    """
    from factlens.evaluation.standard import json_value

    rows = []
    for split in splits:
        for r in getattr(task, split):
            row: dict[str, Any] = {"record_id": r.id, "split": split, "subject": r.subject}
            for col, vals in columns.items():
                v = vals.get(r.id)
                row[col] = json_value(v) if v is not None else None
            rows.append(row)
    return rows
