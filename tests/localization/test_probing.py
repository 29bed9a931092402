"""Tests of probing (factlens.localization.probing) on the planted-fact model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factlens.localization.probing import probe_accuracy, probing
from factlens.scores import ComponentScores
from factlens.testing.invariants import no_hooks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def probe(planted):
    return probing(planted.model, planted.dataset)


def test_probing_finds_the_lookup_layer(planted, probe):
    acc = probe.extra["probe_accuracy"]["subject_last"]
    chance = probe.extra["chance"]
    assert chance == pytest.approx(1 / 3)
    assert acc[0] < chance + 0.2  # only the subject identity: not decodable for held-out subjects
    assert acc[planted.lookup_layer] >= 0.9
    assert probe.top(1) == [planted.lookup_mlp]
    assert probe[planted.lookup_mlp] == pytest.approx(acc[1] - acc[0])
    emb = probe.extra["embedding_accuracy"]["subject_last"]
    assert emb < chance + 0.2  # the embedding alone: held-out subjects are not decodable
    assert probe["L0.mlp"] == pytest.approx(acc[0] - max(chance, emb))
    assert all(v == 0 for c, v in zip(probe.components, probe.values) if c.kind == "head")
    # the final token only sees the attribute after the extraction head (layer 2)
    fin = probe.extra["probe_accuracy"]["final"]
    assert fin[1] < 0.7 and fin[2] >= 0.9
    assert probe.method == "probing" and probe.metric == "probe_accuracy"
    assert probe.extra["layers"] == [0, 1, 2, 3]
    assert no_hooks(planted.model)


def test_probing_json_plot_and_batch_size(planted, probe, tmp_path):
    json.dumps(probe.extra)
    probe.save(tmp_path / "p.json")
    assert ComponentScores.load(tmp_path / "p.json").extra["probe_accuracy"] == probe.extra["probe_accuracy"]
    fig = probe.plot()
    assert len(fig.data) == 2  # one curve per position
    other = probing(planted.model, planted.dataset, batch_size=7)
    np.testing.assert_allclose(other.extra["probe_accuracy"]["subject_last"],
                               probe.extra["probe_accuracy"]["subject_last"], atol=1e-9)


def test_probing_layer_subset_and_errors(planted):
    s = probing(planted.model, planted.dataset, layers=[1, 3], positions=("subject_last",))
    assert s.extra["layers"] == [1, 3] and len(s.extra["probe_accuracy"]["subject_last"]) == 2
    assert s["L0.mlp"] == 0 and s["L1.mlp"] > 0.5
    ds = planted.dataset
    with pytest.raises(ValueError, match="positions"):
        probing(planted.model, ds, positions=("middle",))
    with pytest.raises(ValueError, match="layers"):
        probing(planted.model, ds, layers=[4])
    with pytest.raises(ValueError, match="two different answers"):
        probing(planted.model, ds.filter(lambda r: r.answer == "baseball"))
    one_football = [r for r in ds if r.answer != "football"] + [next(r for r in ds if r.answer == "football")]
    with pytest.raises(ValueError, match="only once"):
        probing(planted.model, one_football)


def test_probe_accuracy_is_cross_validated():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    noise = rng.normal(size=(30, 50))
    assert probe_accuracy(noise, y)[0] < 0.6  # unseen examples: no memorization
    assert probe_accuracy(noise + 5 * np.eye(3)[y] @ rng.normal(size=(3, 50)), y)[0] == 1.0


def test_probe_accuracy_names_the_answer_with_one_fact():
    """A class of one fact reached sklearn's "k-fold cross-validation requires ... n_splits=2 or more, got
    n_splits=1", which names neither the answer nor the fix; one class gave the same."""
    X = np.random.default_rng(0).normal(size=(9, 4))
    with pytest.raises(ValueError, match=r"answers \['c'\] occur only once"):
        probe_accuracy(X, ["a"] * 4 + ["b"] * 4 + ["c"])
    with pytest.raises(ValueError, match="at least two different answers"):
        probe_accuracy(X, ["a"] * 9)


def test_probing_masks_take_rises_not_drops():
    """A layer where the probe's accuracy drops is not where the attribute is written: the
    budgeted probing mask ranks by the signed gain (it ranked by |gain|, so a drop of 0.3 beat a
    rise of 0.2)."""
    from factlens.components import Component, ModelShape
    from factlens.scores import ComponentScores

    shape = ModelShape(n_layers=3, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)
    comps = (Component("mlp", 0), Component("mlp", 1), Component("mlp", 2))
    gains = ComponentScores(comps, [0.2, -0.3, 0.05], "probing", "probe_accuracy", shape, rank_by="value")
    one_mlp = ComponentScores(comps[:1], [1.0], "x", "y", shape).to_mask(top_k=1).n_params(shape)
    assert gains.to_mask(param_budget=one_mlp).components == frozenset({Component("mlp", 0)})
    assert gains.top(3) == [Component("mlp", 0), Component("mlp", 2)]  # a drop is never taken
    assert gains.to_mask(param_budget=3 * one_mlp).components == {Component("mlp", 0), Component("mlp", 2)}
    assert gains.to_mask(threshold=0.1).components == frozenset({Component("mlp", 0)})
    assert ComponentScores.from_dict(gains.to_dict()).rank_by == "value"
    plain = ComponentScores(comps, [0.2, -0.3, 0.05], "activation_patching", "logit_diff", shape)
    assert plain.top(1) == [Component("mlp", 1)] and "rank_by" not in plain.to_dict()  # patching: |effect|
    with pytest.raises(ValueError, match="rank_by"):
        ComponentScores(comps, [0.0] * 3, "x", "y", shape, rank_by="signed")


def test_a_probing_budget_is_never_filled_with_heads_probing_did_not_score():
    """Probing scores every head 0.0, which ranked above any MLP whose gain is negative: a budget larger
    than the rising layers filled up with layer-0 heads (a 4-layer model at a 3-MLP budget gave
    L0H0-L0H3, L0.mlp, L3.mlp)."""
    import factlens
    from factlens.components import Mask
    from factlens.data import sports_facts
    from factlens.localization import localization_mask
    from factlens.testing import tiny_model

    m = tiny_model(n_layers=4)
    scores = factlens.localize(m, sports_facts(), method="probing", repeats=1, show_progress=False)
    rising = {c for c, v in zip(scores.components, scores.values) if v > 0}
    assert rising and all(c.kind == "mlp" for c in rising) and len(rising) < 4
    budget = Mask.from_labels([f"L{i}.mlp" for i in range(3)]).n_params(m)
    mask, _ = localization_mask(m, sports_facts(), "probing", param_budget=budget, repeats=1)
    assert mask.components == rising
    assert scores.top(10) == [c for c in scores.top(len(rising))] and len(scores.top(10)) == len(rising)


def test_probing_scores_rank_by_signed_gain(planted):
    from factlens.localization.probing import probing

    assert probing(planted.model, planted.dataset).rank_by == "value"


def test_residual_features_of_the_embedding_alone(planted):
    """Layer -1 (the embedding) alone stopped the forward pass before block 0's resid_pre ran, and
    nothing was collected ("need at least one array to concatenate")."""
    from factlens.localization.probing import residual_features

    alone = residual_features(planted.model, planted.dataset, layers=[-1])
    with_0 = residual_features(planted.model, planted.dataset, layers=[-1, 0])
    d = planted.model.cfg.d_model
    for p in ("subject_last", "final"):
        assert alone[p][-1].shape == (len(planted.dataset), d)
        np.testing.assert_array_equal(alone[p][-1], with_0[p][-1])
