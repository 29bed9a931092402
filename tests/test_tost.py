"""Equivalence tests (factlens.tost): TOST on the paired intervals of factlens.compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import factlens
from factlens.paired_proportions import paired_proportion_diff_interval
from factlens.stats import holm

from tests.paired_results import pair as _pair
from tests.paired_results import result as _ev

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_row_inverts_newcombes_interval():
    """p_tost is the level at which Newcombe's paired interval at 1 - 2p touches the margin; equivalent
    exactly when the 90 % interval lies inside (-margin, margin)."""
    x, y = _pair(40, 6, 3, 51)
    lo90, hi90 = paired_proportion_diff_interval(x, y, confidence=0.90)
    for margin, expected in ((hi90 + 0.005, True), (hi90 - 0.005, False)):
        t = factlens.equivalence({"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]},
                                 margin=margin)
        r = t.iloc[0]
        assert bool(r["equivalent"]) is expected and r["n_tests"] == 1 and r["tested"]
        assert r["diff"] == pytest.approx(0.03)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo90, hi90))  # 1 - 2 * 0.05 / 1
        assert r["bound"] == pytest.approx(max(abs(lo90), hi90))
        touch = paired_proportion_diff_interval(x, y, confidence=1 - 2 * r["p_tost"])
        assert max(-touch[0], touch[1]) == pytest.approx(margin, abs=1e-4)


def test_a_difference_beyond_the_margin_is_never_equivalent():
    x, y = _pair(30, 20, 0, 50)  # +0.20
    t = factlens.equivalence({"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]},
                             margin=0.1)
    assert t.at[0, "p_tost"] == 1.0 and not t.at[0, "equivalent"]


def test_the_size_at_the_margin_is_kept_and_power_comes_with_facts():
    """As a statistical test (fixed seed): at a true difference equal to the margin TOST rejects at most
    about alpha of the time; at no true difference and enough facts it nearly always does."""
    rng = np.random.default_rng(0)

    def rate(shift: float, n: int, margin: float, reps: int) -> float:
        hits = 0
        for _ in range(reps):
            y = rng.random(n) < 0.5
            # the localization answers the reference's facts, plus a share `shift` of the others
            x = y | (rng.random(n) < shift / 0.5)
            t = factlens.equivalence({"flu": [_ev(("m", y.astype(float).tolist()))],
                                      "random": [_ev(("m", x.astype(float).tolist()))]}, margin=margin)
            hits += bool(t.at[0, "equivalent"])
        return hits / reps

    size = rate(0.1, 200, 0.1, 200)
    assert size <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200)  # 0.081: Newcombe's interval is near nominal here
    assert rate(0.0, 200, 0.1, 40) >= 0.9


def test_holm_across_a_localizations_rows_counts_a_complement_once():
    x, y = _pair(40, 6, 3, 51)
    a, b = _pair(30, 10, 2, 58)
    comp = ([1 - v for v in x], [1 - v for v in y])
    flu = _ev(("forget_accuracy", y), ("forget_error", comp[1]), ("maintain_accuracy", b))
    rnd = _ev(("forget_accuracy", x), ("forget_error", comp[0]), ("maintain_accuracy", a))
    t = factlens.equivalence({"flu": [flu], "random": [rnd]}, margin=0.15).set_index("metric")
    assert (t["n_tests"] == 2).all()  # forget error is forget accuracy's complement: one claim
    assert t.at["forget_error", "p_tost"] == pytest.approx(t.at["forget_accuracy", "p_tost"], abs=1e-5)
    adj = holm([t.at["forget_accuracy", "p_tost"], t.at["maintain_accuracy", "p_tost"]])
    assert [t.at["forget_accuracy", "p_holm"], t.at["maintain_accuracy", "p_holm"]] == pytest.approx(list(adj))


def test_at_chance_rows_and_a_localization_against_itself():
    """A format at chance is never called equivalent (both sides at chance agree about nothing); identical
    continuous values are equivalent within any margin."""
    x, y = _pair(45, 0, 0, 55)
    t = factlens.equivalence({"flu": [_ev(("mcq_accuracy", y), at_chance=True)],
                              "random": [_ev(("mcq_accuracy", x), at_chance=True)]}, margin=0.5)
    assert not t.at[0, "tested"] and not t.at[0, "equivalent"] and np.isnan(t.at[0, "p_tost"])
    v = np.random.default_rng(1).normal(0.3, 0.1, 20).tolist()
    same = factlens.equivalence({"flu": [_ev(("kl", v), proportion=False)],
                                 "again": [_ev(("kl", v), proportion=False)]}, margin=1e-3)
    assert same.at[0, "equivalent"] and same.at[0, "bound"] == 0.0


def test_several_seeds_and_margins_per_metric():
    rng = np.random.default_rng(2)
    flu = [_ev(("forget_accuracy", rng.integers(0, 2, 32).tolist()), ("kl", rng.random(32).tolist()),
               proportion=True) for _ in range(3)]
    rnd = [_ev(("forget_accuracy", rng.integers(0, 2, 32).tolist()), ("kl", rng.random(32).tolist()))
           for _ in range(3)]
    t = factlens.equivalence({"flu": flu, "random": rnd}, margin={"forget_accuracy": 0.3})
    assert list(t["metric"]) == ["forget_accuracy"] and t.at[0, "n_seeds"] == 3 and t.at[0, "n_units"] == 96
    c = factlens.compare({"flu": flu, "random": rnd}, metrics=["forget_accuracy"])
    assert t.at[0, "diff"] == pytest.approx(c.at[0, "diff"])  # the same difference as compare's
    assert t.at[0, "ci_low"] >= c.at[0, "ci_low"] - 1e-12  # a 90 % interval inside the 95 % one


@pytest.mark.parametrize("kwargs, match", [
    ({"margin": 0}, "a number > 0"),
    ({"margin": -0.1}, "a number > 0"),
    ({"margin": float("nan")}, "a number > 0"),
    ({"margin": True}, "a number > 0"),
    ({"margin": {}}, "empty mapping"),
    ({"margin": {"forget_accuracy": 0.1}, "metrics": ["forget_accuracy"]}, "not both"),
    ({"margin": {"forget_accuracy": "0.1"}}, "of 'forget_accuracy'"),
    ({"margin": 0.1, "alpha": 0.5}, "between 0 and 0.5"),
    ({"margin": 0.1, "reference": "nosuch"}, "not among the localizations"),
    ({"margin": 0.1, "metrics": ["nosuch"]}, "no metric named"),
])
def test_bad_input_is_refused_with_what_to_do(kwargs, match):
    x, y = _pair(40, 6, 3, 51)
    with pytest.raises(ValueError, match=match):
        factlens.equivalence({"flu": [_ev(("forget_accuracy", y))], "random": [_ev(("forget_accuracy", x))]},
                             **kwargs)


def test_the_cli_prints_and_writes_the_table(planted_two_seed_run: Path, tmp_path: Path, capsys):
    run_dir = planted_two_seed_run
    from factlens.runner.cli import main

    csv = tmp_path / "eq.csv"
    assert main(["equivalence", str(run_dir), "--margin", "0.5", "--metrics", "forget_accuracy,maintain_accuracy",
                 "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "| random | forget_accuracy |" in out and "TOST" in out and "rules out" in out.lower()
    table = factlens.equivalence(run_dir, margin=0.5, metrics=["forget_accuracy", "maintain_accuracy"])
    assert csv.read_text().splitlines()[0] == ",".join(table.columns)
    assert len(csv.read_text().splitlines()) == 1 + len(table)
    assert main(["equivalence", str(run_dir), "--margin", "0"]) == 2
    assert "a number > 0" in capsys.readouterr().err
    assert main(["equivalence", str(run_dir), "--margin", "0.1", "--csv", str(run_dir / "x.csv")]) == 2


def test_the_report_has_an_equivalence_section_for_the_margins_given(planted_two_seed_run: Path, tmp_path: Path,
                                                                      capsys):
    """factlens report --equivalence METRIC=MARGIN: the tables of factlens.equivalence against each reference
    unit, in the markdown and the HTML report; none without the option; bad margins refused before writing."""
    from factlens.runner.cli import main
    from factlens.runner.report_comparisons import equivalence_text

    run = planted_two_seed_run
    assert main(["report", str(run), "--markdown", "--equivalence", "forget_accuracy=0.5",
                 "--equivalence", "maintain_accuracy=0.2"]) == 0
    md = capsys.readouterr().out
    margins = {"forget_accuracy": 0.5, "maintain_accuracy": 0.2}
    table = factlens.equivalence(run, reference="flu", margin=margins)
    verdicts = factlens.verdicts(run, reference="flu", margin=margins)  # each row's verdict beside it
    table = table.merge(verdicts[["localization", "suite", "metric", "verdict"]], on=["localization", "suite", "metric"])
    assert " | verdict |" in md and "Verdict: this test read together with factlens compare's" in md
    assert "## Equivalence\n" in md and "forget_accuracy 0.5, maintain_accuracy 0.2" in md
    assert "### Equivalence against flu\n\n" + equivalence_text(table, reference="flu") in md
    assert "### Equivalence against random" in md
    assert main(["report", str(run), "--markdown"]) == 0
    assert "## Equivalence" not in capsys.readouterr().out
    page = tmp_path / "r.html"
    assert main(["report", str(run), "--output", str(page), "--equivalence", "forget_accuracy=0.5"]) == 0
    assert "<h2>Equivalence</h2>" in page.read_text() and "<h3>Equivalence against flu</h3>" in page.read_text()
    capsys.readouterr()
    for bad, says in (("forget_accuracy", "takes METRIC=MARGIN"), ("forget_accuracy=x", "takes METRIC=MARGIN"),
                      ("forget_accuracy=0", "a number > 0"), ("no_such_accuracy=0.1", "no metric named")):
        out = tmp_path / f"bad{len(bad)}.html"
        assert main(["report", str(run), "--output", str(out), "--equivalence", bad]) == 2
        assert says in capsys.readouterr().err and not out.exists()
    assert main(["report", str(run), "--markdown", "--equivalence", "forget_accuracy=0.1",
                 "--equivalence", "forget_accuracy=0.2"]) == 2
    assert "twice" in capsys.readouterr().err
