"""Prompt formats: the ways a fact is asked.

A format turns a record into zero or more :class:`FormattedPrompt` items, each with the true
answer, the edit target in that format and the candidate answers for "argmax among
candidates" accuracy.

Formats:
    ``default``: the record's own prompt (for sports, the paper's one-shot fact prompt).
    ``paraphrase``: CounterFact paraphrase prompts.
    ``neighborhood``: prompts about other subjects (answer: their own; an edit should not
        make them produce the edit target). A neighbor whose own answer is the fact's edit
        target is left out, with a warning: its answer and target are one candidate, which
        every model "wins" both ways.
    ``mcq``: multiple choice with in-context examples and seeded option shuffling; the
        answer is the option letter.
    ``zero_shot``, ``professional``, ``sport_played``: other phrasings for sports facts.
"""

from __future__ import annotations

import random
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

from factlens.data.records import OPTION_LETTERS, FactDataset, FactRecord, MultipleChoice, as_records

__all__ = ["FormattedPrompt", "FORMATS", "SPORTS_PHRASINGS", "format_prompts", "available_formats", "mcq_prompt",
           "mcq_shots_used"]

LETTERS = OPTION_LETTERS  # MultipleChoice refuses more options than letters

ONE_SHOT_SPORTS = "Fact: Tiger Woods plays the sport of golf\nFact: {} plays the sport of"

SPORTS_PHRASINGS: dict[str, str] = {
    "zero_shot": "{} plays the sport of",
    "professional": "{} is a professional",
    "sport_played": "The sport played by {} is",
}

# in-context examples for sports multiple choice (golfers are never in the dataset)
SPORTS_MCQ_SHOTS: tuple[tuple[str, str], ...] = (("Tiger Woods", "golf"), ("Phil Mickelson", "golf"))

#: Solved examples for the multiple-choice prompts of other facts (``mcq_shots="fixed"``): general
#: knowledge that no CounterFact relation asks, so an example never states a fact of the task
#: (drawn from the scored split, a forget fact's prompt showed two other forget facts with their
#: original answers marked correct, while maintain prompts showed untouched facts).
GENERAL_MCQ_SHOTS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("How many legs does a spider have?", ("six", "eight", "four", "ten"), 1),
    ("Which planet is closest to the sun?", ("Venus", "Mars", "Mercury", "Jupiter"), 2),
    ("What colour do you get by mixing blue and yellow?", ("green", "purple", "orange", "brown"), 0),
    ("How many days are there in a leap year?", ("364", "365", "367", "366"), 3),
    ("Which gas do plants take from the air to make sugar?", ("oxygen", "carbon dioxide", "nitrogen", "helium"), 1),
    ("What is the largest ocean on Earth?", ("Atlantic", "Indian", "Pacific", "Arctic"), 2),
    ("How many minutes are there in an hour?", ("sixty", "thirty", "ninety", "hundred"), 0),
    ("At what temperature in degrees Celsius does water freeze?", ("ten", "minus ten", "one hundred", "zero"), 3),
)
#: Where the solved examples of non-sports multiple-choice prompts come from.
MCQ_SHOT_SOURCES = ("fixed", "dataset")


@dataclass(frozen=True)
class FormattedPrompt:
    """One prompt of one fact in one format.

    Attributes:
        prompt: The text fed to the model.
        answer: The correct answer in this format (no leading space).
        target: What the edited model should answer (``None``: no edit target).
        candidates: Answers compared for argmax accuracy (must include the answer; the formats add the target).
        record_id: The fact's id.
        format: The format name.
        subject_span: Character span of the subject in ``prompt`` (when known).
    """

    prompt: str
    answer: str
    target: str | None
    candidates: tuple[str, ...]
    record_id: str
    format: str
    subject_span: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """Refuse an answer that is not among the candidates: the scorers look it up there, and a
        prompt built by hand failed deep inside with a bare "tuple.index(x): x not in tuple". (An
        edit target outside the candidates stays legal, as the known filter's prompts hold it: the
        scorers give it no candidate scores.)"""
        if self.answer not in self.candidates:
            raise ValueError(f"prompt of fact {self.record_id!r} ({self.format} format): its answer {self.answer!r} is "
                             f"not among its candidates {tuple(self.candidates)}; the candidates are the answers "
                             "compared for argmax accuracy and must include the answer")


