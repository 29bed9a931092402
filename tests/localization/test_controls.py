"""Tests of the baseline localizations (factlens.localization.controls) and of the paper's named
localization masks at equal parameter budgets (factlens.localization.registry.localization_mask)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from factlens.components import Component, Mask, ModelShape
from factlens.localization.controls import manual_scores, random_scores
from factlens.localization.registry import localization_mask, localize
from factlens.scores import ComponentScores
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def gqa():
    return tiny_model(variant="gqa_gated", n_layers=4)


def test_random_scores_are_seeded_uniform(gqa):
    s = random_scores(gqa, seed=3)
    shape = ModelShape.of(gqa)
    assert len(s) == shape.n_layers * (shape.n_heads + 1) and s.method == "random" and s.name == "random"
    assert np.all((s.values >= 0) & (s.values < 1))
    np.testing.assert_array_equal(s.values, random_scores(gqa, seed=3).values)
    assert not np.array_equal(s.values, random_scores(gqa, seed=4).values)
    m = random_scores(gqa, seed=3, mlps_only=True)
    assert [c.kind for c in m.components] == ["mlp"] * shape.n_layers and m.name == "random_mlps"
    # different seeds give different top components (a random set, not a fixed order)
    tops = {tuple(random_scores(gqa, seed=k).top(3)) for k in range(10)}
    assert len(tops) > 5
    json.dumps(s.to_dict())


def test_random_scores_are_uniform_and_alike_for_every_component(gqa):
    """Over 200 seeds the scores pass a Kolmogorov-Smirnov test against Uniform(0, 1), and every
    component's mean score is 1/2 within 4 standard errors (sqrt(1/12 / 200) each): no component,
    layer or kind is favoured in the top-k of the random baseline."""
    from scipy.stats import kstest

    shape = ModelShape.of(gqa)
    draws = np.stack([random_scores(shape, seed=k).values for k in range(200)])  # [seed, component]
    assert kstest(draws.ravel(), "uniform").pvalue > 0.01
    se = math.sqrt(1 / 12 / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - 0.5) < 4 * se)
    # the ranks too: each component is the top one about equally often (not only the late layers)
    top = np.bincount(draws.argmax(axis=1), minlength=draws.shape[1])
    from scipy.stats import chisquare

    assert chisquare(top).pvalue > 0.01


def test_manual_scores(gqa):
    s = manual_scores(gqa, components=["L1.mlp", Component("head", 2, 3), "L0.N5"])
    assert s.to_mask(threshold=0.5).labels == ["L0.N5", "L1.mlp", "L2H3"]
    assert s["L0.mlp"] == 0.0 and s.method == "manual"
    assert manual_scores(gqa, components="L3.mlp").to_mask(threshold=0.5).labels == ["L3.mlp"]
    with pytest.raises(ValueError, match="does not exist"):
        manual_scores(gqa, components=["L9.mlp"])
    with pytest.raises(ValueError, match="does not exist"):
        manual_scores(gqa, components=["L0H7"])
    with pytest.raises(ValueError, match="empty"):
        manual_scores(gqa, components=[])
    with pytest.raises(ValueError, match="cannot parse"):
        manual_scores(gqa, components=["mlp 3"])


def test_registry_dispatches_baselines(gqa):
    r = localize(gqa, None, method="random", seed=1)
    np.testing.assert_array_equal(r.values, random_scores(gqa, seed=1).values)
    m = localize(gqa, None, method="manual", components=["L2.mlp"])
    assert m.to_mask(threshold=0.5).labels == ["L2.mlp"]


def _assert_budget_met(mask: Mask, scores: ComponentScores, budget: int, shape: ModelShape) -> None:
    """Never over budget, and no unchosen component would still fit (as close as granularity allows)."""
    used = mask.n_params(shape)
    assert used <= budget
    for c in scores.components:
        if c not in mask:
            assert (mask | Mask(frozenset({c}))).n_params(shape) > budget, c


@pytest.mark.parametrize("n_mlps", [1, 2])
def test_localization_masks_at_equal_budget(gqa, n_mlps):
    shape = ModelShape.of(gqa)
    budget = Mask.from_labels([f"L{l}.mlp" for l in range(n_mlps)]).n_params(shape)  # an FLU-sized budget
    masks = {}
    for loc in ("random", "random_mlps"):
        mask, scores = localization_mask(gqa, None, loc, param_budget=budget, seed=0)
        assert mask.name == loc and scores.name == loc
        _assert_budget_met(mask, scores, budget, shape)
        masks[loc] = mask
    # MLP-only random masks hit an MLP-multiple budget exactly
    assert masks["random_mlps"].n_params(shape) == budget and len(masks["random_mlps"]) == n_mlps
    assert all(c.kind == "mlp" for c in masks["random_mlps"])
    # mixed random masks (heads share GQA K/V) come within one head of the budget
    one_head = Mask.from_labels(["L0H0"]).n_params(shape)
    assert budget - masks["random"].n_params(shape) < one_head
    # different seeds give different random sets
    others = {frozenset(localization_mask(gqa, None, "random", param_budget=budget, seed=s)[0].components)
              for s in range(6)}
    assert len(others) > 1
    all_mlps, none1 = localization_mask(gqa, None, "all_mlps", param_budget=budget)
    everything, none2 = localization_mask(gqa, None, "nonlocalized", param_budget=budget)
    assert none1 is None and none2 is None
    assert all_mlps == Mask.all_mlps(gqa) and len(everything) == shape.n_layers * (shape.n_heads + 1)
    # the editor's parameter masks agree with the counted budget
    pm = masks["random"].to_param_masks(gqa)
    assert sum(int(t.sum()) for t in pm.values()) == masks["random"].n_params(shape)


def test_random_localization_needs_a_budget(gqa):
    with pytest.raises(ValueError, match="param_budget"):
        localization_mask(gqa, None, "random")


def test_flu_mask_on_planted_model(planted):
    mask, scores = localization_mask(planted.model, planted.dataset, "flu", show_progress=False)
    assert planted.lookup_mlp in mask
    assert mask.labels == ["L1.mlp"] and mask.name == "flu"
    assert len(mask) < planted.n_layers
    assert scores.method == "flu" and scores.extra["flu_layers"] == [planted.lookup_layer]
    # equal-budget random MLP baseline for it
    budget = mask.n_params(planted.model)
    rnd, _ = localization_mask(planted.model, planted.dataset, "random_mlps", param_budget=budget, seed=1)
    assert rnd.n_params(planted.model) == budget and len(rnd) == 1
    for hp in planted.model.hook_dict.values():
        assert not hp.fwd_hooks
