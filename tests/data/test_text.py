"""factlens.data.text: where general text comes from, and the clear errors for what is not text."""

from __future__ import annotations

import pytest

from factlens.data.text import load_texts


def test_a_device_is_refused_as_a_text_source_not_called_missing(tmp_path):
    """/dev/null exists; it was reported as "does not exist", which sent the user looking for a typo."""
    with pytest.raises(ValueError, match="/dev/null is not a regular file"):
        load_texts("/dev/null")
    with pytest.raises(ValueError, match="is a folder"):
        load_texts(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "t.txt").write_text("One passage of text.\nAnother passage here.\n")
    assert load_texts(tmp_path / "t.txt") == ["One passage of text.", "Another passage here."]
