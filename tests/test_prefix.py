"""Shared-prefix reuse (factlens.prefix) gives the plain forward pass's numbers, with and without gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.prefix import (MIN_PREFIX, common_prefix_len, prefix_reuse, residual_after_prefix,
                             residual_after_row_prefixes)
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.shaped import gemma3_shaped

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gemma_like():
    return gemma3_shaped()


@pytest.fixture(scope="module")
def facts():
    return sports_facts()[:24]


@pytest.fixture
def reused(monkeypatch):
    """The prefix lengths ``p`` the code under test ran with reuse on (proves the fast path ran)."""
    import importlib

    names = ("factlens.prefix", "factlens.editing.losses", "factlens.evaluation.probes", "factlens.evaluation.soft_prompts")
    mods = [importlib.import_module(n) for n in names]
    seen: list[int] = []
    real = mods[0].residual_after_prefix

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[1])
        return out

    for mod in mods:
        monkeypatch.setattr(mod, "residual_after_prefix", spy)
    return seen


def _rows(seed: int = 0, n: int = 5, shared: int = 9, length: int = 14, vocab: int = 500) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(5, vocab, (n, length), generator=g)
    toks[:, :shared] = toks[0, :shared]
    return toks


@pytest.mark.parametrize("make", [gemma3_shaped, tiny_model, lambda: tiny_model(positional_embedding_type="standard"),
                                  lambda: tiny_model(variant="gqa_gated")], ids=["gemma3", "tiny", "tiny-abs", "gqa"])
def test_residual_equals_plain_forward(make):
    m = make()
    toks = _rows(vocab=min(500, m.cfg.d_vocab))  # gemma3_shaped: window 4 < 14 tokens, local layers cross it
    plain = m(toks, stop_at_layer=m.cfg.n_layers)
    resid, p = residual_after_prefix(m, toks, first_read=9)
    assert p == 9
    torch.testing.assert_close(resid, plain[:, p:], atol=1e-5, rtol=1e-5)


def test_stop_at_layer_0_is_the_plain_embedding():
    """stop_at_layer=0 runs no block, so the prefix pass filled no key/value cache and a model with
    learned positions put the rows at position 0: a shape error (rotary models were unaffected)."""
    m = tiny_model(positional_embedding_type="standard")
    toks = _rows(vocab=min(500, m.cfg.d_vocab))
    resid, p = residual_after_prefix(m, toks, first_read=9, stop_at_layer=0)
    assert p == 0
    torch.testing.assert_close(resid, m(toks, stop_at_layer=0))
    resid, p = residual_after_prefix(m, toks, first_read=9, stop_at_layer=-m.cfg.n_layers)  # the same stop, counted back
    torch.testing.assert_close(resid, m(toks, stop_at_layer=0))
    rows, cuts = residual_after_row_prefixes(m, toks, cuts=[9, 10, 9, 11, 9], stop_at_layer=0)
    emb = m(toks, stop_at_layer=0)
    for i, c in enumerate(cuts.tolist()):
        torch.testing.assert_close(rows[i, : toks.shape[1] - c], emb[i, c:])


def test_gradients_equal(gemma_like):
    m = gemma_like
    toks = _rows()
    grads = []
    for use in (False, True):
        params = [m.blocks[0].attn.W_Q, m.blocks[1].mlp.W_in, m.blocks[2].attn._W_K]
        for q in params:
            q.requires_grad_(True)
            q.grad = None
        try:
            with prefix_reuse(use):
                resid, p = residual_after_prefix(m, toks, first_read=10)
            assert p == (9 if use else 0)
            resid[:, -3:].pow(2).sum().backward()
            grads.append([q.grad.clone() for q in params])
        finally:
            for q in params:
                q.grad = None
    for a, b in zip(*grads):  # float32 sums of large terms: compare relative to the gradient's scale
        scale = float(a.abs().max())
        assert scale > 0
        assert float((a - b).abs().max()) <= 1e-5 * scale, (float((a - b).abs().max()), scale)


def test_padding_never_joins_the_prefix(gemma_like):
    toks = _rows(length=8, shared=8)  # identical rows; the second is padded after 6 tokens
    lengths = torch.tensor([8, 6, 8, 8, 8])
    assert common_prefix_len(toks, lengths) == 6
    resid, p = residual_after_prefix(gemma_like, toks, first_read=5, lengths=lengths)
    assert p == 5  # never past the first position read


def test_falls_back_when_it_cannot_help(gemma_like, planted):
    m = gemma_like
    toks = _rows()
    assert residual_after_prefix(m, toks[:1], first_read=9)[1] == 0  # one row
    assert residual_after_prefix(m, _rows(shared=MIN_PREFIX - 1), first_read=9)[1] == 0  # prefix too short
    with m.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x)]):  # hooks would see suffixes only
        assert residual_after_prefix(m, toks, first_read=9)[1] == 0
    with prefix_reuse(False):
        assert residual_after_prefix(m, toks, first_read=9)[1] == 0
    assert residual_after_prefix(m, toks, first_read=9)[1] == 9
    assert not any(hp._forward_hooks for hp in m.hook_dict.values())


def _module_hooks():
    """Plain PyTorch hooks a user or a tool may attach: ``(kind, attach(model) -> handle)``."""
    from torch.nn.modules.module import register_module_forward_hook

    def same(*args, **kwargs):
        return None

    return [("forward", lambda m: m.blocks[0].register_forward_hook(same)),
            ("forward_with_kwargs", lambda m: m.blocks[1].attn.register_forward_hook(same, with_kwargs=True)),
            ("forward_pre", lambda m: m.blocks[0].mlp.register_forward_pre_hook(same)),
            ("forward_pre_with_kwargs", lambda m: m.blocks[0].register_forward_pre_hook(same, with_kwargs=True)),
            ("full_backward", lambda m: m.blocks[0].mlp.register_full_backward_hook(same)),
            ("backward_pre", lambda m: m.blocks[0].register_full_backward_pre_hook(same)),
            ("on_a_hook_point", lambda m: m.blocks[0].hook_resid_post.register_forward_hook(same)),
            ("on_the_model", lambda m: m.register_forward_hook(same)),
            ("global", lambda m: register_module_forward_hook(same))]


@pytest.mark.parametrize("kind,attach", _module_hooks(), ids=[k for k, _ in _module_hooks()])
def test_plain_module_hooks_switch_reuse_off(gemma_like, kind, attach):
    """A plain PyTorch hook on any module (not only on a TransformerLens hook point) turns reuse off:
    it would see the prefix and the suffix passes with their own positions. It used to stay on."""
    toks = _rows()
    handle = attach(gemma_like)
    try:
        assert residual_after_prefix(gemma_like, toks, first_read=9)[1] == 0
    finally:
        handle.remove()
    assert residual_after_prefix(gemma_like, toks, first_read=9)[1] == 9  # removed: reuse is back


def test_positionwise_module_hooks_keep_reuse(gemma_like):
    """A hook declared position-wise (mark_positionwise, as the factored LoRA hooks are) keeps reuse on,
    and the result still equals the plain pass."""
    from factlens.prefix import mark_positionwise

    toks = _rows()
    handle = gemma_like.blocks[0].mlp.register_forward_hook(mark_positionwise(lambda mod, args, out: out * 1.5))
    try:
        resid, p = residual_after_prefix(gemma_like, toks, first_read=9)
        plain = gemma_like(toks, stop_at_layer=gemma_like.cfg.n_layers)
    finally:
        handle.remove()
    assert p == 9
    torch.testing.assert_close(resid, plain[:, p:], rtol=1e-5, atol=1e-5)


def test_projection_hooks_through_model_hooks_keep_reuse(gemma_like):
    """The direction-ablation hooks go on through ``model.hooks(fwd_hooks=...)``, which wraps each in
    TransformerLens's own closure: the position-wise mark is found through it (before 2026-12-05 it was
    not, and every ablated pass ran the whole prefix again), and the result equals the plain pass."""
    from factlens.components import project_out_everywhere_hooks
    from factlens.prefix import _has_hooks

    toks = _rows()
    d = torch.randn(gemma_like.cfg.d_model, generator=torch.Generator().manual_seed(3))
    with gemma_like.hooks(fwd_hooks=project_out_everywhere_hooks(d, gemma_like.cfg)):
        assert not _has_hooks(gemma_like)
        resid, p = residual_after_prefix(gemma_like, toks, first_read=9)
        plain = gemma_like(toks, stop_at_layer=gemma_like.cfg.n_layers)
    assert p == 9
    torch.testing.assert_close(resid, plain[:, p:], rtol=1e-5, atol=1e-5)
    with gemma_like.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda act, hook: act * 1.0)]):
        assert _has_hooks(gemma_like)  # an unmarked hook through the same wrapper still switches reuse off
    from factlens.prefix import is_positionwise_hook, mark_positionwise

    marked, point = mark_positionwise(lambda act, hook: act), gemma_like.blocks[0].hook_resid_pre

    def own_closure(module, args, out):  # holds a marked function and a hook point, but is not TL's wrapper
        return marked(out, hook=point)[:, :3]

    assert not is_positionwise_hook(own_closure)


def test_position_dependent_module_hook_gives_the_plain_pass(gemma_like):
    """A user's hook that steers token position 3 of block 0's output: answer log-probabilities with
    reuse on (the default) equal the plain pass (they differed: the suffix pass's position 3 was
    another token)."""
    from factlens.tokens import answer_logprobs

    prompts = [f"Fact: Tiger Woods plays the sport of golf\nFact: {s} plays the sport of"
               for s in ("LeBron James", "Tom Brady", "Babe Ruth")]
    answers = ["basketball", "football", "baseball"]
    v = torch.randn(gemma_like.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 5

    def steer_position_3(module, args, out):
        out = out.clone()
        out[:, 3] += v
        return out

    handle = gemma_like.blocks[0].register_forward_hook(steer_position_3)
    try:
        got = answer_logprobs(gemma_like, prompts, answers)
        with prefix_reuse(False):
            want = answer_logprobs(gemma_like, prompts, answers)
    finally:
        handle.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["default", "mcq"])
def test_score_prompts_equal(gemma_like, facts, fmt, reused):
    from factlens.prompt_scores import score_prompts

    items = format_prompts(facts, fmt, seed=0)
    assert len(items) > 4
    with prefix_reuse(False):
        a = score_prompts(gemma_like, items, batch_size=8)
    reused.clear()
    b = score_prompts(gemma_like, items, batch_size=8)
    assert reused and min(reused) > (20 if fmt == "mcq" else 5)  # the few-shot example(s) ran once per batch
    np.testing.assert_allclose(a.logp_answer, b.logp_answer, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.p_answer_norm, b.p_answer_norm, atol=1e-5, rtol=0)
    assert (a.answer_wins == b.answer_wins).all()


def test_multi_token_answers_equal(gemma_like):
    from factlens.tokens import answer_logprobs

    prompts = ["Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of",
               "Fact: Tiger Woods plays the sport of golf\nFact: Tom Brady plays the sport of"]
    answers = ["basketball football", "golf"]
    with prefix_reuse(False):
        a = answer_logprobs(gemma_like, prompts, answers)
    b = answer_logprobs(gemma_like, prompts, answers)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["inject", "unlearn"])
def test_fact_losses_and_grads_equal(gemma_like, facts, objective, reused):
    from factlens.editing.losses import fact_losses

    m = gemma_like
    items = format_prompts(facts, "default")
    forget = [it for it in items[:8] if it.target is not None] if objective == "inject" else items[:8]
    W = m.blocks[1].mlp.W_out
    out = []
    for use in (False, True):
        W.requires_grad_(True)
        W.grad = None
        try:
            with prefix_reuse(use):
                lf, lr = fact_losses(m, forget, items[8:16], objective)
            (lf + lr).backward()
            out.append((lf.detach(), lr.detach(), W.grad.clone()))
            assert (reused[-1] > 0) == use
        finally:
            W.grad = None
    for x, y in zip(*out):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_planted_edit_equal():
    """A whole masked edit with and without reuse: the same deltas to 1e-5."""
    from factlens.components import Mask
    from factlens.editing import EditConfig, edit

    p = planted_fact_model()
    cfg = EditConfig(lr=1e-2, steps=4, batch_size=None, grad_accum=1, n_sft_chunks=4)
    res = []
    for use in (False, True):
        with prefix_reuse(use):
            r = edit(p.model, Mask([p.lookup_mlp]), p.task, config=cfg, show_progress=False)
        res.append(r)
    for n in res[0].deltas:
        torch.testing.assert_close(res[0].deltas[n].new, res[1].deltas[n].new, atol=1e-5, rtol=1e-5)


def test_probe_activations_equal(gemma_like, facts, reused):
    from factlens.evaluation.probes import collect_activations

    for position in ("final", "subject_last"):
        with prefix_reuse(False):
            a = collect_activations(gemma_like, facts, layers=[0, 2], position=position, batch_size=8)
        reused.clear()
        b = collect_activations(gemma_like, facts, layers=[0, 2], position=position, batch_size=8)
        assert min(reused) > 0
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert not any(hp._forward_hooks for hp in gemma_like.hook_dict.values())


@pytest.fixture
def row_cuts(monkeypatch):
    """The cuts the soft-prompt code ran :func:`residual_after_row_prefixes` with (proves that path ran)."""
    import factlens.evaluation.soft_prompts as sp

    seen: list[list[int]] = []
    real = sp.residual_after_row_prefixes

    def spy(*args, **kwargs):
        seen.append(list(kwargs["cuts"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sp, "residual_after_row_prefixes", spy)
    return seen


@pytest.mark.parametrize("position", ["append", "prepend"])
def test_soft_prompt_equal(gemma_like, facts, position, row_cuts):
    """Soft-prompt training (gradients through the soft vectors) and scoring give the same
    numbers with each prompt's keys and values cached as with the plain forward pass."""
    from factlens.evaluation import EvalConfig
    from factlens.evaluation.soft_prompts import soft_prompt_scores, train_soft_prompt

    cfg = EvalConfig(soft_prompts={"steps": 3, "length": 3, "position": position}, batch_size=8)
    items = format_prompts(facts[8:16], "default")
    out = []
    for use in (False, True):
        row_cuts.clear()
        with prefix_reuse(use):
            soft, losses = train_soft_prompt(gemma_like, facts[:8], config=cfg, seed=0, max_norm=1.0)
            out.append((soft, losses, soft_prompt_scores(gemma_like, soft, items, batch_size=8, position=position)))
        assert bool(row_cuts) == use
        if use and position == "append":  # prompts of several lengths: several groups of rows
            assert max(len(set(c)) for c in row_cuts) > 1
    (s0, l0, r0), (s1, l1, r1) = out
    np.testing.assert_allclose(l0, l1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s0, s1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(r0["p_answer"], r1["p_answer"], atol=1e-5)
    assert (r0["answer_wins"] == r1["answer_wins"]).all()
    assert not any(hp._forward_hooks for hp in gemma_like.hook_dict.values())


def test_soft_prompt_multi_token_answers_equal(gemma_like):
    """Answers of several tokens (read at several positions after the soft vectors)."""
    from factlens.evaluation.soft_prompts import _soft_logprobs

    prompts = ["Fact: Tiger Woods plays the sport of golf\nFact: Lionel Messi plays the sport of",
               "Fact: Tiger Woods plays the sport of golf\nFact: a b c d e f is known for",
               "The capital of France is"]
    answers = ["association football", "the very long answer here", "Paris"]
    soft = torch.randn(4, gemma_like.cfg.d_model, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    res = []
    for use in (False, True):
        with prefix_reuse(use):
            lp = _soft_logprobs(gemma_like, soft, prompts, answers, store={})
            (g,) = torch.autograd.grad(lp.sum(), [soft])
        res.append((lp.detach(), g))
    torch.testing.assert_close(res[0][0], res[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res[0][1], res[1][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [gemma3_shaped, tiny_model, lambda: tiny_model(positional_embedding_type="standard"),
                                  lambda: tiny_model(variant="gqa_gated")], ids=["gemma3", "tiny", "tiny-abs", "gqa"])
def test_row_prefixes_equal_plain_forward(make):
    """Rows with their own cuts and lengths (padding after the real tokens): every real
    position from the cut on equals the plain forward pass; hooks see only those positions."""
    from factlens.prefix import residual_after_row_prefixes

    m = make()
    toks = _rows(n=6, shared=2, vocab=min(500, m.cfg.d_vocab))
    cuts, lengths = [3, 7, 3, 5, 7, 12], torch.tensor([14, 14, 9, 11, 10, 14])
    plain = m(toks, stop_at_layer=m.cfg.n_layers)
    widths = []
    resid, off = residual_after_row_prefixes(m, toks, cuts=cuts, lengths=lengths,
                                             hooks=lambda: [("hook_embed", lambda a, hook: widths.append(a.shape[1]))])
    assert off.tolist() == cuts and resid.shape[1] == max(int(n) - c for c, n in zip(cuts, lengths))
    for i, (c, n) in enumerate(zip(cuts, lengths.tolist())):
        torch.testing.assert_close(resid[i, : n - c], plain[i, c:n], atol=1e-5, rtol=1e-4)
    # one pass for all rows, unless a sliding window shorter than the padded rows (gemma3_shaped:
    # 4) could see the padding: then one pass per cut
    per_cut = sorted({c: max(int(n) - c for c2, n in zip(cuts, lengths) if c2 == c) for c in cuts}.values())
    assert sorted(widths) == (per_cut if getattr(m.cfg, "use_local_attn", False) else [max(per_cut)])
    assert not any(hp._forward_hooks for hp in m.hook_dict.values())


def test_row_prefix_store_reused_and_gradients_after_the_cut(gemma_like):
    """The store keeps each row prefix once; a second call runs no prefix and gives the same
    result; a gradient taken through positions after the cut equals the plain one."""
    from factlens.prefix import residual_after_row_prefixes

    toks = _rows(n=4, shared=3, vocab=500)
    toks[2] = toks[0]  # a repeated row prefix is stored once
    cuts = [6, 8, 6, 6]
    x = torch.randn(gemma_like.cfg.d_model, generator=torch.Generator().manual_seed(1)).requires_grad_(True)

    def add_x(p):  # adds x to the embedding at absolute position 9 of every row
        return lambda a, hook: torch.cat([a[:, : 9 - p], a[:, 9 - p : 10 - p] + x, a[:, 10 - p :]], dim=1)

    store: dict = {}
    outs = []
    for _ in range(2):
        groups = iter(sorted(set(cuts), key=cuts.index))
        resid, _ = residual_after_row_prefixes(gemma_like, toks, cuts=cuts, store=store,
                                               hooks=lambda: [("hook_embed", add_x(next(groups)))])
        outs.append(resid)
        assert len(store) == 3
    torch.testing.assert_close(outs[0], outs[1])
    last = torch.tensor([13 - c for c in cuts])  # absolute position 13 of every row
    (g_rows,) = torch.autograd.grad(outs[0][torch.arange(4), last].sum(), [x])
    with gemma_like.hooks(fwd_hooks=[("hook_embed", add_x(0))]):
        plain = gemma_like(toks, stop_at_layer=gemma_like.cfg.n_layers)
    (g_plain,) = torch.autograd.grad(plain[:, -1].sum(), [x])
    torch.testing.assert_close(outs[1][0, :8], plain[0, 6:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_rows, g_plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cuts", [[0, 3], [3, 14], [3]])
def test_row_prefixes_bad_cuts(gemma_like, cuts):
    from factlens.prefix import residual_after_row_prefixes

    with pytest.raises(ValueError, match="cuts must give one position"):
        residual_after_row_prefixes(gemma_like, _rows(n=2, vocab=500), cuts=cuts)


def test_soft_prompt_padded_pass_equal(facts, row_cuts):
    """Gemma 3's real window (512) is wider than the prompts: every row runs in one padded pass
    (local and global layers), and training and scoring still equal the plain forward pass."""
    from factlens.evaluation import EvalConfig
    from factlens.evaluation.soft_prompts import soft_prompt_scores, train_soft_prompt

    m = gemma3_shaped(window_size=512)
    cfg = EvalConfig(soft_prompts={"steps": 3, "length": 3}, batch_size=8)
    items = format_prompts(facts[8:16], "default")
    out = []
    for use in (False, True):
        with prefix_reuse(use):
            soft, losses = train_soft_prompt(m, facts[:8], config=cfg, seed=0, max_norm=1.0)
            out.append((soft, losses, soft_prompt_scores(m, soft, items, batch_size=8)))
    assert max(len(set(c)) for c in row_cuts) > 1  # rows of several cuts went through together
    (s0, l0, r0), (s1, l1, r1) = out
    np.testing.assert_allclose(l0, l1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s0, s1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(r0["p_answer"], r1["p_answer"], atol=1e-5)
