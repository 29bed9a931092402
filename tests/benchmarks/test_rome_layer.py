"""benchmarks/rome_layer.py: both of ROME's layer criteria find the planted lookup MLP."""

from __future__ import annotations

import pytest

from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_criteria_pick_the_planted_lookup_mlp(load_benchmark):
    bench = load_benchmark("rome_layer")
    p = planted_fact_model(n_subjects=12)
    out = bench.layer_choice(p.model, p.task.forget, windows=(1,), n_samples=4)
    w = out["window_1"]
    assert w["top_all_positions"] == w["top_last_subject"] == p.lookup_mlp.layer
    assert len(w["all_positions"]) == len(w["last_subject"]) == p.model.cfg.n_layers
    assert w["noised"] < w["clean"] and out["n_facts"] == len(p.task.forget)
