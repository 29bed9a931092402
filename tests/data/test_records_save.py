"""FactDataset.to_json refuses to overwrite a file that is not a saved dataset (it replaced any
file without a word, and a folder gave a raw IsADirectoryError); subset names a bad index."""

from __future__ import annotations

import pytest

from factlens.components import Component, Mask
from factlens.data import FactDataset
from factlens.data.records import FactRecord


def _ds(n: int = 3) -> FactDataset:
    return FactDataset(tuple(FactRecord(subject=f"S{i}", template="{} plays", answer="golf") for i in range(n)),
                       name="toy")


def test_to_json_refuses_a_users_file_and_leaves_it_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("MY PRECIOUS NOTES")
    with pytest.raises(ValueError, match=r"notes\.txt exists and is not a saved FactDataset.*left alone"):
        _ds().to_json(notes)
    assert notes.read_text() == "MY PRECIOUS NOTES"


def test_to_json_refuses_another_saved_kind(tmp_path):
    path = tmp_path / "mask.json"
    Mask([Component("mlp", 1)]).save(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not a saved FactDataset"):
        _ds().to_json(path)
    assert path.read_bytes() == before


def test_to_json_on_a_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give the saved FactDataset's file name"):
        _ds().to_json(tmp_path)


def test_to_json_replaces_its_own_earlier_save_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "d.json"
    _ds(3).to_json(path)
    _ds(2).to_json(path)  # a re-run notebook cell
    assert len(FactDataset.from_json(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


def test_subset_with_an_index_out_of_range_names_it_and_the_size():
    ds = _ds(3)
    with pytest.raises(IndexError, match=r"index 999 is out of range for dataset 'toy' of 3 records"):
        ds.subset([0, 999])
    assert [r.subject for r in ds.subset([2, -3])] == ["S2", "S0"]  # in range (negative too) as before


@pytest.mark.parametrize("name", [None, 'with "quotes" and \\ backslash'])
def test_to_json_replaces_its_own_save_whatever_the_name(tmp_path, name):
    ds = FactDataset(_ds().records, name=name)
    path = tmp_path / "d.json"
    ds.to_json(path)
    ds.to_json(path)  # the second save recognises the first as its own
    assert FactDataset.from_json(path).name == name
