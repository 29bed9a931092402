"""MEMIT (factlens.editing.memit) on tiny and planted models: ROME equivalence, spreading, invariants."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import factlens
from factlens.components import Component, Mask
from factlens.data import sports_facts
from factlens.editing import EditConfig, EditResult
from factlens.editing.covariance import KeyStatistics
from factlens.editing.memit import MemitConfig, memit, memit_update
from factlens.editing.rome import RomeConfig, rome, rome_closed_form
from factlens.tasks import sports_athlete_editing
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import candidate_logprobs

pytestmark = pytest.mark.usefixtures("one_thread", "cache_dir")  # covariances in a temporary cache

# the value optimization shared by the ROME/MEMIT comparison: no weight decay and no clamp, whose
# norms differ by design (ROME: the MLP output, MEMIT: the residual stream)
SHARED = dict(v_num_grad_steps=8, v_weight_decay=0.0, clamp_norm_factor=None, prefix_lengths=((5, 3),),
              n_cov_tokens=1500)
FAST = MemitConfig(v_num_grad_steps=8, prefix_lengths=((5, 3),), n_cov_tokens=1500)


@pytest.fixture(scope="module")
def task():
    return sports_athlete_editing(sports_facts()[:40], n_forget=3, seed=0, n_retain=8, n_maintain=8)


def test_memit_update_is_ridge_solution_and_rome_for_one_key():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(10, 10, generator=g, dtype=torch.float64)
    C = A @ A.T / 10 + 0.05 * torch.eye(10, dtype=torch.float64)
    st = KeyStatistics(C, 1000, 0)
    K, R = torch.randn(3, 10, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    lam = 2.5
    dW = memit_update(st, K, R, mom2_update_weight=lam)
    assert torch.allclose(dW, torch.linalg.solve(lam * C + K.T @ K, K.T @ R))  # the reference's form
    assert torch.allclose(K @ memit_update(st, K, R, mom2_update_weight=0.0), R)  # lambda = 0: targets reached
    W, b = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    k = K[0]
    v = k @ W + b + R[0]
    rome_dW = rome_closed_form(W, k, v, torch.linalg.solve(C, k), b)
    assert torch.allclose(memit_update(st, K[:1], R[:1], mom2_update_weight=0.0), rome_dW)
    with pytest.raises(ValueError, match="linearly dependent"):
        memit_update(st, torch.stack([k, k]), R[:2], mom2_update_weight=0.0)


@pytest.mark.parametrize("variant", ["standard", "gated"])
def test_one_fact_one_layer_equals_rome(variant, task):
    m = tiny_model(variant=variant, n_layers=3)
    one = replace(task, forget=task.forget[:1])
    mask = Mask([Component("mlp", 1)])
    r = rome(m, mask, one, config=RomeConfig(**SHARED))
    mm = memit(m, mask, one, config=MemitConfig(**SHARED, mom2_update_weight=0.0))
    W0 = m.blocks[1].mlp.W_out.detach().double()
    d_rome = r.model.blocks[1].mlp.W_out.detach().double() - W0
    d_memit = mm.model.blocks[1].mlp.W_out.detach().double() - W0
    assert float(d_rome.norm()) > 1e-2
    assert float((d_rome - d_memit).norm()) < 1e-4 * float(d_rome.norm())
    # the same value optimization ran in both
    assert [h["loss_forget"] for h in r.history] == pytest.approx([h["loss_forget"] for h in mm.history], rel=1e-5)
    # lambda > 0 shrinks the same rank-one direction
    mm_l = memit(m, mask, one, config=MemitConfig(**SHARED, mom2_update_weight=50.0))
    d_l = mm_l.model.blocks[1].mlp.W_out.detach().double() - W0
    cos = float((d_l * d_rome).sum() / (d_l.norm() * d_rome.norm()))
    assert cos > 1 - 1e-6 and float(d_l.norm()) < float(d_rome.norm())


def test_spreads_over_layers_and_reaches_targets(task):
    m = tiny_model(n_layers=4)
    snap = snapshot(m)
    mask = Mask.from_labels(["L0.mlp", "L1.mlp", "L2.mlp"])
    # bare prompts only (no prefixes): the keys are the bare prompts' keys, so the gap at z is measurable
    res = memit(m, mask, task, config=FAST.replace(mom2_update_weight=0.0, prefix_lengths=()))
    assert_unchanged(m, snap)
    changed = {n for n, p in res.model.named_parameters() if not torch.equal(p, snap.state[n])}
    assert changed == {f"blocks.{l}.mlp.W_out" for l in (0, 1, 2)} == set(res.deltas)
    assert [d["layer"] for d in res.meta["layers"]] == [0, 1, 2] and res.meta["z_layer"] == 2
    first = res.meta["layers"][0]["residual_norm"]
    assert first > 1e-2
    # with lambda = 0 the last layer closes the remaining gap: the bare prompts' residual after layer 2 hits z
    assert res.meta["final_residual_norm"] < 1e-3 * first
    # every layer took part
    assert all(d["update_norm"] > 0 for d in res.meta["layers"])


def test_masks_with_heads_or_neurons_raise(task):
    m = tiny_model()
    with pytest.raises(ValueError, match="whole MLP layers.*L0H1"):
        memit(m, Mask.from_labels(["L0.mlp", "L0H1"]), task, config=FAST)
    with pytest.raises(ValueError, match="whole MLP layers.*L1.N2"):
        factlens.edit(m, Mask.from_labels(["L1.N2"]), task, method="memit")
    with pytest.raises(ValueError, match="mask is empty"):
        memit(m, Mask.empty(), task, config=FAST)
    with pytest.raises(ValueError, match="mom2_update_weight"):
        MemitConfig(mom2_update_weight=-1.0)
    with pytest.raises(TypeError, match="MemitConfig or an EditConfig"):
        memit(m, Mask.from_labels(["L1.mlp"]), task, config=RomeConfig())
    assert no_hooks(m)


def test_planted_model_memit_edits_all_facts_at_once():
    torch.set_flush_denormal(True)
    try:
        p = planted_fact_model()
        cands = ("basketball", "baseball", "football", "golf")

        def acc(m, recs, attr):
            lps = candidate_logprobs(m, [r.prompt for r in recs], [cands] * len(recs))
            return sum(cands[int(lp.argmax())] == getattr(r, attr) for r, lp in zip(recs, lps)) / len(recs)

        # MEMIT's GPT-J clamp (0.75 |z|) is too tight for the planted residual (|z| ~ 1.7, a switch of
        # attribute needs |delta| ~ 1.4): measured 0/8 edited with it, 8/8 with 4 (ROME's factor)
        cfg = MemitConfig(clamp_norm_factor=4.0)
        res = memit(p.model, Mask([p.lookup_mlp]), p.task, config=cfg)
        assert acc(res.model, p.task.forget, "target_new") == 1.0
        assert acc(res.model, p.task.maintain, "answer") >= 0.9
        assert no_hooks(p.model) and no_hooks(res.model)
    finally:
        torch.set_flush_denormal(False)


def test_result_roundtrip_and_dispatch(task, tmp_path):
    m = tiny_model(variant="gated", n_layers=3)
    snap = snapshot(m)
    res = factlens.edit(m, Mask.from_labels(["L0.mlp", "L1.mlp"]), task, method="memit", config=EditConfig(seed=2),
                        show_progress=False)
    assert res.meta["memit_config"] == MemitConfig(seed=2).to_dict() and res.config == EditConfig(seed=2)
    assert isinstance(res, EditResult) and res.n_params_trained == 2 * m.cfg.d_mlp * m.cfg.d_model
    res.save(tmp_path / "memit.safetensors")
    loaded = EditResult.load(tmp_path / "memit.safetensors")
    other = tiny_model(variant="gated", n_layers=3)
    loaded.apply(other)
    for n in res.deltas:
        assert torch.equal(dict(other.named_parameters())[n], dict(res.model.named_parameters())[n])
    res.revert()
    assert_unchanged(res.model, snap)
    assert_unchanged(m, snap)


def _no_module_hooks(model) -> bool:
    return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in model.modules())


def test_post_norm_mapping_is_first_order_exact(task):
    """Gemma 3 normalizes the MLP output (ln2_post); the residual -> W_out-output map linearizes that norm."""
    from factlens.components import mlp_hook
    from factlens.editing.memit import post_mlp_norm, residual_to_mlp_output
    from factlens.editing.rome import _fact_texts, mlp_output_hook
    from factlens.testing.shaped import gemma3_shaped
    from factlens.tokens import tokenize_prompts

    m = gemma3_shaped(n_layers=3)
    assert post_mlp_norm(m, 1) is m.blocks[1].ln2_post and post_mlp_norm(tiny_model(), 1) is None
    recs = list(task.forget)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-uniform norm weights, as real Gemma's: the old map (P_r(R / w)) was not least squares
        m.blocks[1].ln2_post.w.copy_(torch.exp(0.7 * torch.randn(m.cfg.d_model, generator=g)))
    R = torch.randn(len(recs), m.cfg.d_model, generator=g, dtype=torch.float64)
    dr = residual_to_mlp_output(m, 1, recs, R)
    texts, spans = [], []
    for r in recs:
        t, s = _fact_texts(r, [""])
        texts, spans = texts + t, spans + s
    b = tokenize_prompts(m, texts, subject_spans=spans)
    rows = torch.arange(len(recs))

    def mlp_out(add=None):
        got = []

        def shift(out):
            return out if add is None else out.index_put((rows, b.subject_last), add.float(), accumulate=True)

        with torch.no_grad(), mlp_output_hook(m, 1, shift), m.hooks(fwd_hooks=[(mlp_hook(1, "out"),
                                                                                lambda a, hook: got.append(a))]):
            m(b.tokens, stop_at_layer=2)
        return got[0][rows, b.subject_last].double()

    raw = []
    with torch.no_grad(), mlp_output_hook(m, 1, lambda out: raw.append(out) or out):
        m(b.tokens, stop_at_layer=2)
    r = raw[0][rows, b.subject_last].double()
    w = m.blocks[1].ln2_post.w.detach().double()
    q = r / w  # the linearized norm writes exactly the changes orthogonal to r / w
    q = q / q.norm(dim=-1, keepdim=True)
    expected = R - (R * q).sum(-1, keepdim=True) * q  # least squares: all of R but its part along q
    eps = 1e-3
    change = (mlp_out(eps * dr) - mlp_out()) / eps  # finite difference of the normalized MLP output
    assert float((change - expected).norm()) < 1e-2 * float(expected.norm())
    assert float((expected - R).norm()) < float(R.norm())  # most of a random R can be written
    assert _no_module_hooks(m) and no_hooks(m)


def test_rome_and_memit_on_gemma3_shaped_model(task):
    from factlens.editing.rome import context_prefixes, rome_step
    from factlens.testing.shaped import gemma3_shaped
    from factlens.editing.covariance import key_statistics

    m = gemma3_shaped(n_layers=4)
    snap = snapshot(m)
    cfg = RomeConfig(v_num_grad_steps=8, prefix_lengths=((5, 3),), n_cov_tokens=1500)
    st = key_statistics(m, 1, n_tokens=1500)
    e = rome_step(m, 1, task.forget[0], config=cfg, stats=st, prefixes=context_prefixes(cfg.prefix_lengths))
    W, b = m.blocks[1].mlp.W_out.detach().double(), m.blocks[1].mlp.b_out.detach().double()
    assert torch.allclose(e.key @ (W + e.update) + b, e.value, atol=1e-6)
    assert e.history[-1]["loss_forget"] < e.history[0]["loss_forget"]
    res = rome(m, Mask.from_labels(["L1.mlp"]), task, config=cfg)
    assert set(res.deltas) == {"blocks.1.mlp.W_out"} and _no_module_hooks(res.model) and no_hooks(res.model)
    # MEMIT through the post-MLP norms: three layers close most of the gap at z (measured 0.059 of 0.973)
    mm = memit(m, Mask.from_labels(["L0.mlp", "L1.mlp", "L2.mlp"]), task,
               config=FAST.replace(mom2_update_weight=0.0, prefix_lengths=()))
    first = mm.meta["layers"][0]["residual_norm"]
    assert mm.meta["final_residual_norm"] < 0.2 * first
    assert _no_module_hooks(mm.model) and no_hooks(mm.model)
    assert_unchanged(m, snap)


def test_post_norm_with_zero_weights_writes_the_other_dimensions(task):
    """Gemma 3 270M (as TransformerLens loads it) has zeros in ln2_post's weight: MEMIT raised
    there. The zeroed dimensions cannot be written; the others are, as without zeros."""
    from factlens.editing.memit import residual_to_mlp_output, unwritable_share
    from factlens.testing.shaped import gemma3_shaped

    m = gemma3_shaped(n_layers=3)
    dead = torch.zeros(m.cfg.d_model, dtype=torch.bool)
    dead[:3] = True
    with torch.no_grad():
        m.blocks[1].ln2_post.w[dead] = 0.0
    recs = list(task.forget)
    R = torch.randn(len(recs), m.cfg.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dr = residual_to_mlp_output(m, 1, recs, R)  # raised ValueError("... has zero weights") before
    assert torch.isfinite(dr).all()
    R_live = R.clone()
    R_live[:, dead] = 0.0
    assert torch.allclose(dr, residual_to_mlp_output(m, 1, recs, R_live))  # the dead part is dropped
    share = unwritable_share(m, 1, R)
    assert share == pytest.approx(float(R[:, dead].pow(2).sum() / R.pow(2).sum()))
    assert 0 < share < 0.1 and unwritable_share(tiny_model(), 1, R) == 0.0
    edited = memit(m, Mask.from_labels(["L1.mlp"]), task, config=MemitConfig(v_num_grad_steps=2, n_cov_tokens=200),
                   inplace=False)
    assert edited.meta["layers"][0]["unwritable_share"] > 0


def test_tiny_post_norm_weights_count_as_unwritable(task):
    """Gemma 3 270M's ln2_post at layer 4 has weights between 0 and 0.01 (median 5.7). Writing the
    residual through them takes raw changes hundreds of times larger than elsewhere, which the
    norm's linearization cannot follow: MEMIT's update blew up and the gap at the targets grew.
    ``norm_weight_floor`` (default 0.01 of the median) leaves those dimensions unwritten."""
    from factlens.editing.memit import residual_to_mlp_output, unwritable_share
    from factlens.testing.shaped import gemma3_shaped

    m = gemma3_shaped(n_layers=3)
    tiny = torch.zeros(m.cfg.d_model, dtype=torch.bool)
    tiny[:3] = True
    with torch.no_grad():
        med = float(m.blocks[1].ln2_post.w.abs().median())
        m.blocks[1].ln2_post.w[tiny] = 1e-4 * med
    recs = list(task.forget)
    R = torch.randn(len(recs), m.cfg.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    R_live = R.clone()
    R_live[:, tiny] = 0.0
    floored = residual_to_mlp_output(m, 1, recs, R, weight_floor=0.01)
    assert torch.allclose(floored, residual_to_mlp_output(m, 1, recs, R_live, weight_floor=0.01))
    assert torch.all(floored[:, tiny] == 0)  # the tiny dimensions get no change ...
    w = m.blocks[1].ln2_post.w
    with torch.no_grad():  # ... exactly as if their weights were zero (unwritable)
        kept, w[tiny] = w[tiny].clone(), 0.0
        as_zero = residual_to_mlp_output(m, 1, recs, R)
        w[tiny] = kept
    assert torch.allclose(floored, as_zero)
    assert float(residual_to_mlp_output(m, 1, recs, R).norm()) > 10 * float(floored.norm())  # unfloored: blown up
    assert unwritable_share(m, 1, R, weight_floor=0.01) == pytest.approx(float(R[:, tiny].pow(2).sum() / R.pow(2).sum()))
    assert unwritable_share(m, 1, R) == 0.0
    cfg = FAST.replace(prefix_lengths=(), mom2_update_weight=0.0)
    gaps = {}
    for floor in (0.0, 0.01):
        res = memit(m, Mask.from_labels(["L1.mlp"]), task, config=cfg.replace(norm_weight_floor=floor))
        gaps[floor] = res.meta["final_residual_norm"] / res.meta["layers"][0]["residual_norm"]
        assert res.meta["memit_config"]["norm_weight_floor"] == floor
    assert gaps[0.01] < gaps[0.0]
    assert MemitConfig().norm_weight_floor == 0.01
    with pytest.raises(ValueError, match="norm_weight_floor must be in"):
        MemitConfig(norm_weight_floor=1.5)


def test_memit_update_names_non_finite_targets_and_keys_not_linear_dependence():
    """NaN targets (a diverged optimization) were reported as "keys are linearly dependent (the same
    subject twice?)", which no mom2_update_weight fixes."""
    st = KeyStatistics(torch.eye(5, dtype=torch.float64), 100, 1)
    K, R = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    R[2, 1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"the residuals \(targets minus current outputs\) at layer 1 are not "
                                                 r"finite \(NaN or infinite\) for facts \[2\] .*target optimization "
                                                 r"diverged.*lower v_lr"):
        memit_update(st, K, R, mom2_update_weight=0.0)
    K[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"the keys at layer 1 are not finite .* for facts \[0\]"):
        memit_update(st, K, R.nan_to_num(), mom2_update_weight=10.0)
