"""Tests of ROME-style causal tracing (``factlens.localization.causal_tracing``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import factlens
from factlens.testing.invariants import assert_unchanged, snapshot
from factlens.components import attn_hook, embed_hook, mlp_hook, resid_hook
from factlens.localization import causal_tracing as ct_mod
from factlens.localization.causal_tracing import causal_tracing, embedding_std
from factlens.localization.patching import ROLES, position_summary
from factlens.testing import tiny_model
from factlens.tokens import answer_token_ids, encode_records, final_logits


@pytest.fixture(scope="module")
def planted_trace(planted12):
    # noise_scale=5: at ROME's 3 sigma the planted lookup survives most noise samples (noised
    # p = 0.88 vs clean 0.99 with 10 samples); at 5 sigma noised p ~ 0.77 and restoring the
    # lookup MLP at the subject still recovers ~70% of the gap. Much larger noise (10 sigma)
    # destroys more (p ~ 0.60) but then the noise left in the subject's residual (the
    # attribute dims read by the mover head) is what hurts, and restoring the MLP alone
    # recovers only ~20%.
    return causal_tracing(planted12.model, planted12.dataset, noise_scale=5.0, n_samples=8)




def _naive_restore(model, record, *, noise_std, n_samples, seed, patches):
    """Full-run reference: noise at hook_embed, clean values written at ``patches`` [(hook, head, pos)]."""
    batch = encode_records(model, [record])
    sf, sl = int(batch.subject_first[0]), int(batch.subject_last[0])
    gen = torch.Generator().manual_seed(ct_mod._seed_for(seed, 0))
    noise = torch.zeros(n_samples, batch.tokens.shape[1], model.cfg.d_model)
    noise[:, sf:sl + 1] = torch.randn(n_samples, sl - sf + 1, model.cfg.d_model, generator=gen) * noise_std
    ans = answer_token_ids(model, record.answer)[0]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)

        def add_noise(act, hook):
            return act + noise

        def restore(act, hook):
            for name, head, pos in patches:
                if name == hook.name:
                    ps = slice(None) if pos is None else slice(pos, pos + 1)
                    if head is None:
                        act[:, ps] = cache[name][:, ps]
                    else:
                        act[:, ps, head] = cache[name][:, ps, head]
            return act

        hooks = [(embed_hook(), add_noise)] + [(n, restore) for n in {p[0] for p in patches}]
        rep = batch.subset([0] * n_samples)
        with model.hooks(fwd_hooks=hooks):
            logits = final_logits(model, rep)
    return float(torch.softmax(logits, -1)[:, ans].mean())


# --- planted model -----------------------------------------------------------------------------


def test_planted_noise_destroys_and_lookup_restores(planted12, planted_trace):
    s = planted_trace
    clean, noised = s.clean_mean, s.corrupted_mean
    assert s.method == "causal_tracing" and s.metric == "prob"
    assert clean > 0.98 and noised < clean - 0.15
    assert set(s.top(2)) == {planted12.lookup_mlp, planted12.extraction_head}
    subj = 1  # "<bos> Subject plays the sport of"
    win = s.mlp_window.values
    resid = s.resid.values
    assert (win[1, subj] - noised) / (clean - noised) > 0.5  # the lookup MLP at the subject
    assert np.unravel_index(np.argmax(win), win.shape) == (1, subj)
    # restoring the whole residual at the subject before the lookup undoes the noise exactly
    np.testing.assert_allclose(resid[:3, subj], clean, atol=1e-5)
    np.testing.assert_allclose(resid[3, -1], clean, atol=1e-5)  # after the mover, at the last token
    np.testing.assert_allclose(resid[:, 0], noised, atol=1e-5)  # before the subject: nothing to restore
    np.testing.assert_allclose([s.extra["indirect_effect"][c.label] for c in s.components], s.values - noised)
    mlps = s.restrict("mlp")  # causal_tracing_mlps: a list kept its first entries, the heads'
    assert all(s.extra["indirect_effect"][c.label] == pytest.approx(mlps[c] - noised) for c in mlps.components)
    assert s[planted12.extraction_head] == pytest.approx(clean, abs=1e-5)
    per = s.per_example
    assert per.shape == (len(s), len(planted12.dataset)) and s.example_ids == tuple(r.id for r in planted12.dataset)
    np.testing.assert_allclose(per.mean(1), s.values)
    assert s.dropped_ids is None and s.n_dropped is None  # causal tracing pairs no facts
    back = factlens.ComponentScores.from_dict(s.to_dict())  # JSON round trip of the typed fields and extra
    np.testing.assert_array_equal(back.mlp_window.values, win)
    assert back.clean_mean == clean and back.corrupted_mean == noised


def test_three_sigma_numbers_on_planted(planted12):
    """ROME's default 3 sigma only dents the planted lookup (large margin, see planted_trace)."""
    s = causal_tracing(planted12.model, planted12.dataset, n_samples=4, include_resid=False)
    assert s.extra["noise_scale"] == 3.0
    assert s.extra["noise_std"] == pytest.approx(3 * embedding_std(planted12.model))
    assert s.corrupted_mean < s.clean_mean - 0.05
    assert set(s.top(2)) == {planted12.lookup_mlp, planted12.extraction_head}


