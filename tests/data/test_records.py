"""Fact records and datasets (factlens.data.records)."""

from factlens.data import FactDataset, counterfact


def test_dataset_json_round_trip(tmp_path):
    ds = counterfact()[:3]
    ds.to_json(tmp_path / "d.json")
    assert FactDataset.from_json(tmp_path / "d.json").records == ds.records


def test_an_id_of_zero_survives_a_json_round_trip():
    """``from_dict`` read the id 0 as missing and gave the record a hash id, so results keyed by id
    no longer lined up with the fact."""
    from factlens.data.records import FactRecord

    r = FactRecord.from_dict({"subject": "Alvarez", "template": "{} plays the sport of", "answer": "baseball", "id": 0})
    assert r.id == "0"
    assert FactRecord.from_dict({"subject": "A", "template": "{} is", "answer": "b"}).id.startswith("fact:")


def test_a_string_where_a_list_belongs_is_refused_not_split_into_characters():
    """candidates="basketball" gave ten one-letter candidates (every fact "known", format accuracy
    1.0 at chance 0.09), paraphrases="Who?" the four paraphrases "W", "h", "o", "?"."""
    import pytest

    from factlens.data.records import FactRecord, MultipleChoice, Neighbor

    fact = dict(subject="Alvarez", template="{} plays the sport of", answer="baseball")
    for field in ("paraphrases", "candidates"):
        with pytest.raises(ValueError, match=rf"the fact 'Alvarez' -> 'baseball': {field} must be a list of strings, "
                                             r"got a str 'Who\?'"):
            FactRecord(**fact, **{field: "Who?"})
    with pytest.raises(ValueError, match=r"neighborhood must be a list of Neighbor\(prompt, answer\), got str"):
        FactRecord(**fact, neighborhood="Brennan plays the sport of")
    with pytest.raises(ValueError, match=r"dataset 'x': candidates must be a list of strings, got a str 'basketball'"):
        FactDataset((FactRecord(**fact),), name="x", candidates="basketball")
    from factlens.data.loaders import from_records

    with pytest.raises(ValueError, match=r"dataset 'x': candidates must be a list of strings, got a str 'golf'"):
        from_records([FactRecord(**fact)], name="x", candidates="golf")  # was split into 'g', 'o', 'l', 'f' first
    with pytest.raises(ValueError, match=r"the question 'Which sport\?': options must be a list of strings"):
        MultipleChoice("Which sport?", "ABC")
    # lists, tuples and other iterables of strings are taken as before (stored as tuples)
    r = FactRecord(**fact, paraphrases=["Alvarez plays"], candidates=("baseball", "golf"),
                   neighborhood=[Neighbor("Brennan plays", "golf")])
    assert r.paraphrases == ("Alvarez plays",) and r.candidates == ("baseball", "golf") and len(r.neighborhood) == 1
    ds = FactDataset((r,), name="x", candidates=(c for c in ["baseball", "golf"]))
    assert ds.candidates == ("baseball", "golf") and ds.candidates_for(r) == ("baseball", "golf")


def test_an_empty_edit_target_or_a_spaced_neighbor_answer_is_refused_naming_the_fact():
    """FactRecord(target_new="") and Neighbor(prompt, " Madrid") were accepted and failed only when scored,
    with "answers are given without surrounding whitespace, got ''" and no word of the fact."""
    import pytest

    from factlens.data.records import FactRecord, Neighbor

    fact = dict(subject="France", template="The capital of {} is", answer="Paris")
    with pytest.raises(ValueError, match=r"the fact 'France' -> 'Paris': target_new must be non-empty.*got ''"):
        FactRecord(**fact, target_new="")
    with pytest.raises(ValueError, match=r"the fact 'France' -> 'Paris': target_new .* got ' Rome'"):
        FactRecord(**fact, target_new=" Rome")
    for answer in (" Madrid", "Madrid ", ""):
        with pytest.raises(ValueError, match=r"the neighborhood prompt 'The capital of Spain is': its answer must"):
            Neighbor("The capital of Spain is", answer)
    with pytest.raises(ValueError, match="a neighborhood prompt must be non-empty"):
        Neighbor("", "Madrid")
    assert FactRecord(**fact, target_new="Rome", neighborhood=(Neighbor("The capital of Spain is", "Madrid"),))
