"""Bad and unusual input to the data layer (issue 11): one test per item."""

import json
import warnings

import pytest

from factlens.data import FactDataset, FactRecord, Neighbor, counterfact, sports_facts

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


@pytest.mark.parametrize("second_row, found", [
    ("Tom Brady", r"sports.csv, line 3: too few fields"),
    ("Tiger Woods,", r"sports.csv: record 1: unknown sport '' for 'Tiger Woods'"),
])
def test_a_bad_csv_row_names_the_line_or_record(tmp_path, second_row, found):
    p = tmp_path / "sports.csv"
    p.write_text(f"athlete,sport\nLeBron James,basketball\n{second_row}\n")
    with pytest.raises(ValueError, match=found):
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


# --- wrong field types, rows checked one by one (audit s43) --------------------------------------


_MCQ = {"question": "What is the capital of France?", "target_true": "Paris", "targets_false": ["Rome", "Lima", "Oslo"],
        "prompt_id": 1}


@pytest.mark.parametrize("key, value, field", [
    ("paraphrase_prompts", "France's capital is", "paraphrase_prompts must be a list of strings, got a str"),
    ("neighborhood_prompts", "The capital of Spain is", "neighborhood_prompts must be a list of prompts, got a str"),
    ("paraphrase_prompts", ["France's capital is", 3], "paraphrase_prompts must be a list of strings, but it holds"),
])
def test_a_string_where_a_list_belongs_is_refused_not_read_as_characters(tmp_path, key, value, field):
    """A string instead of a list loaded as one paraphrase (or neighbor) per character."""
    p = _write(tmp_path, "cf.json", [_rome(1), {**_rome(2, "Germany", "Berlin"), key: value}])
    with pytest.raises(ValueError, match=rf"cf.json: record 1 \(case_id 2\): {field}"):
        counterfact(p)


@pytest.mark.parametrize("change, message", [
    ({"targets_false": "Rome"}, r"targets_false must be a list of strings, got a str 'Rome'"),
    ({"question": None}, r"has no 'question' string"),
    ({"targets_false": None}, r"has no 'targets_false'"),
    ({"target_true": None}, r"target_true \(the correct option\) must be a non-empty string"),
])
def test_a_malformed_multiple_choice_row_names_the_file_row_and_prompt_id(tmp_path, change, message):
    """Such rows gave a question with the options 'R', 'o', 'm', 'e', or a bare KeyError / AttributeError."""
    p = _write(tmp_path, "cf.json", [_rome(1), _rome(2, "Germany", "Berlin")])
    q = tmp_path / "mcq.jsonl"
    q.write_text(json.dumps({**_MCQ, "prompt_id": 2, "target_true": "Berlin"}) + "\n" + json.dumps({**_MCQ, **change}))
    with pytest.raises(ValueError, match=rf"mcq.jsonl: multiple-choice record 1 \(prompt_id 1\).*{message}"):
        counterfact(p, q)


@pytest.mark.parametrize("row, found", [
    ({"athlete": "B Two"}, "'sport' must be a string, found no 'sport' value"),
    ({"athlete": "B Two", "sport": 3}, "'sport' must be a string, found the int 3"),
    ({"sport": "football"}, "'athlete' must be a string, found no 'athlete' value"),
])
def test_every_sports_row_is_checked_not_only_the_first(tmp_path, row, found):
    """Only the first row's columns were checked: a later one crashed with a bare KeyError / AttributeError."""
    p = _write(tmp_path, "sports.json", [{"athlete": "A One", "sport": "baseball"}, row])
    with pytest.raises(ValueError, match=rf"sports.json: record 1 \(athlete .*\): {found}"):
        sports_facts(p)


@pytest.mark.parametrize("where, make", [
    ("template", lambda: FactRecord(subject="A", template="{} plays the sport of ", answer="golf")),
    ("paraphrase", lambda: _rec("A", paraphrases=("A plays the sport of\n",))),
    ("neighborhood prompt", lambda: _rec("A", neighborhood=(Neighbor("B plays the sport of ", "golf"),))),
])
def test_a_prompt_with_a_trailing_space_is_refused(where, make):
    """The answer was scored after a lone space token ('... is', '▁', '▁Paris'), not as natural text."""
    with pytest.raises(ValueError, match=rf"{where} .* ends in whitespace: remove the trailing space"):
        make()


def test_a_counterfact_prompt_with_a_trailing_space_names_the_record(tmp_path):
    p = _write(tmp_path, "cf.json", [_rome(1), _rome(2, "Germany", "Berlin", prompt="The capital of {} is ")])
    with pytest.raises(ValueError, match=r"cf.json: record 1 \(case_id 2\): template .* remove the trailing space"):
        counterfact(p)
    p = _write(tmp_path, "cf.json", [{**_rome(1), "paraphrase_prompts": ["France's capital city is "]}])
    with pytest.raises(ValueError, match=r"record 0 \(case_id 1\): paraphrase .* remove the trailing space"):
        counterfact(p)


