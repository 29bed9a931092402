"""Tests of the gradient-masking editor (tiny and planted models; fast)."""

from __future__ import annotations

import copy
import json
import math
import pickle
from dataclasses import replace

import pytest
import torch

import factlens
from factlens.components import Component, Mask
from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.data.text import load_texts, token_chunks
from factlens.editing import EditConfig, EditResult, edit, edit_sequential, lr_factor
from factlens.editing import editor as editor_mod
from factlens.editing import sampling as sampling_mod
from factlens.editing import training as training_mod
from factlens.editing.objectives import InjectObjective
from factlens.editing.losses import (answer_log1m_prob, answer_logprob_grad, fact_losses, reference_logprobs, sft_loss,
                                  sft_positions)
from factlens.prompt_scores import score_prompts
from factlens.tasks import sports_athlete_editing, sports_unlearning
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import answer_logprobs, answer_token_ids

# small, fast settings for the tiny models (no accumulation, tiny SFT batches)
TINY = EditConfig(lr=1e-2, steps=3, batch_size=4, grad_accum=2, n_sft_chunks=4, sft_batch_size=2, sft_seq_len=16,
                  sft_positions=4)
# planted model: all facts per step; strong retain and KL terms keep the held-out facts (see the evidence test)
PLANTED = EditConfig(lr=1e-2, steps=30, batch_size=None, grad_accum=1, l_retain=20.0, l_sft=10.0, n_sft_chunks=8,
                     sft_batch_size=4, sft_seq_len=32)


