"""benchmarks/relearning_sweep.py re-creates a run's unit exactly and sweeps the relearning attack."""

from __future__ import annotations

import json

import pytest

from factlens.runner import RunConfig, run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sweep_reproduces_the_run_and_a_stronger_attack_recovers_more(tmp_path, capsys, load_benchmark):
    run = tmp_path / "run"
    cfg = RunConfig(task="planted", model="planted", localizations=("flu",), suites=("relearning",), out=str(run),
                    show_progress=False)
    run_experiment(cfg, report=False)
    stored = json.loads((run / "runs" / "seed0" / "flu.json").read_text())
    want = {m["name"]: m["value"] for m in stored["eval"]["suites"]["relearning"]["metrics"]}
    rc = stored["eval"]["meta"]["config"]["relearning"]
    out = tmp_path / "sweep.json"
    # the run's own setting (planted preset: lr 1e-4, 5 steps), then a 10x higher learning rate
    assert load_benchmark('relearning_sweep').main([str(run), "--lrs", f"{rc['lr']},{rc['lr'] * 10}", "--steps", str(rc["steps"]),
                         "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["matches_run"] is True and rows[0]["held_out_after"] == want["relearn_forget_accuracy"]
    assert "matches_run" not in rows[1]
    assert rows[1]["held_out_after"] >= rows[0]["held_out_after"]
    assert all(0 <= r["ci"][0] <= r["held_out_after"] <= r["ci"][1] <= 1 for r in rows)
    assert "| lr | steps |" in capsys.readouterr().out


def test_matches_run_needs_the_same_edit_not_only_the_same_accuracy(tmp_path, load_benchmark):
    """One stored accuracy over 8 facts decided "re-created exactly": an edit at 0.75x the run's learning
    rate matched too. The re-created edit's loss history must now equal the stored one."""
    run = tmp_path / "run"
    cfg = RunConfig(task="planted", model="planted", localizations=("flu",), suites=("relearning",), out=str(run),
                    show_progress=False)
    run_experiment(cfg, report=False)
    path = run / "runs" / "seed0" / "flu.json"
    stored = json.loads(path.read_text())
    rc = stored["eval"]["meta"]["config"]["relearning"]
    stored["edit"]["history"][0]["loss"] += 1e-3  # as if the stored unit's edit had taken other steps
    path.write_text(json.dumps(stored))
    out = tmp_path / "sweep.json"
    assert load_benchmark("relearning_sweep").main([str(run), "--lrs", str(rc["lr"]), "--steps", str(rc["steps"]),
                                                    "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["matches_run"] is False
