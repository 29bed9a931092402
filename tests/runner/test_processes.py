"""LocalExecutor(workers=N): the same run files as one process, failures reported after the other jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from factlens.runner import RunConfig, run_experiment
from factlens.runner.executor import LocalExecutor
from factlens.runner.pipeline import Job, run_job
from factlens.runner.processes import JobError, ProcessPool

#: Fields that say how and when a job ran, not what it computed.
VOLATILE = {"timings", "cpu_seconds", "versions", "finished_at", "executor", "baseline_cache", "peak_rss_gb", "seconds",
            "total_seconds", "train_seconds", "load_seconds", "copy_seconds", "data_seconds", "seconds_per_step"}


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _files(out: Path) -> dict[str, dict]:
    return {p.relative_to(out).as_posix(): _strip(json.loads(p.read_text()))
            for p in sorted(out.rglob("*.json")) if p.parent.name != out.name or p.name.startswith("plan")}


def test_two_workers_write_the_same_runs(tmp_path: Path):
    cfg = RunConfig(task="planted", model="planted", localizations=("flu", "random", "all_mlps"), seeds=(0, 1),
                    suites=("standard", "side_effects", "relearning", "mechanisms"), show_progress=False,
                    edit={"steps": 2}, eval={"text.n_chunks": 2, "relearning.steps": 2})
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the one-process run with the workers' thread count
    try:
        one = run_experiment(cfg.replace(out=str(tmp_path / "one")), executor=LocalExecutor(), report=False)
    finally:
        torch.set_num_threads(n)
    ex = LocalExecutor(workers=2, threads=1)
    try:
        two = run_experiment(cfg.replace(out=str(tmp_path / "two")), executor=ex, report=False)
    finally:
        ex.close()
    assert sorted(one.ran) == sorted(two.ran) and len(one.ran) == 6
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(a) == sorted(b) and any(k.startswith("runs/") for k in a)
    for name in a:
        assert a[name] == b[name], name
    rec = json.loads((tmp_path / "two" / "runs" / "seed1" / "random.json").read_text())
    assert rec["executor"] == {"name": "local", "workers": 2, "threads_per_worker": 1}
    # the two-worker jobs started beside their seed's plan and read it when they needed it
    assert "plan_wait" in rec["timings"]
    assert "plan_wait" not in json.loads((tmp_path / "one" / "runs" / "seed1" / "random.json").read_text())["timings"]


def test_a_failed_job_does_not_stop_the_others():
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                    show_progress=False, edit={"steps": 1}).to_dict()
    plan = {"param_budget": 1000, "budget_source": "config", "flu": None}
    jobs = [Job(cfg, 0, "all_mlps", plan, False), Job(cfg, 0, "no_such_localization", plan, False)]
    done: list[str] = []
    with ProcessPool(2, threads=1) as pool:
        with pytest.raises(JobError, match=r"1 job\(s\) failed: \['seed0/no_such_localization'\]"):
            pool.map(run_job, jobs, on_result=lambda job, rec: done.append(job.key))
    assert done == ["seed0/all_mlps"]


def test_bad_worker_counts():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        LocalExecutor(workers=0)
    with pytest.raises(ValueError, match="workers must be a whole number"):
        RunConfig(task="planted", model="planted", workers=0)
    with pytest.raises(ValueError, match="only the local executor uses worker processes"):
        RunConfig(task="planted", model="planted", executor="ray", workers=2)


def _store_of(item, workspace):
    """A job that reports its worker's BaselineStore folder (a module-level function: workers import it)."""
    return workspace.baseline_store


def test_workers_share_one_baseline_folder_that_close_removes():
    got: list = []
    with ProcessPool(2, threads=1) as pool:
        pool.map(_store_of, [0, 1, 2, 3], on_result=lambda item, store: got.append(store))
        folder = pool.store
        assert folder is not None and Path(folder).is_dir()
    assert got == [folder] * 4  # every worker's unedited-model numbers go to the same folder
    assert pool.store is None and not Path(folder).exists()


def test_a_failed_plan_fails_the_jobs_that_wait_for_it_instead_of_hanging(tmp_path: Path):
    # the FLU probe rejects cv=-3, so the plan fails; both jobs started beside it and wait for its budget/mechanisms
    cfg = RunConfig(task="planted", model="planted", localizations=("random", "all_mlps"),
                    suites=("standard", "mechanisms"), show_progress=False, edit={"steps": 1},
                    localize_options={"flu": {"cv": -3}}, out=str(tmp_path / "run"))
    ex = LocalExecutor(workers=2, threads=1)
    try:
        with pytest.raises(JobError,
                           match=r"3 job\(s\) failed: .*plan/seed0.*seed0/random.*seed0/all_mlps.*need cv >= 2") as err:
            run_experiment(cfg, executor=ex, report=False)
    finally:
        ex.close()
    # the workers' exceptions come back as objects too, so the driver can tell a bad setting by its type
    assert any(isinstance(c, ValueError) and "need cv >= 2" in str(c) for c in err.value.causes)
    assert err.value.__cause__ is err.value.causes[0]
    assert not list((tmp_path / "run").rglob("runs/*/*.json"))


_DRIVER = """
import os, sys, time
from factlens.runner.plan_handoff import PlanHandoff
from factlens.runner.processes import ProcessPool


def pid(item, workspace):
    return os.getpid()


if __name__ == "__main__":
    pool = ProcessPool(2, threads=1)
    pids = []
    pool.map(pid, [0, 1, 2, 3], on_result=lambda item, p: pids.append(p))
    plans = PlanHandoff.temporary(within=pool.scratch()).folder  # as run_experiment makes it
    print(" ".join(map(str, sorted(set(pids)))), pool.store, plans, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\\nState:\\tZ" not in state  # a zombie has ended


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_end_when_the_driver_is_killed_outright(tmp_path: Path):
    """SIGKILL (the out-of-memory killer) leaves no stop message: the workers waited for ever, each with
    its model copy, and the shared store folder stayed behind."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        workers, store, plans = [int(x) for x in line[:-2]], line[-2], line[-1]
        assert len(workers) >= 1 and all(_alive(w) for w in workers) and Path(store).is_dir() and Path(plans).is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        assert not Path(store).exists() and not Path(plans).exists()
    finally:
        proc.kill()


def test_the_plan_handoff_folder_is_in_the_workers_folder(tmp_path: Path, monkeypatch):
    """Jobs that wait for their seed's plan read it from a temporary folder; made in the system's
    temporary directory, it stayed there when the driver was killed outright (the workers remove
    their own folder as they end, test above)."""
    from factlens.runner import plan_handoff

    made: list[str] = []
    real = plan_handoff.PlanHandoff.run

    def run(self, *args, **kwargs):
        made.append(self.folder)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(plan_handoff.PlanHandoff, "run", run)
    cfg = RunConfig(task="planted", model="planted", localizations=("random",), suites=("standard",),
                    show_progress=False, edit={"steps": 1}, out=str(tmp_path / "run"))
    ex = LocalExecutor(workers=2, threads=1)
    try:
        run_experiment(cfg, executor=ex, report=False)
        assert len(made) == 1 and Path(made[0]).parent == Path(ex.scratch_folder())
    finally:
        ex.close()
