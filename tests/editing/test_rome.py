"""ROME (factlens.editing.rome) and the key statistics it uses, on tiny and planted models."""

from __future__ import annotations

import copy

import pytest
import torch

import factlens
from factlens.components import Component, Mask
from factlens.data import sports_facts
from factlens.editing import EditConfig, EditResult
from factlens.editing.covariance import key_statistics, weights_fingerprint
from factlens.editing.memit import MemitConfig, memit
from factlens.editing.rome import RomeConfig, context_prefixes, rome, rome_closed_form, rome_step, subject_keys
from factlens.tasks import sports_athlete_editing, sports_unlearning
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import candidate_logprobs

pytestmark = pytest.mark.usefixtures("one_thread", "cache_dir")  # covariances in a temporary cache

# small and fast: few prefixes and steps, a covariance of 1,500 tokens (d_mlp = 64)
FAST = RomeConfig(v_num_grad_steps=8, prefix_lengths=((5, 3),), n_cov_tokens=1500)
VARIANTS = ["standard", "gated"]


@pytest.fixture(scope="module")
def task():
    return sports_athlete_editing(sports_facts()[:40], n_forget=2, seed=0, n_retain=8, n_maintain=8)


@pytest.fixture(scope="module", params=VARIANTS)
def model(request):
    """Three layers: the edited MLP 1 has attention after it to carry the value to the last token."""
    return tiny_model(variant=request.param, n_layers=3)


def _stats(m, layer, cfg=FAST):
    return key_statistics(m, layer, n_tokens=cfg.n_cov_tokens)


def test_closed_form_maps_key_to_value_and_keeps_c_orthogonal_keys():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64)
    C = A @ A.T + 0.1 * torch.eye(8, dtype=torch.float64)
    W, b = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    k, v = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    u = torch.linalg.solve(C, k)
    dW = rome_closed_form(W, k, v, u, b)
    assert torch.allclose(k @ (W + dW) + b, v)
    x = torch.randn(8, generator=g, dtype=torch.float64)
    x_perp = x - (x @ u) / (u @ u) * u  # x_perp^T C^-1 k = 0
    assert torch.allclose(x_perp @ (W + dW), x_perp @ W)
    assert torch.linalg.matrix_rank(dW) == 1


def test_edited_layer_maps_key_to_optimized_value(model, task):
    layer = 1
    stats = _stats(model, layer)
    prefixes = context_prefixes(FAST.prefix_lengths, FAST.seed)
    snap = snapshot(model)
    e = rome_step(model, layer, task.forget[0], config=FAST, stats=stats, prefixes=prefixes)
    assert_unchanged(model, snap)  # computing an edit changes nothing
    res = rome(model, Mask([Component("mlp", layer)]), _one_fact(task), config=FAST)
    # an edit of W_out does not change the layer's keys
    assert torch.allclose(subject_keys(res.model, layer, [task.forget[0]], prefixes)[0], e.key)
    W0 = model.blocks[layer].mlp.W_out.detach().double()
    b = model.blocks[layer].mlp.b_out.detach().double()
    W1 = W0 + e.update
    assert torch.allclose(e.key @ W1 + b, e.value, rtol=1e-6, atol=1e-6)
    moved = float((e.value - (e.key @ W0 + b)).norm())
    assert moved > 1e-2, "the value optimization did not move the value"
    assert res.history[-1]["p_target"] > res.history[0]["p_target"]
    # rome() wrote exactly this update (in the parameter's float32)
    assert torch.allclose(res.model.blocks[layer].mlp.W_out.detach().double(), W1, atol=1e-5)
    # the edited model's own layer maps k* to v*
    assert torch.allclose(e.key @ res.model.blocks[layer].mlp.W_out.detach().double() + b, e.value, atol=1e-4)


def _one_fact(task):
    from dataclasses import replace

    return replace(task, forget=task.forget[:1])


