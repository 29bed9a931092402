"""benchmarks/main_job_ab.py: the interleaved before/after stage table of one job."""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_suites_alternate_which_variant_runs_first(load_benchmark, monkeypatch, tmp_path):
    """Every suite ran "before" first, so a warm-up cost (first touch of memory, cold caches) always
    fell on the same side of the after/before ratio; the suites now alternate (ABBA)."""
    ab = load_benchmark("main_job_ab")
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["main_job_ab.py", "--model", "planted", "--localization", "random",
                                      "--forget-size", "8", "--suites", "standard,side_effects", "--json", str(out)])
    from factlens.progress_bars import progress

    with progress(False):
        ab.main()
    rows = json.loads(out.read_text())["rows"]
    order = [(r["stage"], r["variant"]) for r in rows]
    assert order == [("edit", "before"), ("edit", "after"),
                     ("evaluate.standard", "before"), ("evaluate.standard", "after"),
                     ("evaluate.side_effects", "after"), ("evaluate.side_effects", "before")]
    table = json.loads(out.read_text())["table"]
    assert "| evaluate.side_effects |" in table and "| **edit + evaluate** |" in table
