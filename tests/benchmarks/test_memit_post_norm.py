"""benchmarks/memit_post_norm.py: the mapped gap is smaller than writing R unmapped."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mapping_closes_more_of_the_gap(load_benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTLENS_CACHE", str(tmp_path))
    bench = load_benchmark("memit_post_norm")
    mapped, unmapped = bench.gaps(layers=(1,)), bench.gaps(unmapped=True, layers=(1,))
    assert [(r["weights"], r["layers"]) for r in mapped] == [("own", 1), ("lognormal", 1)]
    for a, b in zip(mapped, unmapped):
        assert a["gap_before"] == pytest.approx(b["gap_before"])  # same targets either way
        assert a["gap_after"] < b["gap_after"]