def test_the_reference_codes_bare_key_gets_the_whole_delta(model, task):
    """``update_key="bare"`` (the reference code's ``compute_v``): the bare prompt's key maps to its
    own output plus ``delta``, along the same direction ``C^-1 k*``; the paper's default maps ``k*``,
    so the bare prompt gets the fraction ``(k0 . C^-1 k*) / (k* . C^-1 k*)`` of ``delta``."""
    layer = 1
    stats = _stats(model, layer)
    prefixes = context_prefixes(FAST.prefix_lengths, FAST.seed)
    paper = rome_step(model, layer, task.forget[0], config=FAST, stats=stats, prefixes=prefixes)
    ref = rome_step(model, layer, task.forget[0], config=FAST.replace(update_key="bare"), stats=stats,
                    prefixes=prefixes)
    k0 = subject_keys(model, layer, task.forget[:1], ("",))[0]
    W0 = model.blocks[layer].mlp.W_out.detach().double()
    b = model.blocks[layer].mlp.b_out.detach().double()
    assert torch.allclose(ref.key, k0) and torch.allclose(paper.c_inv_key, ref.c_inv_key)
    delta = paper.value - (paper.key @ W0 + b)  # the same optimization, seeded alike
    assert torch.allclose(ref.value - (k0 @ W0 + b), delta, atol=1e-6)
    assert torch.allclose(k0 @ (W0 + ref.update) + b, k0 @ W0 + b + delta, atol=1e-6)
    share = float(k0 @ paper.c_inv_key / (paper.key @ paper.c_inv_key))
    assert torch.allclose(k0 @ paper.update, share * delta, atol=1e-6)
    assert torch.allclose(ref.update, paper.update / share, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="update_key must be one of"):
        RomeConfig(update_key="k0")
    with pytest.raises(ValueError, match="first of the prefixes"):
        rome_step(model, layer, task.forget[0], config=FAST.replace(update_key="bare"), stats=stats,
                  prefixes=prefixes[1:])


def test_c_orthogonal_keys_are_unchanged(model, task):
    layer = 1
    stats = _stats(model, layer)
    res = rome(model, Mask([Component("mlp", layer)]), _one_fact(task), config=FAST)
    key = subject_keys(model, layer, task.forget[:1], context_prefixes(FAST.prefix_lengths, FAST.seed))[0]
    u = stats.solve(key, FAST.cov_ridge)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(16, key.shape[0], generator=g, dtype=torch.float64)
    X_perp = X - torch.outer(X @ u, u) / (u @ u)
    W0 = model.blocks[layer].mlp.W_out.detach().double()
    W1 = res.model.blocks[layer].mlp.W_out.detach().double()
    scale = float((X_perp @ W0).abs().max())
    assert float((X_perp @ W1 - X_perp @ W0).abs().max()) < 1e-5 * max(scale, 1.0)
    # keys with a component along C^-1 k* do change: the check above is not vacuous
    assert float((X @ W1 - X @ W0).abs().max()) > 1e-3


def test_mask_must_be_exactly_one_mlp_layer(task):
    m = tiny_model()
    with pytest.raises(ValueError, match="exactly one MLP layer.*layers \\[0, 1\\].*memit"):
        rome(m, Mask.from_labels(["L0.mlp", "L1.mlp"]), task, config=FAST)
    with pytest.raises(ValueError, match="whole MLP layers.*L1H0"):
        rome(m, Mask.from_labels(["L1.mlp", "L1H0"]), task, config=FAST)
    with pytest.raises(ValueError, match="whole MLP layers.*L1.N3"):
        rome(m, Mask.from_labels(["L1.N3"]), task, config=FAST)
    with pytest.raises(ValueError, match="mask is empty"):
        rome(m, Mask.empty(), task, config=FAST)
    with pytest.raises(ValueError, match="does not exist"):
        rome(m, Mask.from_labels(["L5.mlp"]), task, config=FAST)
    assert no_hooks(m)
    from factlens.editing.memory_editing import mask_mlp_layers

    assert mask_mlp_layers("L1.mlp", m, method="ROME") == [1]  # one label, not its letters
    # an attention-only model: the advice to keep only the mask's MLP layers cannot be followed
    attn = tiny_model(variant="attn_only")
    for edit_fn in (rome, memit):
        with pytest.raises(ValueError, match="attention-only: it has no MLPs. Use method='finetune'"):
            edit_fn(attn, Mask.from_labels(["L1H0"]), task)
    assert no_hooks(attn)


