"""Bad input to :meth:`ComponentScores.top` and :meth:`ComponentScores.to_mask` (localization audit of
2026-12-06, a9_bad_inputs): refused with a message naming the option; valid calls are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from factlens.components import Component, ModelShape
from factlens.scores import ComponentScores

SHAPE = ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)


def _scores() -> ComponentScores:
    return ComponentScores.from_dict_of_scores({"L0H1": 0.5, "L1.mlp": -2.0, "L0.mlp": 0.1, "L1H0": np.nan},
                                               method="manual", metric="x", shape=SHAPE)


@pytest.mark.parametrize("k, match", [
    (2.0, r"top: k must be a whole number \(an int\), got float 2\.0; write k=int\(2\.0\)"),  # was a slice error
    (True, r"top: k must be a whole number \(an int\), got bool True"),  # was taken as top(1)
    ("2", r"top: k must be a whole number .*got str '2'"),
])
def test_top_refuses_non_integer_k(k, match):
    with pytest.raises(TypeError, match=match):
        _scores().top(k)


def test_top_keeps_integer_k():
    s = _scores()
    assert [c.label for c in s.top(2)] == ["L1.mlp", "L0H1"]
    assert s.top(np.int64(2)) == s.top(2) and s.top(0) == [] and len(s.top(10)) == 3  # NaN is never taken
    with pytest.raises(ValueError, match="k must be >= 0"):
        s.top(-1)


@pytest.mark.parametrize("threshold", [float("nan"), np.nan, float("inf"), np.float32("inf")])
def test_to_mask_refuses_threshold_that_selects_nothing(threshold):
    # threshold=nan (and inf) gave an empty mask without a word: no score compares >= them
    with pytest.raises(ValueError, match=r"to_mask: threshold=(nan|inf) selects no component .*give a finite number"):
        _scores().to_mask(threshold=threshold)


def test_to_mask_keeps_finite_and_minus_inf_threshold():
    s = _scores()
    assert s.to_mask(threshold=0.5).components == frozenset(map(Component.parse, ["L0H1", "L1.mlp"]))
    every = frozenset(map(Component.parse, ["L0H1", "L1.mlp", "L0.mlp"]))  # every score but the NaN one
    assert s.to_mask(threshold=float("-inf")).components == every == s.to_mask(threshold=0).components
