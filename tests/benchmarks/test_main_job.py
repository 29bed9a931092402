"""benchmarks/main_job.py builds a valid run config for any suite selection."""

from __future__ import annotations

import argparse

import pytest


@pytest.mark.parametrize("suites", ["standard", "standard,relearning", ""])
def test_run_config_passes_the_text_source_only_to_suites_that_read_it(load_benchmark, monkeypatch, tmp_path, suites):
    mj = load_benchmark("main_job")
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "test.txt").write_text("Some general text.\n" * 50)
    monkeypatch.setattr(mj, "SHARED", tmp_path)  # reference data present (before the fix: standard alone was refused)
    cfg = mj.run_config(argparse.Namespace(model="planted", localization="flu", forget_size=8, seed=0, suites=suites))
    reads = suites == "" or "relearning" in suites
    assert (cfg.eval.get_path("text.source") is not None) == reads
