"""The linear lens on a planted model whose answer is computed in a basis the unembedding does
not read: head 2.1 writes the sport into hidden dims, and an MLP in layer 3 copies it to the dims
the unembedding reads. The logit lens is blind at layer 2; a map fitted on text about other
athletes reads the sport there. The fit itself is checked against a least-squares solver."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from factlens.evaluation import evaluate
from factlens.evaluation.attacks import score_task
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.linear_lens import LinearLens, LinearLensConfig, fit_linear_lens, run_linear_lens
from factlens.evaluation.logit_lens import LogitLensConfig, run_lens, run_logit_lens
from factlens.tasks import Task
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.testing.planted import ATTRIBUTES, SPORTS

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = LinearLensConfig(n_chunks=16, seq_len=16)


@pytest.fixture(scope="module")
def planted():
    p = planted_fact_model()
    ds = p.dataset.with_candidates(SPORTS + ("golf",))
    forget, rest = ds.split(8, seed=0)
    forget = forget.map(lambda r: dataclasses.replace(r, target_new="golf"))
    retain, maintain = rest.split(20, seed=0)
    return p, Task("planted-golf", "inject", forget, retain, maintain, seed=0)


@pytest.fixture(scope="module")
def hidden(planted):
    """The planted model with the extraction head's output moved to unused dims (S+10 ...) and
    layer 3's MLP copying them back to the dims the unembedding reads (ReLU of a 0/1 input x 4,
    times 1/4: exact)."""
    p, _ = planted
    s = len(p.subjects)
    dims = {a: s + 10 + k for k, a in enumerate(ATTRIBUTES)}
    m = copy.deepcopy(p.model)
    with torch.no_grad():
        w_o, mlp = m.blocks[2].attn.W_O, m.blocks[3].mlp
        for k, a in enumerate(ATTRIBUTES):
            w_o[1, k, p.layout["moved"][a]] -= 1.0
            w_o[1, k, dims[a]] += 1.0
            j = mlp.W_in.shape[1] - 1 - k
            mlp.W_in[:, j], mlp.b_in[j], mlp.W_out[j] = 0.0, 0.0, 0.0
            mlp.W_in[dims[a], j] = 4.0
            mlp.W_out[j, p.layout["moved"][a]] = 0.25
    return m


@pytest.fixture(scope="module")
def suppressed(planted, hidden):
    """``hidden`` plus a late suppression of the forget facts (a layer-3 head writes golf for
    them, reading a flag their lookup neurons set in an unused dim): the output says golf, the
    residual after layer 2 still holds the sport, in the hidden dims."""
    p, task = planted
    flag = len(p.subjects) + 10 + len(ATTRIBUTES)
    m = copy.deepcopy(hidden)
    with torch.no_grad():
        m.blocks[1].mlp.W_out[[int(r.id) for r in task.forget], flag] += 2.0
        src, dst = m.blocks[2].attn, m.blocks[3].attn
        for name in ("W_Q", "W_K", "b_Q", "b_K"):
            getattr(dst, name)[1] = getattr(src, name)[1]
        dst.W_V[1, flag, 0] += 1.0
        dst.W_O[1, 0, p.layout["moved"]["golf"]] += 3.0
    return m


@pytest.fixture(scope="module")
def text_config(planted, tmp_path_factory):
    """General text for the planted vocabulary: sentences about the retain and maintain athletes
    (never the forget ones)."""
    _, task = planted
    path = tmp_path_factory.mktemp("text") / "athletes.txt"
    path.write_text("".join(f"{r.subject} plays the sport of {r.answer} . {r.subject} is a professional {r.answer} .\n"
                            for r in (*task.retain, *task.maintain)))
    return EvalConfig(text={"source": str(path)})


def test_the_linear_lens_reads_a_basis_the_logit_lens_cannot(planted, hidden, suppressed, text_config):
    p, task = planted
    assert score_task(hidden, task, text_config).accuracy("forget") == 1.0
    assert score_task(suppressed, task, text_config).accuracy("forget") == 0.0  # the output says golf
    snaps = snapshot(suppressed), snapshot(hidden)
    logit = run_logit_lens(suppressed, task, original=hidden, config=text_config)
    assert logit.extra["true"][3] == 0.0 and logit.extra["topk_layers"] == [3]  # blind before the output
    assert logit["logit_lens_forget_accuracy"].value == 0.0
    lin = run_linear_lens(suppressed, task, original=hidden, config=text_config, linear_lens_config=SMALL)
    assert lin.extra["true"][2] == 1.0 and lin.extra["retain"][2] == 1.0 and lin.extra["true"][3] == 0.0
    assert [f["layer"] for f in lin.extra["folds"]] == [2, 2]
    fa = lin["linear_lens_forget_accuracy"]
    assert fa.value == 1.0 and fa.baseline == 1.0 and lin["linear_lens_forget_recovery"].value == 1.0
    assert lin["linear_lens_selective_recovery"].value == 1.0
    fit = lin.extra["fit"]
    assert fit["model"]["layers"] == [0, 1, 2, 3] and fit["model"]["r2"][3] == 1.0 and fit["original"]["n_tokens"] > 0
    assert fit["model"]["text"].endswith("athletes.txt")
    assert {row["record_id"]: row["linear_lens_layer"] for row in lin.per_fact}[task.forget[0].id] == 2.0
    assert_unchanged(suppressed, snaps[0])
    assert_unchanged(hidden, snaps[1])
    assert no_hooks(suppressed) and no_hooks(hidden)


def _activations(model, tokens, layer):
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    last = model.cfg.n_layers - 1
    x = cache[f"blocks.{layer}.hook_resid_post"][:, 1:].double()
    y = cache[f"blocks.{last}.hook_resid_post"][:, 1:].double()
    return x, y


def _lstsq(x, y):
    a = torch.cat([x.reshape(-1, x.shape[-1]), torch.ones(x.shape[0] * x.shape[1], 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(a, y.reshape(-1, y.shape[-1]), driver="gelsd").solution
    return sol[:-1], sol[-1]


def test_the_fit_is_least_squares_and_its_r2_is_held_out():
    """Without ridge the maps are the least-squares solution with an intercept (a reference solver
    on the activations); ``r2`` is the share of variance explained on one half of the chunks (the
    first six, the last six) by the map fitted on the other, averaged over both ways."""
    from factlens.testing import tiny_model

    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, m.cfg.d_vocab, (12, 24), generator=g)
    lens = fit_linear_lens(m, tokens, layers=[0, 1], ridge=0.0, batch_size=5)
    x, y = _activations(m, tokens, 0)
    w, b = _lstsq(x, y)
    np.testing.assert_allclose(lens.weight[0].numpy(), w.float().numpy(), atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(lens.bias[0].numpy(), b.float().numpy(), atol=2e-4, rtol=1e-3)
    assert torch.equal(lens.weight[1], torch.eye(m.cfg.d_model)) and lens.r2[1] == 1.0  # the last layer
    held, ident = [], []
    for fit_rows, test_rows in ((slice(0, 6), slice(6, None)), (slice(6, None), slice(0, 6))):
        w, b = _lstsq(x[fit_rows], y[fit_rows])
        xt, yt = (t[test_rows].reshape(-1, t.shape[-1]) for t in (x, y))
        sst = float(((yt - yt.mean(0)) ** 2).sum())
        held.append(1 - float(((yt - (xt @ w + b)) ** 2).sum()) / sst)
        ident.append(1 - float(((yt - xt) ** 2).sum()) / sst)
    assert lens.r2[0] == pytest.approx(np.mean(held), abs=1e-6)
    assert lens.r2_identity[0] == pytest.approx(np.mean(ident), abs=1e-6)
    assert lens.n_tokens == 12 * 23


def test_the_held_out_r2_never_scores_a_chunk_next_to_a_fitted_one():
    """Chunks are consecutive pieces of the text: the halves alternated, so a passage's
    neighbouring chunks fell on both sides and the "held-out" r2 scored text the map was fitted
    on. Here every chunk is followed by a copy of itself (a passage repeated): alternating halves
    scored the map on the very positions it was fitted on (0.94 here); contiguous halves share
    no chunk and score it on text it never saw (below 0 here: 33 coefficients on 66 positions
    overfit)."""
    from factlens.testing import tiny_model

    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    unique = torch.randint(0, m.cfg.d_vocab, (6, 12), generator=g)
    tokens = unique.repeat_interleave(2, dim=0)  # chunk 2k+1 = chunk 2k
    lens = fit_linear_lens(m, tokens, layers=[0, 1], ridge=0.0)
    x, y = _activations(m, tokens, 0)
    w, b = _lstsq(x[:6], y[:6])  # the first half's fit, scored on the second
    xt, yt = (t[6:].reshape(-1, t.shape[-1]) for t in (x, y))
    one_way = 1 - float(((yt - (xt @ w + b)) ** 2).sum()) / float(((yt - yt.mean(0)) ** 2).sum())
    assert one_way < 0.5 and lens.r2[0] < 0.5  # out of sample: far from the in-sample fit
    in_sample = fit_linear_lens(m, tokens[torch.tensor([0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11])], layers=[0, 1],
                                ridge=0.0)  # the old alternating halves, as contiguous ones
    w, b = _lstsq(x[0::2], y[0::2])
    xs, ys = (t[0::2].reshape(-1, t.shape[-1]) for t in (x, y))
    fit_r2 = 1 - float(((ys - (xs @ w + b)) ** 2).sum()) / float(((ys - ys.mean(0)) ** 2).sum())
    assert in_sample.r2[0] == pytest.approx(fit_r2, abs=1e-6) and fit_r2 > 0.9


def test_an_identity_lens_is_the_logit_lens(planted, suppressed, text_config):
    p, task = planted
    d = suppressed.cfg.d_model
    ident = LinearLens((0, 1, 2, 3), torch.eye(d).repeat(4, 1, 1), torch.zeros(4, d), 0, (1.0,) * 4, (1.0,) * 4, 0.0)
    a = run_logit_lens(suppressed, task, original=p.model, config=text_config)
    b = run_lens(suppressed, task, name="logit_lens", settings=LogitLensConfig(), config=text_config,
                 fit=lambda m: (ident.translate, {}), fit_key=("identity",), original=p.model)
    assert [m.value for m in a.metrics] == [m.value for m in b.metrics]
    assert a.extra["true"] == b.extra["true"] and a.extra["topk"] == b.extra["topk"]
    with pytest.raises(ValueError, match="needs a fit_key"):
        run_lens(suppressed, task, name="logit_lens", settings=LogitLensConfig(), config=text_config,
                 fit=lambda m: (ident.translate, {}), original=p.model)


def test_save_and_load_round_trip_and_never_overwrite(tmp_path):
    from factlens.testing import tiny_model

    m = tiny_model()
    lens = fit_linear_lens(m, torch.randint(0, m.cfg.d_vocab, (8, 16), generator=torch.Generator().manual_seed(1)))
    path = lens.save(tmp_path / "lens.safetensors")
    back = LinearLens.load(path)
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    assert back.layers == lens.layers and back.n_tokens == lens.n_tokens and back.summary() == lens.summary()
    h = torch.randn(3, m.cfg.d_model)
    assert torch.equal(back.translate(0, h), lens.translate(0, h))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="not written over"):
        lens.save(path)
    assert path.read_bytes() == before
    (tmp_path / "other.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="not a factlens linear lens"):
        LinearLens.load(tmp_path / "other.safetensors")


def test_runs_through_evaluate_from_other_suites_and_caches_the_originals_fit(planted, suppressed, hidden,
                                                                             text_config):
    from factlens.evaluation import BaselineCache

    p, task = planted
    cfg = dataclasses.replace(text_config, other_suites={"linear_lens": {"n_chunks": 16, "seq_len": 16,
                                                                         "layers": [2, 3]}})
    cache = BaselineCache()
    first = evaluate(suppressed, task, original=hidden, suites=["linear_lens"], config=cfg, baselines=cache)
    misses = cache.misses
    second = evaluate(suppressed, task, original=hidden, suites=["linear_lens"], config=cfg, baselines=cache)
    assert cache.misses == misses  # the original's lens fitted and read once
    for r in (first, second):
        s = r.suites["linear_lens"]
        assert s.extra["layers"] == [2, 3] and s.extra["fit"]["original"]["layers"] == [2, 3]
        assert s["linear_lens_forget_accuracy"].value == 1.0
    # another fit, or the logit lens at the same layers, is never served the cached reading
    other = dataclasses.replace(cfg, other_suites={"linear_lens": {"n_chunks": 14, "seq_len": 16, "layers": [2, 3]},
                                                   "logit_lens": {"layers": [2, 3]}})
    third = evaluate(suppressed, task, original=hidden, suites=["linear_lens", "logit_lens"], config=other,
                     baselines=cache)
    assert cache.misses == misses + 2
    assert third.suites["linear_lens"].extra["fit"]["original"]["n_chunks"] == 14
    # the original at layer 2: the linear lens reads the sport, the logit lens does not
    assert third.suites["linear_lens"].extra["baseline"]["true"][0] == 1.0
    assert third.suites["logit_lens"].extra["baseline"]["true"][0] < 1.0


def test_bad_settings_and_inputs_are_refused(planted):
    p, task = planted
    with pytest.raises(ValueError, match="LinearLensConfig.n_chunks must be an integer >= 2"):
        LinearLensConfig(n_chunks=1)
    with pytest.raises(ValueError, match="LinearLensConfig.seq_len"):
        LinearLensConfig(seq_len=1)
    with pytest.raises(ValueError, match="LinearLensConfig.ridge"):
        LinearLensConfig(ridge=-1.0)
    with pytest.raises(ValueError, match="LinearLensConfig.top_k"):
        LinearLensConfig(top_k=0)
    with pytest.raises(ValueError, match="two halves"):
        fit_linear_lens(p.model, torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="97 coefficients per output on 28 text positions per half"):
        fit_linear_lens(p.model, torch.zeros(8, 8, dtype=torch.long))  # d_model 96
    with pytest.raises(ValueError, match="linear lens cannot cross-fit 8 forget facts in 9 folds"):
        run_linear_lens(p.model, task, linear_lens_config=dataclasses.replace(SMALL, folds=9))
    with pytest.raises(ValueError, match="do not exist"):
        run_linear_lens(p.model, task, linear_lens_config=dataclasses.replace(SMALL, layers=(7,)))


def test_lens_curves_draw_the_linear_lens(planted, suppressed, hidden, text_config):
    from factlens.evaluation.plots import lens_curves

    p, task = planted
    r = run_linear_lens(suppressed, task, original=hidden, config=text_config, linear_lens_config=SMALL)
    fig = lens_curves(r, suite="linear_lens")
    assert "Linear lens" in fig.layout.title.text and list(fig.data[0].y) == r.extra["true"]
    with pytest.raises(ValueError, match="'logit_lens' suite"):
        lens_curves(r)  # the default draws the logit lens, which this result does not have
    with pytest.raises(ValueError, match="'logit_lens' or 'linear_lens'"):
        lens_curves(r, suite="probes")


def test_a_dimension_the_text_never_moves_is_mapped_to_nothing_without_ridge():
    """Without ridge, a residual dimension constant over the text made the moment matrix singular;
    the minimum-norm least-squares map gives it no weight instead of failing."""
    from factlens.evaluation.linear_lens import _Sums

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64)
    x[:, 3] = 2.0  # never varies
    y = x[:, :3] @ torch.randn(3, 4, generator=g, dtype=torch.float64) + 1.0
    s = _Sums(4)
    s.add(x, y)
    w, b = s.solve(0.0)
    assert torch.isfinite(w).all() and w[3].abs().max() < 1e-8
    np.testing.assert_allclose((x @ w + b).numpy(), y.numpy(), atol=1e-8)
    assert s.r2(w, b) == pytest.approx(1.0)


def test_a_negative_layer_is_refused_before_the_fit(planted):
    """fit_linear_lens(layers=[-1, ...]) failed with a bare KeyError of the hook name 'blocks.-1...'."""
    p, _ = planted
    with pytest.raises(ValueError, match=r"lens layers \[-1\] do not exist in a model with 4 layers"):
        fit_linear_lens(p.model, torch.zeros(16, 16, dtype=torch.long), layers=[-1, 2])
