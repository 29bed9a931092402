"""The report's relearning numbers: which model a baseline is, and the collapse mark ◊ (audit s49: runA,
d_collapse.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factlens.evaluation.result import EvalResult, Metric, SuiteResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _outcomes(n: int, ones: int) -> dict[str, float]:
    return {f"f{i}": float(i < ones) for i in range(n)}


def _relearning_run(loc: str, seed: int, *, maintain_before: float, collapsed: bool = False) -> dict:
    """A run record of the relearning suite as run_relearning builds it: forget baselines from the unedited
    model (1.0), edit and maintain baselines from the edited model before the attack."""
    metrics = (
        Metric.from_samples("relearn_forget_accuracy", _outcomes(8, 2), baseline=1.0, higher_is_better=False),
        Metric.from_samples("relearn_edit_accuracy", _outcomes(8, 6), baseline=1.0),
        Metric.from_samples("relearn_maintain_accuracy", _outcomes(20, 4), baseline=maintain_before),
    )
    extra = {"maintain_collapse": {"collapsed": collapsed, "maintain_before": maintain_before}}
    return {"localization": loc, "seed": seed, "mask_labels": ["L0H0"],
            "eval": EvalResult({"relearning": SuiteResult("relearning", metrics, extra=extra)})}


def test_all_metrics_never_call_the_edited_model_before_the_attack_unedited():
    """relearn_edit_accuracy's and relearn_maintain_accuracy's baseline is the edited model before the attack;
    "All metrics" printed it as the "original" (1.000 though the unedited model's edit accuracy is 0) or as
    "(unedited 0.200)" (though the unedited model's maintain accuracy is 1.000)."""
    from factlens.runner.report import _fmt, _metric_matrix, metric_matrix
    from factlens.runner.report_markdown import all_metrics_markdown

    runs = [_relearning_run("random", 0, maintain_before=0.2), _relearning_run("all_mlps", 0, maintain_before=0.65)]
    locs, rows = metric_matrix(runs)
    row = {r["metric"]: r for r in rows}
    for name in ("relearn_edit_accuracy", "relearn_maintain_accuracy"):
        assert _fmt(row[name]["original"])[0] == "–"
        assert not any("unedited" in _fmt(c)[0] for c in row[name]["cells"])
    maintain = [_fmt(c)[0] for c in row["relearn_maintain_accuracy"]["cells"]]
    assert maintain[0].endswith("(before the attack 0.200)") and maintain[1].endswith("(before the attack 0.650)")
    assert _fmt(row["relearn_edit_accuracy"]["cells"][0])[0].endswith("(before the attack 1.000)")
    # the forget accuracy's baseline is the unedited model's: it stays in the "original" column
    assert row["relearn_forget_accuracy"]["original"]["mean"] == pytest.approx(1.0)
    md = all_metrics_markdown(runs)
    assert "| relearn_maintain_accuracy | – |" in md and "| relearn_edit_accuracy | – |" in md
    assert "not the unedited model" in md and "not the unedited model" in _metric_matrix(runs)


def test_the_robustness_row_marks_a_collapsed_unit():
    """compare marks a unit whose attack collapsed the model ◊; the markdown robustness row did not."""
    from factlens.runner.report_markdown import _robustness_row

    def relearn(collapsed: bool) -> dict:
        ms = (Metric.from_samples("relearn_forget_accuracy", _outcomes(8, 4), higher_is_better=False),
              Metric.from_samples("relearn_selective_recovery", _outcomes(8, 0), higher_is_better=False))
        extra = {"maintain_collapse": {"collapsed": collapsed}}
        return {"localization": "flu", "seed": 0, "mask_labels": ["L0H0"],
                "eval": EvalResult({"relearning": SuiteResult("relearning", ms, extra=extra)})}

    cells = _robustness_row(relearn(True)).split(" | ")
    assert cells[2] == "0.500 [0.215, 0.785] (n=8) ◊" and cells[3].endswith(" ◊")
    assert "◊" not in _robustness_row(relearn(False))


def test_pooled_plots_keep_a_collapse_at_a_later_seed():
    """The report's plots pool the seeds and kept the first seed's extra: a collapse at seed 1 went unmarked."""
    from factlens.evaluation.plots import relearning_bars
    from factlens.runner.report_stats import seed_pooled

    evs = [_relearning_run("flu", s, maintain_before=1.0, collapsed=s == 1)["eval"] for s in (0, 1)]
    pooled = seed_pooled(evs)["relearning"].extra["maintain_collapse"]
    assert pooled["collapsed"] is True and (pooled["n_seeds_collapsed"], pooled["n_seeds"]) == (1, 2)
    assert list(relearning_bars({"flu": seed_pooled(evs)}).data[1].text) == ["◊ collapsed"]
    clean = [_relearning_run("flu", s, maintain_before=1.0)["eval"] for s in (0, 1)]
    assert not seed_pooled(clean)["relearning"].extra["maintain_collapse"]["collapsed"]


def test_the_collapse_legend_says_what_the_check_does():
    """The ◊ legend said "maintain accuracy is not above chance" (the bar is answer agreement since
    2026-12-06), "the attack collapsed the model" (an edit that made it answer one sport is flagged too),
    and that relearn_selective_recovery "holds up there" (its row is marked ◊ as well)."""
    from factlens.runner.report_comparisons import _legend

    text = _legend("flu")
    assert "not above chance)" not in text and "holds up" not in text and "attack collapsed the model" not in text
    assert "expected agreement" in text and "uniform chance" in text and "already the edit" in text
    assert "though it is marked too" in text


@pytest.fixture(scope="module")
def relearn_run(tmp_path_factory) -> Path:
    """A finished planted run with the relearning suite (random, all_mlps), random's attack marked collapsed."""
    from factlens.runner.cli import main

    out = tmp_path_factory.mktemp("relearn") / "planted"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "random,all_mlps",
                 "--edit", "steps=1", "--suites", "relearning", "--eval", "relearning.steps=1", "--no-progress",
                 "--no-report"]) == 0
    for unit, collapsed in (("random", True), ("all_mlps", False)):
        f = out / "runs" / "seed0" / f"{unit}.json"
        rec = json.loads(f.read_text())
        rec["eval"]["suites"]["relearning"]["extra"]["maintain_collapse"]["collapsed"] = collapsed
        f.write_text(json.dumps(rec))
    return out


def test_the_markdown_summary_marks_and_explains_a_collapse_and_before_the_attack_baselines(relearn_run):
    from factlens.runner.report_markdown import COLLAPSE_NOTE, markdown_summary

    md = markdown_summary(relearn_run)
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["| random (seed 0)"].count(" ◊") == 2 and "◊" not in rows["| all_mlps (seed 0)"]
    assert COLLAPSE_NOTE in md
    assert rows["| relearn_maintain_accuracy"].startswith("| relearn_maintain_accuracy | – |")
    assert "(unedited" not in rows["| relearn_maintain_accuracy"] and "(before the attack" in rows[
        "| relearn_maintain_accuracy"]
