"""factlens.runner.provenance: what a run record says about the packages that computed it."""

from __future__ import annotations

import importlib.metadata as md

from factlens.runner import pipeline
from factlens.runner.provenance import now, versions


def test_versions_name_the_statistics_packages_that_decide_intervals_and_p_values():
    # every interval and p-value comes from scipy / statsmodels: a record without their versions
    # could not tell two runs' differing p-values apart (before, only numpy, scikit-learn, plotly)
    v = pipeline.versions()  # what every unit's record holds
    assert v["scipy"] == md.version("scipy") and v["statsmodels"] == md.version("statsmodels")
    assert v["torch"] == md.version("torch") and v["transformer-lens"] == md.version("transformer-lens")
    assert pipeline.versions is versions  # still importable from where it was


def test_now_is_utc_to_the_second():
    import datetime as dt

    t = dt.datetime.fromisoformat(now())
    assert t.utcoffset() == dt.timedelta(0) and t.microsecond == 0
