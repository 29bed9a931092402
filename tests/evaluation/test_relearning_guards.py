"""The relearning attack's guards: every attack's collapse is checked, and every metric gets the at-chance flag."""

from __future__ import annotations

import copy

import pytest
import torch

import factlens.evaluation.relearning as relearning_mod
from factlens.evaluation import EvalConfig
from factlens.evaluation.relearning import RelearningConfig, run_relearning
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EvalConfig(relearning=RelearningConfig(steps=1, rank=4))


def test_a_collapse_of_the_second_attack_is_flagged(monkeypatch):
    """With both halves the guard read the maintain scores after the first attack only: a second attack that
    made the model say "basketball" to everyone pooled its held-out "recoveries" into the relearned forget
    accuracy unflagged."""
    p = planted_fact_model()
    real, calls = relearning_mod.relearn, []

    def relearn(model, facts, **kw):
        rel = real(model, facts, **kw)
        calls.append(1)
        if len(calls) == 2:  # the attack trained on half B: its copy answers basketball to everyone
            t = rel.model.to_tokens(" basketball", prepend_bos=False)[0, 0].item()
            b = rel.model.unembed.b_U.detach().clone()
            b[t] += 100.0
            rel.model.unembed.b_U = torch.nn.Parameter(b, requires_grad=False)  # the copy's own tensor
        return rel

    monkeypatch.setattr(relearning_mod, "relearn", relearn)
    r = run_relearning(p.model, p.task, original=p.model, config=CFG)
    c = r.extra["maintain_collapse"]
    assert c["collapsed"] is True and set(c["per_attack"]) == {"A", "B"}
    assert c["per_attack"]["A"]["collapsed"] and not c["per_attack"]["B"]["collapsed"]


def test_edit_and_maintain_metrics_are_flagged_where_the_original_is_at_chance():
    """An original that knows no fact flagged the relearned forget accuracy but not the edit or maintain
    accuracy, which then entered the significance tests (the other attacks flag them)."""
    p = planted_fact_model()
    blind = copy.deepcopy(p.model)
    with torch.no_grad():
        blind.blocks[p.lookup_layer].mlp.W_out.zero_()
    r = run_relearning(p.model, p.task, original=blind, config=CFG)
    flags = {m.name: m.at_chance for m in r.metrics}
    assert flags["relearn_forget_accuracy"] and flags["relearn_edit_accuracy"] and flags["relearn_maintain_accuracy"]
    known = run_relearning(p.model, p.task, original=p.model, config=CFG)
    assert not any(m.at_chance for m in known.metrics)