def test_bad_task_objective_and_config(task):
    m = tiny_model()
    unlearn = sports_unlearning(sports_facts().shuffled(0)[:40], n_forget=2, seed=0)
    with pytest.raises(ValueError, match="objective 'inject'"):
        rome(m, Mask.from_labels(["L1.mlp"]), unlearn, config=FAST)
    with pytest.raises(ValueError, match="objective 'inject'"):
        rome(m, Mask.from_labels(["L1.mlp"]), task, objective="unlearn", config=FAST)
    with pytest.raises(ValueError, match="does not support objective 'unlearn'"):
        factlens.edit(m, Mask.from_labels(["L1.mlp"]), task, method="rome", objective="unlearn")
    with pytest.raises(TypeError, match="RomeConfig or an EditConfig"):
        rome(m, Mask.from_labels(["L1.mlp"]), task, config={"v_lr": 1.0})
    with pytest.raises(ValueError, match="v_num_grad_steps"):
        RomeConfig(v_num_grad_steps=0)
    with pytest.raises(ValueError, match="clamp_norm_factor"):
        RomeConfig(clamp_norm_factor=0.0)
    with pytest.raises(ValueError, match="prefix_lengths"):
        RomeConfig(prefix_lengths=((0, 3),))
    with pytest.raises(ValueError, match="unknown RomeConfig fields"):
        RomeConfig.from_dict({"v_lr": 0.1, "steps": 3})
    c = RomeConfig(prefix_lengths=[[4, 2]], kl_prompts=["{} is a", "{} was"])
    assert RomeConfig.from_dict(c.to_dict()) == c and c.prefix_lengths == ((4, 2),)


def test_planted_model_predicts_target_new_after_rome():
    torch.set_flush_denormal(True)
    try:
        p = planted_fact_model()
        cands = ("basketball", "baseball", "football", "golf")

        def acc(m, recs, attr):
            lps = candidate_logprobs(m, [r.prompt for r in recs], [cands] * len(recs))
            return sum(cands[int(lp.argmax())] == getattr(r, attr) for r, lp in zip(recs, lps)) / len(recs)

        assert acc(p.model, p.task.forget, "target_new") == 0.0
        res = rome(p.model, Mask([p.lookup_mlp]), p.task)  # the defaults
        # measured: 8/8 edited, 32/32 held-out facts kept (the planted lookup neurons are subject-specific)
        assert acc(res.model, p.task.forget, "target_new") == 1.0
        assert acc(res.model, p.task.maintain, "answer") >= 0.9
        assert res.meta["covariance"]["layer"] == p.lookup_layer
    finally:
        torch.set_flush_denormal(False)


def test_invariants_inplace_revert_save_load(task, tmp_path):
    m = tiny_model(variant="gated")
    snap = snapshot(m)
    mask = Mask([Component("mlp", 0)])
    res = rome(m, mask, task, config=FAST)
    assert_unchanged(m, snap)  # inplace=False: the caller's model is untouched, no hooks, no .grad
    assert res.model is not m and no_hooks(res.model)
    assert res.model.cfg.device == m.cfg.device
    changed = {n for n, p in res.model.named_parameters() if not torch.equal(p, snap.state[n])}
    assert changed == {"blocks.0.mlp.W_out"}
    assert isinstance(res, EditResult) and set(res.deltas) == {"blocks.0.mlp.W_out"}
    assert res.n_params_trained == m.cfg.d_mlp * m.cfg.d_model and res.sft_kind == "none"
    assert len({h["fact"] for h in res.history}) == len(task.forget)
    assert [h["step"] for h in res.history] == list(range(len(res.history)))
    # save / load / apply onto another copy gives the same weights; revert restores bitwise
    res.save(tmp_path / "rome.safetensors")
    loaded = EditResult.load(tmp_path / "rome.safetensors")
    assert loaded.meta["method"] == "rome" and loaded.meta["layer"] == 0
    other = copy.deepcopy(m)
    loaded.apply(other)
    assert torch.equal(other.blocks[0].mlp.W_out, res.model.blocks[0].mlp.W_out)
    loaded.revert(other)
    res.revert()
    assert_unchanged(res.model, snap)
    # inplace=True edits the caller's model and returns it
    res2 = rome(m, mask, task, config=FAST, inplace=True)
    assert res2.model is m and not torch.equal(m.blocks[0].mlp.W_out, snap.state["blocks.0.mlp.W_out"])
    assert all(p.requires_grad == snap.requires_grad[n] for n, p in m.named_parameters()) and no_hooks(m)
    res2.revert()
    assert_unchanged(m, snap)


