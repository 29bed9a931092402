"""Which facts does the model know, and in which prompt formats?"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from factlens.data.formats import available_formats, format_prompts
from factlens.data.records import FactDataset, as_records
from factlens.prompt_scores import score_prompts

__all__ = ["FormatAccuracy", "format_accuracy", "filter_known", "chance_level", "prompt_chance"]

GROUP_BY = ("answer", None)  # what format_accuracy can group the default format's accuracy by


def chance_level(candidates_per_item: Sequence[Sequence[str]]) -> float:
    """Expected accuracy of guessing uniformly among each item's candidates."""
    if not candidates_per_item:
        return float("nan")
    return float(np.mean([1.0 / len(c) for c in candidates_per_item]))


def prompt_chance(items) -> float:
    """Chance level of formatted prompts: uniform guessing among the candidates, and for option
    letters (multiple choice) at least the accuracy of always giving the same letter.

    The options are shuffled per question, so the correct letters are not uniform: with seed 0,
    "A" is right for 115 of the 385 sports questions, and a model that always says "A" scores
    0.299 where uniform chance is 0.25, above chance + 2 SE (0.294). A letter preference is not
    knowledge, so the best constant letter, over the answers and the edit targets, is the bar.

    Example:
        >>> from factlens.data.formats import FormattedPrompt
        >>> items = [FormattedPrompt("q", a, None, ("A", "B", "C", "D"), str(i), "mcq") for i, a in enumerate("AABC")]
        >>> prompt_chance(items)
        0.5
    """
    from factlens.data.formats import LETTERS

    items = list(items)
    uniform = chance_level([it.candidates for it in items])
    if not items or not all(set(it.candidates) <= set(LETTERS) for it in items):
        return uniform
    best = 0.0
    for pick in ("answer", "target"):
        given = [getattr(it, pick) for it in items if getattr(it, pick) is not None]
        if given:
            best = max(best, max(given.count(x) for x in set(given)) / len(given))
    return max(uniform, best)


@dataclass(frozen=True)
class FormatAccuracy:
    """Accuracy of the (unedited) model per prompt format.

    Attributes:
        rows: One dict per format: ``format``, ``n`` (prompts), ``accuracy`` (argmax among
            candidates), ``mean_p_answer`` (full-vocabulary probability), ``chance`` (what giving
            one answer to every prompt scores at best: uniform guessing among candidates, or the
            largest share of one answer if higher, for multiple choice the best constant letter;
            the standard suite's bar, :func:`factlens.evaluation.standard.constant_bar`. Until
            2026-12-06 named answers had the uniform bar, and a model that says "football" to every
            athlete passed on data where 37 % play football), ``at_chance`` (accuracy not clearly
            above chance: below chance + 2 binomial standard errors, counted over the facts, not the
            prompts: a fact's prompts share its answer and are not independent trials).
        per_group: Optional accuracy per group (e.g. per sport) for the default format.
    """

    rows: tuple[dict, ...]
    per_group: dict[str, dict] = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows))

    def to_dict(self) -> dict:
        return {"formats": list(self.rows), "per_group": self.per_group}

    def __getitem__(self, fmt: str) -> dict:
        for r in self.rows:
            if r["format"] == fmt:
                return r
        raise KeyError(fmt)

    def to_markdown(self) -> str:
        lines = ["| format | n | accuracy | chance | mean p(answer) | at chance? |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['format']} | {r['n']} | {r['accuracy']:.3f} | {r['chance']:.3f} | "
                         f"{r['mean_p_answer']:.3f} | {'yes' if r['at_chance'] else 'no'} |")
        return "\n".join(lines)


