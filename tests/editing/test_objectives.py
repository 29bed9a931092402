"""Training objectives: each loss against a hand computation, each objective on the planted model."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from factlens.components import Component, Mask, resid_hook
from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.editing import EditConfig, edit
from factlens.editing.losses import (activation_mse, answer_logprobs_and_lengths, fact_losses, gradient_ascent_loss,
                                  npo_loss, prompt_activations, simnpo_loss)
from factlens.editing.objectives.rmu import mean_activation_norm
from factlens.editing.objectives import (GradDiffObjective, GradientAscentObjective, InjectObjective, NPOObjective,
                                      RMUObjective, SimNPOObjective, TrainingObjective, UnlearnObjective)
from factlens.editing.registry import OBJECTIVES
from factlens.registry import load
from factlens.prompt_scores import score_prompts
from factlens.tasks import sports_athlete_editing
from factlens.testing import tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import answer_logprobs, answer_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def flush_denormal():
    """The planted model's tiny noise weights produce denormal floats that slow CPUs ~2x; flush them here."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


# --- pure losses on hand-made logits --------------------------------------------------------

# two answers over a 4-token vocabulary; answer 0 is token 2 (one token), answer 1 is tokens 0 then 3
LOGITS = [[[0.5, -1.0, 2.0, 0.0]], [[1.0, 0.0, -0.5, 0.3], [0.2, 0.1, -2.0, 1.5]]]
TOKENS = [[2], [0, 3]]


def _hand_logp() -> list[float]:
    """log p(answer) = sum over its tokens of logit - log(sum(exp(logits))), in plain Python."""
    return [sum(row[t] - math.log(sum(math.exp(x) for x in row)) for row, t in zip(rows, toks))
            for rows, toks in zip(LOGITS, TOKENS)]


def _torch_logp() -> tuple[torch.Tensor, torch.Tensor]:
    out = [sum(torch.log_softmax(torch.tensor(row), -1)[t] for row, t in zip(rows, toks)) for rows, toks in zip(LOGITS, TOKENS)]
    return torch.stack(out), torch.tensor([float(len(t)) for t in TOKENS])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_gradient_ascent_loss_by_hand():
    lp, _ = _torch_logp()
    hand = sum(_hand_logp()) / 2
    assert float(gradient_ascent_loss(lp)) == pytest.approx(hand, abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_npo_loss_by_hand(beta):
    lp, _ = _torch_logp()
    ref = [-0.7, -2.5]
    hand = sum(-(2 / beta) * _log_sigmoid(-beta * (a - r)) for a, r in zip(_hand_logp(), ref)) / 2
    assert float(npo_loss(lp, torch.tensor(ref), beta)) == pytest.approx(hand, rel=1e-6)
    # at the reference the loss is (2 / beta) log 2, whatever the probabilities
    assert float(npo_loss(lp, lp, beta)) == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        npo_loss(lp, lp, 0.0)


@pytest.mark.parametrize("beta, gamma", [(2.5, 0.0), (4.5, 0.0), (2.5, 1.0)])
def test_simnpo_loss_by_hand(beta, gamma):
    lp, n_tok = _torch_logp()
    hand = sum(-(2 / beta) * _log_sigmoid(-beta * a / len(t) - gamma) for a, t in zip(_hand_logp(), TOKENS)) / 2
    assert float(simnpo_loss(lp, n_tok, beta, gamma)) == pytest.approx(hand, rel=1e-6)


def test_activation_mse_by_hand():
    acts = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [9.0, 9.0]],
                         [[0.0, 0.5], [7.0, 7.0], [7.0, 7.0]]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    target = torch.tensor([1.0, 0.0])
    # prompt 0: ((0 + 4) + (4 + 1)) / (2 tokens * 2 dims); prompt 1: (1 + 0.25) / (1 * 2)
    hand = ((0 + 4 + 4 + 1) / 4 + (1 + 0.25) / 2) / 2
    assert float(activation_mse(acts, target, valid)) == pytest.approx(hand)
    assert float(activation_mse(acts, acts, valid)) == 0.0


# --- objectives on a model against independent computations ----------------------------------


def _items(planted):
    t = planted.task
    return format_prompts(t.forget)[:4], format_prompts(t.retain)[:5]


def _cfg(**kw) -> EditConfig:
    return EditConfig(**kw)


