"""The localization registries: declared options match the functions; entries resolve; extension."""

from __future__ import annotations

import inspect

import pytest

import factlens
from factlens.components import Component
from factlens.localization.registry import LOCALIZATIONS, METHODS, Localization, ScoringMethod, localization_mask
from factlens.scores import ComponentScores

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method", METHODS.names())
def test_declared_options_match_the_function(method):
    entry = METHODS.get(method)
    params = inspect.signature(entry.fn.load()).parameters
    kw = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    declared = set(entry.options)
    assert kw <= declared, f"{method}: options the function takes but the entry does not declare: {kw - declared}"
    if not has_var_kw:
        assert declared <= kw, f"{method}: declared options the function does not take: {declared - kw}"


def test_every_localization_resolves():
    for loc in LOCALIZATIONS:
        assert (loc.fixed is None) == (loc.scoring is not None), loc.name
        if loc.mlps_only:  # MLP-only selections are either at the budget or the top-k MLPs
            assert loc.budgeted or loc.top_k is not None, loc.name


def test_unknown_names_and_options_raise_with_the_known_ones(planted):
    with pytest.raises(ValueError, match="unknown localization method 'nope'; known: .*activation_patching"):
        factlens.localize(planted.model, planted.dataset, method="nope")
    with pytest.raises(TypeError, match="unknown option.*'ig_step'.*accepts"):
        factlens.localize(planted.model, planted.dataset, method="attribution_patching", ig_step=3)
    with pytest.raises(ValueError, match="unknown localization 'flux'"):
        localization_mask(planted.model, planted.dataset, "flux")
    with pytest.raises(ValueError, match="needs param_budget"):
        localization_mask(planted.model, planted.dataset, "random")


def test_localize_accepts_flu(planted):
    scores = factlens.localize(planted.model, planted.dataset, method="flu", show_progress=False)
    mask, _ = localization_mask(planted.model, planted.dataset, "flu", show_progress=False)
    assert scores.name == "flu" and set(scores.to_mask(threshold=0.5)) == set(mask)
    assert planted.lookup_mlp in set(mask)


def _last_layer_mlp(model, dataset, *, seed: int = 0) -> ComponentScores:
    """A toy method: 1 for the last MLP, 0 elsewhere (to show one-entry extension)."""
    from factlens.localization.controls import manual_scores

    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


def test_a_new_method_is_one_function_and_one_entry(planted):
    toy = ScoringMethod("last_mlp", _last_layer_mlp, ("seed",), "toy")
    scores = factlens.localize(planted.model, planted.dataset, method=toy)
    assert scores.top(1) == [Component("mlp", planted.model.cfg.n_layers - 1)]
    loc = Localization("last_mlp", toy, budgeted=False, seeded=True)
    mask, _ = localization_mask(planted.model, planted.dataset, loc)
    assert set(mask) == {Component("mlp", planted.model.cfg.n_layers - 1)}
    extended = METHODS.with_entry(toy)
    assert "last_mlp" in extended and "last_mlp" not in METHODS


def test_top_mlp_localization_is_one_mlp_for_rome(planted):
    # ROME edits one MLP layer: causal_tracing_top_mlp picks the MLP with the largest
    # causal-tracing effect, which on the planted model is its fact-lookup MLP
    mask, scores = localization_mask(planted.model, planted.dataset, "causal_tracing_top_mlp", show_progress=False)
    assert set(mask) == {planted.lookup_mlp}
    assert mask.name == "causal_tracing_top_mlp" and scores is not None
    with pytest.raises(ValueError, match="top_k"):
        Localization("bad", "random", top_k=1)  # a top-k selection cannot also be budgeted


@pytest.mark.parametrize("name", ["flu", "causal_tracing_mlps", "attribution_patching_top_mlp", "random", "all_mlps",
                                  "nonlocalized"])