def _as_dataset(dataset, what: str) -> FactDataset:
    """``dataset`` as a :class:`FactDataset`; an empty one is refused.

    A list of records is taken when every record has candidates of its own (a list failed with
    "'list' object has no attribute 'candidates_for'"). Otherwise the dataset's candidates decide
    how facts are scored (argmax among them, or for open-vocabulary facts p > 0.5), and a list
    has none: it would have been scored by the other criterion without a word, so it is refused.
    """
    if isinstance(dataset, FactDataset):
        ds = dataset
    else:
        records = as_records(dataset, what=what)
        bare = [r.id or r.subject for r in records if not r.candidates]
        if bare:
            raise TypeError(f"{what}: the facts {bare[:3]} have no candidates of their own, and a list has no "
                            "dataset candidates to score them by; pass a FactDataset: FactDataset(records, "
                            "candidates=(...)) for candidate answers, FactDataset(records) for open-vocabulary facts")
        ds = FactDataset(tuple(records))
    if not len(ds):
        raise ValueError(f"{what}: the dataset is empty; give the facts to score")
    return ds


def format_accuracy(model, dataset: FactDataset, *, formats: Sequence[str] | None = None, seed: int = 0,
                    batch_size: int = 16, group_by: str | None = "answer",
                    candidate_score: str = "sum") -> FormatAccuracy:
    """Accuracy of ``model`` on each prompt format of ``dataset``, with chance levels.

    Formats the model cannot do (accuracy not clearly above chance, the best a constant answer
    scores: :attr:`FormatAccuracy.rows`) are flagged ``at_chance`` so that nobody reads noise or an
    answer bias as robustness. The accuracy is over prompts; the
    standard error of the test counts facts (units are facts: 16 facts with 10 neighborhood
    prompts each are 16 trials, not 160), which with one prompt per fact is the same.
    ``group_by``: ``"answer"`` (accuracy per true answer in the default format) or ``None``.
    ``candidate_score``: how candidates are compared (:data:`factlens.prompt_scores.CANDIDATE_SCORES`).
    """
    from factlens.evaluation.standard import constant_bar, n_facts, not_above_chance  # it imports this module

    if group_by not in GROUP_BY:
        raise ValueError(f"format_accuracy: group_by={group_by!r} is not supported; use one of {list(GROUP_BY)} "
                         "(\"answer\": accuracy per true answer in the default format, None: no grouping)")
    dataset = _as_dataset(dataset, "format_accuracy")
    formats = list(formats) if formats is not None else available_formats(dataset)
    rows = []
    per_group: dict[str, dict] = {}
    for fmt in formats:
        items = format_prompts(dataset, fmt, seed=seed)
        if not items:
            continue
        s = score_prompts(model, items, batch_size=batch_size, candidate_score=candidate_score)
        acc = s.accuracy()
        ch = constant_bar(items)  # a constant answer is no knowledge; for option letters: prompt_chance
        rows.append({"format": fmt, "n": len(items), "accuracy": acc, "chance": ch,
                     "mean_p_answer": float(np.mean(s.p_answer)),
                     "at_chance": not_above_chance(acc, ch, n_facts(items))})  # units are facts
        if fmt == "default" and group_by == "answer":
            groups: dict[str, list[bool]] = {}
            for it, ok in zip(items, s.answer_wins):
                groups.setdefault(it.answer, []).append(bool(ok))
            per_group = {g: {"n": len(v), "known": int(sum(v)), "accuracy": float(np.mean(v))} for g, v in groups.items()}
    return FormatAccuracy(tuple(rows), per_group)


def _known_mask(dataset: FactDataset, s, p_threshold: float | None) -> np.ndarray:
    """Per fact (``s``: its one prompt's scores, in order): known when the answer is the top of the
    fact's own candidates (:meth:`FactDataset.candidates_for`; and p > ``p_threshold`` if given), or
    for a fact without candidates when p(answer) > ``p_threshold`` (default 0.5)."""
    has = np.array([bool(dataset.candidates_for(r)) for r in dataset], dtype=bool)
    thr = 0.5 if p_threshold is None else p_threshold
    top = s.answer_wins & (s.p_answer > p_threshold) if p_threshold is not None else s.answer_wins.copy()
    return np.where(has, top, s.p_answer > thr)


