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


def test_main_turns_the_progress_bars_off_while_it_runs(load_benchmark, monkeypatch):
    """``factlens.progress(False).__enter__()`` left the manager unreferenced: collected at once, its generator
    closed and put the bars back on, so the benchmark drew bars into its timed rows against its comment."""
    from factlens.progress_bars import progress_enabled

    bench = load_benchmark("rome_layer")
    seen = []
    monkeypatch.setattr(bench, "layer_choice", lambda *a, **k: seen.append(progress_enabled()) or {})
    monkeypatch.setattr(bench, "emit", lambda *a, **k: None)
    monkeypatch.setattr("sys.argv", ["rome_layer.py", "--model", "planted", "--n-forget", "4"])
    import factlens

    with factlens.progress(True):  # bars on, as in a plain process (the test session turns them off)
        bench.main()
        assert progress_enabled()  # and on again after main, as before it
    assert seen == [False]
