"""benchmarks/memit_sweep.py re-creates a run's MEMIT unit exactly and re-applies it per covariance weight."""

from __future__ import annotations

import json

import pytest

from factlens.runner import RunConfig, run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sweep_reproduces_the_run_and_a_huge_weight_writes_nothing(tmp_path, capsys, load_benchmark):
    run = tmp_path / "run"
    # planted residuals need a looser clamp than MEMIT's GPT-J 0.75 (tests/editing/test_memit.py)
    cfg = RunConfig(task="planted", model="planted", localizations=("causal_tracing_top_mlp",), methods=("memit",),
                    suites=("standard",), edit={"methods": {"memit": {"clamp_norm_factor": 4.0}}}, out=str(run),
                    show_progress=False)
    run_experiment(cfg, report=False)
    stored = json.loads((run / "runs" / "seed0" / "causal_tracing_top_mlp+memit.json").read_text())
    want = {m["name"]: m["value"] for m in stored["eval"]["suites"]["standard"]["metrics"]}
    assert want["edit_accuracy"] > 0.5  # the run did edit: the comparison below means something
    out = tmp_path / "sweep.json"
    assert load_benchmark('memit_sweep').main([str(run), "--unit", "causal_tracing_top_mlp+memit", "--weights", "15000,1e12", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["matches_run"] is True
    assert rows[0]["edit_accuracy"]["value"] == want["edit_accuracy"]
    assert rows[0]["maintain_accuracy"]["value"] == want["maintain_accuracy"]
    assert "matches_run" not in rows[1]
    # lambda -> infinity: (lambda C + K^T K)^-1 K^T R -> 0, the model stays the original
    assert rows[1]["update_norm"] < 1e-3 * rows[0]["update_norm"]
    assert rows[1]["edit_accuracy"]["value"] < 0.5 < rows[1]["maintain_accuracy"]["value"]
    assert "| covariance text | mom2_update_weight |" in capsys.readouterr().out


def test_a_unit_that_is_not_memit_is_refused(tmp_path, load_benchmark):
    run = tmp_path / "run"
    run_experiment(RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                             edit={"steps": 1}, out=str(run), show_progress=False), report=False)
    with pytest.raises(SystemExit, match="not a MEMIT unit"):
        load_benchmark('memit_sweep').main([str(run), "--unit", "all_mlps"])


def test_a_unit_that_has_not_finished_is_a_clear_error(tmp_path, load_benchmark):
    run = tmp_path / "run"
    run_experiment(RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
                             edit={"steps": 1}, out=str(run), show_progress=False), report=False)
    with pytest.raises(SystemExit, match="has not finished"):
        load_benchmark("memit_sweep").main([str(run), "--unit", "all_mlps+memit"])


def test_a_row_that_compares_nothing_does_not_match_the_run(tmp_path, load_benchmark):
    """``matches_run`` was ``all([])``, True, when the sweep scored other suites than the run stored (e.g.
    ``--suites formats`` against a standard-only run): a check that passed without checking."""
    run = tmp_path / "run"
    cfg = RunConfig(task="planted", model="planted", localizations=("causal_tracing_top_mlp",), methods=("memit",),
                    suites=("standard",), edit={"methods": {"memit": {"clamp_norm_factor": 4.0}}}, out=str(run),
                    show_progress=False)
    run_experiment(cfg, report=False)
    out = tmp_path / "sweep.json"
    assert load_benchmark("memit_sweep").main([str(run), "--unit", "causal_tracing_top_mlp+memit", "--weights", "15000",
                                               "--suites", "formats", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["matches_run"] is False