def _own_candidates(dataset: FactDataset, items: list) -> list:
    """``items`` (one prompt per fact of ``dataset``, in order) with each fact that has candidates
    judged among them and its answer only (:meth:`FactDataset.candidates_for`).

    The prompt formats add the edit target to the candidates, which the evaluation compares the
    answer with; the known filter asks whether the model knows the fact, and a row of the Sports Facts
    CSV whose edit target is golf was judged among four sports, golf included. Multiple-choice prompts
    keep their options (letters), and prompts whose candidates are already these stay as they are.
    """
    out = []
    for it, r in zip(items, dataset):
        own = list(dataset.candidates_for(r))
        if own and it.format != "mcq" and it.answer == r.answer:
            own += [] if it.answer in own else [it.answer]
            it = it if tuple(own) == it.candidates else replace(it, candidates=tuple(own))
        out.append(it)
    return out


def _criterion(has_candidates: bool, p_threshold: float | None, candidate_score: str = "sum") -> str:
    """The words ``meta["known"]["criterion"]`` gives the test of :func:`_known_mask`."""
    thr = f"p > {0.5 if p_threshold is None else p_threshold}"
    if not has_candidates:
        return thr
    per_token = " (per-token mean log-probability)" if candidate_score == "token_mean" else ""
    return f"argmax among candidates{per_token}" + (f" and {thr}" if p_threshold is not None else "")


def filter_known(model, dataset: FactDataset, *, p_threshold: float | None = None, fmt: str = "default",
                 batch_size: int = 16, candidate_score: str = "sum") -> FactDataset:
    """Keep the facts the model gets right.

    The criterion follows the paper, per fact: with a candidate answer set (sports; the
    dataset's candidates or the fact's own, :meth:`FactDataset.candidates_for`), the true answer
    must be the most likely candidate (an edit target that is none of them is left out: it
    competed until 2026-12-06); for open-vocabulary facts (CounterFact) the true
    answer's probability must exceed ``p_threshold`` (default 0.5; multi-token answers use
    the product of token probabilities). Pass ``p_threshold`` to also require it for
    candidate data. (Until 2026-12-06 only the dataset's candidates decided: a list of facts
    with candidates of their own was judged by p > 0.5.) ``candidate_score``: how the
    candidates are compared (:data:`factlens.prompt_scores.CANDIDATE_SCORES`; ``"token_mean"``,
    per token, as ROME's CounterFact scores), the rule the evaluation should use too.

    The returned dataset's ``meta["known"]`` records how many facts were kept, per group (the
    answer for facts with candidates, the relation otherwise), and the ``criterion``: one string,
    or where some facts have candidates and others not, a dict group -> criterion.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> len(filter_known(p.model, p.dataset)) == len(p.dataset)
        True
    """
    dataset = _as_dataset(dataset, "filter_known")
    items = format_prompts(dataset, fmt)
    # one prompt per fact, in the dataset's order: the scores are matched to the facts by position (a count
    # check alone let one fact's two paraphrases cover another fact that has none)
    if [it.record_id for it in items] != [r.id for r in dataset]:
        raise ValueError(f"format {fmt!r} does not give exactly one prompt per fact, in order")
    items = _own_candidates(dataset, items)
    keep = _known_mask(dataset, score_prompts(model, items, batch_size=batch_size, candidate_score=candidate_score),
                       p_threshold)
    kept = [r for r, k in zip(dataset, keep) if k]
    per: dict[str, dict] = {}
    crit: dict[str, str] = {}
    for r, k in zip(dataset, keep):
        has = bool(dataset.candidates_for(r))
        g = r.answer if has else r.relation
        d = per.setdefault(g, {"n": 0, "known": 0})
        d["n"] += 1
        d["known"] += int(k)
        crit[g] = _criterion(has, p_threshold, candidate_score)
    meta = dict(dataset.meta)
    one = set(crit.values())
    meta["known"] = {"n": len(dataset), "known": len(kept), "by_group": per, "format": fmt,
                     "criterion": one.pop() if len(one) == 1 else crit}
    return replace(dataset, records=tuple(kept), meta=meta)