def _cands(ds: FactDataset, r: FactRecord, *extra: str | None) -> tuple[str, ...]:
    base = tuple(ds.candidates_for(r))
    out = list(base) if base else []
    for x in (r.answer, r.target_new, *extra):
        if x is not None and x not in out:
            out.append(x)
    return tuple(out)


def _default(ds: FactDataset, r: FactRecord, **_) -> list[FormattedPrompt]:
    return [FormattedPrompt(r.prompt, r.answer, r.target_new, _cands(ds, r), r.id, "default", r.subject_span)]


def _paraphrase(ds: FactDataset, r: FactRecord, **_) -> list[FormattedPrompt]:
    return [FormattedPrompt(p, r.answer, r.target_new, _cands(ds, r), r.id, "paraphrase") for p in r.paraphrases]


def _neighborhood(ds: FactDataset, r: FactRecord, **_) -> list[FormattedPrompt]:
    out = []
    for n in r.neighborhood:
        if n.answer == r.target_new:  # answer and target would be one candidate (format_prompts warns)
            continue
        cands = tuple(dict.fromkeys([n.answer] + ([r.target_new] if r.target_new else [])))
        out.append(FormattedPrompt(n.prompt, n.answer, r.target_new, cands, r.id, "neighborhood"))
    return out


def _phrasing(name: str) -> Callable[..., list[FormattedPrompt]]:
    template = SPORTS_PHRASINGS[name]

    def fmt(ds: FactDataset, r: FactRecord, **_) -> list[FormattedPrompt]:
        if r.relation != "sport":
            return []
        rr = FactRecord(subject=r.subject, template=template, answer=r.answer)
        return [FormattedPrompt(rr.prompt, r.answer, r.target_new, _cands(ds, r), r.id, name, rr.subject_span)]

    return fmt


def _shuffled_options(mcq: MultipleChoice, key: str, seed: int) -> tuple[list[str], int, int | None]:
    rng = random.Random(zlib.crc32(f"{seed}:{key}".encode()))
    order = list(range(len(mcq.options)))
    rng.shuffle(order)
    opts = [mcq.options[i] for i in order]
    ans = order.index(mcq.answer_index)
    tgt = order.index(mcq.target_index) if mcq.target_index is not None else None
    return opts, ans, tgt


def _mcq_block(question: str, options: Sequence[str], answer_letter: str | None) -> str:
    lines = [f"Question: {question}"] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    lines.append("Answer:" + (f" {answer_letter}" if answer_letter else ""))
    return "\n".join(lines)


def _shot_pool(ds: FactDataset, r: FactRecord, shots_from: str) -> Sequence:
    """Where the solved examples of ``r``'s multiple-choice prompt come from (see :func:`mcq_prompt`)."""
    if r.relation == "sport":
        return SPORTS_MCQ_SHOTS
    if shots_from == "fixed":
        return GENERAL_MCQ_SHOTS
    others = [x for x in ds if x.mcq is not None and x.id != r.id and x.relation != r.relation]
    return others or [x for x in ds if x.mcq is not None and x.id != r.id]


def mcq_shots_used(ds: FactDataset, r: FactRecord, *, n_shots: int = 2, shots_from: str = "fixed") -> int:
    """How many solved examples :func:`mcq_prompt` puts in ``r``'s prompt: ``n_shots``, or fewer when its
    pool has fewer (2 golfers for sports facts, 8 general questions, the other facts of ``ds``).

    Example:
        >>> from factlens.data import sports_facts
        >>> ds = sports_facts()[:3]
        >>> mcq_shots_used(ds, ds[0], n_shots=1), mcq_shots_used(ds, ds[0], n_shots=5)
        (1, 2)
    """
    return min(n_shots, len(_shot_pool(ds, r, shots_from)))


