"""Tests of exact activation patching (factlens.localization.activation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformer_lens import patching as tl_patching

from factlens.testing.invariants import no_hooks
from factlens.components import Component
from factlens.data import sports_facts
from factlens.data.formats import ONE_SHOT_SPORTS
from factlens.data.records import FactRecord
from factlens.localization.activation import activation_patching
from factlens.localization.pairs import make_pairs
import factlens.localization.activation as act
import factlens.localization.patching as patching_mod
from factlens.scores import ComponentScores
from factlens.testing import planted_fact_model, tiny_model
from factlens.tokens import encode_records

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = "{} plays the sport of"




def _records(model, n_tokens=(2,), per=(2, 2, 2), template=ONE_SHOT_SPORTS) -> list[FactRecord]:
    """Sports facts whose subjects have the given token counts, ``per`` facts per sport."""
    recs = [FactRecord(subject=r.subject, template=template, answer=r.answer) for r in sports_facts()]
    n = (lambda b: (b.subject_last - b.subject_first + 1).tolist())(encode_records(model, recs))
    out = []
    for k in n_tokens:
        for sport, m in zip(("basketball", "baseball", "football"), per):
            out += [r for r, nt in zip(recs, n) if nt == k and r.answer == sport][:m]
    return out


def _all_pos_setter(corrupted_activation, index, clean_activation):
    corrupted_activation[...] = clean_activation
    return corrupted_activation


def tl_mlp_out_all_pos(model, corrupted_tokens, clean_cache, metric):
    """TransformerLens's patching loop for whole-layer ``hook_mlp_out`` (all positions).

    ``transformer_lens.patching.get_act_patch_mlp_out`` patches one (layer, position) at a
    time; the all-position variant is the same generic loop with a whole-tensor setter.
    """
    return tl_patching.generic_activation_patch(model, corrupted_tokens, clean_cache, metric,
                                                patch_setter=_all_pos_setter, activation_name="mlp_out",
                                                index_axis_names=("layer",))


def _tl_metric(pairs, metric):
    last = pairs.clean.last_pos
    b = torch.arange(len(pairs))

    def fn(logits):
        lg = logits[b, last]
        if metric == "logit_diff":
            return (lg[b, pairs.clean_answer] - lg[b, pairs.corrupted_answer]).mean()
        return torch.softmax(lg, -1)[b, pairs.clean_answer].mean()

    return fn


def _tl_reference(model, records, direction, metric, resid=True):
    """TransformerLens's patching results (raw patched metric averaged over the batch)."""
    pairs = make_pairs(model, records, seed=0)
    base, src = (pairs.corrupted, pairs.clean) if direction == "denoising" else (pairs.clean, pairs.corrupted)
    fn = _tl_metric(pairs, metric)
    with torch.no_grad():
        _, src_cache = model.run_with_cache(src.tokens)
        out = {
            "heads": tl_patching.get_act_patch_attn_head_out_all_pos(model, base.tokens, src_cache, fn),
            "mlps": tl_mlp_out_all_pos(model, base.tokens, src_cache, fn),
        }
        if resid:
            out["resid"] = tl_patching.get_act_patch_resid_pre(model, base.tokens, src_cache, fn)
    return out


def _ours(scores: ComponentScores):
    s = scores.shape
    heads = np.zeros((s.n_layers, s.n_heads))
    mlps = np.zeros(s.n_layers)
    for c, v in zip(scores.components, scores.patched):
        if c.kind == "head":
            heads[c.layer, c.index] = v
        else:
            mlps[c.layer] = v
    return heads, mlps




