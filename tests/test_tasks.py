"""factlens.tasks: the paper's tasks, their seeded splits and the TASKS registry."""

import inspect
import re
import typing

import pytest

from factlens.data import counterfact, sports_facts
from factlens.runner.config import TASK_NAMES, default_objective
from factlens.tasks import (TASKS, counterfact_editing, full_sports_editing, sequential_counterfact_editing,
                            sports_athlete_editing, sports_unlearning, task_entry)


def test_splits_are_seeded():
    ds = sports_facts()
    a = sports_athlete_editing(ds, n_forget=16, seed=0)
    b = sports_athlete_editing(ds, n_forget=16, seed=0)
    c = sports_athlete_editing(ds, n_forget=16, seed=1)
    assert a.forget == b.forget and a.retain == b.retain and a.maintain == b.maintain
    assert a.forget != c.forget
    ids = lambda d: {r.id for r in d}
    assert not (ids(a.forget) & ids(a.retain)) and not (ids(a.retain) & ids(a.maintain))
    assert not (ids(a.forget) & ids(a.maintain))
    assert all(r.target_new in ds.candidates and r.target_new != r.answer for r in a.forget)
    assert all(r.mcq.options[r.mcq.target_index] == r.target_new for r in a.forget)


def test_other_tasks():
    ds = sports_facts()
    f = full_sports_editing(ds, sport="basketball")
    assert all(r.answer == "basketball" and r.target_new == "golf" for r in f.forget)
    assert "golf" in f.forget.candidates and all(r.answer != "basketball" for r in f.maintain)
    u = sports_unlearning(ds, sport="baseball")
    assert u.objective == "unlearn" and all(r.target_new is None for r in u.forget)
    cf = counterfact()
    e = counterfact_editing(cf, n_forget=16)
    assert len(e.forget) == 16
    s = sequential_counterfact_editing(cf, n_chunks=4, chunk_size=16)
    assert len(s.chunks) == 4 and all(len(c) == 16 for c in s.chunks)
    assert {r.id for c in s.chunks for r in c} == {r.id for r in s.forget}


def test_registry_maps_each_key_to_the_task_name_its_function_gives():
    data = {"sports": sports_facts(), "counterfact": counterfact()}
    for e in TASKS:
        ds = data["counterfact" if "counterfact" in e.name else "sports"]
        task = e.fn(ds, seed=0, **{e.size_option: 4})
        assert task.name == e.task_name == e.name.replace("-", "_"), e
        assert task.objective == e.objective, e
        assert e.size_option in inspect.signature(e.fn).parameters, e
        assert task_entry(e.name) is e and task_entry(task.name) is e


def test_each_entrys_options_are_its_functions_keywords_with_their_defaults_and_types():
    """The runner checks ``[task_options]`` against ``TaskEntry.options`` instead of the function's
    signature: the two must name the same keywords (but the dataset, the seed and the size, which
    the runner gives), with the same defaults and annotations."""
    for e in TASKS:
        params = {n: p for n, p in inspect.signature(e.fn).parameters.items()
                  if n not in ("dataset", "seed", e.size_option)}
        hints = typing.get_type_hints(e.fn)
        assert set(e.options.names()) == set(params), e.name
        for n, p in params.items():
            assert e.options.default(n) == p.default, (e.name, n)
            assert e.options.types()[n] == hints[n], (e.name, n)
    # the option a task takes is checked by type before any job, one it does not take is named
    from factlens.runner import RunConfig

    with pytest.raises(ValueError, match=r"task_options.n_chunks='4': takes int, got str"):
        RunConfig(task="sequential-counterfact-editing", model="gemma-3-270m", task_options={"n_chunks": "4"})
    with pytest.raises(ValueError, match=r"task_options.n_chunks: task 'sports-unlearning' does not take it \(it "
                                         r"takes \['n_maintain', 'n_retain', 'sport'\]\)"):
        RunConfig(task="sports-unlearning", model="gemma-3-270m", task_options={"n_chunks": 4})


def test_runner_task_names_are_the_registry_keys():
    assert set(TASK_NAMES) - {"planted"} == set(TASKS.names())
    assert [default_objective(n) for n in TASKS.names()] == [e.objective for e in TASKS]
    assert default_objective("sports_unlearning") == "unlearn" and default_objective("planted") == "inject"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'sports'.*sports-athlete-editing"):
        task_entry("sports")
    with pytest.raises(TypeError, match="must be a str"):
        task_entry(3)


def test_too_many_facts_for_the_known_ones_is_a_task_size_error_that_names_what_fits():
    from factlens.tasks import TaskSizeError

    small = counterfact().split(20, seed=0)[0]  # like a model that knows 20 facts
    with pytest.raises(TaskSizeError, match=r"use at most 18 \(--forget-size\)"):
        counterfact_editing(small, n_forget=19)
    # sequential editing names the chunk size that fits, not the product of chunks and size
    with pytest.raises(TaskSizeError, match=r"3 chunks of 8 facts need 24 .* chunks of at most 6 \(--forget-size 6\)"):
        sequential_counterfact_editing(small, n_chunks=3, chunk_size=8)
    assert len(sequential_counterfact_editing(small, n_chunks=3, chunk_size=6).forget) == 18


