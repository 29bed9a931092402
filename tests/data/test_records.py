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
