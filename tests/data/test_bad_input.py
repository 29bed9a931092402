"""Bad and unusual input to the data layer (issue 11): one test per item."""

import json
import warnings

import pytest

from factlens.data import FactDataset, FactRecord, counterfact, sports_facts

pytestmark = pytest.mark.usefixtures("one_thread")


def _rec(subject, answer="basketball", **kw):
    return FactRecord(subject=subject, template="{} plays the sport of", answer=answer, **kw)


def _rome(case_id, subject="France", true="Paris", new="Rome", prompt="The capital of {} is", relation="P36"):
    return {"case_id": case_id, "requested_rewrite": {
        "prompt": prompt, "subject": subject, "relation_id": relation,
        "target_true": {"str": true, "id": "Q1"}, "target_new": {"str": new, "id": "Q2"}}}


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


# --- item 2: every record has a stable unique id -----------------------------------------------


def test_records_without_id_get_distinct_stable_ids():
    from factlens.data.records import fact_id

    a, b = _rec("LeBron James"), _rec("Stephen Curry")
    assert a.id and b.id and a.id != b.id
    assert a.id == _rec("LeBron James").id == fact_id("LeBron James", "{} plays the sport of", "basketball")
    assert FactRecord.from_dict(a.to_dict()).id == a.id
    assert _rec("X", id="own").id == "own"


def test_evaluation_groups_are_per_fact_for_records_without_ids():
    ds = FactDataset((_rec("A"), _rec("B"), _rec("C", "football")))
    assert len({r.id for r in ds}) == 3


def test_duplicate_ids_within_a_dataset_raise():
    with pytest.raises(ValueError, match="id 'x' is used by two different facts"):
        FactDataset((_rec("A", id="x"), _rec("B", id="x")))


# --- item 3: duplicate facts -------------------------------------------------------------------


def test_repeated_facts_are_deduplicated_with_a_warning():
    with pytest.warns(UserWarning, match="left out 1 repeated fact"):
        ds = FactDataset((_rec("A", id="1"), _rec("B", id="2"), _rec("A", id="3")))
    assert [r.id for r in ds] == ["1", "2"]


def test_conflicting_duplicate_facts_raise():
    with pytest.raises(ValueError, match="conflicting duplicate facts"):
        FactDataset((_rec("A"), _rec("A", "football")))


def test_repeated_facts_never_land_in_two_task_splits():
    from factlens.tasks import counterfact_editing

    cf = counterfact()
    with pytest.warns(UserWarning, match="repeated fact"):
        doubled = FactDataset(cf.records + tuple(FactRecord.from_dict({**r.to_dict(), "id": f"copy-{r.id}"})
                                                 for r in cf.records[:40]), name="doubled")
    assert len(doubled) == len(cf)
    t = counterfact_editing(doubled, n_forget=16, seed=0)
    prompts = [{r.prompt for r in s} for s in (t.forget, t.retain, t.maintain)]
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2])


def test_counterfact_duplicate_case_ids(tmp_path):
    p = _write(tmp_path, "cf.json", [_rome(1), _rome(2, "Germany", "Berlin"), _rome(1)])
    with pytest.warns(UserWarning, match=r"repeated record\(s\) with case_ids \['1'\]"):
        ds = counterfact(p)
    assert [r.id for r in ds] == ["1", "2"]
    p = _write(tmp_path, "cf2.json", [_rome(1), _rome(1, "Germany", "Berlin")])
    with pytest.raises(ValueError, match="case_id 1 is used by two different records"):
        counterfact(p)


# --- item 11: files that hold no records -------------------------------------------------------


@pytest.mark.parametrize("content, found", [
    ({"case_id": 1, "requested_rewrite": {}}, r"\['case_id', 'requested_rewrite'\]"),
    ({"rows": [_rome(1)]}, r"\['rows'\]"),
    ([], "holds no records"),
])
def test_counterfact_file_without_records_raises(tmp_path, content, found):
    p = _write(tmp_path, "cf.json", content)
    with pytest.raises(ValueError, match=found):
        counterfact(p)


# --- clear errors --------------------------------------------------------------------------------


def test_csv_short_row_names_the_line(tmp_path):
    p = tmp_path / "sports.csv"
    p.write_text("athlete,sport\nLeBron James,basketball\nTom Brady\n")
    with pytest.raises(ValueError, match=r"sports.csv, line 3: too few fields"):
        sports_facts(p)


def test_conflicting_sports_rows_raise(tmp_path):
    p = tmp_path / "sports.csv"
    p.write_text("athlete,sport\nLeBron James,basketball\nLeBron James,football\n")
    with pytest.raises(ValueError, match="two sports"):
        sports_facts(p)


@pytest.mark.parametrize("name", ["cf.json", "cf.jsonl", "sports.csv"])
def test_non_utf8_file_error_names_the_file(tmp_path, name):
    p = tmp_path / name
    text = json.dumps([_rome(1, "Málaga")] if name == "cf.json" else _rome(1, "Málaga"), ensure_ascii=False)
    if name.endswith(".csv"):
        text = "athlete,sport\nJosé Calderón,basketball\n"
    p.write_bytes(text.encode("latin-1"))
    load = sports_facts if name.endswith(".csv") else counterfact
    with pytest.raises(ValueError, match=rf"{name}: not UTF-8"):
        load(p)


@pytest.mark.parametrize("drop, field", [("subject", "subject"), ("target_true", "target_true"),
                                         ("requested_rewrite", "requested_rewrite"), ("case_id", "case_id")])
def test_counterfact_record_missing_field_names_record_and_field(tmp_path, drop, field):
    rows = [_rome(1), _rome(2, "Germany", "Berlin")]
    if drop in rows[1]:
        del rows[1][drop]
    else:
        del rows[1]["requested_rewrite"][drop]
    p = _write(tmp_path, "cf.json", rows)
    with pytest.raises(ValueError, match=rf"record 1.* no '{field}' field"):
        counterfact(p)


def test_mcq_ids_that_match_nothing(tmp_path):
    p = _write(tmp_path, "cf.json", [_rome(1), _rome(2, "Germany", "Berlin")])
    q = tmp_path / "mcq.jsonl"
    mcq = {"question": "Capital?", "target_true": "Paris", "targets_false": ["Rome", "Lima", "Oslo"]}
    q.write_text("\n".join(json.dumps({**mcq, "prompt_id": i}) for i in (7, 8)))
    with pytest.raises(ValueError, match="no multiple-choice prompt_id matches a case_id"):
        counterfact(p, q)
    q.write_text(json.dumps({**mcq, "prompt_id": 1}))
    with pytest.warns(UserWarning, match="1 of 2 facts have no multiple-choice question"):
        ds = counterfact(p, q)
    assert ds[0].mcq is not None and ds[1].mcq is None


def test_shared_counterfact_sample_loads_with_one_warning_only(shared_data):
    """The one warning: case 1661's options say 'Buddhist philosophy' where CounterFact says 'Buddhism'."""
    d = shared_data / "counterfact"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = counterfact(d / "counterfact_sample.json", d / "counterfact_sample_mcq.jsonl")
    assert len(ds) == 300 and len({r.id for r in ds}) == 300
    assert len(caught) == 1 and "case_ids ['1661']" in str(caught[0].message)


def test_dataset_of_strings_raises_type_error():
    with pytest.raises(TypeError, match="not a FactRecord"):
        FactDataset(("LeBron James plays the sport of",))