def test_paper_objectives_are_fact_losses(planted):
    fb, rb = _items(planted)
    for cls, name in ((InjectObjective, "inject"), (UnlearnObjective, "unlearn")):
        obj = cls.prepare(planted.model, fb, rb, mask=Mask([planted.lookup_mlp]), config=_cfg())
        got, want = obj.losses(planted.model, fb, rb), fact_losses(planted.model, fb, rb, name)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_logprob_objectives_match_scoring(planted):
    """GA, GradDiff, NPO and SimNPO on the planted model equal the formulas on no-grad answer log-probs."""
    m = planted.model
    fb, rb = _items(planted)
    lp_f = answer_logprobs(m, [it.prompt for it in fb], [it.answer for it in fb])
    lp_r = answer_logprobs(m, [it.prompt for it in rb], [it.answer for it in rb])
    n_tok = torch.tensor([float(len(answer_token_ids(m, it.answer))) for it in fb])
    mask = Mask([planted.lookup_mlp])
    cfg = _cfg(npo_beta=0.3, simnpo_beta=2.0, simnpo_gamma=0.5)

    ga = GradientAscentObjective.prepare(m, fb, rb, mask=mask, config=cfg).losses(m, fb, rb)
    assert float(ga[0].detach()) == pytest.approx(float(lp_f.mean()), abs=1e-5) and float(ga[1]) == 0.0
    gd = GradDiffObjective.prepare(m, fb, rb, mask=mask, config=cfg).losses(m, fb, rb)
    assert float(gd[0].detach()) == pytest.approx(float(lp_f.mean()), abs=1e-5)
    assert float(gd[1].detach()) == pytest.approx(float(-lp_r.mean()), abs=1e-5)

    npo = NPOObjective.prepare(m, fb, rb, mask=mask, config=cfg)
    assert npo.beta == 0.3 and len(npo.reference) == len(fb)
    lf, lr = npo.losses(m, fb, rb)  # the model is the reference: log p - log p_ref = 0
    assert float(lf) == pytest.approx(2 / 0.3 * math.log(2), rel=1e-5)
    assert float(lr) == pytest.approx(float(-lp_r.mean()), abs=1e-5)

    sim = SimNPOObjective.prepare(m, fb, rb, mask=mask, config=cfg).losses(m, fb, rb)
    hand = sum(-(2 / 2.0) * _log_sigmoid(-2.0 * float(a) / float(n) - 0.5) for a, n in zip(lp_f, n_tok)) / len(fb)
    assert float(sim[0]) == pytest.approx(hand, rel=1e-5)


def test_answer_lengths_multi_token():
    m = tiny_model()
    lp, n = answer_logprobs_and_lengths(m, ["Fact: Tiger Woods plays the sport of", "The sport played by X is"],
                                        ["golf", "basketball player"])
    assert n.tolist() == [1.0, 2.0]
    ref = answer_logprobs(m, ["Fact: Tiger Woods plays the sport of", "The sport played by X is"], ["golf", "basketball player"])
    assert torch.allclose(lp.detach(), ref, atol=1e-5)


def test_prompt_activations_are_resid_post_and_leave_no_hooks(planted):
    m = planted.model
    prompts = [it.prompt for it in _items(planted)[0]] + ["Alvarez is a professional"]
    acts, valid = prompt_activations(m, prompts, 2)
    for i, p in enumerate(prompts):
        _, cache = m.run_with_cache(p, names_filter=resid_hook(2, "post"))
        want = cache[resid_hook(2, "post")][0, 1:]  # after BOS
        assert torch.allclose(acts[i][valid[i]], want, atol=1e-5)
        assert int(valid[i].sum()) == want.shape[0] and not bool(valid[i, 0])
    assert no_hooks(m)
    with pytest.raises(ValueError, match="layer"):
        prompt_activations(m, prompts, m.cfg.n_layers)


def _rmu(planted, **settings):
    """The planted model, its forget/retain items, the lookup MLP + head mask, the config and RMU prepared on them."""
    fb, rb = _items(planted)
    mask = Mask([planted.lookup_mlp, planted.extraction_head])
    cfg = _cfg(**settings)
    return planted.model, fb, rb, mask, cfg, RMUObjective.prepare(planted.model, fb, rb, mask=mask, config=cfg)


