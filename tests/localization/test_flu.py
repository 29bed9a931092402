"""Tests of the FLU localization (factlens.localization.flu) on the planted-fact model."""

from __future__ import annotations

import json

import pytest

from factlens.localization.flu import flu_scores, is_sports, rise_layers
from factlens.testing.invariants import no_hooks

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rise_layers_rule():
    assert rise_layers([0.3, 1.0, 1.0], chance=0.33) == [1]
    assert rise_layers([0.95, 0.97, 1.0], chance=0.33) == [0]
    assert rise_layers([0.34, 0.5, 0.6, 0.7], chance=0.34, fraction=1.0) == [1, 2, 3]
    assert rise_layers([0.34, 0.5, 0.6, 0.7], chance=0.34, fraction=0.4) == [1]
    assert rise_layers([0.34, 0.40, 0.80, 0.40, 0.95], chance=0.34, fraction=0.6) == [4]  # equally short: the larger gain wins
    assert rise_layers([0.25, 0.5, 0.5, 0.75], chance=0.25, fraction=0.5) == [1]  # tie: the earlier range
    # Gemma 3 270M, 60 known sports facts, 3x5-fold CV (measured on two fact samples): the steep climb
    for gemma in ([0.37, 0.35, 0.56, 0.77, 0.84, 0.86, 0.86, 0.88, 0.88, 0.91, 0.91, 0.93, 0.97, 0.96, 0.96, 0.96,
                   0.97, 0.97],
                  [0.35, 0.41, 0.59, 0.77, 0.8, 0.82, 0.82, 0.87, 0.86, 0.86, 0.91, 0.91, 0.97, 0.96, 0.98, 0.97,
                   0.99, 0.97]):
        assert rise_layers(gemma, chance=1 / 3) == [2, 3]
        assert rise_layers(gemma, chance=1 / 3, fraction=0.6) in ([2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="never rises"):
        rise_layers([0.35, 0.34, 0.36], chance=0.34)
    with pytest.raises(ValueError, match="rule threshold"):
        rise_layers([0.3, 1.0], chance=0.3, fraction=1.5)


def test_flu_on_planted_model_probing(planted):
    assert is_sports(planted.dataset)
    s = flu_scores(planted.model, planted.dataset)
    mask = s.to_mask(threshold=0.5)
    assert planted.lookup_mlp in mask and len(mask) < planted.n_layers
    assert all(c.kind == "mlp" for c in mask)
    assert s.method == "flu" and s.name == "flu" and s.extra["approach"] == "probing"
    assert s.extra["flu_layers"] == [1]
    assert s.plot() is not None  # probe curve with the FLU layers shaded
    json.dumps(s.extra)


def test_flu_with_some_layers_probed_takes_every_mlp_that_writes_the_gain(planted):
    # the gain between two probed layers (or from the embedding to the first) is written by every
    # MLP in between; crediting it to the later MLP alone missed the planted lookup MLP (layer 1)
    assert flu_scores(planted.model, planted.dataset, layers=[0, 2, 3]).extra["flu_layers"] == [1, 2]
    s = flu_scores(planted.model, planted.dataset, layers=[2, 3])
    assert s.extra["flu_layers"] == [0, 1, 2] and planted.lookup_mlp in s.to_mask(threshold=0.5)
    assert s.metric == "selected" and s.extra["metric"] == "probe_accuracy"  # the values are 0/1 membership


def test_flu_on_planted_model_path_patching(planted):
    s = flu_scores(planted.model, planted.dataset.subset(range(18)), approach="path_patching", n_std=1.0)
    assert s.to_mask(threshold=0.5).labels == ["L1.mlp"]
    assert s.extra["approach"] == "path_patching" and s.extra["extraction"][0] == "L2H1"
    assert s.extra["mlp_fact_fraction"]["L1.mlp"] == 1.0
    json.dumps(s.extra)
    with pytest.raises(ValueError, match="approach"):
        flu_scores(planted.model, planted.dataset, approach="magic")
    assert no_hooks(planted.model)


def test_options_of_the_other_approach_are_refused_with_the_approach_named(planted):
    """The FLU's entry takes both approaches' options: metric= reached probing and failed there with a
    TypeError, after the run had accepted it."""
    from factlens.localization.flu import flu_scores

    with pytest.raises(ValueError, match=r"localizes with probing here .* does not take \['metric'\]"):
        flu_scores(planted.model, planted.dataset, approach="probing", metric="prob")
    with pytest.raises(ValueError, match=r"localizes with path_patching here .* does not take \['cv'\]"):
        flu_scores(planted.model, planted.dataset, approach="path_patching", cv=3)


@pytest.mark.parametrize("approach", ["auto", "path_patching"])
def test_a_generator_of_facts_gives_the_flu_of_the_list(planted12, approach):
    """A generator was used up checking the records: the approach was chosen on no facts (path patching
    for sports) and the run failed with "the dataset is empty"."""
    records = list(planted12.dataset)
    opts = {"n_std": 1.0} if approach == "path_patching" else {}
    listed = flu_scores(planted12.model, records, approach=approach, **opts)
    generated = flu_scores(planted12.model, (r for r in records), approach=approach, **opts)
    assert generated.extra == listed.extra and generated.values.tolist() == listed.values.tolist()
    assert generated.extra["approach"] == ("probing" if approach == "auto" else "path_patching")


@pytest.mark.parametrize("option", [{"senders": "mlps"}, {"receivers": ["L2H1"]}])
def test_path_patching_senders_and_receivers_are_refused(planted12, option):
    """They were accepted (path patching takes them) and made the FLU compute on a subset, failing with
    "no head or MLP at layer >= 2 has a positive direct effect"."""
    with pytest.raises(ValueError, match=rf"chooses the path patching's senders .* drop \['{next(iter(option))}'\]"):
        flu_scores(planted12.model, planted12.dataset, approach="path_patching", n_std=1.0, **option)


def test_single_layer_model_says_no_mlp_can_feed_the_extraction_components():
    """The one MLP of a one-layer model is an extraction component (or after one): no MLP can be selected,
    yet the error advised lowering n_std= (which cannot help)."""
    from factlens.testing import tiny_model
    from factlens.data import sports_facts

    model = tiny_model(variant="gqa_gated", n_layers=1)
    facts = sports_facts()
    data = facts.subset(range(0, len(facts), 16))
    with pytest.raises(ValueError, match=r"no MLP can have an effect through the extraction components .* every MLP "
                                         r"of this 1-layer model is one of them or comes after them") as err:
        flu_scores(model, data, approach="path_patching", n_std=0.0)
    assert "lower n_std" not in str(err.value)


def test_negative_n_std_is_refused_before_scoring(planted12, monkeypatch):
    import factlens.localization.path_patching as pp

    monkeypatch.setattr(pp, "path_patching", lambda *a, **k: pytest.fail("scored before checking n_std"))
    with pytest.raises(ValueError, match=r"n_std must be a number >= 0 .* got -5\.0"):
        flu_scores(planted12.model, planted12.dataset, approach="path_patching", n_std=-5.0)
