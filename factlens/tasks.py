"""The paper's editing and unlearning tasks.

Each task function returns a :class:`Task` with the facts to edit (``forget``, each with an
edit target for editing tasks), the facts whose answers the retain loss keeps (``retain``)
and held-out facts to measure maintenance (``maintain``, disjoint from ``retain``).
All splits are seeded and reproducible.
"""

from __future__ import annotations

import numbers
import random
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Literal, get_type_hints

from factlens.data.records import FactDataset, FactRecord, MultipleChoice
from factlens.registry import Registry

__all__ = [
    "Task",
    "sports_athlete_editing",
    "full_sports_editing",
    "sports_unlearning",
    "counterfact_editing",
    "sequential_counterfact_editing",
    "TASKS",
    "TaskEntry",
    "TaskOptions",
    "SportOptions",
    "FullSportsOptions",
    "SequentialOptions",
    "task_entry",
    "TaskSizeError",
    "PAPER_STEPS_PER_CHUNK",
]

Objective = Literal["inject", "unlearn"]


class TaskSizeError(ValueError):
    """A task asks for more facts than its dataset (the facts the model knows) holds.

    A setting to change, not a defect: ``factlens run`` prints the message (which names the
    largest size that fits) instead of a traceback.
    """


@dataclass(frozen=True)
class Task:
    """An editing or unlearning task.

    An id names one fact in every split (the suites key per-fact outcomes by id and merge the
    splits' outcomes): facts from two data sets numbered alike need distinct ids, e.g. a prefix per
    source. ``ValueError`` otherwise, and when a chunk holds a fact that is no forget fact.

    Attributes:
        name: Task name (``"sports_athlete_editing"``, ...).
        objective: ``"inject"`` (edit to ``target_new``) or ``"unlearn"`` (log(1 - p)).
        forget: Facts to edit/unlearn.
        retain: Facts used by the retain loss during training.
        maintain: Held-out facts to evaluate maintenance (disjoint from ``retain``).
        chunks: For sequential editing, ``forget`` split into chunks edited one after another.
        seed: The seed used for splits and targets.
        meta: Free-form metadata (JSON-serializable).
    """

    name: str
    objective: Objective
    forget: FactDataset
    retain: FactDataset
    maintain: FactDataset
    chunks: tuple[FactDataset, ...] = ()
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _check_split_ids(self)

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.forget.candidates

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "objective": self.objective, "n_forget": len(self.forget), "n_retain": len(self.retain),
                "n_maintain": len(self.maintain), "n_chunks": len(self.chunks), "seed": self.seed, **self.meta}

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, objective={self.objective!r}, forget={len(self.forget)}, retain={len(self.retain)}, "
                f"maintain={len(self.maintain)}, chunks={len(self.chunks)})")


def _check_split_ids(task: Task) -> None:
    """Refuse one id for different facts in two splits, and chunk facts that are not forget facts.

    The suites key per-fact outcomes by ``record_id`` and merge the splits' outcomes (forget and
    maintain in one column: :func:`factlens.evaluation.attacks.outcome_columns`, the logit lens's
    layer per fact): maintain facts taken from another data set numbered from 0, as the forget
    facts are (CounterFact ids are case ids), gave forget rows the maintain facts' outcomes. A
    fact (same subject, template and answer) in two splits under one id is not refused here: the
    suites that train on a split leave the evaluated facts out, and the direction-ablation attack
    scores retain facts as its guard.
    """
    seen: dict[str, tuple[str, FactRecord]] = {}
    clashes: list[str] = []
    splits = [("forget", task.forget), ("retain", task.retain), ("maintain", task.maintain),
              *((f"chunks[{i}]", c) for i, c in enumerate(task.chunks))]
    for split, facts in splits:
        for r in facts:
            where, prev = seen.setdefault(r.id, (split, r))
            if (prev.subject, prev.template, prev.answer) != (r.subject, r.template, r.answer):
                clashes.append(f"{r.id!r} ({where}: {prev.prompt!r} -> {prev.answer!r}; {split}: {r.prompt!r} -> "
                               f"{r.answer!r})")
    if clashes:
        raise ValueError(f"task {task.name!r}: {len(clashes)} id(s) name different facts in two splits, e.g. "
                         f"{'; '.join(clashes[:3])}; the suites key per-fact outcomes by id, so give the facts "
                         "distinct ids (e.g. a prefix per source data set: 'cf:0', 'extra:0')")
    forget = {r.id for r in task.forget}
    stray = sorted({r.id for c in task.chunks for r in c} - forget)
    if stray:
        raise ValueError(f"task {task.name!r}: chunks hold facts that are not forget facts (ids {stray[:5]}); "
                         "chunks split task.forget: build them from its facts")