@pytest.mark.parametrize("which", ["planted", "tiny_gqa"])
def test_matches_naive_full_run_hooks(planted12, which):
    """Stacked restorations, start_at_layer and the shared-prefix cache equal plain full-run hooks."""
    if which == "planted":
        model, rec = planted12.model, planted12.dataset[3]
    else:  # rotary GQA model, one-shot prompt: the subject starts at token 12 (long shared prefix)
        from factlens.data import sports_facts

        model, rec = tiny_model(variant="gqa", n_layers=3), sports_facts()[3]
    kw = dict(noise_scale=5.0, n_samples=3, seed=7)
    s = causal_tracing(model, [rec], window=3, **kw)
    std = s.extra["noise_std"]
    enc = encode_records(model, [rec])
    subj, last = int(enc.subject_first[0]), int(enc.last_pos[0])
    assert len(s.resid.offsets) == last + 1

    def naive(patches):
        return _naive_restore(model, rec, noise_std=std, n_samples=3, seed=7, patches=patches)

    assert s.corrupted_mean == pytest.approx(naive([]), rel=1e-4, abs=1e-9)
    for label, patch in [("L2H1", (attn_hook(2, "z"), 1, None)), ("L0H0", (attn_hook(0, "z"), 0, None)),
                         ("L1.mlp", (mlp_hook(1, "out"), None, None))]:
        assert s[label] == pytest.approx(naive([patch]), rel=1e-4, abs=1e-9), label
    resid, win = s.resid.values, s.mlp_window.values
    assert resid[2, last] == pytest.approx(naive([(resid_hook(2, "pre"), None, last)]), rel=1e-4, abs=1e-9)
    assert resid[1, subj] == pytest.approx(naive([(resid_hook(1, "pre"), None, subj)]), rel=1e-4, abs=1e-9)
    # window=3 at layer 1: MLPs 0, 1, 2 at the position; at layer 0: MLPs 0, 1 (clipped)
    assert win[1, subj] == pytest.approx(naive([(mlp_hook(l, "out"), None, subj) for l in (0, 1, 2)]),
                                         rel=1e-4, abs=1e-9)
    assert win[0, subj + 1] == pytest.approx(naive([(mlp_hook(l, "out"), None, subj + 1) for l in (0, 1)]),
                                             rel=1e-4, abs=1e-9)


def test_reproducible_and_batch_size_independent(planted12):
    kw = dict(n_samples=3, noise_scale=5.0)
    ds = planted12.dataset[:6]
    a = causal_tracing(planted12.model, ds, batch_size=6, **kw)
    b = causal_tracing(planted12.model, ds, batch_size=6, **kw)
    c = causal_tracing(planted12.model, ds, batch_size=4, **kw)
    d = causal_tracing(planted12.model, ds, batch_size=6, seed=1, include_resid=False, **kw)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.resid.values, b.resid.values)
    np.testing.assert_allclose(a.values, c.values, atol=1e-5)
    np.testing.assert_allclose(a.resid.values, c.resid.values, atol=1e-5)
    np.testing.assert_allclose(a.mlp_window.values, c.mlp_window.values, atol=1e-5)
    assert d.corrupted_mean != a.corrupted_mean


