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
