"""Which facts a model knows, per format (factlens.data.known)."""

import pytest

from factlens.data import filter_known, format_accuracy
from factlens.testing import planted_fact_model


def test_filter_known_and_format_report_planted():
    p = planted_fact_model()
    known = filter_known(p.model, p.dataset)
    assert len(known) == len(p.dataset)
    assert known.meta["known"]["known"] == len(p.dataset)
    rep = format_accuracy(p.model, p.dataset)
    assert rep["default"]["accuracy"] == 1.0 and not rep["default"]["at_chance"]
    assert sum(g["known"] for g in rep.per_group.values()) == len(p.dataset)


def test_the_recorded_criterion_is_the_one_applied():
    """meta["known"]["criterion"] said "argmax among candidates" when a p threshold was also
    applied, and "p > 0.5" for p_threshold=0.0."""
    from factlens.data import filter_known
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    k = filter_known(p.model, p.dataset, p_threshold=0.99)
    assert k.meta["known"]["criterion"] == "argmax among candidates and p > 0.99"
    assert filter_known(p.model, p.dataset).meta["known"]["criterion"] == "argmax among candidates"
    ov = p.dataset.with_candidates(())
    assert filter_known(p.model, ov, p_threshold=0.0).meta["known"]["criterion"] == "p > 0.0"
    assert filter_known(p.model, ov).meta["known"]["criterion"] == "p > 0.5"


def test_multiple_choice_chance_is_at_least_the_best_constant_letter():
    """The options are shuffled per question, so the right letters are uneven: "A" is right for 115 of the
    385 sports questions (seed 0). A model that always says "A" (0.299) was called above chance (uniform
    0.25 + 2 SE = 0.294); the chance level is now at least the best constant letter's accuracy."""
    from factlens.data import sports_facts
    from factlens.data.formats import format_prompts
    from factlens.data.known import chance_level, prompt_chance
    from factlens.evaluation.standard import chance_of, not_above_chance

    items = format_prompts(sports_facts(), "mcq", seed=0)
    always_a = sum(it.answer == "A" for it in items) / len(items)
    assert always_a == pytest.approx(115 / 385)
    assert not not_above_chance(always_a, chance_level([it.candidates for it in items]), len(items))  # the old bar
    assert prompt_chance(items) == chance_of(items) == pytest.approx(always_a)
    assert not_above_chance(always_a, prompt_chance(items), len(items))
    default = format_prompts(sports_facts(), "default", seed=0)  # named answers: uniform guessing as before
    assert prompt_chance(default) == chance_level([it.candidates for it in default])


def test_filter_known_refuses_a_format_that_does_not_give_one_prompt_per_fact_in_order():
    """Scores are matched to facts by position: a format giving one fact two paraphrases and another none
    passed the count check, and the second fact was kept on the first fact's score."""
    from factlens.data.records import FactDataset, FactRecord
    from factlens.testing import tiny_model

    r1 = FactRecord(subject="LeBron James", template="{} plays the sport of", answer="basketball",
                    paraphrases=("LeBron James plays the sport of", "LeBron James plays"))
    r2 = FactRecord(subject="Tom Brady", template="{} plays the sport of", answer="football", paraphrases=())
    ds = FactDataset((r1, r2), candidates=("basketball", "football"))
    with pytest.raises(ValueError, match="exactly one prompt per fact"):
        filter_known(tiny_model(), ds, fmt="paraphrase")
    assert len(filter_known(tiny_model(), ds)) <= 2  # the default format: one prompt per fact, accepted


def test_a_list_of_records_is_scored_as_its_dataset_or_refused(planted):
    """localize takes a list of records; filter_known and format_accuracy failed on one with
    "'list' object has no attribute 'candidates_for'", and on [] the same way. A list of records
    without candidates of their own is refused: the dataset's candidates decide the criterion, and
    scored without them the planted facts fell back to p > 0.5 over the vocabulary."""
    from dataclasses import replace

    from factlens.data.records import FactDataset

    own = [replace(r, candidates=planted.dataset.candidates) for r in planted.dataset]
    as_list, as_ds = filter_known(planted.model, own), filter_known(planted.model, FactDataset(tuple(own)))
    assert [r.id for r in as_list] == [r.id for r in as_ds] and as_list.meta["known"] == as_ds.meta["known"]
    assert format_accuracy(planted.model, own).rows == format_accuracy(planted.model, FactDataset(tuple(own))).rows
    for fn in (filter_known, format_accuracy):
        with pytest.raises(TypeError, match="have no candidates of their own"):
            fn(planted.model, list(planted.dataset))
        with pytest.raises(ValueError, match="the dataset is empty"):
            fn(planted.model, [])
    with pytest.raises(TypeError, match="must be facts"):
        filter_known(planted.model, "facts.csv")


def test_filter_known_judges_a_fact_among_its_candidates_not_its_edit_target(tmp_path, monkeypatch):
    """A Sports Facts row whose edit target (inject_sport_without_golf) is golf was judged among four
    candidates, golf included; the evaluation's prompts keep the target among their candidates."""
    import factlens.data.known as known
    from factlens.data import sports_facts
    from factlens.data.formats import format_prompts
    from factlens.testing import tiny_model

    p = tmp_path / "sports.csv"
    p.write_text("athlete,sport,inject_sport_without_golf\nA One,football,golf\nB Two,baseball,football\n"
                 "C Three,basketball,\n")
    ds = sports_facts(p)
    scored, real = [], known.score_prompts

    def spy(model, items, **kw):
        scored.extend(items)
        return real(model, items, **kw)

    monkeypatch.setattr(known, "score_prompts", spy)
    known.filter_known(tiny_model(), ds)
    assert [it.candidates for it in scored] == [ds.candidates] * 3
    assert [it.target for it in scored] == ["golf", "football", None]
    assert format_prompts(ds)[0].candidates == (*ds.candidates, "golf")  # the evaluation's, unchanged


def test_format_accuracy_flags_a_model_that_gives_one_answer_to_everyone():
    """The bar of named answers was uniform chance: a model that says "football" to every athlete scored
    the football share (here 0.6, uniform bar 0.33 + 2 SE = 0.48) and passed. The bar is now the standard
    suite's (factlens.evaluation.standard.constant_bar); multiple choice keeps its letter bar."""
    import torch

    from factlens.data import FactDataset, sports_facts
    from factlens.data.formats import format_prompts
    from factlens.data.known import prompt_chance
    from factlens.evaluation.standard import constant_bar
    from factlens.testing import tiny_model
    from factlens.tokens import answer_token_ids

    by = {s: [r for r in sports_facts() if r.answer == s] for s in ("football", "baseball", "basketball")}
    ds = FactDataset(tuple(by["football"][:24] + by["baseball"][:8] + by["basketball"][:8]),
                     candidates=sports_facts().candidates)
    m = tiny_model()
    with torch.no_grad():
        m.unembed.b_U[answer_token_ids(m, "football")[0]] += 50.0  # "football", whatever the athlete
    rep = format_accuracy(m, ds, formats=["default", "mcq"])
    row = rep["default"]
    assert row["accuracy"] == pytest.approx(0.6) and row["chance"] == pytest.approx(0.6) and row["at_chance"]
    assert rep.per_group["football"]["accuracy"] == 1.0
    mcq = format_prompts(ds, "mcq")
    assert rep["mcq"]["chance"] == prompt_chance(mcq) == constant_bar(mcq)
