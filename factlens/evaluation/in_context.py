"""In-context relearning: solved facts written into the prompt instead of trained on.

Deeb & Roger ("Do unlearning methods remove information from language model weights?",
2024) give the attacker some of the removed facts and fine-tune on them to bring back the
others; the relearning suite does that. The attack needs no training at all when the solved
facts are simply written before the question: Shumailov et al. ("UnUnlearning", 2024) argue
that in-context learning can bring back what unlearning removed, and Lynch et al. ("Eight
methods to evaluate robust unlearning in LLMs", 2024) count in-context prompting among the
extraction attacks an evaluation should run. An edit that only suppresses the answer at one
prompt shape may give way once the prompt shows a few other facts of the same kind answered
truly; an edit that removed the fact has nothing to give back.

Each scored fact gets ``k`` **shots**: facts of a shot source written as its own prompt's
last line plus the shot's true answer, one per line, inserted before the scored prompt's last
line (the sports one-shot prompt "Fact: Tiger Woods plays the sport of golf\\nFact: X plays
the sport of" becomes its first line, ``k`` lines "Fact: S plays the sport of basketball", then
"Fact: X plays the sport of"; a one-line prompt, such as CounterFact's, gets ``k`` solved lines
before it). The shot sources (``InContextConfig.sources``):

* ``"forget"``: the other forget facts with their original answers (the attacker knows some
  of the removed facts, as in the relearning attack);
* ``"retain"``: retain facts (facts the attacker knows that the edit never touched, as in the
  unrelated fine-tuning attack's ``"retain"`` run; facts about a forget or maintain subject are
  left out): does *any* solved example of the task's kind undo the edit?

A fact's shots never include a fact about its own subject. Facts of the asked fact's own
relation come first (``InContextConfig.shot_relation``): a CounterFact question about a
company's developer is asked after other "developed by" facts before facts of other relations,
so the shots show the relation being asked (every sports fact has one relation). Shots that
answer with the asked fact's own answer can be left out (``shot_answers="other"``): five
"... is a native speaker of French" lines before a French speaker's question let a model copy
"French" rather than recall it, which the selectivity controls below cannot see on open-vocabulary
tasks (they need candidate sets). They are
drawn once per fact and source, in a seeded order that depends only on the seed and the facts
(so two models are scored on the same prompts, fact by fact), and the ``k`` shots of a smaller
``k`` are the first of a larger one's. Maintain facts are asked with shots the same way (does the context damage
what the model knows?).

A context full of one answer can make the model give that answer to everyone (Sports-
Unlearning: every forget fact's answer is basketball). The suite measures that as the
relearning suite does (:mod:`~factlens.evaluation.selectivity`): each forget fact's controls
(maintain facts with another answer among whose candidates its answer is) are asked with
*that fact's* shots, and its selective recovery is its win minus the rate at which its
controls are given its answer. The unedited model asked the same prompts is the baseline of
every metric, and :func:`~factlens.evaluation.attacks.attack_damage` flags a variant whose
context costs the unedited model more than the tolerance.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from factlens.config import ConfigBase, check_numbers
from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.evaluation.attacks import (DAMAGE_TOLERANCE, attack_damage, attack_metrics, fact_rows,
                                       outcome_columns, before_columns, scores_before, suite_settings, task_key, task_scores)
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached
from factlens.evaluation.result import Metric, SuiteResult

if TYPE_CHECKING:
    from factlens.evaluation.config import EvalConfig

__all__ = ["InContextConfig", "SHOT_SOURCES", "SHOT_RELATIONS", "SHOT_ANSWERS", "shot_order", "with_shots", "run_in_context"]

#: Where the solved facts before each prompt come from (see the module docstring).
SHOT_SOURCES: tuple[str, ...] = ("forget", "retain")
#: Which relations a fact's shots may have (:class:`InContextConfig`'s ``shot_relation``).
SHOT_RELATIONS: tuple[str, ...] = ("prefer_same", "same", "any")
#: Which answers a fact's shots may have (:class:`InContextConfig`'s ``shot_answers``).
SHOT_ANSWERS: tuple[str, ...] = ("any", "other")


@dataclass(frozen=True)
class InContextConfig(ConfigBase):
    """Settings of the ``in_context`` suite (``EvalConfig(other_suites={"in_context": ...})``,
    ``--eval other_suites.in_context.n_shots=[4,8]``).

    Attributes:
        n_shots: Solved facts before each scored prompt, one variant per value (the shots of a
            smaller value are the first of a larger one's). The ``"forget"`` source needs more
            forget facts than the largest value (a fact is never its own shot); the default
            fits tasks of at least 9 forget facts about distinct subjects.
        sources: Shot sources (:data:`SHOT_SOURCES`), one variant per source and ``n_shots`` value.
        shot_relation: Which facts may be shots, by relation (:data:`SHOT_RELATIONS`):
            ``"prefer_same"`` (default) puts facts of the asked fact's relation first and others
            after them; ``"same"`` shows only facts of its relation (a fact with fewer than
            ``max(n_shots)`` of them is refused before scoring); ``"any"`` ignores relations.
            The same for tasks whose facts share one relation (the sports tasks).
        shot_answers: ``"any"`` (default) or ``"other"`` (:data:`SHOT_ANSWERS`): no shot
            answers with the asked fact's own (original) answer, so that the answer can only
            come back from the model, not be copied from the prompt. Use it on open-vocabulary
            tasks (CounterFact), whose facts have too few selectivity controls; on a task of
            few answers it changes the attack (Sports-Unlearning: every forget fact answers
            basketball, so the forget source has no shot left).
        damage_tolerance: See :func:`~factlens.evaluation.attacks.attack_damage`.

    Example:
        >>> InContextConfig(n_shots=[8, 2]).n_shots
        (2, 8)
    """

    n_shots: tuple[int, ...] = (2, 8)
    sources: tuple[str, ...] = SHOT_SOURCES
    shot_relation: str = "prefer_same"
    shot_answers: str = "any"
    damage_tolerance: float = DAMAGE_TOLERANCE

    def __post_init__(self) -> None:
        check_numbers(self)
        shots = (self.n_shots,) if isinstance(self.n_shots, int) else tuple(self.n_shots)
        if not shots or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in shots) \
                or len(set(shots)) < len(shots):
            raise ValueError(f"InContextConfig.n_shots must be distinct integers >= 1 (solved facts before each "
                             f"prompt), got {self.n_shots!r}")
        object.__setattr__(self, "n_shots", tuple(sorted(shots)))
        src = (self.sources,) if isinstance(self.sources, str) else tuple(self.sources)
        if not src or any(s not in SHOT_SOURCES for s in src) or len(set(src)) < len(src):
            raise ValueError(f"InContextConfig.sources must be a non-empty subset of {list(SHOT_SOURCES)}, each named "
                             f"once (a repeat gives duplicate metric names), got {self.sources!r}")
        object.__setattr__(self, "sources", src)
        if self.shot_relation not in SHOT_RELATIONS:
            raise ValueError(f"InContextConfig.shot_relation must be one of {list(SHOT_RELATIONS)}, got "
                             f"{self.shot_relation!r}")
        if self.shot_answers not in SHOT_ANSWERS:
            raise ValueError(f"InContextConfig.shot_answers must be one of {list(SHOT_ANSWERS)}, got "
                             f"{self.shot_answers!r}")
        if not 0 <= self.damage_tolerance <= 1:
            raise ValueError(f"InContextConfig.damage_tolerance must be in [0, 1], got {self.damage_tolerance}")

    def forget_facts_needed(self) -> int:
        """The fewest forget facts a task needs for these settings (the ``"forget"`` source shows
        ``max(n_shots)`` other forget facts to each one): the runner refuses a smaller
        ``--forget-size`` before any job runs.

        Example:
            >>> InContextConfig().forget_facts_needed(), InContextConfig(sources=("retain",)).forget_facts_needed()
            (9, 1)
        """
        return max(self.n_shots) + 1 if "forget" in self.sources else 1

    def check_task(self, task, config: EvalConfig | None = None) -> None:
        """Refuse a task some fact of which cannot get ``max(n_shots)`` shots from a source (too
        few retain facts, of its relation with ``shot_relation="same"``, or of another answer
        with ``shot_answers="other"``): the runner calls it with each seed's task before any
        localization, where the suite failed after the first unit's edit.

        Raises:
            ValueError: As :func:`run_in_context` would, before scoring.
        """
        from factlens.evaluation.config import or_default

        _checked_shots(task, or_default(config), self)


def with_shots(item: FormattedPrompt, shots: Sequence[FormattedPrompt]) -> FormattedPrompt:
    """``item`` asked after ``shots``: each shot's last prompt line and its true answer, one per
    line, inserted before the last line of ``item``'s prompt (see the module docstring).

    Example:
        >>> q = FormattedPrompt("Fact: A plays the sport of golf\\nFact: B plays the sport of", "tennis", None,
        ...                     ("tennis", "golf"), "b", "default")
        >>> s = FormattedPrompt("Fact: A plays the sport of golf\\nFact: C plays the sport of", "golf", None,
        ...                     ("tennis", "golf"), "c", "default")
        >>> print(with_shots(q, [s]).prompt)
        Fact: A plays the sport of golf
        Fact: C plays the sport of golf
        Fact: B plays the sport of
    """
    head, newline, last = item.prompt.rpartition("\n")
    lines = "".join(f"{s.prompt.rpartition(chr(10))[2]} {s.answer}\n" for s in shots)
    return replace(item, prompt=f"{head}{newline}{lines}{last}", format="in_context", subject_span=None)


def shot_order(item: FormattedPrompt, pool: Sequence[FormattedPrompt], subject: Mapping[str, str], *,
               seed: int, source: str, relation: Mapping[str, str] | None = None,
               shot_relation: str = "prefer_same", shot_answers: str = "any") -> list[FormattedPrompt]:
    """The pool's facts that may be ``item``'s shots (not ``item`` itself, nor a fact about its
    subject; with ``shot_answers="other"`` nor one with ``item``'s answer, compared without case
    and surrounding spaces), in a seeded order that depends on the seed, the source and
    ``item``'s fact alone.

    With ``relation`` (record id -> relation), ``shot_relation`` (:data:`SHOT_RELATIONS`) moves
    the facts of ``item``'s relation to the front (``"prefer_same"``, keeping the seeded order
    within each part, so a task of one relation gets the order ``"any"`` gives) or keeps only
    them (``"same"``).

    Example:
        >>> mk = lambda rid: FormattedPrompt(f"{rid} is", "x", None, ("x",), rid, "default")
        >>> pool = [mk(r) for r in "abcde"]
        >>> subject = {"a": "S", "b": "S", "c": "T", "d": "U", "e": "V"}
        >>> order = shot_order(pool[0], pool, subject, seed=0, source="forget")
        >>> sorted(s.record_id for s in order)  # neither a itself nor b, about a's subject
        ['c', 'd', 'e']
        >>> rel = {"a": "P1", "b": "P1", "c": "P2", "d": "P1", "e": "P2"}
        >>> [s.record_id for s in shot_order(pool[0], pool, subject, seed=0, source="forget", relation=rel,
        ...                                  shot_relation="same")]
        ['d']
    """
    if shot_relation not in SHOT_RELATIONS:
        raise ValueError(f"shot_relation must be one of {list(SHOT_RELATIONS)}, got {shot_relation!r}")
    if shot_answers not in SHOT_ANSWERS:
        raise ValueError(f"shot_answers must be one of {list(SHOT_ANSWERS)}, got {shot_answers!r}")
    own = subject.get(item.record_id)
    eligible = sorted((s for s in pool if s.record_id != item.record_id and subject.get(s.record_id) != own),
                      key=lambda s: s.record_id)
    rng = np.random.default_rng(zlib.crc32(f"{seed}:{source}:{item.record_id}".encode()))
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    if shot_answers == "other":  # after the draw: the order of "any" without the copies
        order = [s for s in order if not _same_answer(s.answer, item.answer)]
    if relation is None or shot_relation == "any":
        return order
    mine = relation.get(item.record_id)
    same = [s for s in order if relation.get(s.record_id) == mine]
    return same if shot_relation == "same" else same + [s for s in order if relation.get(s.record_id) != mine]


def _same_answer(a: str, b: str) -> bool:
    """The same answer, up to case and surrounding spaces."""
    return a.strip().casefold() == b.strip().casefold()


def _items(task, config: EvalConfig) -> dict[str, list[FormattedPrompt]]:
    """The scored forget and maintain facts in the default format."""
    return {split: format_prompts(getattr(task, split), "default", seed=config.seed) for split in ("forget", "maintain")}


def _checked_shots(task, config: EvalConfig, st: InContextConfig):
    """The scored facts (:func:`_items`), each source's shot facts (:func:`_pools`) and, per
    source, each scored fact's shot order; ``ValueError`` for a task without forget facts or a
    fact with too few shots (:func:`_check_sizes`)."""
    if not len(task.forget):
        raise ValueError("the in-context attack asks the task's forget facts, and it has none")
    items = _items(task, config)
    records = [r for ds in (task.forget, task.maintain, task.retain) for r in ds]
    subject, relation = {r.id: r.subject for r in records}, {r.id: r.relation for r in records}
    pools = _pools(task, config, st.sources)
    orders = {src: {it.record_id: shot_order(it, pool, subject, seed=config.seed, source=src, relation=relation,
                                             shot_relation=st.shot_relation, shot_answers=st.shot_answers)
                    for it in (*items["forget"], *items["maintain"])} for src, pool in pools.items()}
    _check_sizes(orders, st)
    return items, pools, orders


def _pools(task, config: EvalConfig, sources: Sequence[str]) -> dict[str, list[FormattedPrompt]]:
    """Each source's shot facts in the default format (one prompt per fact)."""
    from factlens.evaluation.relearning import retain_not_about_scored

    out = {}
    for source in sources:
        ds = task.forget if source == "forget" else retain_not_about_scored(task)
        out[source] = format_prompts(ds, "default", seed=config.seed)
    return out