def mcq_prompt(ds: FactDataset, r: FactRecord, *, seed: int = 0, n_shots: int = 2,
               shots_from: str = "fixed") -> FormattedPrompt | None:
    """The multiple-choice prompt of a record, with ``n_shots`` solved in-context examples.

    Options are shuffled with a seed derived from ``seed`` and the record id, so the letter
    of the true answer varies across facts but is reproducible. Sports facts are shown golfers
    (never in the dataset); other facts are shown ``n_shots`` of :data:`GENERAL_MCQ_SHOTS`
    (``shots_from="fixed"``, chosen per record and seed), the same pool for every split, or
    (``"dataset"``, the behaviour before 2026-12-05) other facts of ``ds`` itself, which for a
    forget split are other forget facts with their original answers marked correct. A pool
    smaller than ``n_shots`` gives all it has (:func:`mcq_shots_used`; :func:`format_prompts` warns).
    """
    if shots_from not in MCQ_SHOT_SOURCES:
        raise ValueError(f"shots_from must be one of {list(MCQ_SHOT_SOURCES)}, got {shots_from!r}")
    if r.mcq is None:
        return None
    shots = []
    if r.relation == "sport":
        opts_all = ("basketball", "baseball", "football", "golf")
        for k, (name, sport) in enumerate(SPORTS_MCQ_SHOTS[:n_shots]):
            mc = MultipleChoice(f"Which sport does {name} play?", opts_all, opts_all.index(sport))
            o, a, _ = _shuffled_options(mc, f"shot{k}", seed)
            shots.append(_mcq_block(mc.question, o, LETTERS[a]))
    elif shots_from == "fixed":
        rng = random.Random(zlib.crc32(f"shots:{seed}:{r.id}".encode()))
        for k in rng.sample(range(len(GENERAL_MCQ_SHOTS)), min(n_shots, len(GENERAL_MCQ_SHOTS))):
            question, options, answer = GENERAL_MCQ_SHOTS[k]
            o, a, _ = _shuffled_options(MultipleChoice(question, options, answer), f"general:{k}:{r.id}", seed)
            shots.append(_mcq_block(question, o, LETTERS[a]))
    else:
        others = list(_shot_pool(ds, r, shots_from))
        rng = random.Random(zlib.crc32(f"shots:{seed}:{r.id}".encode()))
        for x in rng.sample(others, min(n_shots, len(others))):
            o, a, _ = _shuffled_options(x.mcq, f"shot:{x.id}", seed)
            shots.append(_mcq_block(x.mcq.question, o, LETTERS[a]))
    opts, ans, tgt = _shuffled_options(r.mcq, r.id, seed)
    text = "\n\n".join(shots + [_mcq_block(r.mcq.question, opts, None)])
    letters = tuple(LETTERS[i] for i in range(len(opts)))
    return FormattedPrompt(text, letters[ans], letters[tgt] if tgt is not None else None, letters, r.id, "mcq")


def _mcq(ds: FactDataset, r: FactRecord, *, seed: int = 0, n_shots: int = 2, mcq_shots: str = "fixed",
         **_) -> list[FormattedPrompt]:
    p = mcq_prompt(ds, r, seed=seed, n_shots=n_shots, shots_from=mcq_shots)
    return [p] if p is not None else []


FORMATS: dict[str, Callable[..., list[FormattedPrompt]]] = {
    "default": _default,
    "paraphrase": _paraphrase,
    "neighborhood": _neighborhood,
    "mcq": _mcq,
    **{name: _phrasing(name) for name in SPORTS_PHRASINGS},
}