def test_component_subsets(planted12):
    kw = dict(n_samples=2, noise_scale=5.0, include_resid=False)
    full = causal_tracing(planted12.model, planted12.dataset, **kw)
    sub = causal_tracing(planted12.model, planted12.dataset, components=["L1.mlp", "L2H1"], **kw)
    assert [c.label for c in sub.components] == ["L1.mlp", "L2H1"]
    assert sub["L1.mlp"] == pytest.approx(full["L1.mlp"]) and sub["L2H1"] == pytest.approx(full["L2H1"])
    mlps = causal_tracing(planted12.model, planted12.dataset, components="mlps", **kw)
    assert all(c.kind == "mlp" for c in mlps.components) and len(mlps) == 4


def test_model_unchanged_and_hooks_removed_after_an_exception(planted12, monkeypatch):
    snap = snapshot(planted12.model)
    causal_tracing(planted12.model, planted12.dataset[:3], n_samples=2)
    assert_unchanged(planted12.model, snap)
    calls = {"n": 0}
    real = ct_mod.unembed

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the first restored run, with its restoring hooks attached
            raise RuntimeError("boom")
        return real(*args, **kw)

    monkeypatch.setattr(ct_mod, "unembed", failing)
    with pytest.raises(RuntimeError, match="boom"):
        causal_tracing(planted12.model, planted12.dataset[:3], n_samples=2)
    assert_unchanged(planted12.model, snap)


@pytest.mark.parametrize("kw, match", [
    ({"noise_scale": 0.0}, "noise_scale"),
    ({"n_samples": 0}, "n_samples"),
    ({"window": 0}, "window"),
    ({"batch_size": 0}, "batch_size"),
    ({"components": "neurons"}, "components"),
    ({"components": ["L1.N3"]}, "neurons"),
    ({"components": ["L9.mlp"]}, "does not exist"),
])
def test_bad_options(planted12, kw, match):
    with pytest.raises(ValueError, match=match):
        causal_tracing(planted12.model, planted12.dataset[:2], **kw)


def test_registry_dispatch(planted12):
    s = factlens.localize(planted12.model, planted12.dataset[:4], method="causal_tracing", n_samples=2,
                          include_resid=False)
    assert s.method == "causal_tracing" and len(s) == 4 * 3


# --- tiny models, position bookkeeping ---------------------------------------------------------


@pytest.mark.parametrize("variant", ["gqa", "gqa_gated"])
def test_tiny_gqa_variants_run(variant):
    from factlens.data import sports_facts

    ds = sports_facts()
    ds = ds.subset([0, 3, 150])  # subjects of 2 and 4 tokens -> prompts of different lengths
    model = tiny_model(variant=variant, n_layers=2)
    snap = snapshot(model)
    s = causal_tracing(model, ds, n_samples=2, window=2)
    assert_unchanged(model, snap)
    assert len(s) == 2 * (4 + 1)
    assert np.isfinite(s.values).all() and (s.values > 0).all()
    resid = s.resid.values
    T = max(encode_records(model, ds).lengths.tolist())
    assert resid.shape == (2, T) and np.isfinite(resid).all()
    assert len(s.resid.offsets) == T and s.resid.offsets[-1] == -1
    # the first column is the longest prompt's BOS, before its subject: restoring it changes nothing
    longest = int(np.argmax(encode_records(model, ds).lengths.numpy()))
    np.testing.assert_allclose(resid[:, 0], s.corrupted_metric[longest], rtol=1e-4)
    assert s.mlp_window.by_role.shape == (2, len(ROLES)) and s.mlp_window.roles == ROLES


def test_an_attention_only_model_gets_the_resid_map_without_an_mlp_window():
    """include_resid (the default) raised on an attention-only model (TransformerLens's
    attn-only-*), though only the MLP window needs MLPs; the residual map is computed now."""
    from factlens.data import sports_facts

    ds = sports_facts().subset([0, 3, 150])
    model = tiny_model(variant="attn_only", n_layers=2)
    snap = snapshot(model)
    s = causal_tracing(model, ds, n_samples=2)
    assert_unchanged(model, snap)
    assert [c.label for c in s.components] == [f"L{l}H{h}" for l in range(2) for h in range(4)]
    T = max(encode_records(model, ds).lengths.tolist())
    assert s.resid.values.shape == (2, T) and np.isfinite(s.resid.values).all() and s.mlp_window is None
    same = causal_tracing(model, ds, n_samples=2, include_resid=False)
    np.testing.assert_array_equal(same.values, s.values)  # the components' scores do not depend on it
    back = type(s).from_dict(s.to_dict())
    np.testing.assert_array_equal(back.resid.values, s.resid.values)
    assert back.mlp_window is None


