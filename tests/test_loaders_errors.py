"""Loading a file that is not JSON (empty, plain text, binary such as a saved edit) gives a
``ValueError`` naming the file and what it should be: ComponentScores.load, Mask.load and
EvalResult.load raised a bare JSONDecodeError / UnicodeDecodeError that named neither."""

from __future__ import annotations

import pytest

from factlens.components import Mask
from factlens.data import FactDataset
from factlens.evaluation.result import EvalResult
from factlens.scores import ComponentScores

LOADERS = {"ComponentScores": ComponentScores.load, "Mask": Mask.load, "EvalResult": EvalResult.load,
           "FactDataset": FactDataset.from_json}

CONTENTS = {"empty.json": (b"", "is empty"), "blank.json": (b"  \n", "is empty"),
            "notes.txt": (b"hello world", "not valid JSON"),
            "edit.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}", "not UTF-8 text")}


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("name", sorted(CONTENTS))
def test_a_file_that_is_not_json_is_refused_naming_it_and_what_was_expected(tmp_path, kind, name):
    data, problem = CONTENTS[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{name}.*{problem}.*expected .*{kind}") as info:
        LOADERS[kind](path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_still_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Mask.load(tmp_path / "nothing.json")
