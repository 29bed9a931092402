"""The formats suite: is the edit robust when the fact is asked differently?

Paper sections 3 and A.7: after editing in the trained prompt format, the same facts are
asked as multiple choice (``mcq``), in CounterFact paraphrases (``paraphrase``), in other
sports phrasings (``zero_shot``, ``professional``, ``sport_played``); CounterFact
neighborhood prompts (other subjects) check that the edit did not leak (``neighborhood``).

Per format the suite reports, on the forget facts, the *forget error* (the true answer no
longer wins among the candidates) and the *edit accuracy* (the edit target wins; inject
tasks), and on the maintain facts the *maintain accuracy*; for ``neighborhood`` the *edit
error* (the edit target beats the neighbor's own answer). Every metric carries the unedited
model's value as ``baseline``, and formats in which the unedited model is not clearly above
chance (accuracy < chance + 2 binomial SE, pooled over forget and maintain facts), or not
clearly above what its answer bias alone scores (the pooled answer-bias bar), are flagged
``at_chance`` and listed in ``extra["at_chance_formats"]``, with the check that decided in
``extra["at_chance_bar"]``: there an "edited" answer is noise, not robustness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from factlens.config import ConfigBase, check_numbers
from factlens.data.formats import available_formats, format_prompts, mcq_shots_used
from factlens.evaluation.result import Metric, SuiteResult
from factlens.evaluation.baseline_cache import BaselineCache, bound
from factlens.evaluation.standard import (chance_of, fact_means, json_value, mean_metric, n_facts, not_above_chance,
                                        original_note, score_both)

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests FormatsConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["run_formats", "FormatsConfig"]


@dataclass(frozen=True)
class FormatsConfig(ConfigBase):
    """Settings of the ``formats`` suite (``EvalConfig.formats``).

    Attributes:
        formats: Prompt formats to ask the facts in, at least one (``None``: every format the task's facts
            have, except ``"default"`` which the ``standard`` suite covers).

    Example:
        >>> FormatsConfig(formats=["mcq"]).formats
        ('mcq',)
    """

    formats: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        v = self.formats
        if v is not None:
            object.__setattr__(self, "formats", (v,) if isinstance(v, str) else tuple(v))
            if not self.formats:  # the suite would run and report nothing
                raise ValueError("FormatsConfig.formats must name at least one format, or be None for every "
                                 "format the task's facts have (except 'default'), got an empty list")
            from factlens.data.formats import FORMATS

            bad = [f for f in self.formats if f not in FORMATS]
            if bad:
                raise ValueError(f"FormatsConfig.formats has unknown formats {bad}; known formats: {sorted(FORMATS)}")


def _formats_to_run(task, config: EvalConfig) -> tuple[list[str], list[str]]:
    both = task.forget.concat(task.maintain) if len(task.maintain) else task.forget
    avail = [f for f in available_formats(both)
             if any(format_prompts(both, f, seed=config.seed, n_shots=config.n_shots, mcq_shots=config.mcq_shots))]
    wanted = config.formats.formats
    if wanted is None:
        return [f for f in avail if f != "default"], []
    return [f for f in wanted if f in avail], [f for f in wanted if f not in avail]


def _mcq_shots(splits, config: EvalConfig) -> dict[str, Any]:
    """The solved examples the multiple-choice prompts hold: ``asked`` (``config.n_shots``), their
    ``source`` and the fewest and most any prompt holds (fewer than asked where the pool is smaller)."""
    used = [mcq_shots_used(ds, r, n_shots=config.n_shots, shots_from=config.mcq_shots)
            for _, ds in splits for r in ds if r.mcq is not None]
    return {"asked": config.n_shots, "source": config.mcq_shots, "min_used": min(used, default=0),
            "max_used": max(used, default=0)}


def _fact_rows(fmt: str, split: str, items, s, b, subjects: dict[str, str]) -> list[dict[str, Any]]:
    acc = fact_means(s, s.answer_wins.astype(float))
    pa = fact_means(s, s.p_answer_norm)
    has_t = np.array([it.target is not None for it in items])
    tw = fact_means(s, np.where(has_t, s.target_wins, np.nan))
    bacc = fact_means(b, b.answer_wins.astype(float)) if b is not None else {}
    btw = fact_means(b, np.where(has_t, b.target_wins, np.nan)) if b is not None else {}
    first = {}
    for it in items:
        first.setdefault(it.record_id, it)
    n_prompts = {rid: len(ix) for rid, ix in s.by_record().items()}
    rows = []
    for rid, it in first.items():
        row = {"record_id": rid, "format": fmt, "split": split, "subject": subjects.get(rid), "answer": it.answer,
               "target": it.target, "n_prompts": n_prompts[rid], "accuracy": json_value(acc[rid]),
               "p_answer": json_value(pa[rid]), "target_win_rate": json_value(tw[rid])}
        if b is not None:
            row.update(baseline_accuracy=json_value(bacc[rid]), baseline_target_win_rate=json_value(btw[rid]))
        rows.append(row)
    return rows


def _score_format(model, original, fmt: str, splits, config: EvalConfig, baselines, rows: list[dict[str, Any]],
                  skipped: dict[str, int]) -> dict[str, tuple]:
    """Score the model (and the original) on each split's prompts in format ``fmt``: split ->
    ``(items, scores, baseline scores)``; the facts' rows are appended to ``rows`` and prompts left
    out because their answer is the edit target are counted in ``skipped``."""
    scored = {}
    for split, ds in splits:
        items = format_prompts(ds, fmt, seed=config.seed, n_shots=config.n_shots,
                               mcq_shots=config.mcq_shots)
        degenerate = [it for it in items if it.target is not None and it.target == it.answer]
        if degenerate:  # e.g. a neighbor whose own answer is the edit target: says nothing
            items = [it for it in items if not (it.target is not None and it.target == it.answer)]
            skipped[f"{fmt}:{split}"] = len(degenerate)
        if not items:
            continue
        s, b = score_both(model, original, items, config, baselines)
        scored[split] = (items, s, b)
        rows += _fact_rows(fmt, split, items, s, b, {r.id: r.subject for r in ds})
    return scored


def _format_baselines(fmt: str, scored: dict[str, tuple]) -> tuple[list[dict[str, Any]], bool, dict[str, Any]]:
    """The unedited model's accuracy in this format per split, whether the format is at chance, and
    which check decided it.

    One flag covers every metric of the format, so it is one test over the format's prompts,
    forget and maintain pooled: at chance when the pooled accuracy is not above, by 2 standard
    errors, the pooled chance, or the pooled **answer-bias bar** where that bar is above chance
    (the prompt-weighted mean of each split's :func:`~factlens.evaluation.standard.answer_bias_bar`
    against the other split: what a reader scores that knows no fact and answers like the
    model does on the other facts; a model that says basketball to every athlete "knew"
    Sports-Unlearning's forget facts, all basketball players, in every format, and its pooled
    accuracy equals its pooled bar). Until 2026-12-06 the bar was tested per split and any
    flagged split flagged the format: two tests at 2 standard errors, each on a part of the
    prompts, flag a format that the model knows more often than the one pooled test the flag
    stands for (measured case: docs/statistics.md). The per-split rows keep each split's own
    reading (``at_chance``: the split alone is not above its chance or its bar).

    Accuracies and bars are means over prompts, but every test's standard error counts facts
    (:func:`~factlens.evaluation.standard.n_facts`; the record's ``n``): a CounterFact fact's ~10
    neighborhood prompts or 2 paraphrases share one answer and are not independent trials. Where
    every fact has one prompt (sports formats, ``mcq``) the two counts are the same.
    """
    from factlens.evaluation.standard import chance_flags, tally

    # each split's floor is the pooled chance, as for the pooled flag (a split's own best letter was too high a bar)
    pooled_chance = chance_of([it for items, _, _ in scored.values() for it in items])
    biased, why = chance_flags({split: tally(b, chance=pooled_chance) for split, (_, _, b) in scored.items()},
                               dict.fromkeys(scored, False))
    out: list[dict[str, Any]] = []
    hits, n_all, pooled = 0.0, 0, []
    bar_hits, bar_n, bar_sum, bar_items = 0.0, 0, 0.0, []  # over the splits with a bar (a lone split has none)
    for split, (items, _, b) in scored.items():
        ch = chance_of(items)
        acc = b.accuracy()
        out.append({"format": fmt, "split": split, "n_prompts": len(items),
                    "n_facts": len(b.by_record()), "accuracy": acc, "chance": ch,
                    "mean_p_answer": float(np.mean(b.p_answer_norm)),
                    "at_chance": not_above_chance(acc, ch, n_facts(items)) or biased[split],
                    "answer_bias_bar": why[split]["bar"]})
        hits += acc * len(items)
        n_all += len(items)
        pooled += list(items)
        if why[split]["bar"] is not None:
            bar_hits += acc * len(items)
            bar_n += len(items)
            bar_sum += why[split]["bar"] * len(items)
            bar_items += list(items)
    # one chance over all prompts: a model that always gives one letter gives it in every split (the mean of
    # each split's best constant letter was higher, and flagged formats the model answers above chance)
    chance = chance_of(pooled)
    # accuracies and bars weigh prompts; the tests' sample size counts facts (a fact's prompts are not independent)
    own = not_above_chance(hits / n_all, chance, n_facts(pooled))
    bar = bar_sum / bar_n if bar_n else None
    bias = bar is not None and bar > chance and not_above_chance(bar_hits / bar_n, bar, n_facts(bar_items))
    record = {"accuracy": json_value(hits / n_all), "n": n_facts(pooled), "chance": json_value(chance),
              "bar": json_value(bar), "decided_by": "chance" if own else "answer bias" if bias else None}
    return out, bool(own or bias), record


def _format_metrics(fmt: str, scored: dict[str, tuple], *, inject: bool, at_chance: bool) -> list[Metric]:
    """Forget error, edit accuracy (inject tasks) and maintain accuracy in format ``fmt``."""
    metrics: list[Metric] = []

    def add(name: str, s, b, vals, bvals, hib: bool = True) -> None:
        m = mean_metric(name, fact_means(s, vals), baseline=fact_means(b, bvals) if b is not None else None,
                        higher_is_better=hib, at_chance=at_chance)
        if m is not None:
            metrics.append(m)

    if "forget" in scored:
        items, s, b = scored["forget"]
        has_t = np.array([it.target is not None for it in items])
        if fmt == "neighborhood":
            if has_t.any():
                add("neighborhood_edit_error", s, b, np.where(has_t, s.target_wins, np.nan),
                    np.where(has_t, b.target_wins, np.nan) if b is not None else None, hib=False)
        else:
            add(f"{fmt}_forget_error", s, b, 1.0 - s.answer_wins, 1.0 - b.answer_wins if b is not None else None)
            if inject and has_t.any():
                add(f"{fmt}_edit_accuracy", s, b, np.where(has_t, s.target_wins, np.nan),
                    np.where(has_t, b.target_wins, np.nan) if b is not None else None)
    if "maintain" in scored:
        items, s, b = scored["maintain"]
        name = "neighborhood_maintain_accuracy" if fmt == "neighborhood" else f"{fmt}_maintain_accuracy"
        add(name, s, b, s.answer_wins.astype(float), b.answer_wins.astype(float) if b is not None else None)
    return metrics


def run_formats(model, task, *, original=None, config: EvalConfig | None = None,
                baselines: BaselineCache | None = None) -> SuiteResult:
    """Forget error, edit accuracy and maintain accuracy per prompt format, with baselines.

    Args:
        model: The evaluated model.
        task: The task.
        original: The unedited model: baselines and at-chance flags (``None``: none, with a
            note in ``extra["baseline_note"]``).
        config: ``formats`` (:class:`FormatsConfig`), ``seed``, ``n_shots``, ``batch_size``
            (``None``: ``EvalConfig()``).

    Returns:
        Metrics ``<fmt>_forget_error``, ``<fmt>_edit_accuracy`` (inject tasks),
        ``<fmt>_maintain_accuracy`` and ``neighborhood_edit_error``; per-fact rows per
        (fact, format, split); ``extra["format_baselines"]`` (the unedited model's accuracy per
        format on forget and maintain facts, with chance levels), ``extra["at_chance_formats"]``,
        ``extra["at_chance_bar"]`` (with an original: per format the pooled ``accuracy``, ``n`` (facts),
        ``chance``, answer-bias ``bar`` and ``decided_by``: ``"chance"``, ``"answer bias"`` or ``None``),
        ``extra["formats"]`` (evaluated), ``extra["unavailable_formats"]`` (requested but
        absent from the data) and, with ``mcq``, ``extra["mcq_shots"]`` (the solved examples
        asked for and the fewest / most a prompt holds).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_formats(p.model, p.task, original=p.model)
        >>> r["paraphrase_forget_error"].value, "mcq" in r.extra["formats"]
        (0.0, False)
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default

    config = or_default(config)
    t0 = time.perf_counter()
    fmts, missing = _formats_to_run(task, config)
    metrics: list[Metric] = []
    rows: list[dict[str, Any]] = []
    format_baselines: list[dict[str, Any]] = []
    at_chance_formats: list[str] = []
    at_chance_bar: dict[str, Any] = {}
    extra: dict[str, Any] = {"formats": fmts, "unavailable_formats": missing, **original_note(original)}
    inject = task.objective == "inject"
    splits = [("forget", task.forget)] + ([("maintain", task.maintain)] if len(task.maintain) else [])
    skipped: dict[str, int] = {}
    for fmt in fmts:
        scored = _score_format(model, original, fmt, splits, config, baselines, rows, skipped)
        if not scored:
            continue
        flag = False
        if original is not None:
            fmt_baselines, flag, at_chance_bar[fmt] = _format_baselines(fmt, scored)
            format_baselines += fmt_baselines
            if flag:
                at_chance_formats.append(fmt)
        metrics += _format_metrics(fmt, scored, inject=inject, at_chance=flag)
    if "mcq" in fmts:
        extra["mcq_shots"] = _mcq_shots(splits, config)
    if skipped:
        extra["skipped_prompts"] = {"reason": "answer == edit target (the prompt cannot tell edit from truth)",
                                    "counts": skipped}
    extra["format_baselines"] = format_baselines
    extra["at_chance_formats"] = at_chance_formats
    if original is not None:
        extra["at_chance_bar"] = at_chance_bar
    return SuiteResult("formats", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)