@pytest.fixture()
def flush_denormal():
    """The planted model's tiny noise weights produce denormal floats that slow CPUs ~2x; flush them here."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def tiny_task():
    return sports_athlete_editing(sports_facts()[:40], n_forget=4, seed=0, n_retain=8, n_maintain=8)




# --- config ---------------------------------------------------------------------------


def test_config_defaults_presets_and_roundtrip():
    c = EditConfig()
    assert (c.lr, c.steps, c.batch_size, c.grad_accum, c.weight_decay, c.schedule) == (1e-5, 50, 4, 16, 0.0, "cosine")
    assert (c.l_forget, c.l_retain, c.l_sft, c.sft_source, c.optimizer) == (1.0, 1.0, 1.0, None, "adamw")
    f = EditConfig.fast()
    assert f.grad_accum == 1 and f.batch_size == 16 and f.steps < c.steps
    assert EditConfig.fast(steps=3).steps == 3
    assert EditConfig.from_dict(f.to_dict()) == f and f.replace(lr=1.0).lr == 1.0
    with pytest.raises(ValueError, match="optimizer"):
        EditConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="lr"):
        EditConfig(lr=0)
    with pytest.raises(ValueError, match="unknown EditConfig fields"):
        EditConfig.from_dict({"lr": 1e-3, "nope": 1})


@pytest.mark.parametrize("kw, error, match", [
    ({"steps": 2.5}, TypeError, "EditConfig.steps must be an integer, got 2.5"),
    ({"steps": "3"}, TypeError, "EditConfig.steps must be an integer, got '3'"),
    ({"batch_size": True}, TypeError, "EditConfig.batch_size must be an integer, got True"),
    ({"rmu_layer": 0.5}, TypeError, "EditConfig.rmu_layer must be an integer"),
    ({"l_forget": float("nan")}, ValueError, "EditConfig.l_forget must be a finite number, got nan"),
    ({"l_sft": float("inf")}, ValueError, "EditConfig.l_sft must be a finite number, got inf"),
    ({"lr": float("inf")}, ValueError, "EditConfig.lr must be a finite number"),
    ({"weight_decay": float("nan")}, ValueError, "EditConfig.weight_decay must be a finite number"),
])
def test_config_types_and_finiteness_are_checked_when_built(kw, error, match):
    """NaN passed every "< 0" check (a NaN loss weight was then reported as a learning rate too
    high), floats and strings failed deep inside the editor with bare TypeErrors."""
    with pytest.raises(error, match=match):
        EditConfig(**kw)


def test_config_accepts_numpy_numbers():
    import numpy as np

    c = EditConfig(steps=np.int64(3), lr=np.float32(1e-3), batch_size=np.int32(2))
    assert c.steps == 3 and c.batch_size == 2


def test_methods_tables_are_read_only_and_load_back_equal(tmp_path):
    """A RomeConfig in ``methods`` kept its tuples, which JSON gives back as lists: the saved
    result did not load back equal. The tables were also plain dicts of a frozen config: changed
    in place, they changed the settings a result records, unvalidated."""
    from factlens.editing.rome import RomeConfig

    cfg = EditConfig(methods={"rome": RomeConfig(v_num_grad_steps=2, n_cov_tokens=200)})
    assert EditConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(TypeError, match="read-only"):
        cfg.methods["rome"]["v_num_grad_steps"] = -7
    with pytest.raises(TypeError, match="read-only"):
        cfg.objectives["npo"] = {}
    d = cfg.to_dict()  # a plain copy the caller may change
    d["methods"]["rome"]["v_num_grad_steps"] = 5
    assert type(d["methods"]["rome"]) is dict and cfg.methods["rome"]["v_num_grad_steps"] == 2
    assert copy.deepcopy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg  # worker processes get it
    more = cfg.replace(methods={**cfg.methods, "memit": {"v_num_grad_steps": 3}})
    assert set(more.methods) == {"rome", "memit"} and cfg.override({"methods": {"rome": {"v_lr": 0.1}}}).methods[
        "rome"]["v_lr"] == 0.1


def test_lr_schedule():
    c = EditConfig(steps=10, warmup_steps=2)
    f = [lr_factor(c, t) for t in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and all(a >= b for a, b in zip(f[1:], f[2:])) and f[-1] > 0
    assert lr_factor(c.replace(schedule="constant"), 7) == 1.0
    assert lr_factor(EditConfig(steps=4, schedule="linear"), 2) == pytest.approx(0.5)


# --- general text ---------------------------------------------------------------------


def test_load_texts_builtin_and_chunks():
    texts = load_texts(None)
    assert len(texts) >= 80 and all(t == t.strip() and t for t in texts)
    sub = load_texts(None, n=5, seed=1)
    assert len(sub) == 5 and sub == load_texts(None, n=5, seed=1) and set(sub) <= set(texts)
    model = tiny_model()
    chunks = token_chunks(model, texts, seq_len=12, n_chunks=6)
    assert chunks.shape == (6, 12) and bool((chunks[:, 0] == model.tokenizer.bos_token_id).all())
    assert bool((chunks[:, 1:] != model.tokenizer.bos_token_id).all())
    with pytest.raises(ValueError, match="fewer than one chunk"):
        token_chunks(model, ["short"], seq_len=64)
    with pytest.raises(FileNotFoundError):
        load_texts("./no/such/file.txt")


def test_load_texts_wikitext_file(shared_data):
    path = shared_data / "wikitext2" / "test.txt"
    if not path.exists():
        pytest.skip("../shared/data/wikitext2 not available")
    texts = load_texts(str(path), n=50)
    assert len(texts) == 50
    assert not any(t.startswith("=") and t.endswith("=") for t in texts)
    assert not any(" @-@ " in t for t in texts)


# --- losses ---------------------------------------------------------------------------


def test_answer_logprob_grad_matches_no_grad_scoring():
    model = tiny_model()
    prompts = ["Fact: Tiger Woods plays the sport of", "The sport played by LeBron James is"]
    answers = ["golf", "basketball player"]  # second answer is multi-token
    lp = answer_logprob_grad(model, prompts, answers)
    ref = answer_logprobs(model, prompts, answers)
    assert torch.allclose(lp.detach(), ref, atol=1e-5)
    lp.sum().backward()
    assert model.blocks[0].mlp.W_in.grad is not None
    model.zero_grad(set_to_none=True)
    l1m = answer_log1m_prob(model, prompts, answers).detach()
    assert torch.allclose(l1m, torch.log1p(-ref.exp()), atol=1e-5)


def test_log1m_accurate_when_p_is_tiny():
    """For p(answer) below ~1e-7, ``log(1 - p)`` was the difference of two logsumexps that agree to
    float32 rounding: exactly 0 (or +-1e-7), not -p; it is now ``log1p(-p)`` where ``p < 1/2``."""
    model = tiny_model()
    prompt, answer = "Fact: Tiger Woods plays the sport of", "golf"
    tok = answer_token_ids(model, answer)
    assert len(tok) == 1
    with torch.no_grad():
        model.unembed.b_U[tok[0]] -= 10.0
        lp = answer_logprobs(model, [prompt], [answer]).double()
    assert float(lp.exp()) < 1e-6
    l1m = answer_log1m_prob(model, [prompt], [answer])
    want = torch.log1p(-lp.exp())
    assert float(l1m.detach()) < 0.0
    assert float(l1m.detach()) == pytest.approx(float(want), rel=1e-4, abs=0)
    l1m.sum().backward()  # finite gradient through the log1p branch
    assert torch.isfinite(model.unembed.b_U.grad).all()
    two = "basketball player"  # several tokens: the product of their probabilities is tiny too
    assert len(answer_token_ids(model, two)) > 1
    with torch.no_grad():
        model.unembed.b_U[answer_token_ids(model, two)[-1]] -= 20.0
        lp2 = answer_logprobs(model, [prompt], [two]).double()
    assert float(lp2.exp()) < 1e-6
    got = float(answer_log1m_prob(model, [prompt], [two]).detach())
    assert got < 0.0 and got == pytest.approx(float(torch.log1p(-lp2.exp())), rel=1e-4, abs=0)


def test_unlearn_loss_stable_when_p_is_one():
    p = planted_fact_model(n_subjects=6)
    m = p.model
    with torch.no_grad():
        m.unembed.W_U.mul_(20.0)  # p(answer) rounds to 1 in float32
    r = p.dataset[0]
    with torch.no_grad():
        assert float(answer_logprob_grad(m, [r.prompt], [r.answer]).exp()) == 1.0
    items = format_prompts(p.dataset[:2])
    lf, lr = fact_losses(m, items, items, "unlearn")
    assert math.isfinite(float(lf.detach())) and float(lf.detach()) > 10  # -log(1 - p) is large but finite
    lf.backward()
    assert m.unembed.W_U.grad.abs().sum() > 0
    assert float(lr) >= 0


def test_sft_losses_and_functional_reference():
    model = tiny_model()
    toks = token_chunks(model, load_texts(None), seq_len=16, n_chunks=3)
    pos = sft_positions(16, 4, kl=True)
    ref = reference_logprobs(model, toks, pos)
    kl = sft_loss(model, toks, pos, reference=ref)
    assert abs(float(kl)) < 1e-5  # KL of the model to itself
    ce = sft_loss(model, toks, sft_positions(16, None, kl=False))
    assert float(ce) > 0
    # functional_call with the original values equals the original model after a change
    name = "blocks.0.mlp.W_in"
    orig = {name: dict(model.named_parameters())[name].detach().clone()}
    with torch.no_grad():
        model.blocks[0].mlp.W_in.add_(0.5)
    assert torch.allclose(reference_logprobs(model, toks, pos, orig), ref, atol=1e-5)


# --- masking guarantees ---------------------------------------------------------------


def _check_masked_edit(model, mask, task, config):
    before = snapshot(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    res = edit(model, mask, task, config=config, show_progress=False)
    assert_unchanged(model, before)  # inplace=False: the caller's model is untouched
    pm = mask.to_param_masks(model)
    changed = 0
    for n, p in res.model.named_parameters():
        if n in pm:
            assert torch.equal(p.detach()[~pm[n]], before.state[n][~pm[n]]), n
            changed += int((p.detach()[pm[n]] != before.state[n][pm[n]]).sum())
        else:
            assert torch.equal(p.detach(), before.state[n]), n
        assert p.requires_grad == flags[n] and p.grad is None
    assert changed > 0 and res.n_params_trained == sum(int(m.sum()) for m in pm.values())
    assert no_hooks(res.model)
    return res


def test_unmasked_entries_bitwise_identical_gqa_gated(tiny_task):
    model = tiny_model(variant="gqa_gated")
    mask = Mask.from_labels(["L0H1", "L1H2", "L1.mlp"])
    # weight decay > 0 and momentum must not move unmasked entries of partially masked tensors
    res = _check_masked_edit(model, mask, tiny_task, TINY.replace(weight_decay=0.1))
    assert "blocks.0.attn._W_K" in res.deltas and "blocks.1.mlp.W_gate" in res.deltas


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_an_edit_under_no_grad_trains_as_outside_it(tiny_task, mode):
    """A notebook's evaluation block: under torch.no_grad() the editor skipped every backward pass,
    trained nothing and reported success (loss unchanged over all steps, n_changed 0)."""
    mask = Mask.from_labels(["L0H1", "L1.mlp"])
    plain = edit(tiny_model(), mask, tiny_task, config=TINY, show_progress=False)
    a, b = tiny_model(), tiny_model()  # loaded before, used inside the block
    with getattr(torch, mode)():
        quiet = edit(a, mask, tiny_task, config=TINY, show_progress=False)
        seq = edit_sequential(b, mask, tiny_task, chunk_size=2, config=TINY.replace(steps=2))
    assert plain.n_changed > 0 and quiet.n_changed == plain.n_changed
    assert [h["loss"] for h in quiet.history] == [h["loss"] for h in plain.history]
    assert all(r.n_changed > 0 for r in seq.results)
    assert not next(iter(quiet.model.parameters())).is_inference()


def test_half_precision_models_are_edited_through_float32_masters(tiny_task):
    """AdamW in fp16 divided by its eps of 1e-8 = 0 (every fp16 edit diverged at step 0, at any lr), and
    in bf16 updates below a weight's rounding step were lost at every step (about half the edit's
    norm at lr 1e-4 here); the optimizer now steps float32 copies and the model gets their rounded values."""
    mask = Mask.from_labels(["L0H1", "L1.mlp"])
    cfg = TINY.replace(lr=1e-4, steps=5)
    ref = edit(tiny_model(), mask, tiny_task, config=cfg, show_progress=False)
    for dtype in (torch.bfloat16, torch.float16):
        res = _check_masked_edit(tiny_model().to(dtype), mask, tiny_task, cfg)
        assert all(p.dtype == dtype for p in res.model.parameters())
        assert res.delta_norm() == pytest.approx(ref.delta_norm(), rel=0.1), dtype
        res.revert()


def test_unmasked_entries_bitwise_identical_planted(planted):
    mask = Mask([planted.extraction_head, Component("neuron", 3, 5)])
    _check_masked_edit(planted.model, mask, planted.task, PLANTED.replace(steps=3, weight_decay=0.1))


def test_only_touched_params_in_optimizer(tiny_task, monkeypatch):
    seen = {}
    real = training_mod.make_optimizer

    def spy(params, config):
        model_params = dict(spy.model.named_parameters())
        seen["names"] = sorted(n for n, p in model_params.items() if any(p is q for q in params))
        seen["requires_grad"] = sorted(n for n, p in model_params.items() if p.requires_grad)
        return real(params, config)

    model = tiny_model()
    spy.model = model
    monkeypatch.setattr(editor_mod, "make_optimizer", spy)
    mask = Mask.from_labels(["L1H0", "L0.mlp"])
    edit(model, mask, tiny_task, config=TINY.replace(steps=1), inplace=True, show_progress=False)
    assert seen["names"] == sorted(mask.to_param_masks(model)) == seen["requires_grad"]


def test_empty_mask_warns_and_changes_nothing(tiny_task):
    model = tiny_model()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="no parameters"):
        res = edit(model, Mask.empty(), tiny_task, config=TINY, inplace=True, show_progress=False)
    assert_unchanged(model, before)
    assert res.delta_norm() == 0.0 and res.n_params_trained == 0 and res.history == ()


def test_full_mask_equals_plain_finetuning(tiny_task):
    """Mask.everything trains every head and MLP entry: identical to a plain AdamW loop over those tensors.

    Embeddings, unembedding, norms and b_O belong to no component, so "full" means that parameter set.
    """
    model = tiny_model(variant="gqa_gated")
    cfg = EditConfig(lr=3e-3, steps=4, batch_size=None, grad_accum=2, n_sft_chunks=3, sft_seq_len=16,
                     sft_positions=5, warmup_steps=1, clip_grad=0.5)
    mask = Mask.everything(model)
    res = edit(model, mask, tiny_task, config=cfg, show_progress=False)

    ref_model = copy.deepcopy(model)
    original = copy.deepcopy(model)
    names = sorted(mask.to_param_masks(model))
    params = dict(ref_model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    train = [params[n] for n in names]
    opt = torch.optim.AdamW(train, lr=cfg.lr, weight_decay=0.0)
    forget, retain = format_prompts(tiny_task.forget), format_prompts(tiny_task.retain)
    toks = token_chunks(model, load_texts(None), seq_len=16, n_chunks=3)
    pos = sft_positions(16, 5, kl=True)
    ref = reference_logprobs(original, toks, pos)
    for step in range(cfg.steps):
        warm = (step + 1) / 1 if step < 1 else 0.5 * (1 + math.cos(math.pi * (step - 1) / (cfg.steps - 1)))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * warm
        for _ in range(cfg.grad_accum):
            lf, lr = fact_losses(ref_model, forget, retain, "inject")
            ls = sft_loss(ref_model, toks, pos, reference=ref)
            ((lf + lr + ls) / cfg.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(train, cfg.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for n, p in res.model.named_parameters():
        assert torch.allclose(p.detach(), params[n].detach(), atol=1e-6, rtol=0), n
    assert res.n_params_trained == sum(p.numel() for p in train)


def test_adamw8bit_on_cpu_is_a_clear_error(tiny_task):
    with pytest.raises(ValueError, match="optimizer='adamw'"):
        edit(tiny_model(), Mask.from_labels(["L0.mlp"]), tiny_task, config=TINY.replace(optimizer="adamw8bit"),
             show_progress=False)


def test_flags_hooks_and_weights_restored_after_exception(tiny_task, monkeypatch):
    model = tiny_model()
    model.blocks[0].mlp.W_out.requires_grad_(False)  # an unusual flag the editor must restore
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = snapshot(model)
    calls = {"n": 0}
    real = InjectObjective.losses

    def boom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # fail after a couple of optimizer steps have changed the weights
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(InjectObjective, "losses", boom)
    with pytest.raises(RuntimeError, match="boom"):
        edit(model, Mask.from_labels(["L0.mlp", "L1H1"]), tiny_task, config=TINY.replace(grad_accum=1, steps=5), inplace=True,
             show_progress=False)
    assert calls["n"] == 4
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert no_hooks(model)
    assert_unchanged(model, before)


# --- results: revert, save, load, apply -----------------------------------------------


def test_revert_save_load_apply_roundtrip(tiny_task, tmp_path):
    model = tiny_model(variant="gqa")
    before = snapshot(model)
    res = edit(model, Mask.from_labels(["L0H3", "L1.mlp"]), tiny_task, config=TINY, inplace=True, show_progress=False)
    edited = snapshot(model)
    assert res.model is model and res.delta_norm() > 0 and res.n_changed > 0
    path = tmp_path / "edit.safetensors"
    res.save(path)
    from safetensors import safe_open

    from factlens.strict_json import strict_loads

    with safe_open(str(path), "pt") as f:  # the metadata is standard JSON, which other tools read too
        assert strict_loads(f.metadata()["factlens_edit"])["history"] == json.loads(json.dumps(res.history))
    res.revert()
    assert_unchanged(model, before)
    with pytest.raises(RuntimeError, match="nothing to revert"):
        res.revert()

    other = tiny_model(variant="gqa")  # another copy of the same architecture
    loaded = EditResult.load(path)
    assert loaded.mask == res.mask and loaded.config == res.config and loaded.history == res.history
    assert loaded.shape == res.shape and loaded.sft_kind == res.sft_kind == "kl:builtin"
    assert loaded.model_name == model.cfg.model_name and loaded.n_params_trained == res.n_params_trained
    assert loaded.apply(other) is other
    assert_unchanged(other, edited)
    loaded.revert()
    assert_unchanged(other, before)

    with pytest.raises(ValueError, match="same architecture|different architecture"):
        loaded.apply(tiny_model(variant="gated"))
    with pytest.raises(ValueError, match="n_layers"):
        loaded.apply(tiny_model(variant="gqa", n_layers=3))


def test_plot_history(tiny_task):
    import plotly.graph_objects as go

    res = edit(tiny_model(), Mask.from_labels(["L0.mlp"]), tiny_task, config=TINY, show_progress=False)
    assert isinstance(res.plot_history(), go.Figure)
    assert [h["step"] for h in res.history] == [0, 1, 2]
    assert set(res.history[0]) == {"step", "loss", "loss_forget", "loss_retain", "loss_sft", "lr"}


def test_text_sft_source(tiny_task, tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(" = Heading = \n\n" + "\n".join(load_texts(None)[:20]))
    res = edit(tiny_model(), Mask.from_labels(["L0.mlp"]), tiny_task, config=TINY.replace(sft_source=str(f)),
               show_progress=False)
    assert res.sft_kind == f"text:{f}" and all(h["loss_sft"] > 0 for h in res.history)
    res0 = edit(tiny_model(), Mask.from_labels(["L0.mlp"]), tiny_task, config=TINY.replace(l_sft=0), show_progress=False)
    assert res0.sft_kind == "none" and all(h["loss_sft"] == 0 for h in res0.history)


def test_bad_inputs(tiny_task, planted):
    with pytest.raises(TypeError, match="Task"):
        edit(tiny_model(), Mask.from_labels(["L0.mlp"]), sports_facts()[:5], show_progress=False)
    unlearn = sports_unlearning(sports_facts().shuffled(0)[:40], n_forget=3)
    with pytest.raises(ValueError, match="target_new"):
        edit(tiny_model(), Mask.from_labels(["L0.mlp"]), unlearn, objective="inject", show_progress=False)
    with pytest.raises(ValueError, match="objective"):
        edit(tiny_model(), Mask.from_labels(["L0.mlp"]), tiny_task, objective="forget", show_progress=False)


def test_a_label_string_is_one_component_and_a_non_model_is_a_clear_error(tiny_task):
    """A single label was iterated letter by letter ("cannot parse component label 'L'"); a model
    name or another module failed with bare AttributeErrors deep inside; edit_sequential returned
    an empty result for a task without forget facts, which edit refuses."""
    cfg = TINY.replace(steps=1)
    m = tiny_model()
    res = edit(m, "L1H1", tiny_task, config=cfg, show_progress=False)
    assert res.mask == Mask.from_labels(["L1H1"]) and res.n_changed > 0
    for bad in ("gpt2", torch.nn.Linear(2, 2), None):
        with pytest.raises(TypeError, match="TransformerLens HookedTransformer"):
            edit(bad, ["L1H1"], tiny_task, config=cfg, show_progress=False)
        with pytest.raises(TypeError, match="TransformerLens HookedTransformer"):
            edit_sequential(bad, ["L1H1"], tiny_task, chunk_size=1, config=cfg)
        with pytest.raises(TypeError, match="TransformerLens HookedTransformer"):
            res.apply(bad)
    empty = replace(tiny_task, forget=tiny_task.forget[:0])
    with pytest.raises(ValueError, match="no forget facts"):
        edit_sequential(m, "L1H1", empty, chunk_size=2, config=cfg)
    assert no_hooks(m)


# --- evidence on the planted model ----------------------------------------------------


def test_planted_edit_changes_facts_and_keeps_others(planted, flush_denormal):
    """Training only the planted lookup MLP moves the edited facts to their targets and keeps the others.

    Measured (30 steps, ~5 s on 2 idle cores): 7 of the 8 facts move to their targets with
    p(target | candidates) >= 0.97 and 19/20 held-out (maintain) facts keep their answers.
    The 8th fact (Marston, the only baseball -> basketball edit) is the exception: across
    learning rates 3e-3..3e-2, constant/cosine schedules, retain weights 1..200, KL weights
    0..100 and batch sizes, every run that flips it also flips 3 of the 20 maintain facts
    (maintain 0.85), because AdamW realizes it through MLP neurons shared by all subjects.
    So this test asks for >= 7/8 edits with maintain >= 0.9.
    """
    t = planted.task
    res = edit(planted.model, Mask([planted.lookup_mlp]), t, config=PLANTED, show_progress=False)
    scores = score_prompts(res.model, format_prompts(t.forget))
    maintain_acc = score_prompts(res.model, format_prompts(t.maintain)).accuracy()
    assert scores.target_wins.mean() >= 0.875, scores.p_target_norm
    assert (scores.p_target_norm > 0.9).sum() >= 7
    assert maintain_acc >= 0.9, maintain_acc
    assert score_prompts(res.model, format_prompts(t.retain)).accuracy() == 1.0
    assert score_prompts(planted.model, format_prompts(t.forget)).target_wins.mean() == 0  # original untouched
    assert res.history[-1]["loss_forget"] < 0.1 * res.history[0]["loss_forget"]


def test_planted_unlearning_lowers_p_answer(planted, flush_denormal):
    t = replace(planted.task, objective="unlearn")
    res = edit(planted.model, Mask([planted.lookup_mlp]), t, config=PLANTED.replace(steps=6, l_sft=0.0),
               show_progress=False)
    before = score_prompts(planted.model, format_prompts(t.forget)).p_answer
    after = score_prompts(res.model, format_prompts(t.forget)).p_answer
    assert after.mean() < 0.5 * before.mean()
    assert res.history[-1]["loss_forget"] < res.history[0]["loss_forget"]


# --- sequential editing ---------------------------------------------------------------


def test_sequential_masks_and_revert(planted):
    t = replace(planted.task, chunks=(planted.task.forget[:4], planted.task.forget[4:]))
    cfg = PLANTED.replace(steps=2, l_sft=0)
    before = snapshot(planted.model)
    model = copy.deepcopy(planted.model)
    masks = [Mask([planted.lookup_mlp]), Mask([planted.extraction_head])]
    res = edit_sequential(model, masks, t, config=cfg, inplace=True)
    assert len(res) == 2 and res.masks == masks and res.model is model and res.delta_norm() > 0
    # distinct entries: the two masks are disjoint, so their sum; one mask for both chunks counts once (was twice)
    assert res.n_params_trained == masks[0].n_params(model) + masks[1].n_params(model)
    same = edit_sequential(planted.model, masks[0], t, config=cfg)
    assert same.n_params_trained == masks[0].n_params(model) == same.results[0].n_params_trained
    assert len(res.history) == 4 and {h["edit"] for h in res.history} == {0, 1}
    res.revert()
    assert_unchanged(model, before)

    seen = []
    res2 = edit_sequential(planted.model, lambda ds: seen.append(len(ds)) or Mask([planted.lookup_mlp]), t,
                           config=cfg)
    assert seen == [4, 4] and len(res2) == 2 and res2.model is not planted.model
    assert_unchanged(planted.model, before)

    # per fact: facts sharing a mask are edited in one batch
    by_parity = lambda ds: Mask([planted.lookup_mlp]) if int(ds[0].id) % 2 else Mask([planted.extraction_head])  # noqa: E731
    res3 = edit_sequential(planted.model, by_parity, t, config=cfg, per_fact=True)
    groups = [sorted(int(r.id) % 2 for r in c) for c in res3.chunks]
    assert all(len(set(g)) == 1 for g in groups) and sum(len(c) for c in res3.chunks) == 8
    with pytest.raises(ValueError, match="one mask per chunk"):
        edit_sequential(planted.model, masks[:1], t, config=cfg)
    with pytest.raises(ValueError, match="no chunks"):
        edit_sequential(planted.model, masks[0], planted.task, config=cfg)


def test_sequential_revert_undoes_its_own_model(planted):
    """After one chunk's edit was applied to another model, revert() reverted that other model and left
    the sequential result's own model edited."""
    t = replace(planted.task, chunks=(planted.task.forget[:4], planted.task.forget[4:]))
    cfg = PLANTED.replace(steps=2, l_sft=0)
    before = snapshot(planted.model)
    res = edit_sequential(planted.model, [Mask([planted.lookup_mlp]), Mask([planted.extraction_head])], t, config=cfg)
    norm = res.delta_norm()
    other = copy.deepcopy(planted.model)
    res.results[1].apply(other)
    assert res.revert() is res.model
    assert_unchanged(res.model, before)
    assert res.results[1].is_applied_to(other) and not res.results[1].is_applied_to(res.model)
    res.results[1].revert(other)
    assert_unchanged(other, before)
    assert norm > 0