def test_rmu_objective(planted):
    m, fb, rb, mask, cfg, obj = _rmu(planted, rmu_steering_coef=4.0, rmu_alpha=3.0, seed=7)
    assert obj.layer == 2  # the mask's last layer
    assert float(obj.control.norm()) == pytest.approx(4.0) and bool((obj.control >= 0).all())
    assert torch.equal(obj.control, RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg).control)  # seeded
    assert not torch.equal(obj.control, RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg.replace(seed=8)).control)
    lf, lr = obj.losses(m, fb, rb)
    assert float(lr) == pytest.approx(0.0, abs=1e-8)  # the model is the original
    hand = []
    for it in fb:
        _, cache = m.run_with_cache(it.prompt, names_filter=resid_hook(2, "post"))
        hand.append(float(((cache[resid_hook(2, "post")][0, 1:] - obj.control) ** 2).mean()))
    assert float(lf) == pytest.approx(sum(hand) / len(hand), rel=1e-5)
    assert RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg.replace(rmu_layer=1)).layer == 1
    # below every masked layer (the lookup MLP is at 1): nothing could change the steered activations, and
    # the edit trained nothing while reporting a normal loss
    with pytest.raises(ValueError, match="rmu_layer=0 is below every layer of the mask \\(the first is 1\\)"):
        RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg.replace(rmu_layer=0))
    with pytest.raises(ValueError, match="rmu_layer"):
        RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg.replace(rmu_layer=9))
    assert obj.describe()["rmu_layer"] == 2
    assert obj.forget_norm is None and "rmu_forget_norm" not in obj.describe()


def test_adaptive_rmu_scales_c_by_the_originals_forget_norm(planted):
    """Adaptive RMU: ``c = beta * mean ||resid_post||`` over the forget prompts' tokens (BOS excluded)."""
    m, fb, rb, mask, cfg, obj = _rmu(planted, rmu_adaptive_scale=2.5, rmu_steering_coef=4.0, seed=7)
    norms = []
    for p in dict.fromkeys(it.prompt for it in fb):
        _, cache = m.run_with_cache(p, names_filter=resid_hook(2, "post"))
        norms.append(cache[resid_hook(2, "post")][0, 1:].norm(dim=-1))
    hand = float(torch.cat(norms).mean())
    assert obj.forget_norm == pytest.approx(hand, rel=1e-5)
    assert float(obj.control.norm()) == pytest.approx(2.5 * hand, rel=1e-5)  # rmu_steering_coef is ignored
    plain = RMUObjective.prepare(m, fb, rb, mask=mask, config=cfg.replace(rmu_adaptive_scale=None))
    assert torch.allclose(obj.control / obj.control.norm(), plain.control / plain.control.norm())  # same direction u
    assert obj.describe()["rmu_forget_norm"] == pytest.approx(hand, rel=1e-5)
    assert mean_activation_norm(m, [it.prompt for it in fb] * 2, 2) == pytest.approx(hand, rel=1e-5)  # repeats count once
    with pytest.raises(ValueError, match="forget prompts"):
        mean_activation_norm(m, [], 2)
    assert no_hooks(m)


# --- registry and config -------------------------------------------------------------------


def test_registry_entries_load_objectives():
    """Properties of every entry and of the built-ins (a pinned set of names refused a new objective
    added as documented: one module and one entry)."""
    builtin = {"inject", "unlearn", "gradient_ascent", "graddiff", "npo", "simnpo", "dpo", "rmu"}
    assert builtin <= set(OBJECTIVES.names())
    for entry in OBJECTIVES:
        cls = load(entry.loss)
        assert issubclass(cls, TrainingObjective) and entry.doc, entry.name
    assert {e.name for e in OBJECTIVES if e.needs_target_new} & builtin == {"inject"}
    assert {e.name for e in OBJECTIVES if not e.uses_retain} & builtin == {"gradient_ascent"}


