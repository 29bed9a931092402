"""benchmarks/soft_prompt_controls.py times training and control scoring for both positions."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prints_both_positions(capsys, load_benchmark):
    bench = load_benchmark("soft_prompt_controls")
    assert bench.main(["--model", "planted", "--steps", "2", "--n-train", "4", "--n-maintain", "8"]) == 0
    out = capsys.readouterr().out
    assert "| append |" in out and "| prepend |" in out


def test_too_few_facts_is_a_clear_error(load_benchmark):
    with pytest.raises(ValueError, match="need 56 facts"):  # the planted model has 48
        load_benchmark("soft_prompt_controls").main(["--model", "planted", "--n-train", "8", "--n-maintain", "48",
                                                      "--steps", "1"])
