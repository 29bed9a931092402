"""Jobs that start before their seed's plan: AwaitedPlan waits for it, fails with it, and the runner's start order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from factlens.runner import RunConfig
from factlens.runner.plan_handoff import start_order as _start_order
from factlens.runner.plan_handoff import AwaitedPlan, PlanFailed, PlanHandoff


def test_an_awaited_plan_waits_until_the_driver_hands_it_over(tmp_path: Path):
    handoff = PlanHandoff(tmp_path)
    plan = AwaitedPlan(tmp_path, seed=3, poll=0.01)
    timer = threading.Timer(0.3, handoff.put, args=(3, {"param_budget": 7, "flu": None}))
    timer.start()
    try:
        assert plan["param_budget"] == 7  # blocks until the timer hands the plan over
    finally:
        timer.join()
    assert plan.waited >= 0.25 and dict(plan) == {"param_budget": 7, "flu": None}
    assert plan.awaited


def test_a_failed_plan_stops_the_waiting_job_with_its_error(tmp_path: Path):
    PlanHandoff(tmp_path).fail(0, "ValueError: need cv >= 2")
    with pytest.raises(PlanFailed, match="the plan of seed 0 .* failed.*need cv >= 2"):
        AwaitedPlan(tmp_path, seed=0, poll=0.01).get("param_budget")


def test_a_plan_whose_folder_is_gone_does_not_wait_forever(tmp_path: Path):
    handoff = PlanHandoff(tmp_path / "plans")
    Path(handoff.folder).mkdir()
    plan = AwaitedPlan(handoff.folder, seed=0, poll=0.01)
    handoff.close()
    t0 = time.perf_counter()
    with pytest.raises(PlanFailed, match="never arrived"):
        plan["flu"]
    assert time.perf_counter() - t0 < 5


def test_heavy_localizations_start_first_and_the_rest_keep_their_order():
    cfg = RunConfig(task="planted", model="planted")
    units = ["flu", "random", "causal_tracing", "all_mlps", "activation_patching_mlps", "nonlocalized"]
    assert _start_order(cfg, units) == ["causal_tracing", "activation_patching_mlps", "flu", "random", "all_mlps",
                                        "nonlocalized"]
