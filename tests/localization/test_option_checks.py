"""Options that were silently ignored, unseeded or mistyped (localization audit of 2026-12-06): each is
refused up front with a message naming the option and what to pass, and valid calls are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from factlens.components import Component, Mask
from factlens.localization.flu import flu_scores

pytestmark = pytest.mark.usefixtures("one_thread")


# 1. the FLU refuses the other approach's options (they were ignored, even when invalid) and checks ranges


@pytest.mark.parametrize("option", [{"n_std": -5.0}, {"extraction_k": 0}, {"min_fact_fraction": 3.0},
                                    {"n_std": 2.0}])
def test_flu_probing_refuses_path_patching_options(planted, option):
    with pytest.raises(ValueError, match=rf"localizes with probing .* does not use \['{next(iter(option))}'\]"):
        flu_scores(planted.model, planted.dataset, repeats=1, **option)


def test_flu_path_patching_refuses_rule_threshold(planted):
    with pytest.raises(ValueError, match=r"localizes with path_patching .* does not use \['rule_threshold'\]"):
        flu_scores(planted.model, planted.dataset, approach="path_patching", rule_threshold=7.0)


def test_localize_flu_refuses_unused_option(planted):
    import factlens

    with pytest.raises(ValueError, match=r"does not use \['n_std'\]"):
        factlens.localize(planted.model, planted.dataset, "flu", repeats=1, n_std=-5.0)


@pytest.mark.parametrize("approach, option, match", [
    ("probing", {"rule_threshold": 1.5}, "rule_threshold .* in \\(0, 1\\]"),
    ("probing", {"rule_threshold": float("nan")}, "rule_threshold"),
    ("probing", {"rule_threshold": "0.5"}, "rule_threshold"),
    ("path_patching", {"extraction_k": 0}, "extraction_k .* integer >= 1"),
    ("path_patching", {"extraction_k": True}, "extraction_k"),
    ("path_patching", {"extraction_k": 2.5}, "extraction_k"),
    ("path_patching", {"min_fact_fraction": "0"}, "min_fact_fraction .* \\[0, 1\\)"),
    ("path_patching", {"n_std": -1.0}, "n_std must be a number >= 0"),
])
def test_flu_refuses_out_of_range_options_of_its_approach(planted, approach, option, match):
    with pytest.raises(ValueError, match=match):
        flu_scores(planted.model, planted.dataset, approach=approach, **option)


def test_flu_defaults_are_recorded_unchanged(planted):
    """Valid calls give what they gave: the defaults (0.5; 2.0, 4, 0.0) are filled in and recorded."""
    s = flu_scores(planted.model, planted.dataset, repeats=1)
    assert s.extra["rule_threshold"] == 0.5 and s.extra["flu_layers"] == [1]
    assert flu_scores(planted.model, planted.dataset, repeats=1, rule_threshold=0.5).extra == s.extra
    facts = planted.dataset.subset(range(18))
    p = flu_scores(planted.model, facts, approach="path_patching", n_std=1.0)
    assert (p.extra["n_std"], p.extra["min_fact_fraction"]) == (1.0, 0.0)
    assert flu_scores(planted.model, facts, approach="path_patching", n_std=1.0, extraction_k=4,
                      min_fact_fraction=0.0).extra == p.extra


# 2. an MLP-only localization with components= that name no MLP


def test_mlps_localization_refuses_components_without_mlps(planted):
    from factlens.localization.registry import check_localize_options, localization_mask

    with pytest.raises(ValueError, match="activation_patching_mlps.* include no MLP"):
        localization_mask(planted.model, planted.dataset, "activation_patching_mlps", param_budget=10**6,
                          components="heads", include_resid=False)
    with pytest.raises(ValueError, match="include no MLP"):
        localization_mask(planted.model, planted.dataset, "activation_patching_mlps", param_budget=10**6,
                          components=["L0H1", "L2H1"], include_resid=False)
    with pytest.raises(ValueError, match="localize_options.activation_patching_mlps.components.* include no MLP"):
        check_localize_options({"activation_patching_mlps": {"components": "heads"}})
    check_localize_options({"activation_patching_mlps": {"components": ["L0H1", "L1.mlp"]}})
    check_localize_options({"activation_patching": {"components": "heads"}})  # heads are what it scores
    mask, _ = localization_mask(planted.model, planted.dataset, "activation_patching_mlps", param_budget=10**6,
                                components=["L0H1", "L1.mlp"], include_resid=False)
    assert mask.labels == ["L1.mlp"]


# 3. random scores with seed=None are seeded (0, as the registry's seeded localizations)


def test_random_seed_none_means_zero():
    import factlens
    from factlens.localization.controls import random_scores
    from factlens.testing import tiny_model

    m = tiny_model()
    zero = random_scores(m, seed=0).values
    assert np.array_equal(random_scores(m, seed=None).values, zero)
    s = factlens.localize(m, [], "random", seed=None)
    assert np.array_equal(s.values, zero) and s.extra["seed"] == 0
    assert type(random_scores(m, seed=np.int64(3)).extra["seed"]) is int  # JSON can write it
    for bad in (True, 1.5, -1, "0"):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            random_scores(m, seed=bad)


# 4. positions= as a bare string


def test_positions_string_is_refused(planted):
    from factlens.localization.probing import probing

    with pytest.raises(TypeError, match=r"positions= takes a list .* positions=\['final'\]"):
        probing(planted.model, planted.dataset, positions="final")
    with pytest.raises(TypeError, match=r"positions=\['subject_last'\]"):
        flu_scores(planted.model, planted.dataset, positions="subject_last")
    with pytest.raises(TypeError, match=r"positions=\['final'\]"):
        flu_scores(planted.model, planted.dataset, positions="final")


# 5. wrongly typed options


@pytest.mark.parametrize("option, match", [
    ({"n_samples": True}, "n_samples must be an integer >= 1, got True"),
    ({"noise_scale": "3"}, "noise_scale must be a number > 0"),
    ({"noise_scale": True}, "noise_scale must be a number > 0"),
    ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ({"window": True}, "window must be an integer >= 1"),
])
def test_causal_tracing_refuses_mistyped_options(planted, option, match):
    from factlens.localization.causal_tracing import causal_tracing

    with pytest.raises(ValueError, match=match):
        causal_tracing(planted.model, planted.dataset, include_resid=False, **option)


@pytest.mark.parametrize("method", ["activation_patching", "attribution_patching"])
def test_patching_refuses_batch_size_true(planted, method):
    import factlens

    with pytest.raises(ValueError, match="batch_size must be .*got True"):
        factlens.localize(planted.model, planted.dataset, method, batch_size=True)


def test_mask_from_labels_refuses_non_strings():
    with pytest.raises(TypeError, match="Mask.from_labels takes component labels .* got 3 of type int"):
        Mask.from_labels([3])
    with pytest.raises(TypeError, match="component label is a string .* got 3"):
        Component.parse(3)
    assert Mask.from_labels(["L1.mlp", "L0H2"]).labels == ["L0H2", "L1.mlp"]