def test_scores_then_mask_is_localization_mask(planted, name):
    from factlens.localization import localization_scores, mask_from_scores

    from factlens.localization import LOCALIZATIONS

    loc = LOCALIZATIONS.get(name)  # a budget only where the localization uses it (the others warn that they ignore it)
    budget = 2 * planted.model.cfg.d_model * planted.model.cfg.d_mlp if loc.budgeted or loc.fixed else None
    opts = {"n_samples": 2} if name.startswith("causal_tracing") else {}
    mask, scores = localization_mask(planted.model, planted.dataset, name, param_budget=budget, seed=1, **opts)
    s = localization_scores(planted.model, planted.dataset, name, seed=1, **opts)
    assert mask_from_scores(planted.model, name, s, param_budget=budget) == mask
    assert (s is None) == (scores is None) and (s is None or s.values.tolist() == scores.values.tolist())


def test_mask_from_scores_says_what_is_missing(planted):
    from factlens.localization import localization_scores, mask_from_scores

    s = localization_scores(planted.model, planted.dataset, "random", seed=0)
    with pytest.raises(ValueError, match="'random' needs param_budget="):
        mask_from_scores(planted.model, "random", s)
    with pytest.raises(ValueError, match="selects its mask from scores; got scores=None"):
        mask_from_scores(planted.model, "random", None, param_budget=10)


def test_only_the_per_component_methods_are_heavy():
    assert {m.name for m in METHODS if m.heavy} == {"activation_patching", "causal_tracing", "path_patching"}


@pytest.mark.parametrize("options, match", [
    ({"seed": 3}, "set by the run itself"),                       # was: TypeError "multiple values" in every job
    ({"causal_tracing": {"seed": 1}}, "set by the run itself"),
    ({"causal_tracing": {"n_sample": 4}}, r"unknown option\(s\) \['n_sample'\]"),  # was: TypeError at job time
    ({"batchsize": 4}, "no scoring method takes this option"),    # was: silently passed to no method
    ({"causal_trace": {"n_samples": 4}}, "no scoring method or localization of that name"),  # was: ignored
    ({"all_mlps": {"n_samples": 4}}, "takes no options"),
    ({"random_mlps": {"batch_size": 4}}, "takes no options"),     # the run sets all of random's options
])
def test_run_localize_options_are_checked_up_front(options, match):
    from factlens.runner import RunConfig

    with pytest.raises(ValueError, match=match):
        RunConfig(task="planted", model="planted", localize_options=options)


def test_the_options_a_run_may_set_are_those_it_does_not_set_itself():
    assert METHODS.get("random").user_options == ()
    assert "seed" not in METHODS.get("causal_tracing").user_options
    assert "n_samples" in METHODS.get("causal_tracing").user_options


def test_run_localize_options_that_a_method_takes_are_accepted():
    from factlens.runner import RunConfig

    cfg = RunConfig(task="planted", model="planted", localize_options={
        "batch_size": 4, "causal_tracing": {"n_samples": 3}, "causal_tracing_mlps": {"window": 3}})
    assert cfg.localize_options["causal_tracing_mlps"] == {"window": 3}


def test_an_explicit_seed_reaches_unseeded_methods(planted):
    """``localization_mask(..., seed=3)`` on attribution patching silently used seed 0 (the corrupting
    subjects of seed 0); without ``seed=`` the method keeps its own default."""
    import numpy as np

    a0 = factlens.localize(planted.model, planted.dataset, method="attribution_patching", seed=0)
    a3 = factlens.localize(planted.model, planted.dataset, method="attribution_patching", seed=3)
    assert not np.allclose(a0.values, a3.values)  # the seed matters for this method
    _, s3 = localization_mask(planted.model, planted.dataset, "attribution_patching", param_budget=5000, seed=3)
    _, s_default = localization_mask(planted.model, planted.dataset, "attribution_patching", param_budget=5000)
    np.testing.assert_allclose(s3.values, a3.values)
    np.testing.assert_allclose(s_default.values, a0.values)


def _by_layer(model, dataset, *, seed: int = 0) -> ComponentScores:
    """A toy method: every component scored by its layer (the deepest first)."""
    from factlens.localization.controls import manual_scores

    s = manual_scores(model, dataset, components=[Component("mlp", 0)])
    return ComponentScores(s.components, [float(c.layer + 1) for c in s.components], "by_layer", "toy", s.shape)