def _check_sizes(orders: Mapping[str, Mapping[str, list]], st: InContextConfig) -> None:
    """Refuse settings for which some fact cannot get ``max(st.n_shots)`` shots, before anything is scored."""
    n_shots = max(st.n_shots)
    for source, by_fact in orders.items():
        short = {rid: len(o) for rid, o in by_fact.items() if len(o) < n_shots}
        if short:
            rid, n = min(short.items(), key=lambda kv: kv[1])
            # with none to show, no smaller n_shots works: only dropping the source does
            fix = (f"lower other_suites.in_context.n_shots (e.g. n_shots=[{n}]) or drop the {source!r} source" if n
                   else f"drop the {source!r} source (other_suites.in_context.sources)")
            also = ""
            if st.shot_relation == "same":
                fix += ", or let facts of other relations follow (shot_relation='prefer_same')"
                also += ", nor with one of another relation"
            if st.shot_answers == "other":
                fix += ", or allow shots with the fact's own answer (shot_answers='any')"
                also += ", nor with one of its own answer"
            raise ValueError(f"in_context: {len(short)} fact(s) have fewer than {n_shots} {source} facts to show as "
                             f"shots (fact {rid!r} has {n}; a fact is never shown with itself or a fact about its own "
                             f"subject{also}); {fix}")


