"""The logit-lens attack on planted edits whose mechanism is known: a late suppression (the
answer is still in the residual stream before the last layer) and a rewrite at the lookup MLP
(the answer is gone from every layer)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from factlens.data.formats import format_prompts
from factlens.evaluation import BaselineCache, evaluate
from factlens.evaluation.attacks import score_task
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.logit_lens import LogitLensConfig, lens_layers, lens_scores, run_logit_lens
from factlens.stats import wilson_interval
from factlens.tasks import Task
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.testing.planted import SPORTS

pytestmark = pytest.mark.usefixtures("one_thread")

GOLF_WEIGHT = 3.0


def _task(p, candidates=SPORTS + ("golf",)):
    ds = p.dataset.with_candidates(candidates)
    forget, rest = ds.split(8, seed=0)
    forget = forget.map(lambda r: dataclasses.replace(r, target_new="golf"))
    retain, maintain = rest.split(20, seed=0)
    return Task("planted-golf", "inject", forget, retain, maintain, seed=0)


@pytest.fixture(scope="module")
def planted():
    p = planted_fact_model()
    return p, _task(p)


@pytest.fixture(scope="module")
def late(planted):
    """Suppression after the answer is computed: each forget subject's lookup neuron also writes
    an unused residual dim U; a new layer-3 head (head 2.1's attention pattern) reads U at the
    subject and writes golf at the end. After layer 2 the true sport is in the residual stream;
    the output says golf."""
    p, task = planted
    U = p.layout["moved"]["golf"] + 1
    m = copy.deepcopy(p.model)
    with torch.no_grad():
        m.blocks[1].mlp.W_out[[int(r.id) for r in task.forget], U] += 2.0  # relu output 0.5: U = 1
        src, dst = m.blocks[2].attn, m.blocks[3].attn
        for name in ("W_Q", "W_K", "b_Q", "b_K"):
            getattr(dst, name)[1] = getattr(src, name)[1]
        dst.W_V[1, U, 0] += 1.0
        dst.W_O[1, 0, p.layout["moved"]["golf"]] += GOLF_WEIGHT
    return m


@pytest.fixture(scope="module")
def rewritten(planted):
    """The edit made where the fact is stored: the forget subjects' lookup neurons write golf
    instead of their sport, so no layer holds the old answer."""
    p, task = planted
    m = copy.deepcopy(p.model)
    ids = [int(r.id) for r in task.forget]
    with torch.no_grad():
        for i, r in zip(ids, task.forget):
            m.blocks[1].mlp.W_out[i, p.layout["attr"][r.answer]] -= 2.0
            m.blocks[1].mlp.W_out[i, p.layout["attr"]["golf"]] += 2.0
    return m


def test_a_late_suppression_is_read_before_it(planted, late):
    p, task = planted
    snaps = snapshot(late), snapshot(p.model)
    assert score_task(late, task, EvalConfig()).accuracy("forget") == 0.0  # the output gives golf
    r = run_logit_lens(late, task, original=p.model, logit_lens_config=LogitLensConfig(top_k=1))
    assert r.extra["layers"] == [0, 1, 2, 3]
    assert r.extra["true"][2] == 1.0 and r.extra["true"][3] == 0.0 and r.extra["target"][3] == 1.0
    assert r.extra["baseline"]["true"][2:] == [1.0, 1.0]
    # each fold's layer is chosen on the other fold's facts: layer 2, where the old answer still wins
    assert [f["layer"] for f in r.extra["folds"]] == [2, 2] and [f["n_held_out"] for f in r.extra["folds"]] == [4, 4]
    fa = r["logit_lens_forget_accuracy"]
    assert fa.value == 1.0 and fa.baseline == 1.0 and fa.ci_method == "wilson"
    assert (fa.ci_low, fa.ci_high) == pytest.approx(wilson_interval(8, 8))
    assert r["logit_lens_forget_recovery"].value == 1.0
    assert r["logit_lens_edit_accuracy"].value == 0.0 and r["logit_lens_maintain_accuracy"].value == 1.0
    assert r["logit_lens_forget_topk"].value == 1.0  # the sport is the top token after layer 2
    lr = r["logit_lens_forget_log_rank"]
    assert lr.value == 0.0 and lr.baseline == 0.0 and lr.ci_method == "bootstrap" and lr.higher_is_better
    # net of bias: at layer 2 the lens gives the control athletes their own sports, so every win counts
    assert r["logit_lens_selective_recovery"].value == 1.0 and r["logit_lens_control_bias"].value == 0.0
    rows = {row["record_id"]: row for row in r.per_fact}
    assert all(rows[f.id]["logit_lens_answer_wins"] == 1.0 and rows[f.id]["logit_lens_layer"] == 2.0
               for f in task.forget)
    assert_unchanged(late, snaps[0])
    assert_unchanged(p.model, snaps[1])
    assert no_hooks(late) and no_hooks(p.model)


def test_a_rewrite_at_the_lookup_leaves_nothing_to_read(planted, late, rewritten):
    p, task = planted
    cfg = LogitLensConfig(top_k=1)
    r = run_logit_lens(rewritten, task, original=p.model, logit_lens_config=cfg)
    # no layer holds the old sport: wherever the lens has it win, noise did it (layers 0-1)
    assert r.extra["true"][2:] == [0.0, 0.0] and r.extra["target"][2:] == [1.0, 1.0]
    s = r["logit_lens_forget_accuracy"]
    assert s.value <= 0.25 < r["logit_lens_forget_accuracy"].baseline
    assert r["logit_lens_forget_topk"].value == 0.0 and r["logit_lens_forget_topk"].baseline == 1.0
    sup = run_logit_lens(late, task, original=p.model, logit_lens_config=cfg)
    assert sup["logit_lens_forget_recovery"].value - r["logit_lens_forget_recovery"].value >= 0.75


def test_the_last_layer_is_the_models_output(planted, late, rewritten):
    p, task = planted
    items = format_prompts(task.forget) + format_prompts(task.maintain)
    for m in (p.model, late, rewritten):
        s = lens_scores(m, items, layers=[m.cfg.n_layers - 1])
        ts = score_task(m, task, EvalConfig())
        assert s.answer_wins[:, 0].tolist() == [*ts.forget.values(), *ts.maintain.values()]


def test_reading_layers_one_at_a_time_gives_the_same_scores(planted, late):
    items = format_prompts(planted[1].forget)
    both = lens_scores(late, items, layers=[1, 2], batch_size=3)
    for j, layer in enumerate((1, 2)):
        one = lens_scores(late, items, layers=[layer], batch_size=16)
        np.testing.assert_array_equal(both.answer_wins[:, j], one.answer_wins[:, 0])
        np.testing.assert_array_equal(both.answer_rank[:, j], one.answer_rank[:, 0])
        np.testing.assert_allclose(both.p_answer[:, j], one.p_answer[:, 0], rtol=1e-5)


def test_one_fold_chooses_on_the_scored_facts_and_says_so(planted, late):
    p, task = planted
    r = run_logit_lens(late, task, original=p.model, logit_lens_config=LogitLensConfig(folds=1))
    assert r["logit_lens_forget_accuracy"].ci_method == "wilson-selected"
    assert r["logit_lens_forget_recovery"].ci_method == "bootstrap-selected"
    assert r["logit_lens_maintain_accuracy"].ci_method == "wilson"
    assert r["logit_lens_forget_accuracy"].selected and not r["logit_lens_maintain_accuracy"].selected
    assert "optimistic" in r.extra["note"] and len(r.extra["folds"]) == 1


def test_candidates_sharing_a_first_token_are_left_out(planted):
    p, _ = planted
    task = _task(p, SPORTS + ("golf", "basketball player"))  # "basketball" and "basketball player" share one
    with pytest.warns(UserWarning, match="ambiguous"):
        r = run_logit_lens(p.model, task, original=p.model)
    assert r.extra["n_ambiguous"] == {"forget": 8, "maintain": 20}
    # a top-k hit on " basketball" would not say which of the two is there: no lens metric at all
    assert "logit_lens_forget_accuracy" not in r and "logit_lens_forget_topk" not in r
    assert r.extra["topk"] == [None] * 4 and r.extra["true"] == [None] * 4


def test_a_lens_that_can_read_no_forget_prompt_says_why_it_gives_no_metric(planted):
    """With every forget prompt ambiguous the suite returned no metric and no word of why; it still
    returns (a run's other suites go on), with a warning and a note naming the ambiguous prompts."""
    p, task = planted
    forget = task.forget.with_candidates(SPORTS + ("golf", "golf club"))  # " golf" starts both
    amb = Task(task.name, task.objective, forget, task.retain, task.maintain, seed=0)
    with pytest.warns(UserWarning, match="all 8 forget prompts are ambiguous"):
        r = run_logit_lens(p.model, amb, original=p.model)
    assert r.extra["n_ambiguous"] == {"forget": 8, "maintain": 0}
    assert not any(m.name.startswith("logit_lens_forget") for m in r.metrics) and "logit_lens_maintain_accuracy" in r
    note = r.extra["note"]
    assert note.startswith("no logit lens metric of the forget facts: all 8 forget prompts are ambiguous")
    assert "first token" in note and "maintain prompts" not in note
    assert "ambiguous" not in run_logit_lens(p.model, task, original=p.model).extra["note"]


def test_runs_through_evaluate_with_its_settings_and_reuses_the_original(planted, late):
    p, task = planted
    cache = BaselineCache()
    cfg = EvalConfig(other_suites={"logit_lens": {"top_k": 1, "layers": [2, 3]}})
    first = evaluate(late, task, original=p.model, suites=["logit_lens"], config=cfg, baselines=cache)
    misses = cache.misses
    second = evaluate(late, task, original=p.model, suites=["logit_lens"], config=cfg, baselines=cache)
    assert cache.misses == misses  # the original's scores and lens read once
    for res in (first, second):
        s = res.suites["logit_lens"]
        assert s.extra["layers"] == [2, 3] and s.extra["settings"]["top_k"] == 1
        assert s["logit_lens_forget_accuracy"].value == 1.0


def test_bad_settings_and_inputs_are_refused(planted):
    p, task = planted
    with pytest.raises(ValueError, match="top_k"):
        LogitLensConfig(top_k=0)
    with pytest.raises(ValueError, match="folds"):
        LogitLensConfig(folds=0)
    for bad in ((-1,), ("2",), (1.5,), (True,), ()):
        with pytest.raises(ValueError, match="layer indices"):
            LogitLensConfig(layers=bad)
    with pytest.raises(ValueError, match="do not exist"):
        lens_layers(p.model, [4])
    with pytest.raises(ValueError, match="forget facts"):
        run_logit_lens(p.model, dataclasses.replace(task, forget=task.forget[:0]))
    with pytest.raises(ValueError, match="logit lens cannot cross-fit 8 forget facts in 9 folds"):
        run_logit_lens(p.model, task, logit_lens_config=LogitLensConfig(folds=9))
    one = task.forget.map(lambda r: dataclasses.replace(r, subject=task.forget[0].subject,
                                                        template=r.template.replace("{}", "{} " + r.id)))
    # facts about one subject share a fold: refused before the models are read, naming the setting
    with pytest.raises(ValueError, match=r"8 forget facts about 1 subject\(s\) in 2 folds.*logit_lens.folds"):
        run_logit_lens(p.model, dataclasses.replace(task, forget=one), logit_lens_config=LogitLensConfig(folds=2))
    with pytest.raises(ValueError, match="unknown key|valid"):
        EvalConfig(other_suites={"logit_lens": {"topk": 3}})


def test_the_selective_choice_passes_over_layers_that_carry_no_fact(planted, rewritten):
    """Layers 0-1 hold no sport at the last token: there the lens answers by the noise, the same
    candidate for nearly every prompt, and wins on the forget facts of that sport. Chosen on forget
    wins alone, a fold can pick such a layer; with the retain facts in the criterion it cannot."""
    p, task = planted
    only = run_logit_lens(rewritten, task, original=p.model,
                          logit_lens_config=LogitLensConfig(selection="forget"))
    sel = run_logit_lens(rewritten, task, original=p.model)
    assert any(f["layer"] < 2 for f in only.extra["folds"])
    assert only["logit_lens_forget_accuracy"].value > 0.25  # noise wins, no old answer anywhere
    assert only["logit_lens_maintain_accuracy"].value < 0.75  # ... and the maintain facts show the layer is blind
    # ... and so does the selectivity: the noise layer gives the same sport to the facts' control athletes
    assert only["logit_lens_control_bias"].value > 0.25
    assert only["logit_lens_selective_recovery"].value < only["logit_lens_forget_accuracy"].value - 0.25
    assert all(f["layer"] >= 2 for f in sel.extra["folds"]) and sel["logit_lens_forget_accuracy"].value == 0.0
    assert "retain" in sel.extra["selection"] and "retain" not in only.extra["selection"]
    with pytest.raises(ValueError, match="selection"):
        LogitLensConfig(selection="best")


def test_lens_curves_plot(planted, late):
    import plotly.graph_objects as go

    from factlens.evaluation.plots import lens_curves
    from factlens.evaluation.result import EvalResult

    p, task = planted
    r = evaluate(late, task, original=p.model, suites=["standard", "logit_lens"])
    fig = lens_curves(r)
    names = [t.name for t in fig.data]
    assert isinstance(fig, go.Figure) and names[:2] == ["true answer", "edit target"]
    assert "true answer (original)" in names and list(fig.data[0].y) == r.suites["logit_lens"].extra["true"]
    assert len(lens_curves({"a": r, "b": r}).data) == 4  # true + target per localization
    with pytest.raises(ValueError, match="logit_lens"):
        lens_curves({"x": EvalResult({"standard": r.suites["standard"]})})


def _sport_items(prefix, answers):
    """Default-format prompts of athletes with these answers (ids ``<prefix><i>``)."""
    from factlens.data.formats import FormattedPrompt

    return tuple(FormattedPrompt(f"{prefix}{i} plays", a, None, SPORTS, f"{prefix}{i}", "default")
                 for i, a in enumerate(answers))


def _two_layer_scores(wins):
    """Lens scores at layers 0 and 1 with these answer wins (rows: prompts)."""
    from factlens.evaluation.logit_lens import LensScores

    w = np.array(wins, dtype=float)
    return LensScores((0, 1), w, np.full(w.shape, np.nan), w * 0.9 + 0.05, np.zeros(w.shape, np.int64),
                      np.zeros(w.shape, np.int64))


def test_a_layer_that_reads_no_retain_fact_above_chance_is_never_chosen():
    """Layer 0 answers "basketball" for everyone: it wins on 4 of 4 fitting basketball players and on
    the retain facts' basketball share (7 of 20, chance 1/3); layer 1 reads 18 of 20 retain facts but
    the edit removed the forget facts there. forget + retain wins alone chose layer 0 (1.35 against
    0.9); layer 0 reads no retain fact above chance, so layer 1 is chosen."""
    from factlens.evaluation.logit_lens import _choose, _eligible, _Read

    items, scores = _sport_items, _two_layer_scores
    forget = items("f", ["basketball"] * 4)
    retain = items("r", ["basketball"] * 7 + ["baseball"] * 7 + ["football"] * 6)
    read = _Read({"forget": forget, "maintain": (), "retain": retain},
                 {"forget": scores([[1, 0]] * 4),
                  "retain": scores([[float(a == "basketball"), float(i < 18)] for i, a in
                                    enumerate(it.answer for it in retain)])})
    assert _eligible(read)[0].tolist() == [False, True]
    assert _choose(read, {it.record_id for it in forget}, [0, 1], _eligible(read)[0]) == 1


def test_each_fold_is_read_at_the_layer_the_other_fold_chose():
    """Fold A's forget facts win only at layer 0, fold B's only at layer 1: a choice made without the
    held-out facts reads A at layer 1 and B at layer 0 (a choice that saw them would read each at its
    own best layer, 1.0). The selectivity uses each fact's own fold's layer: at layer 0 the lens says
    basketball for every control athlete, at layer 1 each control's own sport."""
    from factlens.data.formats import FormattedPrompt
    from factlens.evaluation.direction_ablation import fact_folds
    from factlens.evaluation.logit_lens import LensScores, _assign, _eligible, _Read, _selectivity

    sports = ("basketball", "baseball", "football")
    forget = tuple(FormattedPrompt(f"f{i} plays", "basketball", None, sports, f"f{i}", "default") for i in range(8))
    maintain = tuple(FormattedPrompt(f"m{i} plays", sports[1 + i % 2], None, sports, f"m{i}", "default")
                     for i in range(8))
    a, b = fact_folds([it.record_id for it in forget], 2, seed=0)
    wins = np.array([[float(it.record_id in a), float(it.record_id in b)] for it in forget])
    m_win = np.array([[0.0, 1.0]] * 8)
    m_said = np.array([[0, sports.index(it.answer)] for it in maintain])
    zeros = np.zeros((8, 2), np.int64)
    read = _Read({"forget": forget, "maintain": maintain},
                 {"forget": LensScores((0, 1), wins, np.full((8, 2), np.nan), wins, zeros, zeros),
                  "maintain": LensScores((0, 1), m_win, np.full((8, 2), np.nan), m_win, zeros, m_said)})
    task = type("T", (), {"forget": [type("R", (), {"id": it.record_id, "subject": it.record_id})() for it in forget],
                          "maintain": [type("R", (), {"id": it.record_id})() for it in maintain]})()
    layer_of, folds = _assign(task, read, [0, 1], 2, seed=0, ok=_eligible(read)[0])
    assert {layer_of[r] for r in a} == {1} and {layer_of[r] for r in b} == {0}
    assert [f["layer"] for f in folds] == [1, 0] and [set(f["held_out"]) for f in folds] == [set(a), set(b)]
    read_wins = read.at("forget", layer_of)
    assert all(v == 0.0 for v in read_wins.values())
    sel = _selectivity(read, read_wins, folds, seed=0)
    assert {sel.bias[r] for r in a} == {0.0} and {sel.bias[r] for r in b} == {1.0}


def test_top_k_searches_only_the_layers_that_carry_facts(planted, rewritten):
    """At layer 0 the lens offers the same few tokens for every prompt, and one of the sports ranks
    in the top 20 of the planted vocabulary for half the forget facts: a hit that says nothing about
    the edit. The top k searches only the layers that read the retain facts above chance."""
    p, task = planted
    cfg = LogitLensConfig(top_k=20)
    sel = run_logit_lens(rewritten, task, original=p.model, logit_lens_config=cfg)
    assert sel.extra["topk_layers"] == [2, 3] and sel.extra["topk"][0] >= 0.5  # the blind layer's "hits"
    assert sel["logit_lens_forget_topk"].value <= 0.125 and sel["logit_lens_forget_topk"].baseline == 1.0
    # the ranks without a budget: the old sport is pushed near the bottom of the 141-token vocabulary
    # for 7 of 8 facts (log10(1 + 139) = 2.1), to rank 2 for one; the original has it on top
    lr = sel["logit_lens_forget_log_rank"]
    assert lr.value > 1.5 and lr.baseline == 0.0
    rows = {row["record_id"]: row for row in sel.per_fact}
    assert sorted(round(rows[f.id]["logit_lens_log_rank"], 2) for f in task.forget)[0] == round(np.log10(3), 2)
    every = run_logit_lens(rewritten, task, original=p.model,
                           logit_lens_config=dataclasses.replace(cfg, selection="forget"))
    assert every.extra["topk_layers"] == [0, 1, 2, 3] and every["logit_lens_forget_topk"].value >= 0.5


def test_a_layer_that_says_the_majority_answer_to_everyone_is_not_eligible():
    """Sports-Unlearning on Gemma: the retain athletes play baseball or football, half each, and a
    blind layer that says "baseball" to everyone reads them at 0.5, above uniform chance + 2 SE
    (1/3 + 0.12 with 64 facts). Such a layer carries no fact; the bar is the best constant answer.
    Here the forget facts are baseball players: forget + retain wins chose the blind layer 0 (1.5
    against 0.9) while it counted as reading the retain facts."""
    from factlens.evaluation.logit_lens import _choose, _eligible, _Read

    items, scores = _sport_items, _two_layer_scores
    forget = items("f", ["baseball"] * 4)
    retain = items("r", ["baseball", "football"] * 32)
    read = _Read({"forget": forget, "maintain": (), "retain": retain},
                 {"forget": scores([[1, 0]] * 4),
                  "retain": scores([[float(it.answer == "baseball"), float(i < 58)] for i, it in enumerate(retain)])})
    assert _eligible(read)[0].tolist() == [False, True] and _eligible(read)[1] == "constant answer"
    assert _choose(read, {it.record_id for it in forget}, [0, 1], _eligible(read)[0]) == 1


def test_a_negative_layer_is_refused_with_a_value_error(planted):
    """Only layers >= n_layers were refused: -1 passed lens_layers and failed later with a bare
    KeyError 'blocks.-1.hook_resid_post' (lens_scores did not check its layers at all)."""
    p, task = planted
    with pytest.raises(ValueError, match=r"lens layers \[-1\] do not exist in a model with 4 layers"):
        lens_layers(p.model, [-1, 2])
    with pytest.raises(ValueError, match=r"lens layers \[-2\] do not exist"):
        lens_scores(p.model, format_prompts(task.forget), layers=[-2])
    with pytest.raises(ValueError, match=r"lens layers \[4\] do not exist"):
        lens_scores(p.model, format_prompts(task.forget), layers=[4, 0])
    assert lens_layers(p.model, [3, 0, 3]) == [0, 3]
