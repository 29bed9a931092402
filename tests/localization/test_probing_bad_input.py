"""Bad ``layers=`` / ``cv=`` / ``repeats=`` for probing (localization audit of 2026-12-06, a9_bad_inputs):
refused up front with a message naming the option; valid calls are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from factlens.localization import probing as probing_module
from factlens.localization.probing import probe_accuracy, probing, residual_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layers, match", [
    ([1.7], r"layers must be whole numbers \(layer indices\), got \[1\.7\]"),  # was probed as layer 1
    ([0, True], r"layers must be whole numbers .*got \[True\]"),  # was probed as layer 1
    (["1"], r"layers must be whole numbers .*got \['1'\]"),
    (1, r"layers= takes a list of layer numbers, got int 1; write layers=\[1\]"),  # was "'int' object is not iterable"
])
def test_probing_refuses_non_integer_layers(planted, layers, match):
    with pytest.raises(ValueError, match=match):
        probing(planted.model, planted.dataset, layers=layers)


def test_residual_features_refuses_non_integer_layers(planted):
    with pytest.raises(ValueError, match=r"layers must be whole numbers .*got \[0\.5\]"):
        residual_features(planted.model, planted.dataset, layers=[-1, 0.5])


def test_probing_keeps_integer_layers(planted):
    s = probing(planted.model, planted.dataset, layers=[1])
    for same in ([1.0], np.array([1]), [np.int64(1), 1]):
        assert probing(planted.model, planted.dataset, layers=same).extra == s.extra
    assert s.extra["layers"] == [1]


@pytest.mark.parametrize("option, match", [
    ({"cv": 2.5}, r"need cv >= 2: cv must be a whole number \(the number of stratified folds\), got float 2\.5"),
    ({"cv": 3.0}, r"cv must be a whole number .*got float 3\.0"),
    ({"cv": True}, r"cv must be a whole number .*got bool True"),
    ({"cv": 1}, r"need cv >= 2: .*got int 1"),
    ({"repeats": 1.5}, r"need repeats >= 1: repeats must be a whole number .*got float 1\.5"),
])
def test_probing_refuses_bad_cv_before_collecting_activations(planted, monkeypatch, option, match):
    def collected(*args, **kwargs):
        raise AssertionError("activations were collected before cv/repeats were checked")

    monkeypatch.setattr(probing_module, "residual_features", collected)
    with pytest.raises(ValueError, match=match):  # cv=2.5 was sklearn's "number of folds must be of Integral type"
        probing(planted.model, planted.dataset, **option)
    with pytest.raises(ValueError, match=match):
        probe_accuracy(np.zeros((8, 2)), [0, 1] * 4, **option)


def test_probing_refuses_an_attention_only_model(planted):
    """Probing scores MLPs by the probe's gain: on an attention-only model every score was 0 and a
    budget chose an empty mask without a word."""
    from factlens.testing import tiny_model

    with pytest.raises(ValueError, match="attention-only: probing scores MLPs.*residual_features"):
        probing(tiny_model(variant="attn_only", n_layers=2), planted.dataset)
