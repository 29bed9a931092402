"""A run leaves the user's files as they were: a JSON of theirs at a unit's path, the folder's
copy of ``--config`` after a resume that stops before its first result, the parent folders of a
failed first run's ``--out``; and settings refused before any folder is opened (``--executor
ray`` without ray, an empty input path)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from factlens.runner import RunConfig
from factlens.runner import executor as executor_mod
from factlens.runner.cli import main
from factlens.runner.run_dir import RunDirError

pytestmark = pytest.mark.usefixtures("one_thread")

_FAST = ["--no-progress", "--no-report", "--suites", "standard", "--edit", "steps=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished planted run of all_mlps (seed 0), made once per module."""
    out = tmp_path_factory.mktemp("userfiles") / "run"
    assert main(["run", "planted", "--out", str(out), "--localizations", "all_mlps", *_FAST]) == 0
    return out


def test_a_users_json_at_a_units_path_is_refused_not_replaced(finished: Path, tmp_path: Path, capsys):
    """A resume adding nonlocalized replaced the user's runs/seed0/nonlocalized.json with its record
    and listed it in the manifest (a later --overwrite deleted it). The run is refused before any job,
    naming the file, and the folder stays as it was."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    mine = out / "runs" / "seed0" / "nonlocalized.json"
    mine.write_text('{"my": "notes about the nonlocalized unit"}')
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["run", "planted", "--out", str(out), "--localizations", "all_mlps,nonlocalized", *_FAST]) == 2
    err = capsys.readouterr().err
    assert "nonlocalized.json" in err and "did not write" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert "runs/seed0/nonlocalized.json" not in json.loads((out / "manifest.json").read_text())["files"]


def test_an_interrupted_resume_restores_the_folders_config_copy(finished: Path, tmp_path: Path, monkeypatch):
    """Ctrl-C before the resume's first result put run_config.json back but left config.toml with the
    new sweep (the user's earlier copy lost); a copy the folder did not have goes again."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    base = 'task = "planted"\nsuites = ["standard"]\nshow_progress = false\n[edit]\nsteps = 1\n'
    a.write_text('# sweep A\nlocalizations = ["all_mlps"]\n' + base)
    b.write_text('# sweep B\nlocalizations = ["all_mlps", "nonlocalized"]\n' + base)

    def _interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                    out=str(out), show_progress=False, edit={"steps": 1})
    monkeypatch.setattr(executor_mod, "_run", _interrupted)
    with pytest.raises(KeyboardInterrupt):  # the folder had no copy: the interrupted run's goes
        executor_mod.run_experiment(cfg, config_file=b, report=False)
    assert not (out / "config.toml").exists()
    assert "config.toml" not in json.loads((out / "manifest.json").read_text())["files"]
    monkeypatch.undo()
    executor_mod.run_experiment(cfg, config_file=a, report=False)  # the copy of sweep A
    copy, settings = (out / "config.toml").read_bytes(), (out / "run_config.json").read_bytes()
    monkeypatch.setattr(executor_mod, "_run", _interrupted)
    with pytest.raises(KeyboardInterrupt):
        executor_mod.run_experiment(cfg.replace(localizations=("all_mlps", "nonlocalized")), config_file=b,
                                    report=False)
    assert (out / "config.toml").read_bytes() == copy and (out / "run_config.json").read_bytes() == settings


def test_executor_ray_without_ray_is_a_setting_error(tmp_path: Path, capsys, monkeypatch):
    """Without ray installed, --executor ray ended in a traceback (exit 1) at the first job, after the
    folder was opened; it is refused up front (exit 2), and run_experiment opens no folder."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    out = tmp_path / "ray"
    assert main(["run", "planted", "--executor", "ray", "--out", str(out), "--localizations", "all_mlps", *_FAST]) == 2
    err = capsys.readouterr().err
    assert "needs ray" in err and "Traceback" not in err and not out.exists()
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                    out=str(out), show_progress=False, executor="ray")
    with pytest.raises(ValueError, match="needs ray"):
        executor_mod.run_experiment(cfg, report=False)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--text-source=", "--mmlu-source="])
def test_an_empty_input_path_is_refused_up_front(tmp_path: Path, capsys, flag: str):
    """An empty path read as the current folder and failed inside the job ("'.' is a folder")."""
    out = tmp_path / "a" / "b" / "c"
    assert main(["run", "planted", "--out", str(out), "--localizations", "all_mlps", "--no-progress", "--no-report",
                 "--suites", "standard,side_effects", "--edit", "steps=1", flag]) == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_failed_first_run_removes_the_parents_it_made(tmp_path: Path, monkeypatch):
    """A first run that fails in its job removed its --out but left the empty parents it created."""
    def _fails(*args, **kwargs):
        raise RunDirError("a setting only the job checks")

    monkeypatch.setattr(executor_mod, "_run", _fails)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("mine")
    for out in (tmp_path / "a" / "b" / "c", tmp_path / "keep" / "x" / "y"):
        cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                        out=str(out), show_progress=False)
        with pytest.raises(RunDirError):
            executor_mod.run_experiment(cfg, report=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["keep", "keep/mine.txt"]