def test_pad_token_equal_to_bos_changes_nothing():
    """GPT-2 / Pythia convention (pad = BOS): zero-shot prompts share only the BOS, whose cached keys
    and values the restored runs read; they were masked as padding (the restored scores moved)."""
    from factlens.data import FactDataset
    from factlens.data.records import FactRecord

    recs = [FactRecord(subject=s, template="{} plays the sport of", answer=a) for s, a in
            (("Tiger Woods", "golf"), ("Phil Mickelson", "golf"), ("Jack Nicklaus", "tennis"))]
    model = tiny_model(n_layers=2, positional_embedding_type="standard")
    ds = FactDataset(records=tuple(recs))
    before = causal_tracing(model, ds, n_samples=2, include_resid=False)
    model.tokenizer.pad_token = model.tokenizer.bos_token
    after = causal_tracing(model, ds, n_samples=2, include_resid=False)
    np.testing.assert_allclose(after.values, before.values, rtol=1e-5, atol=1e-7)


def test_embedding_std_matches_torch():
    model = tiny_model()
    assert embedding_std(model) == pytest.approx(float(model.embed.W_E.detach().std()), rel=1e-6)


def test_position_summary_roles():
    # prompt A: 5 tokens, subject at 1..2 (two tokens); prompt B: 4 tokens, subject at 1
    a = np.arange(10, dtype=float).reshape(2, 5)
    b = np.arange(8, dtype=float).reshape(2, 4) + 100
    s = position_summary([a, b], [5, 4], [1, 1], [2, 1])
    assert s["offsets"] == [-5, -4, -3, -2, -1] and s["counts"] == [1, 2, 2, 2, 2]
    np.testing.assert_allclose(s["by_position"][0], [0, (1 + 100) / 2, (2 + 101) / 2, (3 + 102) / 2, (4 + 103) / 2])
    role = dict(zip(s["roles"], np.array(s["by_role"])[0]))
    assert role["first_subject"] == pytest.approx((1 + 101) / 2)
    assert role["last_subject"] == pytest.approx((2 + 101) / 2)
    assert role["middle_subject"] != role["middle_subject"]  # NaN: no prompt has a middle token
    assert role["first_subsequent"] == pytest.approx((3 + 102) / 2)
    assert role["last"] == pytest.approx((4 + 103) / 2)
    assert role["further"] != role["further"]


# --- the real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_causal_tracing(gemma):
    from factlens.data import sports_facts

    ds = sports_facts().subset([0])  # LeBron James
    # TransformerLens folds Gemma's sqrt(d_model) embedding scale into W_E: hook_embed == W_E[tokens]
    batch = encode_records(gemma, ds)
    with torch.no_grad():
        _, cache = gemma.run_with_cache(batch.tokens[:, :4], names_filter=embed_hook())
    torch.testing.assert_close(cache[embed_hook()], gemma.embed.W_E[batch.tokens[:, :4]])
    snap = snapshot(gemma)
    s = causal_tracing(gemma, ds, n_samples=2, components="mlps", include_resid=False)
    assert_unchanged(gemma, snap)
    assert len(s) == 18
    # measured: clean 0.72, noised 0.0014 (3 sigma, sigma = std(W_E) = 1.03)
    assert s.corrupted_mean < 0.5 * s.clean_mean
    assert np.isfinite(s.values).all() and (s.values >= 0).all()
    # the shared-prefix key/value cache path (sliding-window layers, two rotary bases) is exact
    naive = _naive_restore(gemma, ds[0], noise_std=s.extra["noise_std"], n_samples=2, seed=0,
                           patches=[(mlp_hook(5, "out"), None, None)])
    assert s["L5.mlp"] == pytest.approx(naive, rel=1e-3, abs=1e-7)