def test_counterfact_neighbors_that_are_prompts_of_edited_or_trained_facts_are_dropped():
    """In the built-in CounterFact set most neighbors are other facts' own prompts: scored as neighbors,
    an edited forget fact counted as damage and a retain fact (trained) as generalization."""
    cf = counterfact()
    fact_prompts = {r.prompt for r in cf}
    assert sum(n.prompt in fact_prompts for r in cf for n in r.neighborhood) > 100  # why it matters
    tasks = (counterfact_editing(cf, n_forget=16, seed=0), sequential_counterfact_editing(cf, n_chunks=2, chunk_size=8))
    for t in tasks:
        trained = {r.prompt for r in (*t.forget, *t.retain)}
        neighbors = [n.prompt for r in (*t.forget, *t.retain, *t.maintain) for n in r.neighborhood]
        assert not [p for p in neighbors if p in trained]
        assert t.meta["neighbors_dropped"] > 0 and t.summary()["neighbors_dropped"] == t.meta["neighbors_dropped"]
        assert any(r.neighborhood for r in t.maintain)  # the other neighbors stay


def test_counterfact_neighbors_that_restate_a_trained_fact_in_other_words_are_dropped():
    """"Lev Landau, speaker of" -> Russian is the fact "The mother tongue of Lev Landau is" -> Russian
    in other words: only exact prompts were dropped, so editing that fact counted as neighborhood
    damage (6 such neighbors kept for 64 facts of the CounterFact sample, 13 for 150)."""
    from factlens.data.records import FactDataset, FactRecord, Neighbor
    from factlens.tasks import _without_trained_neighbors

    landau = FactRecord(subject="Lev Landau", template="The mother tongue of {} is", answer="Russian",
                        target_new="French", relation="P103", id="4199")
    other = FactRecord(subject="Danielle Darrieux", template="The mother tongue of {} is", answer="French",
                       relation="P103", id="0", neighborhood=(
                           Neighbor("Lev Landau, speaker of", "Russian"),           # restates the forget fact
                           Neighbor("Lev Landauer, speaker of", "Russian"),         # another subject
                           Neighbor("Lev Landau was born in", "Baku"),              # another answer
                           Neighbor("The mother tongue of Lev Landau is", "Russian")))  # the exact prompt
    forget, retain, maintain = FactDataset((landau,)), FactDataset(()), FactDataset((other,))
    *_, kept, dropped = _without_trained_neighbors(forget, retain, maintain)
    assert [n.prompt for n in kept[0].neighborhood] == ["Lev Landauer, speaker of", "Lev Landau was born in"]
    assert dropped == 2


@pytest.mark.parametrize("task", [full_sports_editing, sports_unlearning])
def test_more_facts_than_the_sport_has_is_a_task_size_error(task):
    """Both tasks cut n_forget to the sport's facts without a word, while the other tasks refuse."""
    from factlens.tasks import TaskSizeError

    ds = sports_facts().shuffled(0)[:40]  # all sports: with basketball alone, nothing is left to retain
    n = sum(r.answer == "basketball" for r in ds)
    with pytest.raises(TaskSizeError, match=rf"n_forget={n + 1} .* than the {n} in the dataset.*use at most {n} "):
        task(ds, sport="basketball", n_forget=n + 1)
    assert len(task(ds, sport="basketball", n_forget=n).forget) == n


@pytest.mark.parametrize("option", ["n_retain", "n_maintain"])
def test_negative_retain_or_maintain_sizes_are_refused(option):
    """A negative size was a slice end: n_retain=-5 kept all but 5 facts to retain."""
    with pytest.raises(ValueError, match=rf"{option} must be >= 0 .* got -5"):
        sports_unlearning(sports_facts(), **{option: -5})
    assert len(getattr(sports_unlearning(sports_facts(), **{option: 0}), option[2:])) == 0


def test_sports_athlete_editing_draws_its_own_targets_as_the_docstrings_say(tmp_path):
    """The loader's docstring said the CSV's target column becomes the edit target; the task draws its own."""
    from factlens.data.loaders import sports_facts as loader

    p = tmp_path / "sports.csv"
    rows = [f"A{i} B,{s},golf" for i, s in enumerate(["basketball", "baseball", "football"] * 8)]
    p.write_text("athlete,sport,inject_sport_without_golf\n" + "\n".join(rows) + "\n")
    ds = loader(p)
    assert {r.target_new for r in ds} == {"golf"}  # the column's value stays on the record ...
    t = sports_athlete_editing(ds, n_forget=8, seed=0)
    assert all(r.target_new not in ("golf", r.answer) for r in t.forget)  # ... but the task draws another sport
    assert "becomes the record's" not in loader.__doc__
    for doc in (loader.__doc__, sports_athlete_editing.__doc__):
        assert "draws" in doc and "not use" in " ".join(doc.split())


