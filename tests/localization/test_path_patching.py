"""Tests of path patching and the automated per-fact lookup (factlens.localization.path_patching) on the
planted-fact model and tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factlens.components import Component, attn_hook, mlp_hook
from factlens.data import sports_facts
from factlens.data.records import FactRecord
from factlens.localization.pairs import make_pairs, patching_metric
from factlens.localization.path_patching import extraction_components, fact_lookup_mlps, path_patching
from factlens.localization.probing import probing
from factlens.testing import tiny_model
from factlens.testing.invariants import no_hooks
from factlens.testing.tiny import build_hooked
from factlens.tokens import encode_records, unembed

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def direct(planted):
    return path_patching(planted.model, planted.dataset)


@pytest.fixture(scope="module")
def via_extraction(planted):
    return path_patching(planted.model, planted.dataset, receivers=[planted.extraction_head])


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
    assert no_hooks(planted.model)


def test_path_through_extraction_head_ranks_the_lookup_mlp(planted, via_extraction):
    s = via_extraction
    assert s.restrict("mlp").top(1) == [planted.lookup_mlp]
    assert s[planted.lookup_mlp] > 5
    # senders that cannot reach head 2.1 (layer >= 2) and the receiver itself score exactly 0
    for c in s.components:
        if c.layer >= 2:
            assert s[c] == 0.0, c
    assert s.extra["receivers"] == ["L2H1"]
    assert no_hooks(planted.model)


def test_path_patching_does_not_depend_on_batch_size(planted, direct, via_extraction):
    d5 = path_patching(planted.model, planted.dataset, batch_size=5)
    np.testing.assert_allclose(d5.values, direct.values, rtol=1e-4, atol=1e-4)
    senders = [planted.lookup_mlp, Component("head", 0, 1), Component("mlp", 0)]
    v5 = path_patching(planted.model, planted.dataset, receivers=["L2H1"], senders=senders, batch_size=5)
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
    s = path_patching(model, recs, senders=senders, batch_size=4)
    ref = [_brute_force_direct(model, recs, c) for c in senders]
    np.testing.assert_allclose(s.values, ref, rtol=1e-3, atol=1e-4)
    assert np.abs(ref).max() > 1e-3  # not trivially zero


def test_direct_effects_of_a_bf16_model_are_computed_not_refused():
    """The check that the attention output can be recomputed from hook_z allowed 1e-3 relative error,
    below one bf16 rounding step: a bf16 model (the planted one here) was refused as an unsupported
    architecture, and with it the non-sports FLU."""
    from factlens.testing import planted_fact_model

    p = planted_fact_model(n_subjects=12)
    fp32 = path_patching(p.model, p.dataset)
    p.model.to(torch.bfloat16)
    bf16 = path_patching(p.model, p.dataset)
    assert bf16.restrict("head").top(1) == fp32.restrict("head").top(1) == [p.extraction_head]
    assert bf16[p.extraction_head] == pytest.approx(fp32[p.extraction_head], rel=0.05)


def test_path_patching_input_errors(planted):
    m, ds = planted.model, planted.dataset
    with pytest.raises(ValueError, match="does not exist"):
        path_patching(m, ds, receivers=["L7H0"])
    with pytest.raises(ValueError, match="neurons"):
        path_patching(m, ds, senders=["L1.N3"])
    with pytest.raises(ValueError, match="empty"):
        path_patching(m, ds, receivers=[])
    with pytest.raises(ValueError, match="metric"):
        path_patching(m, ds, metric="accuracy")
    assert no_hooks(m)


def test_no_hooks_left_after_an_exception(planted, monkeypatch):
    m, ds = planted.model, planted.dataset

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(m.blocks[3], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        path_patching(m, ds)
    assert no_hooks(m)
    with pytest.raises(RuntimeError, match="boom"):
        probing(m, ds)
    assert no_hooks(m)
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
        path_patching(m, ds, receivers=[planted.extraction_head], senders=["L1.mlp"])
    assert len(calls) == 3
    assert no_hooks(m)


def test_parameters_unchanged(planted):
    before = {k: v.clone() for k, v in planted.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in planted.model.named_parameters()}
    path_patching(planted.model, planted.dataset.subset(range(12)), receivers=["L2H1"])
    for k, v in planted.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert flags == {k: p.requires_grad for k, p in planted.model.named_parameters()}


# --- automated per-fact lookup ---------------------------------------------------------


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
    out = fact_lookup_mlps(planted.model, planted.dataset, extraction=ext, n_std=1.0)
    ids = [r.id for r in planted.dataset]
    assert set(out["per_fact"]) == set(ids)
    assert all(v == ["L1.mlp"] for v in out["per_fact"].values())
    assert out["groups"] == [{"mlps": ["L1.mlp"], "facts": ids}]
    assert out["extraction"][0] == "L2H1"
    assert set(out["effects"][ids[0]]) == {f"L{l}.mlp" for l in range(4)}
    # with 4 MLP layers one outlier is at most 1.5 std above the mean: n_std=2 selects nothing
    strict = fact_lookup_mlps(planted.model, planted.dataset.subset(range(6)), extraction=ext)
    assert strict["groups"] == [{"mlps": [], "facts": ids[:6]}]


# --- user-given corrupted prompts and answers ---------------------------------------------------


def test_path_patching_takes_corrupted_answers(planted12, given_pairs12):
    """Without target_new the error said "give corrupted_answers=", which path patching, fact_lookup_mlps
    and the FLU did not take (TypeError); given, the answers score like target_new and like the
    automatic pairs they come from."""
    import factlens
    from factlens.localization.flu import flu_scores

    m, ds = planted12.model, planted12.dataset
    prompts, answers, with_target = given_pairs12
    given = dict(corrupted_prompts=prompts, corrupted_answers=answers)
    with pytest.raises(ValueError, match="give corrupted_answers="):
        path_patching(m, ds, corrupted_prompts=prompts)
    for receivers in (None, [planted12.extraction_head]):
        s = path_patching(m, ds, receivers=receivers, **given)
        np.testing.assert_array_equal(s.per_example, path_patching(m, with_target, receivers=receivers,
                                                                   corrupted_prompts=prompts).per_example)
        np.testing.assert_array_equal(s.per_example, path_patching(m, ds, receivers=receivers).per_example)
    out = fact_lookup_mlps(m, ds, extraction=[planted12.extraction_head], n_std=1.0, **given)
    assert out["groups"] == [{"mlps": ["L1.mlp"], "facts": [r.id for r in ds]}]
    assert out["effects"] == fact_lookup_mlps(m, with_target, extraction=[planted12.extraction_head], n_std=1.0,
                                              corrupted_prompts=prompts)["effects"]
    flu = flu_scores(m, ds, approach="path_patching", n_std=1.0, **given)
    assert flu.extra["flu_layers"] == [1]
    assert flu.extra == flu_scores(m, with_target, approach="path_patching", n_std=1.0, corrupted_prompts=prompts).extra
    via_registry = factlens.localize(m, ds, method="flu", approach="path_patching", n_std=1.0, **given)
    assert via_registry.extra == flu.extra
    assert factlens.localize(m, ds, method="path_patching", **given).values.tolist() == \
        path_patching(m, ds, **given).values.tolist()


def test_fact_lookup_mlps_refuses_a_negative_n_std(planted12):
    """mean + n_std * std below the mean is no outlier rule: it selected below-average MLPs."""
    with pytest.raises(ValueError, match=r"n_std must be a number >= 0 .* got -1\.0"):
        fact_lookup_mlps(planted12.model, planted12.dataset, extraction=[planted12.extraction_head], n_std=-1.0)