def test_sequential_revert_refuses_a_model_without_its_edits(planted):
    """revert(model) on a model carrying none of the edits returned it as if reverted (EditResult.revert raises),
    leaving the copy edited; a second revert() did the same."""
    t = replace(planted.task, chunks=(planted.task.forget[:4], planted.task.forget[4:]))
    before = snapshot(planted.model)
    res = edit_sequential(planted.model, Mask([planted.lookup_mlp]), t, config=PLANTED.replace(steps=1, l_sft=0))
    with pytest.raises(RuntimeError, match="none of the 2 edits is applied to that model"):
        res.revert(planted.model)
    assert all(r.is_applied_to(res.model) for r in res.results)
    res.revert()
    assert_unchanged(res.model, before)
    with pytest.raises(RuntimeError, match="nothing to revert"):
        res.revert()


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_closed_form_methods_check_targets_without_an_explicit_objective(planted, method):
    """With objective=None (the task's own objective) a target equal to the answer, or outside the
    candidates, was edited by ROME/MEMIT; objective="inject" refused the same request."""
    from factlens.data.records import FactDataset, FactRecord

    cfg = EditConfig(methods={method: {"v_num_grad_steps": 1, "n_cov_tokens": 200, "cache_covariance": False}})
    template = "{} plays the sport of"
    for rec, msg in ((FactRecord("Alvarez", template, "basketball", target_new="basketball", id="a"), "equals the true"),
                     (FactRecord("Alvarez", template, "basketball", target_new="tennis", id="a"), "not among")):
        task = replace(planted.task, forget=FactDataset((rec,), name="x", candidates=planted.dataset.candidates))
        for objective in (None, "inject"):
            with pytest.raises(ValueError, match=msg):
                edit(planted.model, [planted.lookup_mlp], task, method=method, objective=objective, config=cfg)


