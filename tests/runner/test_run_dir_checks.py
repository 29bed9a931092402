"""The run folder's own checks: which results an ``--overwrite`` run counts as its own, the
resume check of the suites, and each run record's baseline-cache counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from factlens.runner import RunConfig, RunDir
from factlens.runner.cli import main
from factlens.runner.run_dir import SET_ASIDE

pytestmark = pytest.mark.usefixtures("one_thread")

# the cheapest finished run: two units, one suite, one edit step
_PLANTED = ["--no-progress", "--no-report", "--suites", "standard", "--edit", "steps=1"]
_LOCS = ["--localizations", "random,all_mlps"]


def _cfg(out: Path, **kw) -> RunConfig:
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",), out=str(out),
                show_progress=False, edit={"steps": 1})
    return RunConfig(**{**base, **kw})


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished planted run (random, all_mlps; seed 0), made once per module."""
    out = tmp_path_factory.mktemp("checks") / "run"
    assert main(["run", "planted", "--out", str(out), *_LOCS, *_PLANTED]) == 0
    return out


@pytest.fixture()
def with_users_json(finished: Path, tmp_path: Path) -> Path:
    """A copy of :func:`finished` with a JSON file of the user's among its run records."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "runs" / "seed0" / "my_notes.json").write_text('{"my": "notes"}')
    return out


# -- defect 1: a user's JSON under runs/ is no result of the --overwrite run ---------------------


def test_a_failed_overwrite_run_keeps_the_results_beside_a_users_json(with_users_json: Path):
    """docs/runner.md: --overwrite leaves a user's JSON under runs/ alone, and a run that fails before
    its first result puts the old results back. The user's file counted as the new run's result, so
    the set-aside results were deleted and run_config.json kept the failed settings."""
    out = with_users_json
    before = _files(out)
    with pytest.warns(UserWarning, match="ended before its first result.*earlier results are back"):
        assert main(["run", "planted", "--out", str(out), *_LOCS, "--forget-size", "1000", "--overwrite",
                     *_PLANTED]) == 2
    assert _files(out) == before and not (out / SET_ASIDE).exists()
    assert RunDir(out).stored()["config"]["forget_size"] != 1000


def test_a_killed_overwrite_run_is_settled_beside_a_users_json(tmp_path: Path):
    """The same for an --overwrite run killed outright before its first result, which the next run
    settles; once the killed run had a result of its own, the set-aside results go."""
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out))
    rd.write_json(rd.run_path(0, "all_mlps"), {"kind": "factlens.run"})
    (out / "runs/seed0/my_notes.json").write_text('{"kind": "factlens.run"}')  # even one that looks like a record
    before = _files(out)
    RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)  # ... and killed before its first result
    assert not rd.run_path(0, "all_mlps").exists() and (out / "runs/seed0/my_notes.json").exists()
    with pytest.warns(UserWarning, match="stopped before its first result"):
        RunDir(out).open(_cfg(out))
    after = _files(out)
    assert after.keys() == before.keys() and rd.stored()["config"]["edit"] == {"steps": 1}
    assert {k: v for k, v in after.items() if k.name != "run_config.json"} \
        == {k: v for k, v in before.items() if k.name != "run_config.json"}
    RunDir(out).open(_cfg(out, edit={"steps": 2}), overwrite=True)
    rd.write_json(rd.run_path(0, "all_mlps"), {"kind": "factlens.run"})  # killed after its first result
    RunDir(out).open(_cfg(out, edit={"steps": 2}))
    assert not (out / SET_ASIDE).exists() and rd.stored()["config"]["edit"] == {"steps": 2}
    assert (out / "runs/seed0/my_notes.json").read_text() == '{"kind": "factlens.run"}'


def test_a_users_json_does_not_keep_a_failed_first_runs_settings(tmp_path: Path):
    """A fresh run that failed before its first result deletes what it wrote (the corrected command
    would be refused as a different configuration); a user's JSON under runs/ stays, and is no result."""
    out = tmp_path / "run"
    rd = RunDir(out)
    rd.open(_cfg(out, forget_size=1000))
    (out / "runs/seed0").mkdir(parents=True)
    (out / "runs/seed0/my_notes.json").write_text('{"my": "notes"}')
    assert rd.discard_if_empty(remove_folder=False, plans_too=True)
    assert not rd.config_path.exists() and (out / "runs/seed0/my_notes.json").read_text() == '{"my": "notes"}'


# -- defect 4: the order of --suites decides no number ---------------------------------------------


def test_a_resume_with_the_suites_in_another_order_is_accepted(tmp_path: Path):
    """The resume was refused as a different configuration when only the order of --suites differed;
    the folder keeps its stored order. Other suites are still refused."""
    from factlens.runner.executor import ConfigMismatchError

    out = tmp_path / "run"
    RunDir(out).open(_cfg(out, suites=("standard", "side_effects")))
    merged = RunDir(out).open(_cfg(out, suites=("side_effects", "standard")))
    assert merged.suites == ("standard", "side_effects")
    assert RunDir(out).stored()["config"]["suites"] == ["standard", "side_effects"]
    with pytest.raises(ConfigMismatchError, match="suites"):
        RunDir(out).open(_cfg(out, suites=("side_effects",)))
    with pytest.raises(ConfigMismatchError, match="suites"):
        RunDir(out).open(_cfg(out, suites=("standard", "side_effects", "formats")))


# -- defect 2: a record's baseline_cache counts are the unit's own lookups ----------------------------


def test_each_record_counts_its_own_baseline_lookups(finished: Path):
    """The records held the worker's running totals over all its jobs (the second unit: 11 hits and
    11 misses, though it computed nothing); each unit makes the same lookups of the unedited model,
    the first computes them and the second reads them from the cache."""
    recs = [json.loads(p.read_text())["baseline_cache"] for p in sorted((finished / "runs/seed0").glob("*.json"))]
    assert len(recs) == 2
    lookups = {r["hits"] + r["misses"] + r["store_hits"] for r in recs}
    assert len(lookups) == 1 and lookups.pop() > 0
    assert sorted(r["misses"] for r in recs)[0] == 0
    assert sum(r["misses"] for r in recs) == max(r["entries"] for r in recs)



def test_a_run_killed_before_its_plan_does_not_refuse_the_corrected_command(tmp_path: Path):
    """A fresh run killed (kill -9) right after writing its settings left only run_config.json and the
    manifest; the corrected command was refused as "results of a different configuration"."""
    from factlens.runner.executor import ConfigMismatchError, run_experiment

    out = tmp_path / "run"
    RunDir(out).open(_cfg(out, forget_size=8))  # ... killed here: no plan, no result
    with pytest.warns(UserWarning, match="held only the settings of a run that ended before its first result"):
        run_experiment(_cfg(out, forget_size=4), report=False)
    assert RunDir(out).stored()["config"]["forget_size"] == 4 and RunDir(out).own_results()
    with pytest.raises(ConfigMismatchError, match="different configuration"):  # results now: refused as before
        run_experiment(_cfg(out, forget_size=8), report=False)
