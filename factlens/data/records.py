"""Fact records and datasets.

A :class:`FactRecord` is one fact: a subject, a prompt template with a ``{}`` slot for the
subject, the true answer, an optional edit target and optional extra prompt formats.
A :class:`FactDataset` is an immutable, ordered collection of records plus the candidate
answer set used for "argmax among candidates" accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["MultipleChoice", "Neighbor", "FactRecord", "FactDataset", "fact_id", "as_records", "grouped_parts"]

SLOT = "{}"

#: The letters that name multiple-choice options (``factlens.data.formats`` asks with them), so a
#: question takes at most this many options.
OPTION_LETTERS = "ABCDEFGH"


def string_list(value: Any, field: str, where: str) -> tuple[str, ...]:
    """``value`` (a list of strings, as read from a data file) as a tuple, else a ``ValueError``.

    A string where a list belongs was read as one item per character ("Paris" became the five
    paraphrases "P", "a", ...): it is refused, naming ``where`` (file and record) and ``field``.
    """
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: {field} must be a list of strings, got a {type(value).__name__} "
                         f"{str(value)[:60]!r}; write it as [\"...\", ...] (a list even for one item)")
    bad = next((v for v in value if not isinstance(v, str)), None)
    if bad is not None:
        raise ValueError(f"{where}: {field} must be a list of strings, but it holds the {type(bad).__name__} "
                         f"{str(bad)[:60]!r}")
    return tuple(value)


def _as_string_list(value: Any, field: str, where: str) -> tuple[str, ...]:
    """:func:`string_list` for a field given in Python: any iterable but a string (a set, a
    generator) is taken as the items, as before; a string is refused (it was split into characters)."""
    if not isinstance(value, (str, bytes, list, tuple)) and isinstance(value, Iterable):
        value = tuple(value)
    return string_list(value, field, where)


def _check_prompt_end(text: str, what: str) -> None:
    """Refuse a prompt that ends in whitespace: the answer would be scored after a lone space token."""
    if text[-1:].isspace():
        raise ValueError(f"{what} {text!r} ends in whitespace: remove the trailing space (the answer's own leading "
                         "space is added when tokenizing, so the model would be scored on the answer after a lone "
                         "space token)")


def fact_id(subject: str, template: str, answer: str) -> str:
    """The id a record gets when none is given: a short hash of subject, template and answer.

    Stable across runs and machines (SHA-1 of the JSON triple), so results keyed by id
    (evaluation, per-fact localizations) stay comparable.

    Example:
        >>> fact_id("LeBron James", "{} plays the sport of", "basketball")
        'fact:43ebd5d4c296'
    """
    digest = hashlib.sha1(json.dumps([subject, template, answer]).encode("utf-8")).hexdigest()
    return f"fact:{digest[:12]}"


def grouped_parts(order: Sequence[int], groups: Sequence[str], sizes: Sequence[int]) -> list[list[int]]:
    """Deal ``order`` (indices, in a seeded order) into parts of about ``sizes`` without splitting a group.

    Cross-fitted attacks train or fit on some facts and score the others; two facts about one
    subject (CounterFact: "The capital of Italy", "The official language of Italy") have the same
    activations at the subject, so one of them on each side lets the attack learn the held-out
    fact. Groups (``groups[i]``: index ``i``'s subject) are dealt whole, in the order their first
    member appears in ``order``, each to the first part it fits into, else to the part with the
    most room left (first fit); once no more groups are left than parts still empty, each goes
    to the first empty one. With one index per group the parts are ``order`` cut at ``sizes``,
    exactly, so splits without shared subjects stay what they were. A part of nonzero size stays
    empty only with fewer groups than such parts (callers refuse that). scikit-learn's
    ``GroupKFold`` does not keep a caller's seeded order and part sizes, hence this short function.

    Example:
        >>> grouped_parts([3, 0, 2, 1], ["a", "b", "c", "d"], [2, 2])  # no shared group: order cut at sizes
        [[3, 0], [2, 1]]
        >>> grouped_parts([3, 0, 2, 1], ["a", "b", "a", "c"], [2, 2])  # 0 and 2 share "a"
        [[3, 1], [0, 2]]
        >>> grouped_parts(list(range(6)), list("aaaabc"), [2, 2, 2])  # "a" overfills a part; b and c fill the others
        [[0, 1, 2, 3], [4], [5]]
    """
    if sum(sizes) != len(order):
        raise ValueError(f"part sizes {list(sizes)} do not add up to the {len(order)} indices")
    members: dict[str, list[int]] = {}
    for i in order:
        members.setdefault(groups[i], []).append(i)
    parts: list[list[int]] = [[] for _ in sizes]
    queue = list(members.values())
    for g, group in enumerate(queue):
        empty = [j for j, (size, part) in enumerate(zip(sizes, parts)) if size > 0 and not part]
        room = [size - len(part) for size, part in zip(sizes, parts)]
        if empty and len(queue) - g <= len(empty):  # every group left must open a part still empty
            k = empty[0]
        else:
            k = next((j for j, r in enumerate(room) if r >= len(group)), max(range(len(room)), key=room.__getitem__))
        parts[k].extend(group)
    return parts


def as_records(dataset: Any, *, what: str = "dataset") -> list["FactRecord"]:
    """``dataset`` as a list of :class:`FactRecord`, with a clear error for anything else.

    Raises:
        TypeError: When ``dataset`` is a string, path, mapping or not iterable, or holds
            something that is not a :class:`FactRecord`.
    """
    hint = ("pass a factlens.data.FactDataset (e.g. factlens.data.counterfact(path=...) or "
            "factlens.data.sports_facts()) or a list of FactRecord")
    if isinstance(dataset, (str, bytes, os.PathLike, dict)) or not isinstance(dataset, Iterable):
        raise TypeError(f"{what} must be facts, got {type(dataset).__name__} {str(dataset)[:60]!r}; {hint}")
    records = list(dataset)
    bad = [(i, type(r).__name__) for i, r in enumerate(records) if not isinstance(r, FactRecord)]
    if bad:
        i, kind = bad[0]
        raise TypeError(f"{what}[{i}] is a {kind}, not a FactRecord ({len(bad)} such item(s)); {hint}")
    return records


@dataclass(frozen=True)
class MultipleChoice:
    """A multiple-choice question about a fact.

    Attributes:
        question: The question text, e.g. ``"What is the capital of France?"``.
        options: The answer options (unshuffled). ``options[answer_index]`` is the truth.
        answer_index: Index of the true answer in ``options``.
        target_index: Index of the edit target in ``options`` (or ``None``).
    """

    question: str
    options: tuple[str, ...]
    answer_index: int = 0
    target_index: int | None = None

    def __post_init__(self) -> None:  # a string of options was split into characters:
        object.__setattr__(self, "options", _as_string_list(self.options, "options",
                                                            f"the question {str(self.question)[:60]!r}"))
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"multiple-choice options must be distinct, got {self.options!r}")
        if len(self.options) > len(OPTION_LETTERS):
            raise ValueError(f"a multiple-choice question takes at most {len(OPTION_LETTERS)} options (letters "
                             f"{OPTION_LETTERS[0]}-{OPTION_LETTERS[-1]}), got {len(self.options)} for "
                             f"{self.question[:60]!r}; leave out some of its wrong options")
        if not 0 <= self.answer_index < len(self.options):
            raise ValueError(f"answer_index {self.answer_index} out of range for {len(self.options)} options")


@dataclass(frozen=True)
class Neighbor:
    """A neighborhood prompt: another subject under the same relation, with its own answer
    (non-empty, without surrounding whitespace, as a fact's answer)."""

    prompt: str
    answer: str

    def __post_init__(self) -> None:
        """Refuse what failed only when scored, without naming the prompt: an empty prompt or answer,
        and an answer with surrounding whitespace (``" Madrid"``)."""
        for name in ("prompt", "answer"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"a neighborhood prompt's {name} must be a string, got "
                                f"{type(getattr(self, name)).__name__} {getattr(self, name)!r}")
        if not self.prompt.strip():
            raise ValueError(f"a neighborhood prompt must be non-empty text, got {self.prompt!r} (answer "
                             f"{self.answer!r})")
        if not self.answer or self.answer != self.answer.strip():
            raise ValueError(f"the neighborhood prompt {self.prompt!r}: its answer must be non-empty and have no "
                             f"surrounding whitespace (the leading space is added when tokenizing), got {self.answer!r}")


@dataclass(frozen=True)
class FactRecord:
    """One fact.

    Attributes:
        subject: The subject string as it appears in the prompt, e.g. ``"LeBron James"``.
        template: Prompt template with exactly one ``{}`` slot for the subject; the answer
            follows the prompt as its next word(s). No trailing space (nor in paraphrases and
            neighborhood prompts): one is refused, as the answer would be scored after a lone
            space token.
        answer: The true answer, without the leading space (``"basketball"``).
        target_new: Optional edit target (``"golf"``).
        relation: A relation id (``"sport"``, ``"P36"``, ...).
        id: A stable identifier (CounterFact ``case_id`` or a running index). When none is
            given (``""``), :func:`fact_id` derives one from subject, template and answer, so
            every record has an id and facts built without ids are never merged into one.
        paraphrases: Full paraphrased prompts (subject written out) that should give ``answer``.
        neighborhood: Prompts about other subjects with their own answers; an edit of this
            fact should not change them.
        mcq: Optional multiple-choice question.
        candidates: Candidate answers for "argmax among candidates" accuracy; empty means
            "use the dataset's candidates".

    Example:
        >>> r = FactRecord(subject="LeBron James", template="{} plays the sport of", answer="basketball")
        >>> r.prompt
        'LeBron James plays the sport of'
        >>> r.subject_span
        (0, 12)
    """

    subject: str
    template: str
    answer: str
    target_new: str | None = None
    relation: str = ""
    id: str = ""
    paraphrases: tuple[str, ...] = ()
    neighborhood: tuple[Neighbor, ...] = ()
    mcq: MultipleChoice | None = None
    candidates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("subject", "template", "answer"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {type(getattr(self, name)).__name__} "
                                f"{getattr(self, name)!r}")
        if self.target_new is not None and not isinstance(self.target_new, str):
            raise TypeError(f"target_new must be a string or None, got {type(self.target_new).__name__} "
                            f"{self.target_new!r}")
        if self.template.count(SLOT) != 1:
            raise ValueError(
                f"template must contain exactly one '{{}}' slot for the subject, got {self.template!r}"
            )
        if not self.subject:
            raise ValueError("subject must be a non-empty string")
        if not self.answer or self.answer != self.answer.strip():
            raise ValueError(
                f"answer must be non-empty and have no surrounding whitespace (the leading space is "
                f"added when tokenizing), got {self.answer!r}"
            )
        if self.target_new is not None and (not self.target_new or self.target_new.strip() != self.target_new):
            raise ValueError(f"the fact {self.subject!r} -> {self.answer!r}: target_new must be non-empty and have no "
                             f"surrounding whitespace (None for no edit target), got {self.target_new!r}")
        where = f"the fact {self.subject!r} -> {self.answer!r}"  # a string was split into characters:
        for name in ("paraphrases", "candidates"):  # "Who?" became the paraphrases "W", "h", "o", "?"
            object.__setattr__(self, name, _as_string_list(getattr(self, name), name, where))
        if isinstance(self.neighborhood, (str, bytes)) or not isinstance(self.neighborhood, Iterable):
            raise ValueError(f"{where}: neighborhood must be a list of Neighbor(prompt, answer), got "
                             f"{type(self.neighborhood).__name__} {str(self.neighborhood)[:60]!r}")
        object.__setattr__(self, "neighborhood", tuple(self.neighborhood))
        bad = next((n for n in self.neighborhood if not isinstance(n, Neighbor)), None)
        if bad is not None:
            raise ValueError(f"{where}: neighborhood must be a list of Neighbor(prompt, answer), but it holds the "
                             f"{type(bad).__name__} {str(bad)[:60]!r}")
        _check_prompt_end(self.template, "template")
        for p in self.paraphrases:
            _check_prompt_end(p, "paraphrase")
        for n in self.neighborhood:
            _check_prompt_end(n.prompt, "neighborhood prompt")
        rid = "" if self.id is None else str(self.id).strip()
        object.__setattr__(self, "id", rid or fact_id(self.subject, self.template, self.answer))

    @property
    def prompt(self) -> str:
        """The prompt with the subject filled in."""
        return self.template.replace(SLOT, self.subject)

    @property
    def subject_span(self) -> tuple[int, int]:
        """Character span ``[start, end)`` of the subject inside :attr:`prompt`."""
        start = self.template.index(SLOT)
        return start, start + len(self.subject)

    def with_subject(self, subject: str) -> "FactRecord":
        """The same record with another subject (used for corrupted prompts)."""
        return replace(self, subject=subject)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        d["candidates"] = list(self.candidates)
        d["neighborhood"] = [asdict(n) for n in self.neighborhood]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "record") -> "FactRecord":
        """The record of :meth:`to_dict`'s dict; ``where`` (file and record) names it in errors."""
        d = dict(d)
        d["paraphrases"] = string_list(d.get("paraphrases", ()), "paraphrases", where)
        d["candidates"] = string_list(d.get("candidates", ()), "candidates", where)
        neighborhood = d.get("neighborhood", ())
        if not isinstance(neighborhood, (list, tuple)) or not all(isinstance(n, dict) for n in neighborhood):
            raise ValueError(f"{where}: neighborhood must be a list of {{'prompt': ..., 'answer': ...}} objects, got "
                             f"{str(neighborhood)[:60]!r}")
        d["neighborhood"] = tuple(Neighbor(**n) for n in neighborhood)
        mcq = d.get("mcq")
        if mcq is not None:
            mcq = dict(mcq)
            mcq["options"] = string_list(mcq.get("options"), "mcq options", where)
            d["mcq"] = MultipleChoice(**mcq)
        d["id"] = "" if d.get("id") is None else str(d["id"])  # (``or`` turned the id 0 into a new hash id)
        return cls(**d)


def _unique_records(records: Iterable[FactRecord], name: str) -> tuple[FactRecord, ...]:
    """``records`` without repeated facts (warning); raises on conflicting facts or shared ids."""
    recs = as_records(records, what=f"the records of dataset {name!r}")
    by_fact: dict[tuple[str, str], FactRecord] = {}
    by_id: dict[str, FactRecord] = {}
    out: list[FactRecord] = []
    repeated: list[str] = []
    for r in recs:
        prev = by_fact.get((r.subject, r.template))
        if prev is not None:
            if prev.answer != r.answer:
                raise ValueError(
                    f"dataset {name!r}: conflicting duplicate facts {r.prompt!r} -> {prev.answer!r} (id {prev.id!r}) "
                    f"and -> {r.answer!r} (id {r.id!r}); keep one answer per subject and template")
            repeated.append(r.id)
            continue
        other = by_id.get(r.id)
        if other is not None:
            raise ValueError(f"dataset {name!r}: id {r.id!r} is used by two different facts ({other.prompt!r} -> "
                             f"{other.answer!r} and {r.prompt!r} -> {r.answer!r}); ids must be unique")
        by_fact[(r.subject, r.template)] = by_id[r.id] = r
        out.append(r)
    if repeated:
        warnings.warn(f"dataset {name!r}: left out {len(repeated)} repeated fact(s) (same subject, template and "
                      f"answer as an earlier record; ids {repeated[:10]}), so no fact is counted twice or lands in "
                      "two task splits", UserWarning, stacklevel=4)
    return tuple(out)


@dataclass(frozen=True)
class FactDataset(Sequence[FactRecord]):
    """An immutable, ordered set of facts.

    Attributes:
        records: The facts. A fact given twice (same subject and template, same answer) is
            kept once with a warning; the same subject and template with different answers,
            or two different facts with the same id, raise ``ValueError``.
        name: A short name (``"sports"``, ``"counterfact"``).
        candidates: Answer set for "argmax among candidates" accuracy (sports: the three
            sports, plus golf when golf is an edit target). Empty for open-vocabulary data.

    Example:
        >>> ds = FactDataset((FactRecord(subject="A", template="{} x", answer="b"),), name="toy")
        >>> len(ds), ds[0].subject
        (1, 'A')
    """

    records: tuple[FactRecord, ...]
    name: str = "facts"
    candidates: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", _unique_records(self.records, self.name))
        # a string was split into characters: candidates="basketball" made every fact "known" and
        # formats accuracy 1.0 (argmax among the letters of one word)
        object.__setattr__(self, "candidates", _as_string_list(self.candidates, "candidates", f"dataset {self.name!r}"))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FactRecord]:
        return iter(self.records)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return replace(self, records=self.records[i])
        return self.records[i]

    def __repr__(self) -> str:
        return f"FactDataset(name={self.name!r}, n={len(self)}, candidates={self.candidates!r})"

    # -- construction helpers -------------------------------------------------
    def subset(self, indices: Iterable[int]) -> "FactDataset":
        """Records at ``indices`` (in that order).

        Raises:
            IndexError: An index outside the dataset (the message names it and the dataset's size).
        """
        records = []
        for i in indices:
            try:
                records.append(self.records[i])
            except IndexError:
                raise IndexError(f"subset: index {i} is out of range for dataset {self.name!r} of {len(self)} "
                                 f"records (valid indices: 0 to {len(self) - 1})") from None
        return replace(self, records=tuple(records))

    def filter(self, predicate: Callable[[FactRecord], bool]) -> "FactDataset":
        """Records for which ``predicate`` is true."""
        return replace(self, records=tuple(r for r in self.records if predicate(r)))

    def map(self, fn: Callable[[FactRecord], FactRecord]) -> "FactDataset":
        return replace(self, records=tuple(fn(r) for r in self.records))

    def concat(self, other: "FactDataset") -> "FactDataset":
        cands = tuple(dict.fromkeys(self.candidates + other.candidates))
        return replace(self, records=self.records + other.records, candidates=cands)

    def with_candidates(self, candidates: Sequence[str]) -> "FactDataset":
        return replace(self, candidates=tuple(candidates))

    def candidates_for(self, record: FactRecord) -> tuple[str, ...]:
        """The candidate answers for ``record`` (its own, else the dataset's)."""
        return record.candidates or self.candidates

    def shuffled(self, seed: int) -> "FactDataset":
        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        return self.subset(idx)

    def split(self, n_first: int, *, seed: int, by_subject: bool = False) -> tuple["FactDataset", "FactDataset"]:
        """Seeded, reproducible split into ``n_first`` records and the rest.

        ``by_subject``: records about one subject stay on one side (:func:`grouped_parts`; the
        first part then holds about ``n_first``); with one record per subject the split is the same.

        Example:
            >>> ds = FactDataset(tuple(FactRecord(subject=f"s{i}", template="{} x", answer="a") for i in range(5)))
            >>> a, b = ds.split(2, seed=0)
            >>> len(a), len(b), a.split(2, seed=0)[0] == a.split(2, seed=0)[0]
            (2, 3, True)
        """
        if not 0 <= n_first <= len(self):
            raise ValueError(f"cannot take {n_first} records from a dataset of {len(self)}")
        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        if by_subject:
            first, rest = grouped_parts(idx, [r.subject for r in self.records], [n_first, len(self) - n_first])
        else:
            first, rest = idx[:n_first], idx[n_first:]
        return self.subset(sorted(first)), self.subset(sorted(rest))

    def by_relation(self) -> dict[str, "FactDataset"]:
        out: dict[str, list[FactRecord]] = {}
        for r in self.records:
            out.setdefault(r.relation, []).append(r)
        return {k: replace(self, records=tuple(v)) for k, v in out.items()}

    # -- persistence ----------------------------------------------------------
    def to_json(self, path: str | Path) -> None:
        """Save as JSON (:meth:`from_json` reads it), written to a temporary file first: an
        interrupted save leaves the old file.

        A dataset saved there before is replaced (a re-run notebook cell); any other file is left
        alone and refused with a ``ValueError``, as is a folder (a file was overwritten without a word).
        """
        from factlens.files import check_output, write_atomic

        check_output(path, what="saved FactDataset", ours=_is_saved_dataset)
        text = json.dumps({"name": self.name, "candidates": list(self.candidates), "meta": self.meta,
                           "records": [r.to_dict() for r in self.records]}, indent=1)
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def from_json(cls, path: str | Path) -> "FactDataset":
        from factlens.strict_json import read_json

        d = read_json(path, what="a FactDataset (JSON written by FactDataset.to_json, in UTF-8)")
        if not isinstance(d, dict) or not isinstance(d.get("records"), list):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{path}: expected a FactDataset JSON object with a 'records' list, found {keys}")
        return cls(
            records=tuple(_record_from_json(r, f"{path}: record {i}") for i, r in enumerate(d["records"])),
            name=d.get("name", "facts"),
            candidates=string_list(d.get("candidates", ()), "candidates", str(path)),
            meta=d.get("meta", {}),
        )


def _is_saved_dataset(head: str) -> bool:
    """Whether a file's first characters are those of :meth:`FactDataset.to_json` (``{"name": ..., "candidates": [``)."""
    return re.match(r'\{\s*"name": (?:null|"(?:[^"\\]|\\.)*"),\s*"candidates": \[', head) is not None


def _record_from_json(d: Any, where: str) -> FactRecord:
    """One record of :meth:`FactDataset.from_json`; a bad one raises ``ValueError`` naming ``where`` (file and
    record) and its id."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} is a {type(d).__name__} ({str(d)[:60]!r}), not an object with named fields "
                         "(subject, template, answer, ...)")
    if d.get("id") not in (None, ""):
        where = f"{where} (id {d['id']!r})"
    try:
        return FactRecord.from_dict(d, where=where)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e) if str(e).startswith(where) else f"{where}: {e}") from e