@dataclass(frozen=True)
class _Variant:
    """The prompts of one (source, k) variant: forget and maintain facts with their shots, and
    each forget fact's controls asked with that fact's shots."""

    forget: list[FormattedPrompt]
    maintain: list[FormattedPrompt]
    controls: list[FormattedPrompt]
    control_of: list[str]  # the forget fact whose shots each control prompt carries


def _variant(orders, items, dealt: Mapping[str, tuple[str, ...]], maintain_by_id, k: int) -> _Variant:
    forget = [with_shots(it, orders[it.record_id][:k]) for it in items["forget"]]
    maintain = [with_shots(it, orders[it.record_id][:k]) for it in items["maintain"]]
    controls, control_of = [], []
    for it in items["forget"]:
        for u in dealt.get(it.record_id, ()):
            controls.append(with_shots(maintain_by_id[u], orders[it.record_id][:k]))
            control_of.append(it.record_id)
    return _Variant(forget, maintain, controls, control_of)


def _answer_shown(order: Mapping[str, list[FormattedPrompt]], items, k: int) -> dict[str, float]:
    """Per forget and maintain fact, 1.0 when one of its first ``k`` shots answers with its own
    answer (a model could copy it from the prompt), else 0.0."""
    return {it.record_id: float(any(_same_answer(s.answer, it.answer) for s in order[it.record_id][:k]))
            for it in (*items["forget"], *items["maintain"])}


