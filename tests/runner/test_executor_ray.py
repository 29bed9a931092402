"""The Ray executor on a local Ray instance with the planted model (skipped without ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from factlens.runner import LocalExecutor, RayExecutor, RunConfig, run_experiment  # noqa: E402
from factlens.runner.pipeline import Workspace  # noqa: E402
from factlens.runner.processes import JobError  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _cfg(out: Path, executor: str) -> RunConfig:
    return RunConfig(task="planted", model="planted", localizations=("random", "all_mlps"), param_budget=20000,
                     suites=("standard",), edit={"steps": 2}, out=str(out), executor=executor, show_progress=False)


def test_ray_executor_runs_jobs_and_resumes(local_ray, tmp_path: Path):
    out = tmp_path / "ray"
    s = run_experiment(_cfg(out, "ray"), report=False)
    assert sorted(s.ran) == ["seed0/all_mlps", "seed0/random"] and s.skipped == ()
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "runs/seed0").glob("*.json")}
    assert set(recs) == {"random", "all_mlps"}
    assert all(r["executor"]["name"] == "ray" and r["restore"]["exact"] for r in recs.values())
    # resuming on Ray skips what is done
    s2 = run_experiment(_cfg(out, "ray").replace(localizations=("random", "all_mlps", "nonlocalized")), report=False)
    assert s2.ran == ("seed0/nonlocalized",) and sorted(s2.skipped) == ["seed0/all_mlps", "seed0/random"]

    # the same config on the local executor gives the same masks and metrics (seeded, reproducible)
    local = tmp_path / "local"
    run_experiment(_cfg(local, "local"), executor=LocalExecutor(), report=False)
    for loc in ("random", "all_mlps"):
        a = json.loads((out / f"runs/seed0/{loc}.json").read_text())
        b = json.loads((local / f"runs/seed0/{loc}.json").read_text())
        assert a["mask_labels"] == b["mask_labels"]
        ma = {m["name"]: m["value"] for m in a["eval"]["suites"]["standard"]["metrics"]}
        mb = {m["name"]: m["value"] for m in b["eval"]["suites"]["standard"]["metrics"]}
        assert ma == pytest.approx(mb, abs=1e-6)


def test_ray_job_errors_are_reported(local_ray, tmp_path: Path):
    def boom(item, workspace):
        assert isinstance(workspace, Workspace) and "model_key" not in workspace  # a fresh one per job
        if item == 2:
            raise ValueError("job two failed")
        return item * 10

    got: list[tuple[int, int]] = []
    with pytest.raises(JobError, match="1 Ray job") as err:
        RayExecutor().map(boom, [1, 2, 3], on_result=lambda i, r: got.append((i, r)))
    assert sorted(got) == [(1, 10), (3, 30)]  # the other results still arrive
    # the job's own exception, as local workers give it: the CLI prints a bad setting instead of a traceback
    assert isinstance(err.value.causes[0], ValueError) and "job two failed" in str(err.value.causes[0])


def test_ray_setting_errors_exit_2_like_local_ones(local_ray, tmp_path: Path, capsys):
    """A forget size the facts cannot fill gave a RuntimeError traceback under Ray (exit 2 locally)."""
    from factlens.runner.cli import main

    rc = main(["run", "planted", "--model", "planted", "--out", str(tmp_path / "r"), "--localizations", "random",
               "--suites", "standard", "--forget-size", "1000", "--param-budget", "20000", "--no-progress",
               "--no-report", "--executor", "ray"])
    assert rc == 2 and "use at most" in capsys.readouterr().err
