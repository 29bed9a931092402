"""Verdicts (factlens.verdict): compare's paired test and the equivalence test, read together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import factlens
from factlens.verdict import VERDICT_COLUMNS, VERDICTS

from tests.paired_results import pair as _pair
from tests.paired_results import result as _ev

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("table, margin, expected", [
    ((10, 0, 40, 10), 0.1, "lower"),  # 40 of 60 facts lost: real and large
    ((10, 40, 0, 10), 0.1, "higher"),
    ((300, 0, 20, 280), 0.1, "lower, negligible"),  # 20 of 600 lost: significant, and ruled out to reach 0.1
    ((300, 3, 3, 294), 0.1, "equivalent"),  # nothing in either direction, 600 facts: within 0.1
    ((5, 2, 2, 7), 0.1, "undecided"),  # 16 facts: neither
])
def test_each_verdict_is_the_two_tests_read_together(table, margin, expected):
    x, y = _pair(*table)
    runs = {"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]}
    v = factlens.verdicts(runs, margin=margin)
    c = factlens.compare(runs)
    e = factlens.equivalence(runs, margin=margin)
    assert list(v.columns) == list(VERDICT_COLUMNS) and len(v) == 1
    r = v.iloc[0]
    assert r["verdict"] == expected and r["verdict"] in VERDICTS
    for k in ("diff", "ci_low", "ci_high", "p_holm", "significant", "mdd"):  # compare's evidence, as compare gives it
        np.testing.assert_equal(r[k], c.at[0, k])
    for k, ek in (("equivalent", "equivalent"), ("bound", "bound"), ("p_holm_equivalence", "p_holm")):
        np.testing.assert_equal(r[k], e.at[0, ek])
    assert r["margin"] == margin


def test_at_chance_and_untested_rows_get_no_verdict_of_difference_or_equivalence():
    x, y = _pair(45, 0, 0, 55)  # identical, but the unedited model is at chance on the metric
    v = factlens.verdicts({"flu": [_ev(("mcq_accuracy", y), at_chance=True)],
                           "random": [_ev(("mcq_accuracy", x), at_chance=True)]}, margin=0.5)
    assert v.at[0, "verdict"] == "at chance" and not v.at[0, "equivalent"]
    x, y = _pair(5, 1, 0, 10)  # one fact differs: the sign test cannot reach 0.05 (Tarone: not testable)
    v = factlens.verdicts({"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]},
                          margin=0.05)
    assert np.isnan(v.at[0, "p_holm"]) and v.at[0, "verdict"] == "undecided"


def test_several_metrics_margins_per_metric_and_seeds():
    rng = np.random.default_rng(3)
    flu = [_ev(("forget_accuracy", [0] * 32), ("maintain_accuracy", rng.integers(0, 2, 32).tolist())) for _ in range(3)]
    rnd = [_ev(("forget_accuracy", [1] * 24 + [0] * 8), ("maintain_accuracy", rng.integers(0, 2, 32).tolist()))
           for _ in range(3)]
    v = factlens.verdicts({"flu": flu, "random": rnd}, margin={"forget_accuracy": 0.1, "maintain_accuracy": 0.5})
    got = dict(zip(v["metric"], v["verdict"]))
    assert got == {"forget_accuracy": "higher", "maintain_accuracy": "equivalent"}
    assert set(v["n_seeds"]) == {3}
    only = factlens.verdicts({"flu": flu, "random": rnd}, metrics=["forget_accuracy"], margin=0.1)
    assert list(only["metric"]) == ["forget_accuracy"]
    with pytest.raises(ValueError, match="a number > 0"):
        factlens.verdicts({"flu": flu, "random": rnd}, margin=0)


def test_the_cli_prints_and_writes_the_verdicts(planted_two_seed_run: Path, tmp_path: Path, capsys):
    from factlens.runner.cli import main

    csv = tmp_path / "verdicts.csv"
    metrics = ["forget_accuracy", "maintain_accuracy"]
    assert main(["verdict", str(planted_two_seed_run), "--margin", "0.5", "--metrics", ",".join(metrics),
                 "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    table = factlens.verdicts(planted_two_seed_run, margin=0.5, metrics=metrics)
    for r in table.to_dict("records"):
        assert f"| {r['localization']} | {r['metric']} |" in out and r["verdict"] in out
    assert "Verdict: lower/higher" in out and "(the facts of every seed as the unit)" in out
    assert main(["verdict", str(planted_two_seed_run), "--margin", "0.5", "--unit", "seed", "--metrics",
                 ",".join(metrics)]) == 0
    assert "(the seeds as the unit: each seed's mean paired difference" in capsys.readouterr().out
    assert csv.read_text().splitlines()[0] == ",".join(table.columns)
    assert len(csv.read_text().splitlines()) == 1 + len(table)
    with pytest.raises(SystemExit, match="2"):  # --margin is required: argparse's usage error
        main(["verdict", str(planted_two_seed_run)])
    assert "required: --margin" in capsys.readouterr().err
    assert main(["verdict", str(planted_two_seed_run), "--margin", "-1"]) == 2
    assert "a number > 0" in capsys.readouterr().err


def test_the_cli_takes_a_margin_per_metric(planted_two_seed_run: Path, capsys):
    """Metrics of other scales need their own margins (0.1 of accuracy is not 0.1 of a KL divergence):
    --margin METRIC=MARGIN, once per metric, as the Python mapping; mixed or malformed forms are refused."""
    from factlens.runner.cli import main
    from factlens.runner.report_comparisons import equivalence_text
    from factlens.verdict import verdict_text

    run, margins = str(planted_two_seed_run), {"forget_accuracy": 0.5, "maintain_accuracy": 0.2}
    given = [x for k, v in margins.items() for x in ("--margin", f"{k}={v}")]
    assert main(["verdict", run, *given]) == 0
    assert capsys.readouterr().out == verdict_text(factlens.verdicts(run, margin=margins), reference="flu")
    assert main(["equivalence", run, *given]) == 0
    assert capsys.readouterr().out == equivalence_text(factlens.equivalence(run, margin=margins), reference="flu")
    for bad, says in ((["--margin", "0.1", "--margin", "forget_accuracy=0.2"], "give each as METRIC=MARGIN"),
                      (["--margin", "x"], "takes a number (e.g. 0.1) or METRIC=MARGIN"),
                      (["--margin", "forget_accuracy=x"], "--margin takes METRIC=MARGIN"),
                      (["--margin", "forget_accuracy=0.1", "--margin", "forget_accuracy=0.2"], "names 'forget_accuracy' twice")):
        assert main(["verdict", run, *bad]) == 2
        assert says in capsys.readouterr().err


def test_the_verdict_table_writes_p_values_as_the_compare_table_does():
    """A p value of 1e-12 read "0.000" in the verdict table beside "<0.001" in compare's: both tables now
    write numbers with one helper."""
    from factlens.runner.report_comparisons import compare_text
    from factlens.verdict import verdict_text

    x, y = _pair(10, 0, 40, 10)
    runs = {"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]}
    verdict_row = verdict_text(factlens.verdicts(runs, margin=0.1), reference="flu").splitlines()[2]
    compare_row = compare_text(factlens.compare(runs), reference="flu").splitlines()[2]
    assert "| <0.001 |" in verdict_row and "| <0.001 |" in compare_row and "0.000 |" not in verdict_row
