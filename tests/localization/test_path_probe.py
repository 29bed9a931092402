"""Tests of path patching, probing and the FLU localization (factlens.localization.path_patching,
.probing, .flu) on the planted-fact model and tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factlens.components import Component, attn_hook, mlp_hook
from factlens.data import sports_facts
from factlens.data.records import FactRecord
from factlens.localization.flu import flu_scores, is_sports, rise_layers
from factlens.localization.pairs import make_pairs, patching_metric
from factlens.localization.path_patching import extraction_components, fact_lookup_mlps, path_patching
from factlens.localization.probing import probe_accuracy, probing
from factlens.scores import ComponentScores
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.tiny import build_hooked
from factlens.tokens import encode_records, unembed

pytestmark = pytest.mark.usefixtures("one_thread")





@pytest.fixture(scope="module")
def planted():
    return planted_fact_model()


@pytest.fixture(scope="module")
def probe(planted):
    return probing(planted.model, planted.dataset, show_progress=False)


@pytest.fixture(scope="module")
def direct(planted):
    return path_patching(planted.model, planted.dataset, show_progress=False)


@pytest.fixture(scope="module")
def via_extraction(planted):
    return path_patching(planted.model, planted.dataset, receivers=[planted.extraction_head], show_progress=False)


def assert_no_hooks(model):
    for name, hp in model.hook_dict.items():
        assert not hp.fwd_hooks and not hp.bwd_hooks, name
        assert not hp._forward_hooks and not hp._backward_hooks, name


def short_sports(model, n_per_sport=4) -> list[FactRecord]:
    """Sports facts with two-token subjects (so corrupted prompts align) and a short template."""
    recs = [FactRecord(subject=r.subject, template="{} plays the sport of", answer=r.answer, id=r.id)
            for r in sports_facts()]
    b = encode_records(model, recs)
    two = [r for r, n in zip(recs, (b.subject_last - b.subject_first + 1).tolist()) if n == 2]
    out, count = [], {}
    for r in two:
        if count.get(r.answer, 0) < n_per_sport:
            out.append(r)
            count[r.answer] = count.get(r.answer, 0) + 1
    return out


# --- probing ---------------------------------------------------------------------------------


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
    assert_no_hooks(planted.model)


def test_probing_json_plot_and_batch_size(planted, probe, tmp_path):
    json.dumps(probe.extra)
    probe.save(tmp_path / "p.json")
    assert ComponentScores.load(tmp_path / "p.json").extra["probe_accuracy"] == probe.extra["probe_accuracy"]
    fig = probe.plot()
    assert len(fig.data) == 2  # one curve per position
    other = probing(planted.model, planted.dataset, batch_size=7, show_progress=False)
    np.testing.assert_allclose(other.extra["probe_accuracy"]["subject_last"],
                               probe.extra["probe_accuracy"]["subject_last"], atol=1e-9)


def test_probing_layer_subset_and_errors(planted):
    s = probing(planted.model, planted.dataset, layers=[1, 3], positions=("subject_last",), show_progress=False)
    assert s.extra["layers"] == [1, 3] and len(s.extra["probe_accuracy"]["subject_last"]) == 2
    assert s["L0.mlp"] == 0 and s["L1.mlp"] > 0.5
    ds = planted.dataset
    with pytest.raises(ValueError, match="positions"):
        probing(planted.model, ds, positions=("middle",), show_progress=False)
    with pytest.raises(ValueError, match="layers"):
        probing(planted.model, ds, layers=[4], show_progress=False)
    with pytest.raises(ValueError, match="two different answers"):
        probing(planted.model, ds.filter(lambda r: r.answer == "baseball"), show_progress=False)
    one_football = [r for r in ds if r.answer != "football"] + [next(r for r in ds if r.answer == "football")]
    with pytest.raises(ValueError, match="only once"):
        probing(planted.model, one_football, show_progress=False)


def test_probe_accuracy_is_cross_validated():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    noise = rng.normal(size=(30, 50))
    assert probe_accuracy(noise, y)[0] < 0.6  # unseen examples: no memorization
    assert probe_accuracy(noise + 5 * np.eye(3)[y] @ rng.normal(size=(3, 50)), y)[0] == 1.0


# --- path patching -----------------------------------------------------------------------------


def test_direct_effects_rank_the_extraction_head(planted, direct):
    assert direct.restrict("head").top(1) == [planted.extraction_head]
    assert direct[planted.extraction_head] > 5  # noising removes the clean answer's logit lead
    assert abs(direct[planted.lookup_mlp]) < 0.1  # the lookup MLP only writes at the subject
    assert direct.method == "path_patching" and direct.extra["receivers"] == "logits"
    per = direct.per_example
    assert per.shape == (len(direct), len(planted.dataset))
    np.testing.assert_allclose(per.mean(1), direct.values)
    assert direct.example_ids == tuple(r.id for r in planted.dataset) and direct.n_dropped == 0
    assert len(direct.clean_metric) == len(planted.dataset)
    json.dumps(direct.to_dict())
    assert_no_hooks(planted.model)


def test_path_through_extraction_head_ranks_the_lookup_mlp(planted, via_extraction):
    s = via_extraction
    assert s.restrict("mlp").top(1) == [planted.lookup_mlp]
    assert s[planted.lookup_mlp] > 5
    # senders that cannot reach head 2.1 (layer >= 2) and the receiver itself score exactly 0
    for c in s.components:
        if c.layer >= 2:
            assert s[c] == 0.0, c
    assert s.extra["receivers"] == ["L2H1"]
    assert_no_hooks(planted.model)


def test_path_patching_does_not_depend_on_batch_size(planted, direct, via_extraction):
    d5 = path_patching(planted.model, planted.dataset, batch_size=5, show_progress=False)
    np.testing.assert_allclose(d5.values, direct.values, rtol=1e-4, atol=1e-4)
    senders = [planted.lookup_mlp, Component("head", 0, 1), Component("mlp", 0)]
    v5 = path_patching(planted.model, planted.dataset, receivers=["L2H1"], senders=senders, batch_size=5,
                       show_progress=False)
    np.testing.assert_allclose(v5.values, [via_extraction[c] for c in senders], rtol=1e-4, atol=1e-4)


def _post_norm_model():
    """A tiny Gemma-like model: RMS pre- and post-norms around attention and MLP, GQA, gated MLP."""
    from transformer_lens import HookedTransformerConfig

    base = tiny_model(variant="gqa_gated")
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=128, d_vocab=base.cfg.d_vocab,
        act_fn="gelu", gated_mlp=True, n_key_value_heads=2, normalization_type="RMS",
        use_normalization_before_and_after=True, positional_embedding_type="rotary", rotary_dim=8,
        default_prepend_bos=True, device="cpu", dtype=torch.float32, seed=1, init_weights=True,
    )
    model = build_hooked(cfg, base.tokenizer)
    with torch.no_grad():  # make the post-norm scales non-trivial
        for name, p in model.named_parameters():
            if "ln1_post" in name or "ln2_post" in name:
                p.mul_(torch.linspace(0.5, 1.5, p.shape[-1]))
    return model.eval()


def _brute_force_direct(model, records, sender: Component) -> float:
    """Mean drop when ``sender`` is noised and every other head/MLP is frozen at clean."""
    pairs = make_pairs(model, records)
    n = model.cfg.n_layers
    clean, corr = {}, {}
    names = [attn_hook(l, "z") for l in range(n)] + [mlp_hook(l, "out") for l in range(n)]
    with torch.no_grad():
        _, cc = model.run_with_cache(pairs.clean.tokens, names_filter=lambda x: x in names)
        _, rc = model.run_with_cache(pairs.corrupted.tokens, names_filter=lambda x: x in names)

    def freeze(name, is_z, layer):
        def hook(act, hook):
            out = cc[name].clone()
            if sender.layer == layer and (sender.kind == "head") == is_z:
                if is_z:
                    out[:, :, sender.index] = rc[name][:, :, sender.index]
                else:
                    out = rc[name].clone()
            return out
        return hook

    hooks = [(attn_hook(l, "z"), freeze(attn_hook(l, "z"), True, l)) for l in range(n)]
    hooks += [(mlp_hook(l, "out"), freeze(mlp_hook(l, "out"), False, l)) for l in range(n)]
    b = torch.arange(len(pairs))
    with torch.no_grad():
        base = model(pairs.clean.tokens, stop_at_layer=n)[b, pairs.clean.last_pos]
        with model.hooks(fwd_hooks=hooks):
            patched = model(pairs.clean.tokens, stop_at_layer=n)[b, pairs.clean.last_pos]
        m0 = patching_metric(unembed(model, base[:, None])[:, 0], pairs)
        m1 = patching_metric(unembed(model, patched[:, None])[:, 0], pairs)
    return float((m0 - m1).mean())


@pytest.mark.parametrize("kind", ["gqa_gated", "post_norm"])
def test_direct_effect_equals_freezing_everything_else(kind):
    model = tiny_model(variant="gqa_gated", n_layers=3) if kind == "gqa_gated" else _post_norm_model()
    recs = short_sports(model, n_per_sport=3)
    senders = [Component("head", 0, 1), Component("head", 1, 3), Component("mlp", 1), Component("head", 2, 0)]
    s = path_patching(model, recs, senders=senders, show_progress=False, batch_size=4)
    ref = [_brute_force_direct(model, recs, c) for c in senders]
    np.testing.assert_allclose(s.values, ref, rtol=1e-3, atol=1e-4)
    assert np.abs(ref).max() > 1e-3  # not trivially zero


def test_path_patching_input_errors(planted):
    m, ds = planted.model, planted.dataset
    with pytest.raises(ValueError, match="does not exist"):
        path_patching(m, ds, receivers=["L7H0"], show_progress=False)
    with pytest.raises(ValueError, match="neurons"):
        path_patching(m, ds, senders=["L1.N3"], show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        path_patching(m, ds, receivers=[], show_progress=False)
    with pytest.raises(ValueError, match="metric"):
        path_patching(m, ds, metric="accuracy", show_progress=False)
    assert_no_hooks(m)


def test_no_hooks_left_after_an_exception(planted, monkeypatch):
    m, ds = planted.model, planted.dataset

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(m.blocks[3], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        path_patching(m, ds, show_progress=False)
    assert_no_hooks(m)
    with pytest.raises(RuntimeError, match="boom"):
        probing(m, ds, show_progress=False)
    assert_no_hooks(m)
    monkeypatch.undo()
    # receivers mode: fail in the second (receiver-patched) run, while its hooks are attached
    block = m.blocks[3]
    original, calls = block.forward, []

    def fail_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # clean cache, corrupted cache, then the patched run (run 1 stops at layer 3)
            raise RuntimeError("boom")
        return original(*a, **k)

    monkeypatch.setattr(block, "forward", fail_third)
    with pytest.raises(RuntimeError, match="boom"):
        path_patching(m, ds, receivers=[planted.extraction_head], senders=["L1.mlp"], show_progress=False)
    assert len(calls) == 3
    assert_no_hooks(m)


def test_parameters_unchanged(planted):
    before = {k: v.clone() for k, v in planted.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in planted.model.named_parameters()}
    path_patching(planted.model, planted.dataset.subset(range(12)), receivers=["L2H1"], show_progress=False)
    for k, v in planted.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert flags == {k: p.requires_grad for k, p in planted.model.named_parameters()}


# --- automated per-fact lookup and FLU ---------------------------------------------------------


def test_extraction_components(planted, direct):
    ext = extraction_components(direct, k=2)
    assert ext[0] == planted.extraction_head and len(ext) <= 2
    assert all(c.layer >= 2 for c in ext)
    with pytest.raises(ValueError, match="positive direct effect"):
        extraction_components(direct, k=2, min_layer=4)
    with pytest.raises(ValueError, match="k must be"):
        extraction_components(direct, k=0)


def test_fact_lookup_mlps_groups_all_facts_on_the_lookup_mlp(planted, direct):
    ext = extraction_components(direct, k=3)
    out = fact_lookup_mlps(planted.model, planted.dataset, extraction=ext, n_std=1.0, show_progress=False)
    ids = [r.id for r in planted.dataset]
    assert set(out["per_fact"]) == set(ids)
    assert all(v == ["L1.mlp"] for v in out["per_fact"].values())
    assert out["groups"] == [{"mlps": ["L1.mlp"], "facts": ids}]
    assert out["extraction"][0] == "L2H1"
    assert set(out["effects"][ids[0]]) == {f"L{l}.mlp" for l in range(4)}
    # with 4 MLP layers one outlier is at most 1.5 std above the mean: n_std=2 selects nothing
    strict = fact_lookup_mlps(planted.model, planted.dataset.subset(range(6)), extraction=ext, show_progress=False)
    assert strict["groups"] == [{"mlps": [], "facts": ids[:6]}]


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
    s = flu_scores(planted.model, planted.dataset, show_progress=False)
    mask = s.to_mask(threshold=0.5)
    assert planted.lookup_mlp in mask and len(mask) < planted.n_layers
    assert all(c.kind == "mlp" for c in mask)
    assert s.method == "flu" and s.name == "flu" and s.extra["approach"] == "probing"
    assert s.extra["flu_layers"] == [1]
    assert s.plot() is not None  # probe curve with the FLU layers shaded
    json.dumps(s.extra)


def test_flu_on_planted_model_path_patching(planted):
    s = flu_scores(planted.model, planted.dataset.subset(range(18)), approach="path_patching", n_std=1.0,
                   show_progress=False)
    assert s.to_mask(threshold=0.5).labels == ["L1.mlp"]
    assert s.extra["approach"] == "path_patching" and s.extra["extraction"][0] == "L2H1"
    assert s.extra["mlp_fact_fraction"]["L1.mlp"] == 1.0
    json.dumps(s.extra)
    with pytest.raises(ValueError, match="approach"):
        flu_scores(planted.model, planted.dataset, approach="magic")
    assert_no_hooks(planted.model)