def test_sequential_list_of_components_is_one_mask(planted):
    """A list of components (one mask to ``edit``) as long as the chunks was read as one mask per chunk:
    chunk 0 trained the lookup MLP alone, chunk 1 the head alone."""
    t = replace(planted.task, chunks=(planted.task.forget[:4], planted.task.forget[4:]))
    cfg = PLANTED.replace(steps=1, l_sft=0)
    both = Mask([planted.lookup_mlp, planted.extraction_head])
    for spec in ([planted.lookup_mlp, planted.extraction_head], [planted.lookup_mlp.label, planted.extraction_head.label]):
        res = edit_sequential(planted.model, spec, t, config=cfg)
        assert [m.components for m in res.masks] == [both.components] * 2
    with pytest.raises(TypeError, match="mixes components"):
        edit_sequential(planted.model, [planted.lookup_mlp, both], t, config=cfg)


def test_lazy_exports():
    assert callable(factlens.edit) and factlens.EditConfig is EditConfig and factlens.EditResult is EditResult
    import factlens.editing as fe

    with pytest.raises(AttributeError):
        fe.does_not_exist  # noqa: B018


def test_kl_reference_cached_equals_functional_call(tiny_task, monkeypatch):
    """The original model's KL reference is the same whether precomputed or recomputed with functional_call."""
    model = tiny_model(variant="gqa_gated")
    mask = Mask.from_labels(["L0H0", "L1H3", "L0.mlp"])
    cfg = TINY.replace(steps=2)
    cached = edit(model, mask, tiny_task, config=cfg, show_progress=False)
    monkeypatch.setattr(sampling_mod, "KL_CACHE_BYTES", 0)
    live = edit(model, mask, tiny_task, config=cfg, show_progress=False)
    assert cached.meta["kl_cached"] and not live.meta["kl_cached"]
    for a, b in zip(cached.history, live.history):
        assert a["loss_sft"] == pytest.approx(b["loss_sft"], abs=1e-6)
    for n, d in cached.deltas.items():
        assert torch.allclose(d.new, live.deltas[n].new, atol=1e-6), n


