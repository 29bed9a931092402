"""The report shows the variance split of a several-seed run (fact sampling vs training seed)."""

from __future__ import annotations

import pytest

from factlens.runner import RunConfig, run_experiment
from factlens.runner.report import build_report
from factlens.runner.report_markdown import markdown_summary as report_markdown
from factlens.seed_variance import variance_split

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_seeds") / "run"
    cfg = RunConfig(task="planted", model="planted", localizations=("flu", "random"), seeds=(0, 1),
                    suites=("standard",), show_progress=False, out=str(out))
    run_experiment(cfg, report=False)
    return out


def test_a_several_seed_report_gives_the_variance_split(two_seeds):
    """Audit (session 50): the issue asks the report for the split of variance between fact
    sampling and training seed; it was reachable from Python only (variance_split)."""
    md = report_markdown(two_seeds)
    assert "### Variance split: fact sampling and training seed" in md
    split = variance_split(two_seeds)
    row = split[(split.localization == "random") & (split.metric == "forget_accuracy")].iloc[0]
    section = md.split("### Variance split: fact sampling and training seed", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("| random | forget_accuracy |"))
    assert line.split(" | ")[2:] == ["2", f"{row.var_facts:.3g}", f"{row.var_seed:.3g}", f"{row.seed_share:.2f} |"]
    assert "Variance split: fact sampling and training seed" in build_report(two_seeds)


def test_a_one_seed_report_has_no_variance_split(tmp_path):
    out = tmp_path / "run"
    run_experiment(RunConfig(task="planted", model="planted", localizations=("flu", "random"), suites=("standard",),
                             show_progress=False, out=str(out)), report=False)
    assert "Variance split" not in report_markdown(out)


def test_table1_says_why_a_row_has_no_marks_when_its_seeds_differ_from_the_references(two_seeds, tmp_path):
    """Audit (session 50): with the reference's seed 1 missing, every * of Table 1 vanished under a
    legend promising marks for significant differences, while compare (on the common seeds) found
    some: a reader took the missing marks for "not significant"."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(two_seeds, folder)
    (folder / "runs" / "seed1" / "flu.json").unlink()
    md = report_markdown(folder)
    assert "No marks for random: their finished seeds differ from flu's" in md
    assert "No marks for" not in report_markdown(two_seeds)


def test_a_folder_the_split_cannot_read_still_gives_a_report(two_seeds, monkeypatch):
    """The split reads the folder again: a failure there says so in its section, as the comparisons
    do, instead of failing the whole report."""
    import factlens.seed_variance as sv

    def broken(*a, **k):
        raise ValueError("seed 1 has another setup")

    monkeypatch.setattr(sv, "variance_split", broken)
    assert "variance split failed: seed 1 has another setup" in report_markdown(two_seeds)
    assert "variance split failed: seed 1 has another setup" in build_report(two_seeds)