@pytest.mark.parametrize("n_forget", [0, -1, 2.0, True])
def test_n_forget_below_one_is_refused(n_forget):
    """n_forget=0 was accepted and the edit failed later ("the task has no forget facts to edit")."""
    ds = sports_facts()[:40]
    for build in (lambda: sports_athlete_editing(ds, n_forget=n_forget), lambda: counterfact_editing(counterfact(),
                  n_forget=n_forget), lambda: full_sports_editing(ds, n_forget=n_forget),
                  lambda: sports_unlearning(ds, n_forget=n_forget)):
        with pytest.raises(ValueError, match=rf"n_forget must be a whole number >= 1 .*got {n_forget!r}"):
            build()


def test_a_dataset_too_small_for_any_task_says_so():
    """An empty known set said "use at most -2 (--forget-size)", two facts "use at most 0"."""
    from factlens.tasks import TaskSizeError

    ds = sports_facts()
    for n in (0, 2):
        with pytest.raises(TaskSizeError, match=rf"the dataset holds {n} fact\(s\) \(the facts the model knows\); a "
                                                r"task needs at least 3 .*use a larger dataset, or a model"):
            sports_athlete_editing(ds[:n], n_forget=16)
        with pytest.raises(TaskSizeError, match=rf"holds {n} fact\(s\)"):
            counterfact_editing(counterfact()[:n], n_forget=16)
    assert len(sports_athlete_editing(ds[:3], n_forget=1).forget) == 1  # the smallest task that fits
    with pytest.raises(TaskSizeError, match=r"4 chunks need at least 6 facts .* holds 5: use fewer chunks"):
        sequential_counterfact_editing(counterfact()[:5], n_chunks=4, chunk_size=16)
    no_basketball = ds.filter(lambda r: r.answer != "basketball")
    for build in (full_sports_editing, sports_unlearning):
        for n_forget in (None, 4):
            with pytest.raises(TaskSizeError, match=r"holds no basketball facts: choose another sport"):
                build(no_basketball, sport="basketball", n_forget=n_forget)


@pytest.mark.parametrize("task", [full_sports_editing, sports_unlearning])
def test_too_few_facts_of_the_other_sports_is_a_task_size_error(task):
    """With nearly every known fact of the sport, retain and maintain were built empty (or one of them)."""
    from factlens.data.records import FactDataset
    from factlens.tasks import TaskSizeError

    ds = sports_facts()
    basketball = [r for r in ds if r.answer == "basketball"][:20]
    others = [r for r in ds if r.answer != "basketball"]
    for n_other in (0, 1):
        small = FactDataset(tuple(basketball + others[:n_other]), name="sports", candidates=ds.candidates)
        with pytest.raises(TaskSizeError, match=rf"holds 20 basketball fact\(s\) and {n_other} of the other sports; "
                                                r"the task needs at least 2 .*use a larger dataset, another sport"):
            task(small, sport="basketball")
    t = task(FactDataset(tuple(basketball + others[:2]), name="sports", candidates=ds.candidates), sport="basketball")
    assert (len(t.forget), len(t.retain), len(t.maintain)) == (20, 1, 1)  # the smallest task that fits


def test_full_sports_editing_refuses_the_sport_itself_as_edit_target():
    """target == sport was accepted: every forget fact's edit target was its true answer."""
    with pytest.raises(ValueError, match=r"edit target must be another sport than the edited athletes' sport "
                                         r"'basketball', found target='basketball'"):
        full_sports_editing(sports_facts(), sport="basketball", target="basketball")
    assert all(r.target_new == "football" for r in full_sports_editing(sports_facts(), target="football").forget)


@pytest.mark.parametrize("kw, name", [({"n_chunks": 2.0}, "n_chunks"), ({"n_chunks": "4"}, "n_chunks"),
                                      ({"chunk_size": True}, "chunk_size"), ({"chunk_size": 0}, "chunk_size"),
                                      ({"n_chunks": 2.5}, "n_chunks")])
def test_sequential_chunk_counts_must_be_whole_numbers_and_are_named(kw, name):
    """n_chunks=2.0 was refused as "n_forget ... got 16.0", chunk_size=True taken as 1, and a string n_chunks a
    bare TypeError."""
    with pytest.raises(ValueError, match=rf"^{name} must be a whole number >= 1 .*got {re.escape(repr(kw[name]))}$"):
        sequential_counterfact_editing(counterfact(), **{"n_chunks": 2, "chunk_size": 4, **kw})