def _recovered_by_shown(attacked, before, shown: Mapping[str, float]) -> dict[str, int]:
    """Of the ``removed`` forget facts (lost without shots), those won with the shots, split by
    whether a shot showed their answer: recovery that the prompt could explain by copying, and
    recovery it cannot. Unlike the per-fact ``forget_recovery`` (with minus without shots, over
    every forget fact), facts the edit never removed do not enter, so the shots' damage to them
    does not cancel recovery; the counts are per model, not paired across localizations."""
    removed = [rid for rid in attacked.forget if not before.forget.get(rid)]
    back = [rid for rid in removed if attacked.forget[rid]]
    n_shown = sum(1 for rid in back if shown.get(rid))
    return {"removed": len(removed), "answer_shown": n_shown, "answer_not_shown": len(back) - n_shown,
            "forget_facts_answer_shown": int(sum(shown.get(rid, 0.0) for rid in attacked.forget))}


def _score(model, v: _Variant, objective: str, config: EvalConfig, maintain_items):
    """The variant's :class:`TaskScores` and its selectivity (``None`` without controls)."""
    from factlens.evaluation.selectivity import selectivity_of
    from factlens.evaluation.standard import score_items

    s = {"forget": score_items(model, v.forget, config), "maintain": score_items(model, v.maintain, config)}
    scores = task_scores(s, objective=objective)
    if not v.controls:
        return scores, None
    said: dict[str, dict[str, str | None]] = {}
    for rid, u, c in zip(v.control_of, v.controls, score_items(model, v.controls, config).predicted()):
        said.setdefault(rid, {})[u.record_id] = c
    attack_of = [it.record_id for it in v.forget]
    wins = [scores.forget[rid] for rid in attack_of]
    return scores, selectivity_of(v.forget, wins, attack_of, {rid: said.get(rid, {}) for rid in attack_of},
                                  maintain_items, seed=config.seed)


