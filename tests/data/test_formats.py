"""Prompt formats and MCQ shuffling (factlens.data.formats)."""

import pytest

from factlens.data import counterfact, format_prompts, sports_facts


def test_formats_and_mcq_shuffling():
    ds = sports_facts()[:20]
    for fmt in ["default", "mcq", "zero_shot", "professional", "sport_played"]:
        items = format_prompts(ds, fmt)
        assert len(items) == 20
        for it in items:
            assert it.answer in it.candidates
    mc = format_prompts(ds, "mcq", seed=0)
    assert mc == format_prompts(ds, "mcq", seed=0)
    assert len({it.answer for it in mc}) > 1  # letters vary across facts
    assert mc[0].prompt.count("Question:") == 3  # 2 in-context examples
    assert [it.answer for it in mc] != [it.answer for it in format_prompts(ds, "mcq", seed=1)]
    with pytest.raises(ValueError, match="unknown prompt format"):
        format_prompts(ds, "nope")
    cf = counterfact()[:5]
    assert len(format_prompts(cf, "paraphrase")) == 10
    assert all(it.target == r.target_new for it, r in zip(format_prompts(cf, "default"), cf))


def test_available_formats_look_at_every_record():
    """A format only later records have (CounterFact paraphrases after 50 sports facts) is available;
    only the first 50 records were looked at, and the formats suite skipped it without a word."""
    from factlens.data import available_formats, counterfact, sports_facts
    from factlens.data.records import FactDataset

    mixed = FactDataset(sports_facts()[:50].records + counterfact()[:20].records, name="mixed")
    assert {"paraphrase", "neighborhood"} <= set(available_formats(mixed))


def test_counterfact_mcq_examples_never_show_a_fact_of_the_scored_split():
    """The solved examples of a CounterFact multiple-choice prompt were other facts of the split
    being scored: a forget fact's prompt showed two other forget facts with their original answers
    marked correct (contradicting the edits in context), a maintain fact's prompt untouched facts."""
    from factlens.data import counterfact
    from factlens.data.formats import GENERAL_MCQ_SHOTS

    ds = counterfact()
    forget = ds.filter(lambda r: r.mcq is not None)[:8]
    questions = {r.mcq.question for r in forget}
    fixed = format_prompts(forget, "mcq", seed=0, n_shots=2)
    assert len(fixed) == 8
    for p in fixed:
        blocks = p.prompt.split("\n\n")
        assert len(blocks) == 3 and not any(q in b for b in blocks[:-1] for q in questions)
        assert all(any(b.startswith(f"Question: {q}\n") for q, _, _ in GENERAL_MCQ_SHOTS) for b in blocks[:-1])
    # the same examples whatever split the fact is scored in; the old behaviour stays available
    alone = format_prompts(forget[:1], "mcq", seed=0, n_shots=2)[0]
    assert alone.prompt == fixed[0].prompt
    old = format_prompts(forget, "mcq", seed=0, n_shots=2, mcq_shots="dataset")
    assert all(any(q in b for b in p.prompt.split("\n\n")[:-1] for q in questions) for p in old)
    with pytest.raises(ValueError, match="mcq_shots must be one of"):
        format_prompts(forget, "mcq", mcq_shots="retain")


def test_mcq_prompts_warn_when_they_hold_fewer_solved_examples_than_asked():
    """n_shots=5 gave sports prompts the 2 golfer examples there are, silently (MMLU warns in that case)."""
    import warnings

    from factlens.data.formats import GENERAL_MCQ_SHOTS, mcq_shots_used

    ds = sports_facts()[:3]
    with pytest.warns(UserWarning, match="3 of 3 prompts hold fewer than the 5 solved examples asked for"):
        items = format_prompts(ds, "mcq", n_shots=5)
    assert all(it.prompt.count("Answer: ") == 2 == mcq_shots_used(ds, r, n_shots=5) for it, r in zip(items, ds))
    cf = counterfact().filter(lambda r: r.mcq is not None)[:3]
    with pytest.warns(UserWarning, match=f"between {len(GENERAL_MCQ_SHOTS)} and {len(GENERAL_MCQ_SHOTS)}"):
        assert format_prompts(cf, "mcq", n_shots=9)[0].prompt.count("Answer: ") == len(GENERAL_MCQ_SHOTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many as asked for: no warning, and the same prompts as before
        assert [it.prompt.count("Answer: ") for it in format_prompts(ds, "mcq", n_shots=2)] == [2, 2, 2]
        format_prompts(cf, "mcq", n_shots=2, mcq_shots="dataset")


def test_a_prompt_whose_answer_is_not_a_candidate_is_refused():
    """A prompt built by hand with its answer outside its candidates failed in the scorers with a bare
    "tuple.index(x): x not in tuple"; an edit target outside them stays legal (the scorers skip it)."""
    from factlens.data.formats import FormattedPrompt

    with pytest.raises(ValueError, match=r"prompt of fact 'r0' \(default format\): its answer 'golf' is not among its "
                                         r"candidates \('tennis', 'hockey'\)"):
        FormattedPrompt("Tiger Woods plays the sport of", "golf", None, ("tennis", "hockey"), "r0", "default")
    p = FormattedPrompt("Tiger Woods plays the sport of", "golf", "chess", ("golf", "tennis"), "r0", "default")
    assert p.target not in p.candidates
    for fmt in ("default", "mcq", "zero_shot"):  # every prompt the formats build holds its answer
        assert all(it.answer in it.candidates for it in format_prompts(sports_facts(), fmt))
    assert all(it.answer in it.candidates for fmt in ("default", "paraphrase", "neighborhood", "mcq")
               for it in format_prompts(counterfact(), fmt))


def test_a_neighbor_whose_answer_is_the_edit_target_is_left_out_with_a_warning():
    """Its prompt had the one candidate "Rome" (answer and target), so every model "kept" the neighbor and
    "moved" it to the target at once."""
    from factlens.data import FactDataset, FactRecord, Neighbor

    r = FactRecord(subject="France", template="The capital of {} is", answer="Paris", target_new="Rome",
                   relation="P36", id="cf:0", neighborhood=(Neighbor("The capital of Italy is", "Rome"),
                                                            Neighbor("The capital of Spain is", "Madrid")))
    with pytest.warns(UserWarning, match=r"left out 1 neighborhood prompt.*facts \['cf:0'\].*The capital of Italy"):
        items = format_prompts(FactDataset((r,)), "neighborhood")
    assert [(it.prompt, it.candidates) for it in items] == [("The capital of Spain is", ("Madrid", "Rome"))]


def test_a_list_of_records_is_formatted_as_its_dataset_or_refused_clearly():
    """format_prompts(list) and available_formats(list) crashed with "'list' object has no attribute
    'candidates_for'". A list is taken as filter_known takes it (factlens.data.known._as_dataset)."""
    from dataclasses import replace

    from factlens.data import FactDataset
    from factlens.data.formats import available_formats

    ds = sports_facts()[:3]
    own = [replace(r, candidates=ds.candidates) for r in ds]
    assert format_prompts(own, "default") == format_prompts(FactDataset(tuple(own)), "default") == format_prompts(ds)
    assert available_formats(own) == available_formats(ds)
    for fn in (format_prompts, available_formats):
        with pytest.raises(TypeError, match=r"have no candidates of their own.*pass a FactDataset"):
            fn(list(ds))
        with pytest.raises(TypeError, match="must be facts"):
            fn("facts.csv")
    assert format_prompts([], "default") == []
