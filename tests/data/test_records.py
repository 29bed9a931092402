"""Fact records and datasets (factlens.data.records)."""

from factlens.data import FactDataset, counterfact


def test_dataset_json_round_trip(tmp_path):
    ds = counterfact()[:3]
    ds.to_json(tmp_path / "d.json")
    assert FactDataset.from_json(tmp_path / "d.json").records == ds.records