def test_a_compared_method_gets_its_runner_localizations_from_its_one_entry(planted, tmp_path, monkeypatch):
    """A scoring method needed a second entry (a Localization, added to a hard-coded list of names) before
    ``factlens run --localizations`` took it, and the error did not say so; ``compared=True`` on its one
    ScoringMethod entry now gives ``<name>`` and ``<name>_mlps``. ``localize`` names scores after the
    entry (a method built on manual_scores gave scores named "manual")."""
    import factlens.localization as package
    from factlens.localization import registry
    from factlens.runner import RunConfig
    from factlens.runner.cli import main

    toy = ScoringMethod("by_layer", _by_layer, ("seed",), "toy", compared=True)
    assert factlens.localize(planted.model, planted.dataset, method=toy).method == "by_layer"
    last = ScoringMethod("last_mlp", _last_layer_mlp, ("seed",), "toy")
    assert factlens.localize(planted.model, planted.dataset, method=last).name == "last_mlp"

    methods = METHODS.with_entry(toy)  # what one entry in METHODS does in a package
    monkeypatch.setattr(registry, "METHODS", methods)
    with pytest.raises(ValueError, match=r"\['by_layer'\] are scoring methods without named localizations"):
        RunConfig(task="planted", model="planted", localizations=("by_layer",))  # LOCALIZATIONS not rebuilt yet
    locs = registry.Registry("localization", registry._localizations())
    assert {"by_layer", "by_layer_mlps"} <= set(locs.names()) and locs.get("by_layer").budgeted
    for module in (registry, package):
        monkeypatch.setattr(module, "LOCALIZATIONS", locs)
    out = tmp_path / "run"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,by_layer_mlps",
                 "--suites", "standard", "--no-progress", "--no-report", "--edit", "steps=1"]) == 0
    import json

    rec = json.loads((out / "runs" / "seed0" / "by_layer_mlps.json").read_text())
    assert rec["budgeted"] and rec["mask_labels"][0] == f"L{planted.model.cfg.n_layers - 1}.mlp"


@pytest.mark.parametrize("name, options", [
    ("random_mlps", {"param_budget": 5000}),
    ("attribution_patching_top_mlp", {}),
    ("attribution_patching_mlps", {"param_budget": 5000}),
    ("causal_tracing_top_mlp", {"n_samples": 2, "include_resid": False}),
])
def test_mlp_only_localizations_of_an_attention_only_model_are_refused_before_scoring(name, options, monkeypatch):
    """Only random_mlps raised; the others ran the whole method and returned an empty mask."""
    from factlens.data import sports_facts
    from factlens.localization.registry import ScoringMethod
    from factlens.testing import tiny_model

    model = tiny_model(variant="attn_only", n_layers=2)
    monkeypatch.setattr(ScoringMethod, "__call__", lambda *a, **k: pytest.fail("scored an attention-only model"))
    method = LOCALIZATIONS.get(name).scoring.name
    with pytest.raises(ValueError, match=rf"localization '{name}' chooses among MLPs only, but the model has no MLPs "
                                         rf"to choose from \(attention-only\).*\(e\.g\. '{method}'\)"):
        localization_mask(model, sports_facts(), name, **options)


def test_mask_from_scores_of_an_mlp_only_localization_takes_only_mlps(planted):
    """Given unrestricted scores (random's), random_mlps's mask was mostly heads."""
    from factlens.components import Mask, ModelShape
    from factlens.localization import localization_scores, mask_from_scores

    budget = Mask(frozenset(ModelShape.of(planted.model).all_mlps()[:2])).n_params(planted.model)  # two MLPs
    unrestricted = localization_scores(planted.model, planted.dataset, "random", seed=0)
    mask = mask_from_scores(planted.model, "random_mlps", unrestricted, param_budget=budget)
    assert len(mask) == 2 and all(c.kind == "mlp" for c in mask)
    assert mask == unrestricted.restrict("mlp").to_mask(param_budget=budget, name="random_mlps")
    top = mask_from_scores(planted.model, "attribution_patching_top_mlp", factlens.localize(
        planted.model, planted.dataset, method="attribution_patching"))
    assert set(top) == {planted.lookup_mlp}
    from factlens.testing import tiny_model

    attn_only = tiny_model(variant="attn_only", n_layers=2)
    heads = localization_scores(attn_only, None, "random", seed=0)
    with pytest.raises(ValueError, match="'random_mlps' chooses among MLPs only, but the model has no MLPs"):
        mask_from_scores(attn_only, "random_mlps", heads, param_budget=budget)
