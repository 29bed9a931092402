"""The probes' C must be a finite number > 0, refused before any activation is collected and by the
run-level option check (audit finding 6: C=0 failed late with sklearn's "All the 2 fits failed")."""

import math

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

_BAD = [0.0, -1.0, 0, math.inf, math.nan]


@pytest.mark.parametrize("C", _BAD)
@pytest.mark.parametrize("method", ["probing", "flu"])
def test_localize_refuses_a_bad_C_before_the_activations(planted12, monkeypatch, method, C):
    import factlens
    import factlens.localization.probing as probing

    def never(*a, **kw):
        raise AssertionError("activations collected before C was checked")

    monkeypatch.setattr(probing, "residual_features", never)
    opts = {"approach": "probing"} if method == "flu" else {}
    with pytest.raises(ValueError, match=r"C \(the inverse L2 regularization strength of the probes\) must be a "
                                         r"finite number > 0"):
        factlens.localize(planted12.model, planted12.dataset, method=method, C=C, cv=2, show_progress=False, **opts)


@pytest.mark.parametrize("C", [0.0, -1.0, True])
def test_probe_accuracy_refuses_a_bad_C(C):
    from factlens.localization.probing import probe_accuracy

    with pytest.raises(ValueError, match="must be a finite number > 0"):
        probe_accuracy(np.zeros((8, 2)), [0, 1] * 4, cv=2, C=C)


@pytest.mark.parametrize("C", [0.0, -1.0, 0])
@pytest.mark.parametrize("key", ["probing", "flu", "probing_mlps", None])  # methods, a localization, shared
def test_check_localize_options_refuses_a_bad_C(key, C):
    from factlens.localization.registry import check_localize_options

    options = {"C": C} if key is None else {key: {"C": C}}
    with pytest.raises(ValueError, match=r"C=.*must be a finite number > 0"):
        check_localize_options(options)


def test_a_good_C_is_accepted(planted12):
    import factlens
    from factlens.localization.registry import check_localize_options

    check_localize_options({"probing": {"C": 0.5}, "C": 2})
    s = factlens.localize(planted12.model, planted12.dataset, method="probing", C=0.5, cv=2, show_progress=False)
    assert s.extra["n_splits"] == 2
