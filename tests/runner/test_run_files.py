"""factlens.runner.run_files: a run folder's records must come from one configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from factlens.runner.cli import main
from factlens.runner.report import load_run_dir

FAST = ["--edit", "steps=2", "--suites", "standard,side_effects", "--no-progress", "--eval", "text.n_chunks=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_files") / "planted"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random", *FAST]) == 0
    return out


@pytest.fixture()
def folder(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def _edit(path: Path, fn) -> None:
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def test_a_run_file_from_another_forget_size_is_refused(folder):
    """Run files copied in from a run with another forget size were pooled into one report and comparison."""
    assert len(load_run_dir(folder)["runs"]) == 2
    _edit(folder / "runs" / "seed0" / "random.json", lambda r: r["task"].update(n_forget=r["task"]["n_forget"] // 2))
    with pytest.raises(ValueError, match="different settings.*n_forget"):
        load_run_dir(folder)


def test_a_run_file_with_other_evaluation_settings_is_refused(folder):
    _edit(folder / "runs" / "seed0" / "random.json",
          lambda r: r["eval"]["meta"]["config"]["text"].update(n_chunks=3))
    with pytest.raises(ValueError, match="different settings.*n_chunks"):
        load_run_dir(folder)


def test_a_run_file_of_a_seed_the_folder_never_ran_is_refused(folder):
    (folder / "runs" / "seed7").mkdir()
    shutil.copy(folder / "runs" / "seed0" / "flu.json", folder / "runs" / "seed7" / "flu.json")
    _edit(folder / "runs" / "seed7" / "flu.json", lambda r: r.update(seed=7))
    with pytest.raises(ValueError, match="seed 7 is not one of this folder's seeds"):
        load_run_dir(folder)


def test_a_users_own_json_under_runs_is_left_out_with_a_warning(folder):
    """--overwrite keeps a user's files; report and compare crashed on one with KeyError: 'localization'."""
    (folder / "runs" / "seed0" / "mynotes.json").write_text('{"mine": 1}')
    with pytest.warns(UserWarning, match="not a factlens run file"):
        runs = load_run_dir(folder)["runs"]
    assert sorted(r["localization"] for r in runs) == ["flu", "random"]
