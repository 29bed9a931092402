"""The built-in and reference fact data (factlens.data.loaders)."""

import pytest

from factlens.data import counterfact, sports_facts


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
