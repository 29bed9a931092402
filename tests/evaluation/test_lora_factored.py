"""LoRA's factored forward (hooks adding ``(x @ A) @ B``) against the merged one (``W + A @ B``)."""

from __future__ import annotations

import pytest
import torch

from factlens.editing.losses import answer_logprob_grad
from factlens.evaluation import EvalConfig
from factlens.evaluation.lora import add_lora
from factlens.evaluation.relearning import RelearningConfig, relearn
from factlens.memory import checkpointed_blocks
from factlens.prefix import prefix_reuse, residual_after_prefix
from factlens.testing import tiny_model
from factlens.testing.invariants import snapshot, unchanged
from factlens.testing.shaped import gemma3_shaped
from factlens.tokens import tokenize_prompts

PROMPTS = ["Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of",
           "Fact: Tiger Woods plays the sport of golf\nFact: Tom Brady plays the sport of"]
ANSWERS = ["basketball", "football"]


def _models():
    return {"standard": tiny_model(), "gqa_gated": tiny_model(variant="gqa_gated"), "gemma3": gemma3_shaped(),
            "ln_absolute": tiny_model(normalization_type="LN", positional_embedding_type="standard")}


def _randomize(handle, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in handle.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _loss_and_grads(model, handle):
    lp = answer_logprob_grad(model, PROMPTS, ANSWERS)
    grads = torch.autograd.grad(-lp.mean(), handle.parameters())
    return lp.detach(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("name", ["standard", "gqa_gated", "gemma3", "ln_absolute"])
def test_factored_equals_merged(name):
    """Same adapters (same seed, same values): the same log-probabilities and gradients up to
    float rounding, the same update norm, and the model untouched after ``remove()``."""
    m = _models()[name]
    snap = snapshot(m)
    out = {}
    for forward in ("merged", "factored"):
        h = add_lora(m, rank=4, seed=0, forward=forward)
        assert h.forward == forward
        _randomize(h)
        with torch.enable_grad():
            out[forward] = (*_loss_and_grads(m, h), h.delta_norm(), list(h.ranks.items()))
        h.remove()
        assert unchanged(m, snap)
    (lp_m, g_m, n_m, r_m), (lp_f, g_f, n_f, r_f) = out["merged"], out["factored"]
    assert r_m == r_f and n_m == pytest.approx(n_f, rel=1e-6)
    assert not torch.equal(lp_m, answer_logprob_grad(m, PROMPTS, ANSWERS).detach())  # the adapters did something
    torch.testing.assert_close(lp_f, lp_m, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_f, g_m, rtol=1e-4, atol=1e-6)


def test_factored_hooks_are_removed_and_keep_prefix_reuse_exact():
    """The hooks are position-wise: the shared-prefix pass stays on and gives what the full pass
    gives; after remove() no hook is left on any module."""
    m = gemma3_shaped()
    h = add_lora(m, rank=4, forward="factored")
    _randomize(h)
    toks = tokenize_prompts(m, PROMPTS).tokens
    assert residual_after_prefix(m, toks, first_read=toks.shape[1] - 1)[1] > 0  # the prefix pass is taken
    with torch.enable_grad():
        lp_reuse, g_reuse = _loss_and_grads(m, h)
        with prefix_reuse(False):
            lp_full, g_full = _loss_and_grads(m, h)
    torch.testing.assert_close(lp_reuse, lp_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_reuse, g_full, rtol=1e-4, atol=1e-6)
    h.remove()
    assert all(not (mod._forward_hooks or mod._forward_pre_hooks) for mod in m.modules())


def test_factored_with_gradient_checkpointing_gives_the_same_gradients():
    m = gemma3_shaped()
    h = add_lora(m, rank=4, forward="factored")
    _randomize(h)
    with torch.enable_grad():
        plain = _loss_and_grads(m, h)
        with checkpointed_blocks(m):
            ck = _loss_and_grads(m, h)
    assert torch.equal(plain[0], ck[0])
    assert torch.equal(plain[1], ck[1])
    h.remove()


def test_factored_bad_input():
    m = tiny_model()
    with pytest.raises(ValueError, match="unknown LoRA forward"):
        add_lora(m, rank=2, forward="fused")
    m.cfg.use_attn_result = True  # per-head outputs: W_O's product is not where the hook looks
    with pytest.raises(ValueError, match="use_attn_result.*forward='merged'"):
        add_lora(m, rank=2, forward="factored")
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())  # nothing left behind
    m.cfg.use_attn_result = False
    with pytest.raises(ValueError, match="adapts only"):
        add_lora(m, rank=2, targets=["embed.W_E"], forward="factored")
    with pytest.raises(ValueError, match="lora_forward"):
        RelearningConfig(lora_forward="fused")


def test_relearning_factored_matches_merged(planted):
    """The attack itself: the same loss history and update size in both forms (float rounding only)."""
    runs = {}
    for forward in ("merged", "factored"):
        cfg = EvalConfig(relearning=RelearningConfig(steps=3, rank=8, lr=1e-3, lora_forward=forward))
        r = relearn(planted.model, planted.task.forget, retain=planted.task.retain, config=cfg)
        assert r.lora.forward == forward
        runs[forward] = ([h["loss"] for h in r.history], r.meta["delta_norm"])
        r.lora.remove()
    (loss_m, norm_m), (loss_f, norm_f) = runs["merged"], runs["factored"]
    assert loss_f == pytest.approx(loss_m, rel=1e-4)
    assert norm_f == pytest.approx(norm_m, rel=1e-3) and norm_m > 0


@pytest.mark.parametrize("forward", ["factored", "merged"])
def test_relearning_keeps_prefix_reuse(forward, monkeypatch):
    """Prefix reuse stays on while the relearning attack trains (the factored adapters' module hooks
    are declared position-wise; any other module hook switches reuse off): every training pass over
    the forget and retain prompts runs their shared prefix once."""
    import factlens.editing.losses as losses
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing

    task = sports_athlete_editing(sports_facts()[:40], n_forget=8, seed=0, n_retain=8, n_maintain=4)
    seen: list[int] = []
    real = losses.residual_after_prefix

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[1])
        return out

    monkeypatch.setattr(losses, "residual_after_prefix", spy)
    cfg = EvalConfig(relearning=RelearningConfig(steps=2, rank=4, lr=1e-3, lora_forward=forward))
    m = gemma3_shaped()
    snap = snapshot(m)
    r = relearn(m, task.forget, retain=task.retain, config=cfg)
    r.lora.remove()
    assert seen and all(p > 0 for p in seen)  # the shared few-shot example ran once per pass
    assert unchanged(m, snap)