def test_the_shipped_and_shared_prompts_have_no_trailing_space(shared_data_or_none):
    """The trailing-space check refuses none of the built-in facts, nor the reference data when present."""
    datasets = [sports_facts(), counterfact()]
    if shared_data_or_none is not None:
        cf = shared_data_or_none / "counterfact"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets += [sports_facts(shared_data_or_none / "sports_facts" / "sports.csv"),
                         counterfact(cf / "counterfact_sample.json", cf / "counterfact_sample_mcq.jsonl")]
    prompts = [p for ds in datasets for r in ds for p in (r.prompt, *r.paraphrases, *(n.prompt for n in r.neighborhood))]
    assert len(prompts) > 1000 and not [p for p in prompts if p != p.rstrip()]


def test_more_options_than_letters_are_refused_where_the_question_is_made():
    """A ninth option crashed the multiple-choice format with a bare IndexError (letters A-H)."""
    from factlens.data import MultipleChoice, format_prompts
    from factlens.data.loaders import from_records

    with pytest.raises(ValueError, match=r"at most 8 options \(letters A-H\), got 9"):
        MultipleChoice("Which city?", tuple(f"city{i}" for i in range(9)))
    eight = MultipleChoice("Which city?", tuple(f"city{i}" for i in range(8)), 0, 1)
    ds = from_records([_rec("A", answer="city0", target_new="city1", mcq=eight)])
    assert format_prompts(ds, "mcq")[0].candidates == tuple("ABCDEFGH")


@pytest.mark.parametrize("record, message", [
    ("A plays golf", r"record 1 is a str \('A plays golf'\), not an object"),
    ({"subject": "B", "template": "{} plays", "answer": 7, "id": "b"}, r"record 1 \(id 'b'\): answer must be a string"),
    ({"subject": "B", "template": "{} plays", "answer": "golf", "paraphrases": "B plays"},
     r"record 1: paraphrases must be a list of strings, got a str"),
    ({"subject": "B", "template": "{} plays", "answer": "golf", "candidates": "golf"},
     r"record 1: candidates must be a list of strings, got a str"),
    ({"subject": "B", "template": "{} plays", "answer": "golf", "neighborhood": [{"prompt": 5, "answer": "x"}]},
     r"record 1: a neighborhood prompt's prompt must be a string, got int 5"),
    ({"subject": "B", "template": "{} plays", "answer": "golf", "neighborhood": [{"prompt": "C plays", "answer": 7}]},
     r"record 1: a neighborhood prompt's answer must be a string, got int 7"),
])
def test_a_bad_dataset_json_record_is_named(tmp_path, record, message):
    """from_json read a string as per-character paraphrases or candidates, and gave errors that named no record."""
    ok = {"subject": "A", "template": "{} plays", "answer": "golf"}
    p = _write(tmp_path, "ds.json", {"name": "x", "records": [ok, record]})
    with pytest.raises(ValueError, match=rf"ds.json: {message}"):
        FactDataset.from_json(p)


def test_a_dataset_candidates_string_is_refused_not_read_as_characters(tmp_path):
    p = _write(tmp_path, "ds.json", {"name": "x", "candidates": "golf",
                                     "records": [{"subject": "A", "template": "{} plays", "answer": "golf"}]})
    with pytest.raises(ValueError, match="ds.json: candidates must be a list of strings, got a str"):
        FactDataset.from_json(p)


def test_mmlu_non_utf8_file_is_named(tmp_path):
    from factlens.data.mmlu import load_mmlu

    p = tmp_path / "french_dev.csv"
    p.write_bytes("Qui a écrit?,Hugo,Zola,Camus,Sartre,A\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"french_dev.csv: not UTF-8 text"):
        load_mmlu(p)


def test_mmlu_source_expands_the_home_folder(tmp_path, monkeypatch):
    """'~/...' was not expanded (the runner's checks do expand it): the run failed after localizing and editing."""
    from factlens.data import mmlu

    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "anatomy_dev.csv").write_text("What is 2+2?,3,4,5,6,B\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    qs = mmlu.load_mmlu("~/mmlu")
    assert [(q.subject, q.answer_letter) for q in qs] == [("anatomy", "B")]
    assert "Chance is 0.25" not in mmlu.__doc__ and "MMLUResult.chance" in mmlu.__doc__


@pytest.mark.parametrize("source", ["data/mmlu/dev", "mmlu/dev.csv"])
def test_a_missing_local_mmlu_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, source):
    """A missing local path with a slash was taken for a Hugging Face dataset name and failed there."""
    from factlens.data import mmlu

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mmlu, "_from_datasets", lambda *a: pytest.fail(f"{source!r} was sent to the Hub"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mmlu.load_mmlu(source)