def test_inplace_edit_is_restored_when_interrupted(task, monkeypatch):
    from factlens.editing import rome as rome_mod

    m = tiny_model(n_layers=3)  # L1 has a block after it
    snap = snapshot(m)
    calls = []
    real = rome_mod.rome_step

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(*a, **k)

    monkeypatch.setattr(rome_mod, "rome_step", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        rome(m, Mask.from_labels(["L1.mlp"]), task, config=FAST, inplace=True)
    assert_unchanged(m, snap)


def test_edit_dispatch_uses_defaults_and_edit_config_text(task):
    m = tiny_model(n_layers=3)  # L1 has a block after it
    res = factlens.edit(m, Mask.from_labels(["L1.mlp"]), task, method="rome", config=EditConfig(seed=3),
                        show_progress=False)
    assert res.meta["rome_config"] == RomeConfig(seed=3).to_dict()
    assert res.config == EditConfig(seed=3) and res.objective == "inject"
    assert res.meta["covariance"]["text_source"] == "builtin"
    assert RomeConfig.from_edit_config(EditConfig(sft_source="x.txt")).text_source == "x.txt"


def test_edit_takes_an_objective_entry_and_checks_what_a_method_returns(task):
    """An Objective entry is accepted by every method, as names are (rome refused it before: "does not
    support objective Objective(name='inject', ...); it supports ['inject']"), and the method gets the
    name; a method returning something other than an EditResult is refused at edit() (it failed later, in
    evaluate or revert, with an AttributeError)."""
    from factlens.editing.registry import OBJECTIVES, EditMethod

    m = tiny_model(n_layers=3)
    cfg = EditConfig(seed=3, methods={"rome": FAST.to_dict()})
    res = factlens.edit(m, Mask.from_labels(["L1.mlp"]), task, method="rome", objective=OBJECTIVES.get("inject"),
                        config=cfg, show_progress=False)
    assert res.objective == "inject"
    seen = {}

    def mine(model, mask, task, *, objective, config, inplace):
        seen["objective"] = objective
        return model  # not an EditResult

    with pytest.raises(TypeError, match="edit method 'mine' returned a HookedTransformer, not an EditResult"):
        factlens.edit(m, Mask.from_labels(["L1.mlp"]), task, method=EditMethod("mine", mine, ("inject",)),
                      objective=OBJECTIVES.get("inject"))
    assert seen["objective"] == "inject"
    with pytest.raises(ValueError, match=r"does not support objective 'unlearn'; it supports \['inject'\]"):
        factlens.edit(m, Mask.from_labels(["L1.mlp"]), sports_unlearning(sports_facts().shuffled(0)[:40], n_forget=2, seed=0),
                      method="rome", objective=OBJECTIVES.get("unlearn"))


def test_edit_dispatch_reads_the_methods_table(task):
    """``EditConfig.methods["rome"]`` reaches ROME through factlens.edit (and the runner's --edit)."""
    m = tiny_model(n_layers=3)  # L1 has a block after it
    ec = EditConfig(seed=3, sft_source="x.txt").override({"methods.rome.v_num_grad_steps": 2,
                                                          "methods.rome.prefix_lengths": [[3, 2]],
                                                          "methods.rome.text_source": None})
    cfg = ec.method_config("rome")
    assert cfg == RomeConfig(seed=3, v_num_grad_steps=2, prefix_lengths=((3, 2),), text_source=None)
    res = factlens.edit(m, Mask.from_labels(["L1.mlp"]), task, method="rome", config=ec, show_progress=False)
    assert res.meta["rome_config"] == cfg.to_dict()
    assert all(f["steps"] <= 2 for f in res.meta["facts"])  # two value steps per fact, the last only evaluates
    assert res.meta["n_prefixes"] == 3  # the bare prompt and two prefixes
    assert EditConfig.from_dict(ec.to_dict()) == ec


@pytest.mark.parametrize("methods, error, match", [
    ({"finetune": {"lr": 1}}, ValueError, "takes its settings from EditConfig's own fields"),
    ({"rome": {"v_lrr": 1}}, ValueError, r"unknown RomeConfig fields \['v_lrr'\] \(in EditConfig.methods\['rome'\]\)"),
    ({"memit": 3}, TypeError, "must be a table of the edit method's settings"),
    ({"rome": {"prefix_lengths": [[0, 2]]}}, ValueError, "prefix_lengths need words >= 1"),
])
def test_methods_table_bad_input(methods, error, match):
    with pytest.raises(error, match=match):
        EditConfig(methods=methods)


def test_a_misspelt_method_table_is_refused_by_edit_and_the_runner(task):
    """A table under a name no edit method has is refused before anything runs (tables of a method of
    your own, not registered, are allowed until edit() runs another method)."""
    from factlens.runner import RunConfig

    cfg = EditConfig(methods={"romee": {}})
    with pytest.raises(ValueError, match=r"EditConfig.methods has settings for \['romee'\], which is neither"):
        factlens.edit(tiny_model(n_layers=3), Mask.from_labels(["L1.mlp"]), task, method="rome", config=cfg)
    with pytest.raises(ValueError, match=r"settings for \['romee'\]"):
        RunConfig(task="planted", model="planted", edit={"methods": {"romee": {"v_lr": 1.0}}})


def test_key_statistics_cache(cache_dir):
    m = tiny_model(seed=5)
    st = key_statistics(m, 1, n_tokens=700)
    assert st.path is not None and st.path.is_file() and st.path.parent.parent == cache_dir
    assert st.n_tokens == 700 and st.mom2.dtype == torch.float64
    assert torch.allclose(st.mom2, st.mom2.T) and float(torch.linalg.eigvalsh(st.mom2).min()) > -1e-9
    again = key_statistics(m, 1, n_tokens=700)
    assert torch.equal(again.mom2, st.mom2) and again.path == st.path
    # other weights below the layer: another file; an edit of the layer's own W_out: the same file
    other = tiny_model(seed=6)
    assert weights_fingerprint(other, 1) != st.fingerprint
    with torch.no_grad():
        m.blocks[1].mlp.W_out.add_(1.0)
    assert key_statistics(m, 1, n_tokens=700).path == st.path
    assert key_statistics(other, 1, n_tokens=700).path != st.path
    # the direct estimate agrees with the cached one
    fresh = key_statistics(m, 1, n_tokens=700, cache=False)
    assert fresh.path is None and torch.allclose(fresh.mom2, st.mom2)
    with pytest.raises(ValueError, match="does not exist"):
        key_statistics(m, 7)
    with pytest.raises(ValueError, match="singular"):
        key_statistics(m, 1, n_tokens=10, cache=False).solve(torch.ones(64))


def test_key_statistics_cache_follows_the_texts_content(cache_dir, tmp_path):
    """An edited text file (same path) must not read the matrix of its old content."""
    m = tiny_model(seed=5)
    text = tmp_path / "general.txt"
    text.write_text("\n".join(f"The river number {i} runs past the old mill and into the sea." for i in range(60)))
    first = key_statistics(m, 1, text_source=str(text), n_tokens=600)
    assert key_statistics(m, 1, text_source=str(text), n_tokens=600).path == first.path  # unchanged text: a hit
    text.write_text("\n".join(f"Seven green apples fell from tree {i} during the storm." for i in range(60)))
    second = key_statistics(m, 1, text_source=str(text), n_tokens=600)
    fresh = key_statistics(m, 1, text_source=str(text), n_tokens=600, cache=False)
    assert second.path != first.path and torch.allclose(second.mom2, fresh.mom2)
    assert not torch.allclose(second.mom2, first.mom2)
    assert not list(second.path.parent.glob("*.tmp")) and not list(second.path.parent.glob(".*.tmp"))


def test_a_value_written_after_the_last_block_is_refused_not_written_from_noise(task):
    """At the last block nothing carries the subject's last token to the prediction: the target's loss has
    no gradient, and ROME/MEMIT wrote the optimizer's noise into W_out (0 % edited, a nonzero update)."""
    from factlens.editing.memory_editing import MaskNotSupported

    m = tiny_model(n_layers=3)
    before = snapshot(m)
    with pytest.raises(MaskNotSupported, match="ROME writes the new value .* after layer 2, the model's last block"):
        rome(m, Mask.from_labels(["L2.mlp"]), task, config=FAST)
    with pytest.raises(MaskNotSupported,
                       match="MEMIT writes the new value .* after layer 2.*last MLP layer is below 2"):
        memit(m, Mask.all_mlps(m), task, config=MemitConfig(v_num_grad_steps=4, prefix_lengths=((5, 3),),
                                                            n_cov_tokens=1500))
    assert_unchanged(m, before)
    assert no_hooks(m)


def test_memit_refuses_a_last_layer_before_computing_any_key_statistics(task, monkeypatch):
    """MEMIT on every MLP (the runner's all_mlps) computed the key statistics of every layer (minutes
    each on a real model) before it found that the last layer cannot carry the value."""
    import factlens.editing.memit as memit_module
    from factlens.editing.memory_editing import MaskNotSupported

    computed = []
    monkeypatch.setattr(memit_module, "layer_key_statistics", lambda m, layer, cfg: computed.append(layer))
    with pytest.raises(MaskNotSupported, match="MEMIT writes the new value .* after layer 2"):
        memit(tiny_model(n_layers=3), Mask.all_mlps(tiny_model(n_layers=3)), task,
              config=MemitConfig(v_num_grad_steps=4, prefix_lengths=((5, 3),), n_cov_tokens=1500))
    assert computed == []


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_rome_and_memit_run_under_no_grad_and_inference_mode(task, mode):
    """A notebook's evaluation block: the value optimization needs gradients and ordinary tensors."""
    m = tiny_model(n_layers=3)
    with getattr(torch, mode)():
        r = rome(m, Mask.from_labels(["L1.mlp"]), task, config=FAST)
        e = memit(m, Mask.from_labels(["L0.mlp", "L1.mlp"]), task,
                  config=MemitConfig(v_num_grad_steps=4, prefix_lengths=((5, 3),), n_cov_tokens=1500))
    for res in (r, e):
        w = res.model.blocks[1].mlp.W_out
        assert not w.is_inference() and not torch.equal(w, m.blocks[1].mlp.W_out)


def test_an_empty_kl_prompt_list_is_refused():
    with pytest.raises(ValueError, match="kl_prompts is empty.*kl_factor=0"):
        RomeConfig(kl_prompts=())


def test_the_key_statistics_fingerprint_covers_the_model_config():
    """Same name and weights, another activation function: one cache file served both covariances."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    a = tiny_model(n_layers=3)
    fields = HookedTransformerConfig.__dataclass_fields__
    d = {k: v for k, v in a.cfg.to_dict().items() if k in fields and fields[k].init}
    b = HookedTransformer(HookedTransformerConfig(**{**d, "act_fn": "relu" if a.cfg.act_fn != "relu" else "gelu"}),
                          tokenizer=a.tokenizer)
    b.load_state_dict(a.state_dict())
    assert b.cfg.model_name == a.cfg.model_name
    assert weights_fingerprint(a, 1) != weights_fingerprint(b, 1)
    assert weights_fingerprint(a, 1) == weights_fingerprint(copy.deepcopy(a), 1)


@pytest.mark.parametrize("cls", [RomeConfig, MemitConfig])
def test_value_edit_configs_refuse_non_finite_and_non_numbers(cls):
    """``kl_factor=nan`` and ``cov_ridge=inf`` passed their ``< 0`` checks (NaN losses; an infinite
    ridge), and a string ``n_cov_tokens`` failed deep in the covariance pass."""
    for name, bad in (("kl_factor", float("nan")), ("cov_ridge", float("inf")), ("stop_loss", float("nan"))):
        with pytest.raises(ValueError, match=f"{cls.__name__}.{name} must be a finite number"):
            cls(**{name: bad})
    with pytest.raises(TypeError, match=f"{cls.__name__}.n_cov_tokens must be an integer"):
        cls(n_cov_tokens="100")


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_a_diverging_value_optimization_raises_and_leaves_the_model(method):
    """In float16 with a huge v_lr the loss turned NaN: a NaN loss never fell under stop_loss and a NaN
    delta passed the clamp, so ROME wrote NaN into every entry of W_out and returned; MEMIT called it
    "linearly dependent keys". The in-place edit must raise and leave the model as it was."""
    p = planted_fact_model(n_subjects=12)
    m = p.model.to(torch.float16)
    before = snapshot(m)
    kw = dict(n_cov_tokens=300, cache_covariance=False, prefix_lengths=((4, 1),), v_num_grad_steps=20,
              clamp_norm_factor=None, v_lr=3e4)
    fn, cfg, label = (rome, RomeConfig(**kw), "ROME") if method == "rome" else (memit, MemitConfig(**kw), "MEMIT")
    with pytest.raises(FloatingPointError, match=rf"{label}'s value optimization diverged at step \d+ for fact 0 "
                                                 r"\('1'\) \(v_lr 30000, model dtype torch.float16\): the loss is not "
                                                 rf"finite .*Lower {type(cfg).__name__}.v_lr "
                                                 rf"\(--edit methods.{method}.v_lr=...\), or edit a float32 copy"):
        fn(m, Mask.from_labels(["L1.mlp"]), p.task, config=cfg, inplace=True)
    assert_unchanged(m, before)
    assert no_hooks(m)


def test_the_last_block_is_edited_when_the_subject_ends_the_prompt(task):
    """What docs/runner.md and docs/methods/memit.md say: the last block is refused only when a fact's
    subject does not end its prompt; where it does, its last token predicts the first target token."""
    from dataclasses import replace

    m = tiny_model(n_layers=3)
    records = [replace(r, template="the sport of {}") for r in task.forget]
    ending = replace(task, forget=replace(task.forget, records=tuple(records)))
    res = rome(m, Mask.from_labels(["L2.mlp"]), ending, config=FAST)
    assert not torch.equal(res.model.blocks[2].mlp.W_out, m.blocks[2].mlp.W_out)


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_an_interrupt_while_the_record_is_built_restores_an_inplace_model(method, monkeypatch):
    """The restore of ROME and MEMIT covered the updates only: a Ctrl-C while the EditResult was built (its
    fingerprint hashes the edited weights, seconds on a large model) left the caller's model edited with no
    result to revert it."""
    from factlens.editing import result as result_mod

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    p = planted_fact_model(n_subjects=12)
    before = snapshot(p.model)
    kw = dict(n_cov_tokens=300, cache_covariance=False, prefix_lengths=((4, 1),), v_num_grad_steps=3)
    fn, cfg = (rome, RomeConfig(**kw)) if method == "rome" else (memit, MemitConfig(**kw))
    monkeypatch.setattr(result_mod, "_fingerprint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fn(p.model, Mask.from_labels(["L1.mlp"]), p.task, config=cfg, inplace=True)
    assert calls  # interrupted where the record is built
    assert_unchanged(p.model, before)
    assert no_hooks(p.model)