def run_in_context(model, task, *, original=None, config: EvalConfig | None = None,
                   baselines: BaselineCache | None = None, in_context_config: InContextConfig | None = None
                   ) -> SuiteResult:
    """Ask every forget and maintain fact after ``k`` solved facts; do the edited facts come back?

    Args:
        model: The evaluated (edited) model; not changed (no weights change: only prompts do).
        task: The task (forget facts, with edit targets for inject tasks; maintain facts; retain
            facts for the ``"retain"`` source).
        original: The unedited model, asked the same prompts (every metric's baseline, the
            damage flags and the at-chance flags).
        config: Evaluation settings (``seed``: shot order and control dealing; ``batch_size``).
        baselines: Cache of computations on ``original``.
        in_context_config: The suite's settings (default: ``config.suite_config("in_context")``).

    Returns:
        Per source ``s`` and shot count ``k`` (prefix ``in_context_<s>_<k>``):
        ``..._forget_accuracy`` (lower is better), ``..._forget_recovery`` (after minus before,
        per fact), ``..._edit_accuracy`` (inject tasks), ``..._maintain_accuracy``,
        ``..._selective_recovery`` and ``..._control_bias``; the unedited model asked the same
        prompts is each one's baseline (its selectivity for the last two). ``extra``:
        ``variants`` (per prefix: ``attack_damage``, ``recovery``, ``recovered``: how many forget
        facts were lost without shots and, of those, won with them, split by whether a shot
        answered with their own answer, ``n_prompts``, an ``example_prompt``), ``damaged``
        (flagged prefixes), ``shots`` (per source, each fact's shot ids in order; a variant with
        ``k`` shots shows the first ``k``), ``settings``, ``at_chance_bar``, ``note``. One per-fact row per forget and
        maintain fact (``<prefix>_answer_shown``: 1.0 when a shot showed its answer).

    Raises:
        ValueError: No forget facts, or some fact has fewer than ``max(n_shots)`` facts of a
            source to show (before anything is scored).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_in_context(p.model, p.task, original=p.model,
        ...                    in_context_config=InContextConfig(n_shots=(2,), sources=("retain",)))
        >>> [m.name for m in r.metrics][:2]
        ['in_context_retain_2_forget_accuracy', 'in_context_retain_2_forget_recovery']
    """
    from factlens.evaluation.config import or_default
    from factlens.evaluation.selectivity import deal_controls, selectivity_metrics

    baselines = bound(baselines, model, original)
    t0 = time.perf_counter()
    config = or_default(config)
    st = suite_settings(config, "in_context", InContextConfig, in_context_config)
    items, pools, orders = _checked_shots(task, config, st)
    dealt = deal_controls([(it.record_id, it.answer) for it in items["forget"]], items["maintain"], seed=config.seed)
    maintain_by_id = {it.record_id: it for it in items["maintain"]}

    before, base_before = scores_before(model, task, config, original=original, baselines=baselines)
    metrics: list[Metric] = []
    columns = before_columns(before)
    variants: dict[str, Any] = {}
    for src in st.sources:
        for k in st.n_shots:
            pre = f"in_context_{src}_{k}"
            v = _variant(orders[src], items, dealt, maintain_by_id, k)
            attacked, sel = _score(model, v, task.objective, config, items["maintain"])
            base = base_sel = None
            if original is not None:
                key = ("in_context", src, k, st.shot_relation, st.shot_answers, config.seed,
                       task_key(task, config), tuple(s.record_id for s in pools[src]))
                base, base_sel = (attacked, sel) if original is model else cached(
                    baselines, key, lambda v=v: _score(original, v, task.objective, config, items["maintain"]))
            ms = attack_metrics(pre, attacked, before, base_attacked=base, base_before=base_before)
            if sel is not None:
                ms += selectivity_metrics(pre, sel, base_sel, at_chance=ms[0].at_chance)
            metrics += ms
            columns.update(outcome_columns(pre, attacked, base))
            shown = _answer_shown(orders[src], items, k)
            columns[f"{pre}_answer_shown"] = shown
            variants[pre] = {
                "source": src, "n_shots": k, "n_prompts": len(v.forget) + len(v.maintain) + len(v.controls),
                "recovery": attacked.accuracy("forget") - before.accuracy("forget"),
                "recovered": _recovered_by_shown(attacked, before, shown),
                "attack_damage": attack_damage(base_before, base, tolerance=st.damage_tolerance),
                "example_prompt": v.forget[0].prompt,
            }
    k_max = max(st.n_shots)
    extra: dict[str, Any] = {
        "settings": st.to_dict(), "variants": variants,
        "damaged": [p for p, v in variants.items() if v["attack_damage"].get("damaged")],
        "shots": {src: {rid: [s.record_id for s in o[:k_max]] for rid, o in by_fact.items()}
                  for src, by_fact in orders.items()},
        "at_chance_bar": base_before.chance_flags()[1] if base_before is not None else None,
        "note": ("baselines: the unedited model asked the same prompts; recovery = forget accuracy with the shots "
                 "minus without; selective recovery = each forget fact's win minus the rate at which its controls, "
                 "asked with its shots, are given its answer"),
    }
    if original is None:
        extra["baseline_note"] = "original=None: the unedited model was not asked (no baselines, no damage flags)"
    return SuiteResult("in_context", tuple(metrics), tuple(fact_rows(task, columns)), extra,
                       time.perf_counter() - t0)
