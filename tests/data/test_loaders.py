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
    with pytest.warns(UserWarning, match=r"1 of 300 facts .*case_ids \['1661'\]"):  # 'Buddhist philosophy' options
        cf = counterfact(shared_data / "counterfact" / "counterfact_sample.json",
                         shared_data / "counterfact" / "counterfact_sample_mcq.jsonl")
    r1375 = next(x for x in cf if x.id == "1375")  # options spell it 'Baseball'
    assert r1375.mcq is not None and r1375.mcq.options[r1375.mcq.answer_index] == r1375.answer == "baseball"
    assert len(cf) == 300
    r = next(x for x in cf if x.id == "3")
    assert r.subject == "Autonomous University of Madrid" and r.answer == "Spain" and r.target_new == "Sweden"
    assert r.prompt == "Autonomous University of Madrid, which is located in"
    assert r.neighborhood[0].answer == "Spain" and len(r.paraphrases) == 2
    assert r.mcq.options[r.mcq.answer_index] == "Spain" and r.mcq.target_index is not None
    assert sum(x.mcq is not None for x in cf) == 299


def test_missing_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        sports_facts(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x\nA,b\n")
    with pytest.raises(ValueError, match="athlete"):
        sports_facts(bad)


def _cf_files(tmp_path, mcq_rows, *, true="baseball", new="soccer"):
    import json

    rows = [{"case_id": 1, "requested_rewrite": {"prompt": "{} plays", "subject": "X", "relation_id": "P1",
                                                 "target_true": {"str": true}, "target_new": {"str": new}}},
            {"case_id": 2, "requested_rewrite": {"prompt": "{} is located in", "subject": "Y", "relation_id": "P2",
                                                 "target_true": {"str": "France"}, "target_new": {"str": "Italy"}}}]
    p, q = tmp_path / "cf.json", tmp_path / "mc.jsonl"
    p.write_text(json.dumps(rows))
    q.write_text("".join(json.dumps(m) + "\n" for m in mcq_rows))
    return p, q


def test_mcq_options_match_the_answer_whatever_their_case(tmp_path):
    """An MCQ row spelling the answer 'Baseball' where CounterFact has 'baseball' keeps its question
    (it was dropped without a word: case 1375 of the shared sample), with the fact's own spelling."""
    p, q = _cf_files(tmp_path, [
        {"question": "Which sport does X play?", "target_true": "Baseball", "targets_false": ["Soccer", "Golf", "Tennis"],
         "prompt_id": 1},
        {"question": "Where is Y?", "target_true": "France", "targets_false": ["Italy", "Spain", "Peru"], "prompt_id": 2}])
    ds = counterfact(p, q)
    mc = ds[0].mcq
    assert mc is not None and mc.options[mc.answer_index] == "baseball" and mc.options[mc.target_index] == "soccer"


def test_a_fact_whose_answer_is_not_among_its_options_is_named_in_a_warning(tmp_path):
    p, q = _cf_files(tmp_path, [
        {"question": "Which sport does X play?", "target_true": "Base ball game", "targets_false": ["Soccer", "Golf"],
         "prompt_id": 1},
        {"question": "Where is Y?", "target_true": "France", "targets_false": ["Italy", "Spain", "Peru"], "prompt_id": 2}])
    with pytest.warns(UserWarning, match=r"1 of 2 facts have no multiple-choice question.*case_ids \['1'\]"):
        ds = counterfact(p, q)
    assert ds[0].mcq is None and ds[1].mcq is not None


def test_repeated_mcq_prompt_ids_are_refused_unless_identical(tmp_path):
    row = {"question": "Where is Y?", "target_true": "France", "targets_false": ["Italy", "Spain", "Peru"], "prompt_id": 2}
    other = {**row, "question": "Which city is the capital of Y?"}
    p, q = _cf_files(tmp_path, [row, other])
    with pytest.raises(ValueError, match="prompt_id 2 is used by two different"):
        counterfact(p, q)
    p, q = _cf_files(tmp_path, [row, row])
    with pytest.warns(UserWarning, match="repeated"):
        ds = counterfact(p, q)
    assert ds[1].mcq is not None and ds[1].mcq.question == "Where is Y?"


def test_sports_ids_keep_an_integer_index_of_zero(tmp_path):
    """An index column holding the integer 0 (parquet, JSON) is the fact's id; it used to fall
    through to the row position, which another row's index could also be (two facts, one id)."""
    import json

    rows = [{"Unnamed: 0": 5, "athlete": "A One", "sport": "baseball"},
            {"Unnamed: 0": 0, "athlete": "B Two", "sport": "football"},
            {"Unnamed: 0": 1, "athlete": "C Three", "sport": "basketball"}]
    p = tmp_path / "sports.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r.id for r in sports_facts(p)] == ["sports:5", "sports:0", "sports:1"]


def test_a_question_whose_correct_option_is_another_answer_is_left_out(tmp_path):
    """The fact's answer among the question's *false* options: that false option became the answer key."""
    row = {"prompt_id": 2, "question": "Which country borders France?", "target_true": "Belgium",
           "targets_false": ["France", "Italy", "Spain"]}
    p, q = _cf_files(tmp_path, [row])
    with pytest.warns(UserWarning, match="not its question's correct option \\(case_ids \\['2'\\]\\)"):
        ds = counterfact(p, q)
    assert ds[1].mcq is None


def test_parquet_rows_load_like_json_rows(tmp_path):
    """Parquet hands list columns over as numpy arrays and missing strings as NaN: an identical repeated
    question crashed ("truth value of an array is ambiguous") and a missing sports target became 'nan'."""
    import pandas as pd

    row = {"prompt_id": 2, "question": "Where is Y?", "target_true": "France", "targets_false": ["Italy", "Spain"]}
    p, q = _cf_files(tmp_path, [row])
    pq = tmp_path / "mc.parquet"
    pd.DataFrame([row, row]).to_parquet(pq)
    with pytest.warns(UserWarning, match="repeated"):
        ds = counterfact(p, pq)
    assert ds[1].mcq is not None and ds[1].mcq.options[ds[1].mcq.answer_index] == "France"
    sp = tmp_path / "sports.parquet"
    pd.DataFrame([{"athlete": "A One", "sport": "baseball", "inject_sport_without_golf": "football"},
                  {"athlete": "B Two", "sport": "football", "inject_sport_without_golf": None}]).to_parquet(sp)
    assert [r.target_new for r in sports_facts(sp)] == ["football", None]