@pytest.mark.parametrize("objective", ["inject", "rmu"])
def test_checkpointed_edit_is_the_same_edit(planted, objective):
    """``EditConfig(checkpoint=True)`` recomputes block activations in backward: the history and
    every trained entry are bitwise those of ``checkpoint=False`` (the default), and no block
    keeps an instance ``forward``."""
    task = planted.task if objective == "inject" else replace(planted.task, objective="unlearn")
    mask = Mask([planted.lookup_mlp, planted.extraction_head])
    cfg = EditConfig(lr=1e-2, steps=3, batch_size=4, grad_accum=2, n_sft_chunks=4, sft_seq_len=16,
                     rmu_steering_coef=8.0, rmu_alpha=1.0, checkpoint=True)
    assert EditConfig().checkpoint is False
    a = edit(planted.model, mask, task, objective=objective, config=cfg, show_progress=False)
    b = edit(planted.model, mask, task, objective=objective, config=cfg.replace(checkpoint=False), show_progress=False)
    assert a.history == b.history
    sa, sb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not any("forward" in vars(blk) for m in (planted.model, a.model, b.model) for blk in m.blocks)


def test_sequential_chunks_must_split_the_forget_facts(planted):
    """Chunks that edit a fact twice or never were accepted and every forget fact scored as edited;
    chunk_size beside the task's chunks was ignored; chunk_size=0 gave a task of empty chunks."""
    from factlens.tasks import sequential_counterfact_editing

    f, cfg = planted.task.forget, PLANTED.replace(steps=1, l_sft=0)
    mask = Mask([planted.lookup_mlp])
    for chunks, what in (((f[:4], f[:4]), "in two chunks"), ((f[:4],), "in none"), ((f[:4], f[4:], f[:0]), "non-empty")):
        with pytest.raises(ValueError, match=what):
            edit_sequential(planted.model, mask, replace(planted.task, chunks=chunks), config=cfg)
    with pytest.raises(ValueError, match="chunk_size=2 with a task that has its own 2 chunks"):
        edit_sequential(planted.model, mask, replace(planted.task, chunks=(f[:4], f[4:])), config=cfg, chunk_size=2)
    with pytest.raises(ValueError, match="chunk_size must be a whole number >= 1"):
        sequential_counterfact_editing(planted.dataset, n_chunks=2, chunk_size=0)