@pytest.mark.parametrize("variant,direction,metric,resid", [
    ("standard", "denoising", "logit_diff", True),
    ("gqa", "denoising", "logit_diff", False),
    ("gated", "noising", "logit_diff", True),
    ("gqa_gated", "denoising", "prob", False),
    ("standard", "noising", "prob", False),
])
def test_matches_transformer_lens(variant, direction, metric, resid):
    model = tiny_model(variant=variant, n_layers=3)
    recs = _records(model)
    ref = _tl_reference(model, recs, direction, metric, resid=resid)
    s = activation_patching(model, recs, direction=direction, metric=metric, include_resid=resid)
    heads, mlps = _ours(s)
    np.testing.assert_allclose(heads, ref["heads"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlps, ref["mlps"].numpy(), atol=1e-4, rtol=0)
    if resid:  # equal-length prompts: resid columns are absolute positions
        np.testing.assert_allclose(s.resid.patched, ref["resid"].numpy(), atol=1e-4, rtol=0)
    # baselines equal the unpatched runs
    pairs = make_pairs(model, recs, seed=0)
    fn = _tl_metric(pairs, metric)
    with torch.no_grad():
        assert s.clean_mean == pytest.approx(float(fn(model(pairs.clean.tokens))), abs=1e-5)
        assert s.corrupted_mean == pytest.approx(float(fn(model(pairs.corrupted.tokens))), abs=1e-5)


def test_matches_transformer_lens_right_padded():
    """Prompts of different lengths in one batch (right padding, per-example last token)."""
    model = tiny_model(variant="gqa", n_layers=2, positional_embedding_type="standard", normalization_type="LN")
    recs = _records(model, n_tokens=(2, 4), per=(2, 2, 1), template=SHORT)
    pairs = make_pairs(model, recs, seed=0)
    assert len(set(pairs.clean.lengths.tolist())) == 2
    ref = _tl_reference(model, recs, "denoising", "logit_diff", resid=False)
    s = activation_patching(model, recs)
    heads, mlps = _ours(s)
    np.testing.assert_allclose(heads, ref["heads"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlps, ref["mlps"].numpy(), atol=1e-4, rtol=0)
    # resid: right-aligned; the last column (last token) at layer 0 patches the identical final token
    resid = s.resid.patched
    T = int(pairs.clean.lengths.max())
    assert resid.shape == (2, T) and s.resid.offsets[-1] == -1 and len(s.resid.tokens) == T
    assert s.resid.counts[-1] == len(recs) and s.resid.counts[0] < len(recs)
    assert resid[0, -1] == pytest.approx(s.corrupted_mean, abs=1e-5)


def test_planted_model_top_components():
    p = planted_fact_model()
    s = activation_patching(p.model, p.dataset)
    assert set(s.top(2)) == {p.lookup_mlp, p.extraction_head}
    assert s[p.lookup_mlp] > 0.9 and s[p.extraction_head] > 0.9
    others = [abs(v) for c, v in zip(s.components, s.values) if c not in (p.lookup_mlp, p.extraction_head)]
    assert max(others) < 0.1
    noise = activation_patching(p.model, p.dataset, direction="noising", metric="prob")
    assert set(noise.top(2)) == {p.lookup_mlp, p.extraction_head}
    # resid: the subject position carries the fact through layer 2, the last position afterwards
    resid = s.resid.values
    assert resid[1, 1] > 0.9 and resid[3, -1] > 0.9 and abs(resid[3, 1]) < 0.1


def test_batch_size_does_not_change_results():
    model = tiny_model(variant="gqa_gated", n_layers=2)
    recs = _records(model, n_tokens=(2, 4), per=(2, 2, 1), template=SHORT)
    a = activation_patching(model, recs, batch_size=32)
    b = activation_patching(model, recs, batch_size=3)
    c = activation_patching(model, recs, batch_size=1)
    for other in (b, c):
        np.testing.assert_allclose(a.values, other.values, atol=1e-5)
        np.testing.assert_allclose(a.per_example, other.per_example, atol=1e-5)
        np.testing.assert_allclose(a.resid.values, other.resid.values, atol=1e-5)


def test_chunked_forward_passes_match(monkeypatch):
    model = tiny_model(n_layers=2)
    recs = _records(model)
    a = activation_patching(model, recs)
    monkeypatch.setattr(patching_mod, "MAX_ROW_TOKENS", 1)
    monkeypatch.setattr(patching_mod, "_UNEMBED_ROWS", 5)
    b = activation_patching(model, recs)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    np.testing.assert_allclose(a.resid.values, b.resid.values, atol=1e-5)


def test_components_subset_and_conventions():
    model = tiny_model(n_layers=2)
    recs = _records(model)
    full = activation_patching(model, recs)
    assert full.components == tuple(c for L in range(2) for c in
                                    [Component("head", L, h) for h in range(4)] + [Component("mlp", L)])
    sub = activation_patching(model, recs, components=["L1H2", Component("mlp", 0)], include_resid=False)
    assert [c.label for c in sub.components] == ["L1H2", "L0.mlp"] and sub.resid is None
    assert sub["L1H2"] == pytest.approx(full["L1H2"], abs=1e-6)
    assert sub["L0.mlp"] == pytest.approx(full["L0.mlp"], abs=1e-6)
    raw = activation_patching(model, recs, normalize=False)
    np.testing.assert_allclose(raw.values, raw.patched - raw.corrupted_mean, atol=1e-9)
    np.testing.assert_allclose(full.values, raw.values / (raw.clean_mean - raw.corrupted_mean), atol=1e-9)
    np.testing.assert_allclose(raw.per_example.mean(1), raw.patched, atol=1e-9)
    assert raw.per_example.shape == (len(raw), raw.n_examples) and len(raw.example_ids) == raw.n_examples
    noise = activation_patching(model, recs, direction="noising", normalize=False)
    np.testing.assert_allclose(noise.values, noise.clean_mean - noise.patched, atol=1e-9)
    # JSON round trip
    back = ComponentScores.from_dict(json.loads(json.dumps(full.to_dict())))
    np.testing.assert_allclose(back.values, full.values)
    np.testing.assert_array_equal(back.per_example, full.per_example)
    np.testing.assert_array_equal(back.resid.patched, full.resid.patched)
    assert back.resid.tokens == full.resid.tokens and back.example_ids == full.example_ids
    assert back.method == "activation_patching" and back.metric == "logit_diff"


def test_leaves_model_unchanged_and_removes_hooks_on_error(monkeypatch):
    model = tiny_model(variant="gqa", n_layers=2)
    recs = _records(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    activation_patching(model, recs)
    assert no_hooks(model)
    original = act.metric_from_residual
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # after the baselines and one patched pass
            raise RuntimeError("metric failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(act, "metric_from_residual", flaky)
    with pytest.raises(RuntimeError, match="metric failed"):
        activation_patching(model, recs)
    assert calls["n"] == 4 and no_hooks(model)

    monkeypatch.setattr(act, "metric_from_residual", original)

    def raising(*args, **kwargs):  # called inside the hooks context, before the patched forward
        raise RuntimeError("during forward")

    monkeypatch.setattr(act, "repeated_cache", raising)
    with pytest.raises(RuntimeError, match="during forward"):
        activation_patching(model, recs)
    assert no_hooks(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}


def test_registry_dispatch():
    import factlens

    p = planted_fact_model(n_subjects=12)
    s = factlens.localize(p.model, p.dataset, method="activation_patching", include_resid=False,
                          show_progress=False)
    assert s.method == "activation_patching" and set(s.top(2)) == {p.lookup_mlp, p.extraction_head}


@pytest.mark.parametrize("kwargs,match", [
    ({"direction": "forward"}, "direction"),
    ({"metric": "kl"}, "unknown metric"),
    ({"batch_size": 0}, "batch_size"),
    ({"components": "everything"}, "components.*valid spellings"),
    ({"components": ["L0.N3"]}, "neurons"),
    ({"components": ["L9H0"]}, "does not exist"),
    ({"components": ["L0H0", "L0H0"]}, "duplicates"),
    ({"components": []}, "empty"),
])
def test_bad_input(kwargs, match):
    model = tiny_model(n_layers=2)
    with pytest.raises(ValueError, match=match):
        activation_patching(model, _records(model), **kwargs)
    assert no_hooks(model)


@pytest.mark.parametrize("pos", ["standard", "rotary"])
def test_matches_transformer_lens_when_pad_is_bos(pos):
    """GPT-2 / Pythia convention (pad token = BOS) with a one-token shared prefix (the BOS): the
    prefix's key/value cache must not mask it as padding (every patched run read a masked BOS)."""
    model = tiny_model(n_layers=2, positional_embedding_type=pos)
    model.tokenizer.pad_token = model.tokenizer.bos_token
    assert model.tokenizer.pad_token_id == model.tokenizer.bos_token_id
    recs = _records(model, per=(2, 2, 1), template=SHORT)
    ref = _tl_reference(model, recs, "denoising", "logit_diff", resid=False)
    s = activation_patching(model, recs, include_resid=False)
    heads, mlps = _ours(s)
    np.testing.assert_allclose(heads, ref["heads"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlps, ref["mlps"].numpy(), atol=1e-4, rtol=0)