@pytest.mark.slow
def test_gemma_relearning_factored_matches_merged(gemma):
    """On Gemma 3 270M (the model as load_model gives it, TransformerLens's layout): both forms
    train the same adapters; the loss histories agree to float rounding and the model is untouched."""
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing

    task = sports_athlete_editing(sports_facts(), n_forget=8, seed=0, n_retain=8, n_maintain=4)
    snap = snapshot(gemma)
    runs = {}
    for forward in ("merged", "factored"):
        cfg = EvalConfig(relearning=RelearningConfig(steps=2, rank=64, batch_size=4, lora_forward=forward),
                         text={"n_chunks": 2, "seq_len": 32})
        r = relearn(gemma, task.forget, retain=task.retain, config=cfg)
        runs[forward] = ([h["loss"] for h in r.history], r.meta["delta_norm"])
        r.lora.remove()
    assert runs["factored"][0] == pytest.approx(runs["merged"][0], rel=1e-3)
    assert runs["factored"][1] == pytest.approx(runs["merged"][1], rel=1e-2) and runs["merged"][1] > 0
    assert unchanged(gemma, snap)


@pytest.mark.parametrize("hook_name, fn", [
    ("blocks.0.attn.hook_z", lambda z, hook: torch.cat([torch.zeros_like(z[:, :, :1]), z[:, :, 1:]], dim=2)),
    ("blocks.1.mlp.hook_post", lambda post, hook: torch.zeros_like(post)),
])
def test_factored_and_merged_agree_under_a_patch_added_later(hook_name, fn):
    """A head or neuron ablation added with model.hooks() after the adapters: the factored adapter read the
    activation before the patch (merged -8.377 vs factored -8.581 with MLP 1's neurons zeroed)."""
    prompts = ["Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of"]
    m = tiny_model()
    out = {}
    for fwd in ("merged", "factored"):
        h = add_lora(m, rank=4, seed=0, forward=fwd)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in h.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            with m.hooks(fwd_hooks=[(hook_name, fn)]):
                out[fwd] = float(answer_logprob_grad(m, prompts, ["basketball"]))
        h.remove()
    assert out["factored"] == pytest.approx(out["merged"], abs=1e-5)


def test_removing_merged_adapters_keeps_the_parameter_order():
    """Removing a parametrization re-registers the weight last: named_parameters() and state_dict() came back
    in another order, and a BaselineCache bound to the model took that for other weights."""
    from factlens.evaluation.baseline_cache import _fingerprint

    m = tiny_model()
    names, fp = [n for n, _ in m.named_parameters()], _fingerprint(m)
    add_lora(m, rank=2, seed=0, forward="merged").remove()
    assert [n for n, _ in m.named_parameters()] == names and list(m.state_dict()) == list(tiny_model().state_dict())
    assert _fingerprint(m) == fp


def test_relearning_on_a_model_the_factored_form_cannot_reach_names_the_config_field(planted):
    """The default relearning suite raised "use add_lora(..., forward='merged')" on a model with
    use_attn_result: a function the user never called; the message names the suite's field."""
    from factlens.evaluation.relearning import run_relearning

    m = tiny_model()
    m.cfg.use_attn_result = True
    try:
        with pytest.raises(ValueError, match=r"relearning=\{'lora_forward': 'merged'\}.*--eval relearning\.lora_forward=merged"):
            run_relearning(m, planted.task, config=EvalConfig(relearning=RelearningConfig(steps=1, rank=2)))
    finally:
        m.cfg.use_attn_result = False
