"""benchmarks/ablation_sensitivity.py: random directions removed from an unedited model."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_directions_cost_the_planted_model_nothing(capsys, load_benchmark, tmp_path):
    """The planted model's residual stream has no outsized dimensions: removing a random direction
    anywhere (or setting its component to the retain prompts' mean) keeps every fact."""
    out = tmp_path / "rows.json"
    assert load_benchmark("ablation_sensitivity").main(["planted", "--directions", "2", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    rows, dims = got["rows"], got["largest_dimensions"]
    assert [d["layer"] for d in dims] == [2] and len(dims[0]["dims"]) == 5
    places = {r["place"] for r in rows}
    assert places == {"none", "everywhere", "everywhere, affine", "layer 2 only"}  # layer 9: not in a 4-layer model
    assert len(rows) == 1 + 2 * 3 and all(r["forget_accuracy"] == r["maintain_accuracy"] == 1.0 for r in rows)