def _with_target(r: FactRecord, target: str | None) -> FactRecord:
    mcq = r.mcq
    if mcq is not None:
        ti = mcq.options.index(target) if target in mcq.options else None
        mcq = MultipleChoice(mcq.question, mcq.options, mcq.answer_index, ti)
    return replace(r, target_new=target, mcq=mcq)


def _split_rest(rest: FactDataset, *, n_retain: int | None, n_maintain: int | None, seed: int) -> tuple[FactDataset, FactDataset]:
    """``rest`` shuffled (seeded) and cut into retain and maintain facts (sizes capped at what there is).

    A negative size is refused: as a slice end it took all but that many facts.
    """
    for name, value in (("n_retain", n_retain), ("n_maintain", n_maintain)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 (or None for the task's default), got {value}")
    rest = rest.shuffled(seed + 1)
    n = len(rest)
    if n_retain is None and n_maintain is None:
        n_retain = n // 2
    if n_retain is None:
        n_retain = n - min(n_maintain, n)
    n_retain = min(n_retain, n)
    retain = rest[:n_retain]
    maintain = rest[n_retain:]
    if n_maintain is not None:
        maintain = maintain[:n_maintain]
    return retain, maintain


def _whole_count(n: object) -> bool:
    """Whether ``n`` is a whole number >= 1 (not a bool): a forget size."""
    return not isinstance(n, bool) and isinstance(n, numbers.Integral) and n >= 1


def _check_forget_size(n_forget: int, n_facts: int, rest: str = "") -> None:
    """Refuse ``n_forget < 1`` (an empty forget split failed only in the edit) and a dataset too
    small for ``n_forget`` facts plus one retain and one maintain fact (:class:`TaskSizeError`,
    naming the largest size that fits, or the dataset and model to change when none does: it
    said "use at most -2")."""
    if not _whole_count(n_forget):
        raise ValueError(f"n_forget must be a whole number >= 1 (facts to edit; --forget-size), got {n_forget!r}")
    if n_facts < 3:
        raise TaskSizeError(f"the dataset holds {n_facts} fact(s) (the facts the model knows); a task needs at least "
                            "3 (one to edit, one to retain, one to maintain): use a larger dataset, or a model that "
                            "knows more of its facts")
    if n_forget > n_facts - 2:
        raise TaskSizeError(f"n_forget={n_forget} leaves too few facts {rest}in a dataset of {n_facts} (the facts the "
                            f"model knows): use at most {n_facts - 2} (--forget-size)")


def _check_sports(dataset: FactDataset) -> None:
    if not dataset.candidates:
        raise ValueError("sports tasks need a dataset with candidate answers (e.g. factlens.data.sports_facts())")


def sports_athlete_editing(dataset: FactDataset, n_forget: int = 16, seed: int = 0, *, n_retain: int | None = None,
                           n_maintain: int | None = None) -> Task:
    """Sports-Athlete-Editing: ``n_forget`` random athletes are edited to a random other sport.

    The task draws each edit target itself (seeded, uniformly among the dataset's other
    sports, golf left out); a ``target_new`` the data already holds (the Sports Facts CSV's
    ``inject_sport_without_golf`` column) stays on the records but is not used here (stored
    results depend on this draw).

    Example:
        >>> from factlens.data import sports_facts
        >>> t = sports_athlete_editing(sports_facts(), n_forget=16, seed=0)
        >>> len(t.forget), all(r.target_new != r.answer for r in t.forget)
        (16, True)
    """
    _check_sports(dataset)
    _check_forget_size(n_forget, len(dataset), "to retain/maintain ")
    forget, rest = dataset.split(n_forget, seed=seed)
    rng = random.Random(seed)
    sports = [c for c in dataset.candidates if c != "golf"]
    forget = forget.map(lambda r: _with_target(r, rng.choice([s for s in sports if s != r.answer])))
    retain, maintain = _split_rest(rest, n_retain=n_retain, n_maintain=n_maintain, seed=seed)
    return Task("sports_athlete_editing", "inject", forget, retain, maintain, seed=seed)


def full_sports_editing(dataset: FactDataset, sport: str = "basketball", target: str = "golf", seed: int = 0, *,
                        n_forget: int | None = None, n_retain: int | None = None, n_maintain: int | None = None) -> Task:
    """Full-Sports-Editing: every athlete of ``sport`` is edited to ``target`` (golf).

    ``n_forget``: edit a seeded sample of that many of them instead (:class:`TaskSizeError` when the
    dataset has fewer, or fewer than 2 facts of the other sports to retain and maintain).
    ``ValueError`` when ``target`` is ``sport`` (an edit to the true answer).
    """
    _check_sports(dataset)
    if sport not in dataset.candidates:
        raise ValueError(f"sport {sport!r} not among the dataset's answers {dataset.candidates}")
    if target == sport:
        raise ValueError(f"the edit target must be another sport than the edited athletes' sport {sport!r}, found "
                         f"target={target!r} (an edit to the true answer changes nothing); choose another target "
                         "(e.g. 'golf')")
    cands = tuple(dict.fromkeys(dataset.candidates + (target,)))
    ds = dataset.with_candidates(cands)
    forget = ds.filter(lambda r: r.answer == sport)
    size = _sport_size(n_forget, len(forget), sport)
    if n_forget is not None:
        forget = forget.split(size, seed=seed)[0]
    rest = _other_sports(ds, sport)
    forget = forget.map(lambda r: _with_target(r, target))
    retain, maintain = _split_rest(rest, n_retain=n_retain, n_maintain=n_maintain, seed=seed)
    return Task("full_sports_editing", "inject", forget, retain, maintain, seed=seed, meta={"sport": sport, "target": target})


def _other_sports(dataset: FactDataset, sport: str) -> FactDataset:
    """The facts of the sports other than ``sport`` (retained and maintained), or a :class:`TaskSizeError`
    when fewer than 2 are left: one to retain and one to maintain (the task was built with an empty retain
    or maintain split, e.g. from the facts a model knows that are nearly all of ``sport``)."""
    rest = dataset.filter(lambda r: r.answer != sport)
    if len(rest) < 2:
        raise TaskSizeError(f"the dataset (the facts the model knows) holds {len(dataset) - len(rest)} {sport} fact(s) "
                            f"and {len(rest)} of the other sports; the task needs at least 2 of the other sports (one "
                            "to retain, one to maintain): use a larger dataset, another sport, or a model that knows "
                            "more of its facts")
    return rest


def _sport_size(n_forget: int | None, n_sport: int, sport: str) -> int:
    """``n_forget``, or a :class:`TaskSizeError` when the dataset has fewer facts of ``sport`` (it was cut
    to them without a word, while the other tasks refuse), a ``ValueError`` below 1 (an empty forget
    split failed only in the edit, as it did with no fact of ``sport``). ``None``: all of them."""
    if n_forget is not None and not _whole_count(n_forget):
        raise ValueError(f"n_forget must be a whole number >= 1 (facts to edit; --forget-size), or None for every "
                         f"{sport} fact; got {n_forget!r}")
    if n_sport == 0:
        raise TaskSizeError(f"the dataset (the facts the model knows) holds no {sport} facts: choose another sport, "
                            "a larger dataset, or a model that knows more of its facts")
    if n_forget is None:
        return n_sport
    if n_forget > n_sport:
        raise TaskSizeError(f"n_forget={n_forget} asks for more {sport} facts than the {n_sport} in the dataset (the "
                            f"facts the model knows): use at most {n_sport} (--forget-size)")
    return n_forget


def sports_unlearning(dataset: FactDataset, sport: str = "basketball", seed: int = 0, *, n_forget: int | None = None,
                      n_retain: int | None = None, n_maintain: int | None = None) -> Task:
    """Sports-Unlearning: every athlete of ``sport`` is unlearned (no edit target).

    ``n_forget``: unlearn a seeded sample of that many of them instead (:class:`TaskSizeError` when
    the dataset has fewer, or fewer than 2 facts of the other sports to retain and maintain).
    """
    _check_sports(dataset)
    if sport not in dataset.candidates:
        raise ValueError(f"sport {sport!r} not among the dataset's answers {dataset.candidates}")
    forget = dataset.filter(lambda r: r.answer == sport).map(lambda r: _with_target(r, None))
    size = _sport_size(n_forget, len(forget), sport)
    if n_forget is not None:
        forget = forget.split(size, seed=seed)[0]
    rest = _other_sports(dataset, sport)
    retain, maintain = _split_rest(rest, n_retain=n_retain, n_maintain=n_maintain, seed=seed)
    return Task("sports_unlearning", "unlearn", forget, retain, maintain, seed=seed, meta={"sport": sport})


def _check_targets(ds: FactDataset) -> None:
    missing = [r.id for r in ds if r.target_new is None]
    if missing:
        raise ValueError(f"CounterFact editing needs target_new on every fact; missing for ids {missing[:5]}")


def counterfact_editing(dataset: FactDataset, n_forget: int = 16, seed: int = 0, *, n_retain: int | None = None,
                        n_maintain: int | None = None) -> Task:
    """CounterFact-Editing: ``n_forget`` facts are edited to their counterfactual targets."""
    _check_forget_size(n_forget, len(dataset))
    forget, rest = dataset.split(n_forget, seed=seed)
    _check_targets(forget)
    retain, maintain = _split_rest(rest, n_retain=n_retain, n_maintain=n_maintain, seed=seed)
    forget, retain, maintain, dropped = _without_trained_neighbors(forget, retain, maintain)
    return Task("counterfact_editing", "inject", forget, retain, maintain, seed=seed,
                meta={"neighbors_dropped": dropped})


def _without_trained_neighbors(*splits: FactDataset) -> tuple[Any, ...]:
    """``splits`` (forget, retain, maintain) without the neighborhood prompts that state a forget
    or retain fact, and how many were dropped.

    CounterFact's neighbors are other subjects' prompts, often the very prompts of other facts in
    the dataset ("The capital of China is" is a fact and a neighbor of "The capital of France
    is"), or the same fact in other words ("Lev Landau, speaker of" -> Russian restates "The
    mother tongue of Lev Landau is" -> Russian). Scored as neighbors, an edited forget fact would
    count as damage and a retain fact, which the edit trains on, as generalization. A neighbor
    states a fact when it is that fact's prompt, or when it names the fact's subject (as a whole
    word) under the same relation with the same answer (only exact prompts were dropped before).
    """
    trained = {r.prompt for ds in splits[:2] for r in ds}
    subjects: dict[tuple[str, str], list[re.Pattern]] = {}  # (relation, answer) -> the trained facts' subjects
    for ds in splits[:2]:
        for f in ds:
            if f.subject:
                subjects.setdefault((f.relation, f.answer.strip()), []).append(
                    re.compile(r"(?<!\w)" + re.escape(f.subject) + r"(?!\w)"))
    dropped = 0

    def states_trained(r: FactRecord, n) -> bool:
        return n.prompt in trained or any(p.search(n.prompt) for p in subjects.get((r.relation, n.answer.strip()), ()))

    def clean(r: FactRecord) -> FactRecord:
        nonlocal dropped
        kept = tuple(n for n in r.neighborhood if not states_trained(r, n))
        dropped += len(r.neighborhood) - len(kept)
        return r if len(kept) == len(r.neighborhood) else replace(r, neighborhood=kept)

    out = tuple(ds.map(clean) for ds in splits)
    return (*out, dropped)


def sequential_counterfact_editing(dataset: FactDataset, n_chunks: int = 4, chunk_size: int = 16, seed: int = 0, *,
                                   n_retain: int | None = None, n_maintain: int | None = None) -> Task:
    """Sequential-CounterFact-Editing: ``n_chunks`` chunks of ``chunk_size`` facts, edited one after another."""
    for name, value in (("n_chunks", n_chunks), ("chunk_size", chunk_size)):
        if not _whole_count(value):  # 2.0 was refused as n_forget, True taken as 1, "4" a bare TypeError
            where = "[task_options] n_chunks" if name == "n_chunks" else "--forget-size"
            raise ValueError(f"{name} must be a whole number >= 1 ({where}), got {value!r}")
    n = n_chunks * chunk_size
    if n > len(dataset) - 2:
        most = (len(dataset) - 2) // max(n_chunks, 1)
        if most < 1:  # "use chunks of at most 0": no chunk size fits
            raise TaskSizeError(f"{n_chunks} chunks need at least {n_chunks + 2} facts (one per chunk, one to retain, "
                                f"one to maintain), and the dataset (the facts the model knows) holds {len(dataset)}: "
                                "use fewer chunks ([task_options] n_chunks), a larger dataset, or a model that knows "
                                "more of its facts")
        raise TaskSizeError(f"{n_chunks} chunks of {chunk_size} facts need {n} facts besides the retain/maintain ones, "
                            f"and the dataset (the facts the model knows) holds {len(dataset)}: use chunks of at most "
                            f"{most} (--forget-size {most}) or fewer chunks ([task_options] n_chunks)")
    t = counterfact_editing(dataset, n_forget=n, seed=seed, n_retain=n_retain, n_maintain=n_maintain)
    shuffled = t.forget.shuffled(seed + 7)
    chunks = tuple(shuffled[i * chunk_size:(i + 1) * chunk_size] for i in range(n_chunks))
    return replace(t, name="sequential_counterfact_editing", chunks=chunks,
                   meta={**t.meta, "n_chunks": n_chunks, "chunk_size": chunk_size})


#: Optimizer steps per chunk in the paper's sequential editing (4 chunks of 16 facts, 25 steps
#: each): :func:`~factlens.editing.sequential.edit_sequential`'s default and the runner's
#: ``--edit-preset paper`` for ``sequential-counterfact-editing``.
PAPER_STEPS_PER_CHUNK = 25


@dataclass(frozen=True)
class TaskOptions:
    """The options of a task besides its dataset, seed and size: what ``factlens run``'s
    ``[task_options]`` table may set (the runner gives the size from ``--forget-size`` and the
    seed per run itself).

    Each :class:`TaskEntry` names its options type, so the runner checks a table's keys and value
    types against these fields before any job runs (``RunConfig`` validation) instead of reading
    the task function's signature. The defaults are the task function's own; the runner passes
    only the options the table gives. A task added to :data:`TASKS` declares its options as a
    subclass (``tests/test_tasks.py`` checks that every entry's fields and defaults equal its
    function's keywords).

    Attributes:
        n_retain: Facts the retain loss keeps (``None``: half of the facts left besides the
            forget set, or all but ``n_maintain`` of them when that is given).
        n_maintain: Held-out facts that measure maintenance (``None``: the rest).
    """

    n_retain: int | None = None
    n_maintain: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in field order.

        Example:
            >>> FullSportsOptions.names()
            ('n_retain', 'n_maintain', 'sport', 'target')
        """
        return tuple(f.name for f in fields(cls))

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Each option's annotation, resolved (``{"n_retain": int | None, ...}``)."""
        return get_type_hints(cls)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option ``name`` (``KeyError`` for a name that is none of :meth:`names`)."""
        return {f.name: f.default for f in fields(cls)}[name]


@dataclass(frozen=True)
class SportOptions(TaskOptions):
    """Options of the whole-sport tasks (Sports-Unlearning).

    Attributes:
        sport: The sport whose athletes are unlearned (or edited).
    """

    sport: str = "basketball"


@dataclass(frozen=True)
class FullSportsOptions(SportOptions):
    """Options of Full-Sports-Editing.

    Attributes:
        target: The sport every edited athlete is edited to (another than ``sport``).
    """

    target: str = "golf"


@dataclass(frozen=True)
class SequentialOptions(TaskOptions):
    """Options of Sequential-CounterFact-Editing (``--forget-size`` sets each chunk's size).

    Attributes:
        n_chunks: Chunks of facts edited one after another.
    """

    n_chunks: int = 4


@dataclass(frozen=True)
class TaskEntry:
    """One of the paper's tasks in :data:`TASKS`: the key next to the :attr:`Task.name`.

    The key (hyphens, ``"sports-athlete-editing"``) is what ``factlens run`` takes and what
    ``run_config.json`` stores; ``task_name`` (underscores, ``"sports_athlete_editing"``) is the
    :attr:`Task.name` the function gives, a Python identifier like the function's own name.
    This entry is the one place the two spellings meet; :func:`task_entry` accepts either.

    Attributes:
        name: The key (``factlens run <name>``).
        task_name: The :attr:`Task.name` of the tasks ``fn`` returns.
        fn: The task function ``fn(dataset, seed=..., **options) -> Task``.
        objective: ``"inject"`` (editing) or ``"unlearn"``.
        size_option: The keyword that sets how many facts are edited (``n_forget``, or
            ``chunk_size`` for the sequential task).
        paper_steps: Optimizer steps per edit in the paper's settings (the runner's
            ``--edit-preset paper``), where they differ from ``EditConfig()``'s 50: the
            sequential task trains each chunk for
            :data:`PAPER_STEPS_PER_CHUNK`.
        options: The :class:`TaskOptions` type of the keywords ``fn`` takes besides the
            dataset, the seed and ``size_option`` (the ``[task_options]`` a run may give).
    """

    name: str
    task_name: str
    fn: Callable[..., Task]
    objective: Objective
    size_option: str = "n_forget"
    paper_steps: int | None = None
    options: type[TaskOptions] = TaskOptions


TASKS: Registry[TaskEntry] = Registry("task", (
    TaskEntry("sports-athlete-editing", "sports_athlete_editing", sports_athlete_editing, "inject"),
    TaskEntry("full-sports-editing", "full_sports_editing", full_sports_editing, "inject", options=FullSportsOptions),
    TaskEntry("sports-unlearning", "sports_unlearning", sports_unlearning, "unlearn", options=SportOptions),
    TaskEntry("counterfact-editing", "counterfact_editing", counterfact_editing, "inject"),
    TaskEntry("sequential-counterfact-editing", "sequential_counterfact_editing", sequential_counterfact_editing,
              "inject", size_option="chunk_size", paper_steps=PAPER_STEPS_PER_CHUNK, options=SequentialOptions),
))
"""The paper's tasks, keyed by the CLI / ``run_config.json`` spelling (``TASKS.get(key)``,
``TASKS.names()``); :func:`task_entry` also takes the ``Task.name`` spelling."""


def task_entry(name: str) -> TaskEntry:
    """The :data:`TASKS` entry of a task key or of a :attr:`Task.name` (either spelling).

    Example:
        >>> task_entry("sports_unlearning").name, task_entry("sports-unlearning").task_name
        ('sports-unlearning', 'sports_unlearning')
        >>> task_entry("sports")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown task 'sports'; known: ['sports-athlete-editing', ...] (Task.name spellings ...)
    """
    if not isinstance(name, str):
        raise TypeError(f"a task name must be a str, got {type(name).__name__}")
    for e in TASKS:
        if name in (e.name, e.task_name):
            return e
    raise ValueError(f"unknown task {name!r}; known: {list(TASKS.names())} (Task.name spellings with "
                     "underscores work too)")