def test_config_objective_fields():
    c = EditConfig()
    assert (c.npo_beta, c.simnpo_beta, c.simnpo_gamma, c.rmu_layer, c.rmu_steering_coef, c.rmu_alpha) == \
        (0.1, 2.5, 0.0, None, 20.0, 100.0)
    assert EditConfig.from_dict(c.replace(rmu_layer=3).to_dict()).rmu_layer == 3
    assert c.rmu_adaptive_scale is None
    assert EditConfig.from_dict(c.replace(rmu_adaptive_scale=5.0).to_dict()).rmu_adaptive_scale == 5.0
    for bad in (dict(npo_beta=0), dict(simnpo_beta=-1), dict(rmu_steering_coef=0), dict(rmu_alpha=-1),
                dict(rmu_layer=-1), dict(simnpo_gamma=float("nan")), dict(rmu_adaptive_scale=0),
                dict(rmu_adaptive_scale=float("inf"))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EditConfig(**bad)


# --- every objective on the planted model ------------------------------------------------------

FAST = EditConfig(lr=1e-2, steps=10, batch_size=None, grad_accum=1, l_sft=0.0)
# RMU needs more steps and a target norm above the planted activations (measured: forget 1.0 -> 0.5, maintain 1.0)
RMU = FAST.replace(lr=3e-2, steps=20, rmu_steering_coef=8.0, rmu_alpha=1.0)


@pytest.mark.parametrize("objective", ["unlearn", "gradient_ascent", "graddiff", "npo", "simnpo", "dpo", "rmu"])
def test_each_objective_unlearns_inside_the_mask(planted, objective, flush_denormal):
    """Forget accuracy falls by at least 2 of 8 facts; only the mask's entries change; the user's model does not.

    Measured (planted model, 8 forget facts of mixed sports, mask = lookup MLP + head L2H1):
    forget accuracy 1.0 -> 0.0 for unlearn, GA, GradDiff, NPO, SimNPO and DPO (alternate "a professional") after
    10 steps, and
    -> 0.5 for RMU after 20 steps (its target c*u makes every forget prompt look alike, so the
    accuracy falls towards the share of the sport that c*u happens to point at).
    """
    task = replace(planted.task, objective="unlearn")
    mask = Mask([planted.lookup_mlp, planted.extraction_head])
    snap = snapshot(planted.model)
    before = score_prompts(planted.model, format_prompts(task.forget)).accuracy()
    # DPO's alternate in words the planted tokenizer knows (it spells "I don't know" as unknown tokens)
    cfg = {"rmu": RMU, "dpo": FAST.replace(objectives={"dpo": {"alternate": "a professional"}})}.get(objective, FAST)
    res = edit(planted.model, mask, task, objective=objective, config=cfg, show_progress=False)
    assert_unchanged(planted.model, snap)
    after = score_prompts(res.model, format_prompts(task.forget)).accuracy()
    assert before == 1.0 and after <= before - 0.25, (objective, after)
    pm = mask.to_param_masks(res.model)
    for n, p in res.model.named_parameters():
        old = snap.state[n]
        if n in pm:
            assert torch.equal(p.detach()[~pm[n]], old[~pm[n]]), n
        else:
            assert torch.equal(p.detach(), old), n
    assert no_hooks(res.model) and res.objective == objective
    assert all(math.isfinite(h["loss"]) for h in res.history)
    if objective == "gradient_ascent":
        assert res.meta["n_retain_prompts"] == 0 and all(h["loss_retain"] == 0 for h in res.history)
    if objective == "rmu":
        assert res.meta["rmu_layer"] == 2


def test_adaptive_rmu_unlearns_on_the_planted_model(planted, flush_denormal):
    """``rmu_adaptive_scale=5`` (the authors' beta) sets ``c`` from the planted norms and unlearns like plain RMU.

    Measured: forget norm 0.85 at layer 2, so c = 4.26; forget accuracy 1.0 -> 0.5 after 20 steps.
    """
    task = replace(planted.task, objective="unlearn")
    mask = Mask([planted.lookup_mlp, planted.extraction_head])
    snap = snapshot(planted.model)
    cfg = RMU.replace(rmu_adaptive_scale=5.0, rmu_steering_coef=1e-3)  # the fixed c would do nothing
    res = edit(planted.model, mask, task, objective="rmu", config=cfg, show_progress=False)
    assert_unchanged(planted.model, snap)
    assert res.meta["rmu_control_norm"] == pytest.approx(5.0 * res.meta["rmu_forget_norm"], rel=1e-5)
    after = score_prompts(res.model, format_prompts(task.forget)).accuracy()
    assert after <= 0.75, after
    pm = mask.to_param_masks(res.model)
    for n, p in res.model.named_parameters():
        keep = ~pm[n] if n in pm else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(p.detach()[keep], snap.state[n][keep]), n


def test_objective_with_heads_only_and_neuron_masks(planted, flush_denormal):
    """Every objective runs on masks without MLPs and on single neurons (RMU steers their last layer).

    Lookup neuron ``i`` fires only on subject ``i``, so the neuron mask uses a forget subject's neuron.
    """
    cfg = FAST.replace(steps=2)
    task = replace(planted.task, objective="unlearn")
    neuron = Component("neuron", planted.lookup_layer, int(task.forget[0].id))
    for mask in (Mask([planted.extraction_head, Component("head", 0, 1)]), Mask([neuron])):
        for name in OBJECTIVES.names():
            if name == "inject":
                continue
            res = edit(planted.model, mask, task, objective=name, config=cfg, show_progress=False)
            assert res.n_changed > 0, (name, mask)


# --- hardening (issue 11): bad edit targets, divergence ---------------------------------------


def test_edit_target_equal_to_answer_raises(planted):
    t = planted.task
    bad = t.forget.map(lambda r: replace(r, target_new=r.answer) if r.id == t.forget[0].id else r)
    with pytest.raises(ValueError, match="equals the true answer"):
        edit(planted.model, Mask([planted.lookup_mlp]), replace(t, forget=bad), show_progress=False)


def test_edit_target_not_among_candidates_raises(planted):
    t = planted.task
    bad = t.forget.map(lambda r: replace(r, target_new="cricket") if r.id == t.forget[1].id else r)
    with pytest.raises(ValueError, match="not among the task's candidate answers"):
        edit(planted.model, Mask([planted.lookup_mlp]), replace(t, forget=bad), show_progress=False)
    # unlearning objectives ignore target_new
    res = edit(planted.model, Mask([planted.lookup_mlp]), replace(t, forget=bad), objective="unlearn",
               config=FAST.replace(steps=1), show_progress=False)
    assert len(res.history) == 1


@pytest.mark.parametrize("inplace", [True, False])
def test_diverging_learning_rate_stops_and_restores(inplace):
    task = sports_athlete_editing(sports_facts()[:40], n_forget=4, seed=0, n_retain=8, n_maintain=8)
    model = tiny_model()
    snap = snapshot(model)
    cfg = EditConfig(lr=1e30, steps=5, batch_size=4, grad_accum=1, l_sft=0.0, clip_grad=None)
    with pytest.raises(FloatingPointError, match="diverged at optimizer step .*restored"):
        edit(model, Mask.from_labels(["L0.mlp", "L1H1"]), task, config=cfg, inplace=inplace, show_progress=False)
    assert_unchanged(model, snap)


def test_rmu_steers_only_what_depends_on_the_subject():
    """Every default sports prompt starts with the same one-shot example (12 tokens after BOS), whose
    activations are the same for all prompts. RMU used to steer them too: its forget term fought the
    retain term there, and what it won moved every prompt, held-out ones included (MSE 5.0 on the
    held-out prompts' shared positions in this setting, against 0.19 now)."""
    from factlens.editing.losses import prompt_activations, shared_prompt_tokens
    from factlens.tasks import sports_unlearning

    torch.manual_seed(0)
    m = tiny_model()
    task = sports_unlearning(sports_facts(), n_forget=8, n_retain=16, n_maintain=16)
    fb, rb, mb = (format_prompts(d) for d in (task.forget, task.retain, task.maintain))
    shared = shared_prompt_tokens(m, [it.prompt for it in (*fb, *rb)])
    assert shared == 13  # BOS + "Fact: Tiger Woods plays the sport of golf\nFact:"
    mask = Mask([Component("mlp", 0), Component("mlp", 1)])
    cfg = EditConfig(rmu_alpha=1.0, lr=1e-1, steps=40, batch_size=None, grad_accum=1, l_sft=0.0,
                     rmu_adaptive_scale=5.0, rmu_layer=1)
    res = edit(m, mask, task, objective="rmu", config=cfg, show_progress=False)
    assert res.meta["rmu_shared_tokens"] == shared
    with torch.no_grad():
        before, valid = prompt_activations(m, [it.prompt for it in mb], 1)
        after, _ = prompt_activations(res.model, [it.prompt for it in mb], 1)
    change = ((after - before) ** 2).mean(-1)
    assert float(change[:, 1:shared].mean()) < 1.0  # was 5.0: the forget term steered the shared example
    assert res.history[-1]["loss_forget"] < 0.2 * res.history[0]["loss_forget"]  # was stuck at 60 % with α = 100


def test_rmu_with_one_distinct_prompt_steers_every_token_but_bos():
    """Over one prompt (a one-fact chunk with no retain prompts) the "shared prefix" was the whole prompt
    but its last token: 18 of 19 positions left out, the subject never steered."""
    from factlens.editing.losses import _bos_id, _encode, shared_prompt_tokens

    m = tiny_model()
    prompt = format_prompts(sports_facts()[:1])[0].prompt
    assert len(_encode(m, prompt)[0]) > 5
    assert shared_prompt_tokens(m, [prompt]) == shared_prompt_tokens(m, [prompt, prompt]) == int(_bos_id(m) is not None)
    assert shared_prompt_tokens(m, []) == 0


def test_objectives_and_edit_methods_of_your_own_have_settings_of_their_own(planted):
    """An objective had nowhere to keep a hyper-parameter but a new EditConfig field, and the tables of
    an edit method of your own were refused ("unknown edit method"): ``config_type`` on either entry
    and a table under its name in ``EditConfig.objectives`` / ``methods`` now carry them."""
    from dataclasses import dataclass

    from factlens.config import ConfigBase
    from factlens.editing.objectives import TrainingObjective
    from factlens.editing.registry import EditMethod, Objective
    from factlens.editing.objectives.base import answer_logprobs as logprobs

    @dataclass(frozen=True)
    class HingeConfig(ConfigBase):
        margin: float = 1.0

    @dataclass(frozen=True)
    class Hinge(TrainingObjective):
        margin: float = 1.0

        @classmethod
        def prepare(cls, model, forget_items, retain_items, *, mask, config, settings):
            return cls(margin=settings.margin)

        def losses(self, model, forget_batch, retain_batch):
            logp_f, _, logp_r = logprobs(model, forget_batch, retain_batch)
            return torch.relu(logp_f + self.margin).mean(), -logp_r.mean() if logp_r.numel() else logp_r.new_zeros(())

        def describe(self):
            return {"margin": self.margin}

    hinge = Objective("hinge", Hinge, config_type=HingeConfig, doc="hinge on log p(answer)")
    task = replace(planted.task, objective="unlearn")
    cfg = FAST.replace(steps=1, objectives={"hinge": {"margin": 3.0}})
    assert cfg.objective_config(hinge) == HingeConfig(margin=3.0)
    res = edit(planted.model, Mask([planted.lookup_mlp]), task, objective=hinge, config=cfg, show_progress=False)
    assert res.meta["margin"] == 3.0 and res.objective == "hinge" and res.n_changed > 0
    with pytest.raises(ValueError, match=r"unknown HingeConfig fields \['margn'\]"):
        edit(planted.model, Mask([planted.lookup_mlp]), task, objective=hinge,
             config=cfg.replace(objectives={"hinge": {"margn": 3.0}}), show_progress=False)
    with pytest.raises(ValueError, match="takes its settings from EditConfig's own fields"):
        EditConfig(objectives={"rmu": {"layer": 1}})

    @dataclass(frozen=True)
    class ShrinkConfig(ConfigBase):
        factor: float = 0.5

    seen = {}

    def shrink(model, mask, task, *, objective, config, inplace):
        seen["settings"] = config.method_config(SHRINK)
        # it runs masked fine-tuning itself, with a config that no longer holds its own table
        return edit(model, mask, task, objective=objective, config=config.replace(steps=1, methods={}),
                    show_progress=False)

    SHRINK = EditMethod("shrink", shrink, ("unlearn",), config_type=ShrinkConfig)
    cfg = FAST.replace(methods={"shrink": {"factor": 0.25}})
    edit(planted.model, Mask([planted.lookup_mlp]), task, method=SHRINK, config=cfg, show_progress=False)
    assert seen["settings"] == ShrinkConfig(factor=0.25)


def test_gradient_ascent_token_reduction_weighs_answer_tokens():
    """``reduction="token"`` is the mean over answer tokens (open-unlearning's GA/GradDiff loss), the
    default the mean over facts of each answer's summed log-probability: equal for one-token answers,
    not for a two-token one."""
    from factlens.data.formats import FormattedPrompt
    from factlens.editing.objectives.gradient_ascent import GradientAscentConfig

    m = tiny_model()

    def item(prompt, answer):
        return FormattedPrompt(prompt, answer, None, (answer,), prompt, "default")

    fb = [item("Fact: Tiger Woods plays the sport of", "golf"), item("The sport played by X is", "basketball player")]
    rb = [item("Fact: Y plays the sport of", "tennis"), item("Z plays", "baseball")]
    lp, n = answer_logprobs_and_lengths(m, [it.prompt for it in fb + rb], [it.answer for it in fb + rb])
    assert n.tolist()[:2] == [1.0, 2.0]
    lp, n = lp.detach(), n.detach()
    mask, cfg = Mask([Component("mlp", 0)]), _cfg()
    for cls in (GradientAscentObjective, GradDiffObjective):
        fact = [x.detach() for x in cls.prepare(m, fb, rb, mask=mask, config=cfg).losses(m, fb, rb)]
        token = [x.detach() for x in cls.prepare(m, fb, rb, mask=mask, config=cfg,
                                                 settings=GradientAscentConfig(reduction="token")).losses(m, fb, rb)]
        assert float(fact[0]) == pytest.approx(float(lp[:2].mean()), abs=1e-5)
        assert float(token[0]) == pytest.approx(float(lp[:2].sum() / n[:2].sum()), abs=1e-5)
        assert abs(float(fact[0]) - float(token[0])) > 1e-3
        if cls is GradDiffObjective:
            assert float(fact[1]) == pytest.approx(float(-lp[2:].mean()), abs=1e-5)
            assert float(token[1]) == pytest.approx(float(-lp[2:].sum() / n[2:].sum()), abs=1e-5)
        else:
            assert float(token[1]) == 0.0
    # through the editor's settings table, checked by the registry's config type
    assert EditConfig(objectives={"graddiff": {"reduction": "token"}}).objective_config("graddiff").reduction == "token"
    with pytest.raises(ValueError, match="reduction must be one of"):
        EditConfig(objectives={"gradient_ascent": {"reduction": "mean"}})


def test_npo_and_simnpo_token_retain_reduction_is_open_unlearnings_nll():
    """NPO's and SimNPO's retain term was always the mean over facts of each answer's summed ``-log p``,
    while their docstring called it open-unlearning's NLL retain loss (a mean over answer tokens): the
    two differ for a two-token answer. ``NPOConfig(retain_reduction="token")`` gives the token mean; the
    default and the forget terms are unchanged."""
    from factlens.data.formats import FormattedPrompt
    from factlens.editing.objectives.npo import NPOConfig, NPOObjective, SimNPOObjective

    m = tiny_model()

    def item(prompt, answer):
        return FormattedPrompt(prompt, answer, None, (answer,), prompt, "default")

    fb = [item("Fact: Tiger Woods plays the sport of", "golf")]
    rb = [item("The sport played by X is", "basketball player"), item("Z plays", "baseball")]
    lp, n = answer_logprobs_and_lengths(m, [it.prompt for it in rb], [it.answer for it in rb])
    lp, n = lp.detach(), n.detach()
    assert n.tolist() == [2.0, 1.0]
    mask, cfg = Mask([Component("mlp", 0)]), _cfg()
    for cls in (NPOObjective, SimNPOObjective):
        fact = [float(x) for x in cls.prepare(m, fb, rb, mask=mask, config=cfg).losses(m, fb, rb)]
        obj = cls.prepare(m, fb, rb, mask=mask, config=cfg, settings=NPOConfig(retain_reduction="token"))
        token = [float(x) for x in obj.losses(m, fb, rb)]
        assert fact[0] == token[0] and obj.describe() == {"retain_reduction": "token", "retain_loss": "nll"}
        assert fact[1] == pytest.approx(float(-lp.mean()), abs=1e-5)
        assert token[1] == pytest.approx(float(-lp.sum() / n.sum()), abs=1e-5)
        assert abs(fact[1] - token[1]) > 1e-3
    assert EditConfig(objectives={"simnpo": {"retain_reduction": "token"}}).objective_config("simnpo") == \
        NPOConfig(retain_reduction="token")
    with pytest.raises(ValueError, match="NPOConfig.retain_reduction must be one of"):
        EditConfig(objectives={"npo": {"retain_reduction": "mean"}})