def test_sequential_count_of_fully_trained_parameters_builds_no_mask(monkeypatch):
    """Counting distinct entries materialized each fully trained parameter's one-byte mask view
    (a byte per entry: 9 GB for Gemma-2-9B's non-localized edit)."""
    from factlens.editing.result import EditResult, ParamDelta, full_mask
    from factlens.editing.sequential import SequentialEditResult

    n = 4_000_000
    deltas = {"w": ParamDelta(full_mask((n,)), torch.zeros(1).expand(n), torch.ones(1).expand(n))}
    part = torch.zeros(n, dtype=torch.bool)
    part[:10] = True
    results = []
    for d in (deltas, {"w": ParamDelta(part, torch.zeros(10), torch.ones(10))}):
        results.append(EditResult.__new__(EditResult))
        object.__setattr__(results[-1], "deltas", d)
    seq = SequentialEditResult(model=None, results=tuple(results), chunks=())
    built, zeros = [], torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: built.append(a) or zeros(*a, **k))
    assert seq.n_params_trained == n and built == []  # no n-byte mask was built


def test_sequential_chunk_size_must_be_a_whole_number(planted):
    """chunk_size=2.5 failed deep in slicing ("'float' object cannot be interpreted as an integer"),
    chunk_size=True was read as chunks of one fact."""
    t, mask = replace(planted.task, chunks=()), Mask([planted.lookup_mlp])
    for bad in (2.5, True, "4"):
        with pytest.raises(ValueError, match=f"chunk_size must be an integer >= 1 .*got {bad!r}"):
            edit_sequential(planted.model, mask, t, config=PLANTED.replace(steps=1, l_sft=0), chunk_size=bad)


