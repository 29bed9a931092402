"""Pre-registered comparisons (factlens.preregistration): the registration, confirm and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import factlens
from factlens.preregistration import CONFIRM_COLUMNS, Preregistration

from tests.paired_results import pair as _pair
from tests.paired_results import result as _ev

pytestmark = pytest.mark.usefixtures("one_thread")

_PAST = "2000-01-01T00:00:00+00:00"


def _reg(**kw) -> Preregistration:
    base = dict(claim="random loses facts", localizations=("random",), primary=("forget_accuracy",),
                expected="lower", margin=0.1, written=_PAST)
    return Preregistration(**{**base, **kw})


def _runs(table=(10, 0, 40, 10), other=(30, 5, 5, 20)) -> dict:
    x, y = _pair(*table)  # 40 of 60 facts lost by random: real and large
    u, v = _pair(*other)  # maintain: nothing either way
    return {"flu": [_ev(("forget_accuracy", y), ("maintain_accuracy", v))],
            "random": [_ev(("forget_accuracy", x), ("maintain_accuracy", u))]}


def test_a_registration_is_checked_saved_once_and_read_back(tmp_path: Path):
    p = _reg(secondary=("maintain_accuracy",))
    path = p.save(tmp_path / "prereg.json")
    assert Preregistration.load(path) == p and json.loads(path.read_text())["kind"] == "factlens.preregistration"
    with pytest.raises(FileExistsError, match="never overwritten"):
        p.replace(claim="changed after the fact").save(path)
    assert Preregistration.load(path).claim == "random loses facts"  # the first stays
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a factlens pre-registration"):
        Preregistration.load(tmp_path / "other.json")
    for bad, says in ((dict(claim=" "), "say in words"), (dict(primary=()), "at least one localization and one primary"),
                      (dict(secondary=("forget_accuracy",)), "both primary and secondary"),
                      (dict(localizations=("flu",)), "also listed as a localization"),
                      (dict(unit="draw"), "must be 'fact' or 'seed'"), (dict(margin=0.0), "margin must be a number > 0"),
                      (dict(written="yesterday"), "ISO 8601 time with a time zone"),
                      (dict(written="2026-12-08T01:18:00"), "with a time zone"), (dict(primary="forget_accuracy"),
                                                                                   "must be a list of names")):
        with pytest.raises(ValueError, match=says):
            _reg(**bad)


@pytest.mark.parametrize("expected, table, outcome", [
    ("lower", (10, 0, 40, 10), "supported"),
    ("higher", (10, 0, 40, 10), "contradicted"),
    ("lower", (300, 3, 3, 294), "not supported (equivalent)"),  # 600 facts, nothing either way: within 0.1
    ("lower", (5, 2, 2, 7), "undecided"),  # 16 facts: neither
    ("lower", (300, 0, 20, 280), "supported, negligible"),  # 20 of 600 lost: real, and within 0.1
    (None, (10, 0, 40, 10), "lower"),  # no direction registered: the verdict itself
])
def test_each_outcome_is_the_registered_direction_read_against_the_verdict(expected, table, outcome):
    runs = _runs(table)
    t = factlens.confirm(runs, _reg(expected=expected))
    assert tuple(t.columns) == CONFIRM_COLUMNS and len(t) == 1
    r = t.iloc[0]
    v = factlens.verdicts(runs, metrics=["forget_accuracy"], margin=0.1).iloc[0]
    assert r["outcome"] == outcome and r["verdict"] == v["verdict"]
    assert r["p_holm"] == pytest.approx(v["p_holm"], nan_ok=True)
    assert r["family"] == "primary" and r["before_results"] is None  # in memory: no times


def test_the_secondary_family_is_corrected_on_its_own():
    """Adding secondary metrics does not weaken the primary test (one family each), and only the
    registered localizations are compared."""
    runs = _runs()
    runs["all_mlps"] = runs["random"]  # in the runs, not registered
    alone = factlens.confirm(runs, _reg()).iloc[0]
    t = factlens.confirm(runs, _reg(secondary=("maintain_accuracy",)))
    assert list(t["family"]) == ["primary", "secondary"] and set(t["localization"]) == {"random"}
    assert t.iloc[0]["p_holm"] == alone["p_holm"]
    # the direction is the primary's: a secondary row's outcome is its verdict (a secondary metric may move the
    # other way by the same claim), where "expected lower" read it as "not supported"
    assert t.iloc[1]["outcome"] == t.iloc[1]["verdict"] in ("undecided", "equivalent")
    assert t.iloc[0]["expected"] == "lower" and t.iloc[1]["expected"] != "lower"
    no_margin = factlens.confirm(runs, _reg(margin=None, expected="higher", secondary=("maintain_accuracy",)))
    assert list(no_margin["outcome"]) == ["contradicted", "undecided"]  # without a margin, never "equivalent"
    flipped = _runs(other=(10, 0, 40, 10))  # maintain falls as forget falls: "lower" in a secondary is not "contradicted"
    assert list(factlens.confirm(flipped, _reg(expected="higher", secondary=("maintain_accuracy",)))["outcome"]) == [
        "contradicted", "lower"]
    with pytest.raises(ValueError, match=r"registered unit\(s\) \['causal_tracing'\] are not in the runs"):
        factlens.confirm(runs, _reg(localizations=("causal_tracing",)))


def test_a_registration_younger_than_the_results_is_reported(planted_two_seed_run: Path):
    early = _reg(primary=("forget_accuracy",), expected=None)
    assert factlens.confirm(planted_two_seed_run, early)["before_results"].all()
    late = early.replace(written=Preregistration(claim="x", localizations=("random",), primary=("m",)).written)
    with pytest.warns(UserWarning, match="written after some of these results had finished: its tests are not "
                                         "confirmatory"):
        t = factlens.confirm(planted_two_seed_run, late)
    assert not t["before_results"].any()


def test_the_cli_registers_then_confirms(planted_two_seed_run: Path, tmp_path: Path, capsys):
    from factlens.runner.cli import main

    reg = tmp_path / "prereg.json"
    args = ["preregister", str(reg), "--claim", "random moves the planted facts", "--localizations", "random",
            "--primary", "forget_accuracy", "--secondary", "maintain_accuracy", "--unit", "seed", "--margin", "0.5"]
    assert main(args) == 0 and Preregistration.load(reg).unit == "seed"
    assert main(args) == 2 and "never overwritten" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="not confirmatory"):  # registered now, after the fixture's results
        assert main(["confirm", str(planted_two_seed_run), "--prereg", str(reg)]) == 0
    out = capsys.readouterr().out
    assert "after some results had finished: not confirmatory" in out and "| primary | random | forget_accuracy |" in out
    assert "| secondary | random | maintain_accuracy |" in out
    csv, other = tmp_path / "confirm.csv", tmp_path / "notes.csv"
    other.write_text("my,own,file\n")
    with pytest.warns(UserWarning, match="not confirmatory"):
        assert main(["confirm", str(planted_two_seed_run), "--prereg", str(reg), "--csv", str(csv)]) == 0
    assert csv.read_text().startswith("family,expected,outcome,")
    capsys.readouterr()
    assert main(["confirm", str(planted_two_seed_run), "--prereg", str(reg), "--csv", str(other)]) == 2
    assert other.read_text() == "my,own,file\n"  # someone's other file is left alone
    assert main(["preregister", str(tmp_path / "b.json"), "--claim", "x", "--localizations", "flu", "--primary", "m"]) == 2
    assert "also listed as a localization" in capsys.readouterr().err
    bad = tmp_path / "c.json"
    Preregistration(claim="x", localizations=("causal_tracing",), primary=("forget_accuracy",)).save(bad)
    assert main(["confirm", str(planted_two_seed_run), "--prereg", str(bad)]) == 2
    assert "are not in the runs" in capsys.readouterr().err
