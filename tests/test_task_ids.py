"""Task: ids name one fact across the splits (the suites key per-fact outcomes by id)."""

from dataclasses import replace

import pytest

from factlens.data.records import FactDataset, FactRecord
from factlens.tasks import Task


def _facts(name: str, subjects, *, ids=None) -> FactDataset:
    ids = ids if ids is not None else [f"{name}:{i}" for i in range(len(subjects))]
    return FactDataset(tuple(FactRecord(subject=s, template="{} plays", answer="golf", id=i)
                             for s, i in zip(subjects, ids)), name=name)


def _task() -> Task:
    return Task("t", "unlearn", _facts("forget", ["A", "B", "C"], ids=["0", "1", "2"]), _facts("retain", ["D", "E"]),
                _facts("maintain", ["F", "G"]))


def test_maintain_facts_numbered_like_the_forget_facts_are_refused():
    """Maintain facts from another data set numbered from 0 (as CounterFact ids are) shared ids with
    forget facts: the attack suites merge the splits' outcomes by id, so forget rows carried the
    maintain facts' outcomes. The task is refused, naming the ids and the fix."""
    task = _task()
    other = _facts("other", ["F", "G"], ids=["0", "1"])
    with pytest.raises(ValueError, match=r"2 id\(s\) name different facts in two splits, e\.g\. '0' \(forget: "
                                         r"'A plays' -> 'golf'; maintain: 'F plays' -> 'golf'\).*prefix per source"):
        replace(task, maintain=other)
    with pytest.raises(ValueError, match=r"'1' \(forget: 'B plays' -> 'golf'; retain: 'G plays'"):
        replace(task, retain=other)
    with pytest.raises(ValueError, match=r"'retain:0' \(retain: 'D plays' -> 'golf'; maintain: 'X plays'"):
        replace(task, maintain=_facts("maintain", ["X"], ids=["retain:0"]))


def test_a_fact_in_two_splits_under_its_own_id_is_kept():
    """The same fact in two splits is no id clash: the direction-ablation attack scores retain facts
    as maintain facts (its guard), and hand-built tasks may share facts (the suites that train on a
    split leave the evaluated ones out)."""
    task = _task()
    shared = replace(task, maintain=task.maintain.concat(task.forget), retain=task.maintain)
    assert len(shared.maintain) == 5 and shared.retain == task.maintain


def test_chunks_hold_forget_facts_only():
    task = _task()
    chunked = replace(task, chunks=(task.forget[:1], task.forget[1:]))
    assert [len(c) for c in chunked.chunks] == [1, 2]
    with pytest.raises(ValueError, match=r"chunks hold facts that are not forget facts \(ids \['maintain:0'\]\)"):
        replace(task, chunks=(task.forget, task.maintain[:1]))
    with pytest.raises(ValueError, match=r"'0' \(forget: 'A plays' -> 'golf'; chunks\[0\]: 'Z plays'"):
        replace(task, chunks=(_facts("c", ["Z"], ids=["0"]),))