class _Interrupt:
    """Raises KeyboardInterrupt at the ``n``-th call of ``real`` (counted from 1), as Ctrl-C would there."""

    def __init__(self, real, n: int) -> None:
        self.real, self.n, self.calls = real, n, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("where", ["fingerprint", "second delta"])
def test_an_interrupt_after_training_restores_an_inplace_model(tiny_task, monkeypatch, where):
    """The restore covered only the training loop: a Ctrl-C while the record was built (the delta, or the
    fingerprint that hashes every trained tensor, seconds on a large model) left the caller's model edited
    with no EditResult to revert it."""
    from factlens.editing import result as result_mod

    model = tiny_model()
    before, flags = snapshot(model), {n: p.requires_grad for n, p in model.named_parameters()}
    if where == "fingerprint":
        monkeypatch.setattr(result_mod, "_fingerprint", _Interrupt(result_mod._fingerprint, 1))
    else:  # one whole tensor's saved copy is in the record already, the others not yet
        monkeypatch.setattr(editor_mod, "ParamDelta", _Interrupt(editor_mod.ParamDelta, 2))
    with pytest.raises(KeyboardInterrupt):
        edit(model, Mask.from_labels(["L0.mlp", "L1H1"]), tiny_task, config=TINY.replace(grad_accum=1, steps=2),
             inplace=True, show_progress=False)
    assert_unchanged(model, before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags and no_hooks(model)


def test_an_interrupt_after_a_chunks_training_restores_an_inplace_sequential_edit(planted, monkeypatch):
    """The second chunk's edit was interrupted after training (while its record was hashed): the first
    chunk's edit was reverted, the second's (another component) stayed in the caller's model."""
    from factlens.editing import result as result_mod

    t = replace(planted.task, chunks=(planted.task.forget[:4], planted.task.forget[4:]))
    model, before = copy.deepcopy(planted.model), snapshot(planted.model)
    masks = [Mask([planted.lookup_mlp]), Mask([planted.extraction_head])]
    monkeypatch.setattr(result_mod, "_fingerprint", _Interrupt(result_mod._fingerprint, 2))
    with pytest.raises(KeyboardInterrupt):
        edit_sequential(model, masks, t, config=PLANTED.replace(steps=2, l_sft=0), inplace=True)
    assert_unchanged(model, before)
