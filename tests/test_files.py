"""factlens.files.write_atomic: the target is the old file or the new one, never half of one."""

import os
import stat
from pathlib import Path

import pytest

from factlens.files import write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "record.json"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_the_temporary_is_hidden_next_to_the_target(tmp_path: Path):
    seen: list[Path] = []
    write_atomic(tmp_path / "a.json", lambda tmp: seen.append(tmp) or tmp.write_text("{}"))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".a.json.") and seen[0].name.endswith(".tmp")
    assert (tmp_path / "a.json").read_text() == "{}" and not seen[0].exists()


def test_a_new_file_gets_the_mode_of_a_plain_open_and_an_old_one_keeps_its_own(tmp_path: Path):
    """The temporary file is created 0600; the result must not be (a run folder shared with a group,
    a report served from the folder)."""
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.json", lambda tmp: tmp.write_text("{}"))
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "new.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644
    (tmp_path / "new.json").chmod(0o640)
    write_atomic(tmp_path / "new.json", lambda tmp: tmp.write_text("[]"))
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640


def test_a_symlinked_target_is_written_through_the_link(tmp_path: Path):
    """The link was replaced by a plain file and its target kept the old content."""
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    write_atomic(link, lambda tmp: tmp.write_text("new"))
    assert link.is_symlink() and target.read_text() == "new" == link.read_text()


def test_a_path_under_an_existing_file_is_refused_before_any_write(tmp_path: Path):
    """Mask.save("notes.txt/mask.json") and the report/compare outputs raised FileExistsError from creating
    the folder (the CLI's check was its own copy; library saves had none)."""
    from factlens.components import Mask
    from factlens.files import check_output

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes.txt is a file, not a folder, so the saved mask cannot be written"):
        Mask.from_labels(["L0.mlp"]).save(tmp_path / "notes.txt" / "mask.json")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output(tmp_path / "notes.txt" / "a" / "b.csv", what="CSV", ours=lambda head: True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
