"""compare() raises, saying why, whenever its table would be empty (audit finding 9: only the reference,
or no metric shared with it, gave a 0-row table although the docstring promised a ValueError)."""

import pytest

from factlens import compare
from factlens.comparison import NothingToCompare
from factlens.evaluation.result import EvalResult, Metric, SuiteResult


def _ev(suite: str, name: str, values, *, samples: bool = True) -> EvalResult:
    if samples:
        m = Metric.from_samples(name, {f"f{i}": x for i, x in enumerate(values)})
    else:
        m = Metric(name, float(sum(values)), len(values), "params")
    return EvalResult({suite: SuiteResult(suite, (m,))})


def test_only_the_reference_raises():
    with pytest.raises(ValueError, match="hold only 'flu': nothing to compare it with"):
        compare({"flu": [_ev("standard", "forget_accuracy", [0, 1] * 6)]}, reference="flu")


def test_no_metric_shared_with_the_reference_raises():
    runs = {"flu": [_ev("standard", "forget_accuracy", [0, 1] * 6)],
            "random": [_ev("formats", "mcq_forget_accuracy", [1, 1] * 6)]}
    with pytest.raises(NothingToCompare, match=r"no metric with per-unit values .* in both 'flu' and \['random'\].*"
                                         r"'flu': \['standard'\], 'random': \['formats'\]"):
        compare(runs, reference="flu")


def test_a_shared_metric_without_samples_raises():
    """The same metric on both sides, but no per-unit values: nothing to test, said so."""
    runs = {"flu": [_ev("mechanisms", "mask_params", [1, 2], samples=False)],
            "random": [_ev("mechanisms", "mask_params", [3, 4], samples=False)]}
    with pytest.raises(ValueError, match="no metric with per-unit values"):
        compare(runs, reference="flu")


def test_metrics_in_no_other_localization_still_raise():
    runs = {"flu": [_ev("standard", "forget_accuracy", [0, 1] * 6)],
            "random": [_ev("formats", "mcq_forget_accuracy", [1, 1] * 6)]}
    with pytest.raises(ValueError, match=r"none of the metrics \['forget_accuracy'\] is in both 'flu'"):
        compare(runs, reference="flu", metrics=["forget_accuracy"])


def test_a_comparable_pair_still_gives_rows():
    runs = {"flu": [_ev("standard", "forget_accuracy", [0] * 12)],
            "random": [_ev("standard", "forget_accuracy", [1] * 11 + [0])]}
    t = compare(runs, reference="flu")
    assert list(t["localization"]) == ["random"] and list(t["metric"]) == ["forget_accuracy"]