def format_prompts(dataset: FactDataset, fmt: str = "default", *, seed: int = 0, n_shots: int = 2,
                   mcq_shots: str = "fixed") -> list[FormattedPrompt]:
    """All prompts of ``dataset`` in format ``fmt`` (records without that format are skipped).

    ``n_shots`` / ``mcq_shots``: the multiple-choice prompts' solved examples (:func:`mcq_prompt`; a
    ``UserWarning`` says when some prompts hold fewer than ``n_shots``, :func:`mcq_shots_used`).

    Example:
        >>> from factlens.data import sports_facts
        >>> ps = format_prompts(sports_facts()[:2], "professional")
        >>> ps[0].prompt.endswith("is a professional"), ps[0].candidates
        (True, ('basketball', 'baseball', 'football'))
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; known formats: {sorted(FORMATS)}")
    dataset = _facts(dataset, "format_prompts")
    if mcq_shots not in MCQ_SHOT_SOURCES:
        raise ValueError(f"mcq_shots must be one of {list(MCQ_SHOT_SOURCES)}, got {mcq_shots!r}")
    if n_shots < 0:  # acted as a slice: -1 gave all solved examples but the last
        raise ValueError(f"n_shots must be >= 0 (solved examples per multiple-choice prompt), got {n_shots}")
    out: list[FormattedPrompt] = []
    for r in dataset:
        out.extend(FORMATS[fmt](dataset, r, seed=seed, n_shots=n_shots, mcq_shots=mcq_shots))
    if fmt == "mcq" and n_shots:
        _warn_short_shots(dataset, n_shots, mcq_shots)
    if fmt == "neighborhood":
        _warn_target_neighbors(dataset)
    return out


def _facts(dataset, what: str) -> FactDataset:
    """``dataset`` as a :class:`FactDataset`: a list of records is taken as
    :func:`factlens.data.known.filter_known` takes it (each record with candidates of its own; it
    crashed with "'list' object has no attribute 'candidates_for'"), else a clear ``TypeError``."""
    if isinstance(dataset, FactDataset):
        return dataset
    records = as_records(dataset, what=what)  # TypeError for a string, a path, other objects
    if not records:
        return FactDataset(())
    from factlens.data.known import _as_dataset  # known imports this module

    return _as_dataset(records, what)


def _warn_target_neighbors(dataset: FactDataset) -> None:
    """Warn, naming the facts, about the neighborhood prompts :func:`_neighborhood` leaves out: those
    whose own answer is the fact's edit target (their answer and target are one candidate, so any model
    "kept" the neighbor and "moved" it to the target at once)."""
    hits = [(r.id, n.prompt) for r in dataset for n in r.neighborhood if n.answer == r.target_new]
    if hits:
        facts = list(dict.fromkeys(rid for rid, _ in hits))
        warnings.warn(f"neighborhood format: left out {len(hits)} neighborhood prompt(s) whose answer is their "
                      f"fact's edit target (facts {facts[:5]}{' ...' if len(facts) > 5 else ''}; e.g. "
                      f"{hits[0][1]!r} of fact {hits[0][0]!r}): their answer and target would be one candidate, "
                      "which every model wins both ways; give those facts another target_new or other neighbors",
                      UserWarning, stacklevel=3)


def _warn_short_shots(dataset: FactDataset, n_shots: int, shots_from: str) -> None:
    """Warn when multiple-choice prompts hold fewer solved examples than ``n_shots`` (as MMLU does):
    the prompts are what they were, but a reader of ``n_shots`` would think them longer."""
    used = [mcq_shots_used(dataset, r, n_shots=n_shots, shots_from=shots_from) for r in dataset if r.mcq is not None]
    short = sum(u < n_shots for u in used)
    if short:
        warnings.warn(f"multiple choice: {short} of {len(used)} prompts hold fewer than the {n_shots} solved "
                      f"examples asked for (between {min(used)} and {max(used)}): their pool has no more "
                      f"({len(SPORTS_MCQ_SHOTS)} golfers for sports facts, {len(GENERAL_MCQ_SHOTS)} general questions, "
                      "or the split's other facts with mcq_shots='dataset'); ask for fewer (EvalConfig.n_shots)",
                      UserWarning, stacklevel=3)


def available_formats(dataset: FactDataset) -> list[str]:
    """Formats for which at least one record of ``dataset`` has a prompt (every record is looked
    at until one has; a mixed dataset may have a format only in its later records)."""
    dataset = _facts(dataset, "available_formats")
    return [f for f in FORMATS if any(FORMATS[f](dataset, r) for r in dataset)]
