"""benchmarks/localize.py: its "forward-pass equivalent" unit is a plain forward pass."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_forward_pass_unit_runs_without_prefix_reuse(load_benchmark, monkeypatch):
    """Audit (session 50): the unit was timed through final_logits with prefix reuse on, so the
    shared few-shot prefix ran once (0.46 of a plain pass on Gemma) while the hooked patching
    passes divided by it never reuse it: every method read about 2.2x its documented cost."""
    import factlens.prefix as prefix
    from factlens.localization.pairs import make_pairs
    from factlens.testing import planted_fact_model

    seen = []
    real = prefix.residual_after_prefix

    def spy(*a, **k):
        seen.append(prefix.prefix_reuse_enabled())
        return real(*a, **k)

    monkeypatch.setattr(prefix, "residual_after_prefix", spy)
    p = planted_fact_model()
    pairs = make_pairs(p.model, p.dataset)
    assert load_benchmark("localize")._forward_time(p.model, pairs, repeats=1) > 0
    assert seen and not any(seen)  # final_logits ran, never with prefix reuse on
