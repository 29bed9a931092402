import pytest

from factlens.data import (FactDataset, counterfact, filter_known, format_accuracy, format_prompts, sports_facts)
from factlens.data.formats import FORMATS
from factlens.testing import planted_fact_model


def test_builtin_sports():
    ds = sports_facts()
    assert len(ds) >= 300
    per = {s: sum(r.answer == s for r in ds) for s in ds.candidates}
    assert set(per) == {"basketball", "baseball", "football"} and min(per.values()) >= 100
    assert len({r.subject for r in ds}) == len(ds)
    r = ds[0]
    assert r.prompt.startswith("Fact: Tiger Woods plays the sport of golf\nFact: ")
    assert r.prompt[r.subject_span[0]:r.subject_span[1]] == r.subject
    assert r.mcq.options[r.mcq.answer_index] == r.answer


def test_builtin_counterfact():
    cf = counterfact()
    assert len(cf) >= 100
    assert len({r.relation for r in cf}) >= 6
    for r in cf:
        assert r.target_new and r.target_new != r.answer
        assert len(r.paraphrases) == 2 and len(r.neighborhood) >= 3
        assert r.mcq.options[r.mcq.answer_index] == r.answer
        assert r.mcq.options[r.mcq.target_index] == r.target_new
        assert len(r.mcq.options) == 4


def test_real_sports_csv(shared_data):
    ds = sports_facts(shared_data / "sports_facts" / "sports.csv")
    assert len(ds) == 1559
    assert {r.answer for r in ds} == {"basketball", "baseball", "football"}
    r = ds[0]
    assert r.subject == "DeForest Buckner" and r.answer == "football" and r.target_new == "basketball"
    assert r.prompt == "Fact: Tiger Woods plays the sport of golf\nFact: DeForest Buckner plays the sport of"


def test_real_counterfact_with_mcq(shared_data):
    cf = counterfact(shared_data / "counterfact" / "counterfact_sample.json",
                     shared_data / "counterfact" / "counterfact_sample_mcq.jsonl")
    assert len(cf) == 300
    r = next(x for x in cf if x.id == "3")
    assert r.subject == "Autonomous University of Madrid" and r.answer == "Spain" and r.target_new == "Sweden"
    assert r.prompt == "Autonomous University of Madrid, which is located in"
    assert r.neighborhood[0].answer == "Spain" and len(r.paraphrases) == 2
    assert r.mcq.options[r.mcq.answer_index] == "Spain" and r.mcq.target_index is not None
    assert sum(x.mcq is not None for x in cf) >= 250


def test_missing_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        sports_facts(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x\nA,b\n")
    with pytest.raises(ValueError, match="athlete"):
        sports_facts(bad)


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


def test_filter_known_and_format_report_planted():
    p = planted_fact_model()
    known = filter_known(p.model, p.dataset)
    assert len(known) == len(p.dataset)
    assert known.meta["known"]["known"] == len(p.dataset)
    rep = format_accuracy(p.model, p.dataset)
    assert rep["default"]["accuracy"] == 1.0 and not rep["default"]["at_chance"]
    assert sum(g["known"] for g in rep.per_group.values()) == len(p.dataset)


def test_dataset_json_round_trip(tmp_path):
    ds = counterfact()[:3]
    ds.to_json(tmp_path / "d.json")
    assert FactDataset.from_json(tmp_path / "d.json").records == ds.records
