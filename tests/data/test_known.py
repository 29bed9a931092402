"""Which facts a model knows, per format (factlens.data.known)."""

from factlens.data import filter_known, format_accuracy
from factlens.testing import planted_fact_model


def test_filter_known_and_format_report_planted():
    p = planted_fact_model()
    known = filter_known(p.model, p.dataset)
    assert len(known) == len(p.dataset)
    assert known.meta["known"]["known"] == len(p.dataset)
    rep = format_accuracy(p.model, p.dataset)
    assert rep["default"]["accuracy"] == 1.0 and not rep["default"]["at_chance"]
    assert sum(g["known"] for g in rep.per_group.values()) == len(p.dataset)
