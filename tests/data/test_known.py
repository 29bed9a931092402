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


def test_the_recorded_criterion_is_the_one_applied():
    """meta["known"]["criterion"] said "argmax among candidates" when a p threshold was also
    applied, and "p > 0.5" for p_threshold=0.0."""
    from factlens.data import filter_known
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    k = filter_known(p.model, p.dataset, p_threshold=0.99)
    assert k.meta["known"]["criterion"] == "argmax among candidates and p > 0.99"
    assert filter_known(p.model, p.dataset).meta["known"]["criterion"] == "argmax among candidates"
    ov = p.dataset.with_candidates(())
    assert filter_known(p.model, ov, p_threshold=0.0).meta["known"]["criterion"] == "p > 0.0"
    assert filter_known(p.model, ov).meta["known"]["criterion"] == "p > 0.5"
