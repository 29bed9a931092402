"""The planted-fact model (factlens.testing.planted): its known structure, accuracy, ablations, probe and task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factlens.testing import PlantedFactModel


def _final_logits(pf: PlantedFactModel, prompts: list[str], hooks=()) -> torch.Tensor:
    model = pf.model
    try:
        with torch.no_grad():
            logits = model.run_with_hooks(model.to_tokens(prompts), fwd_hooks=list(hooks))
    finally:
        model.reset_hooks()
    assert all(not h.fwd_hooks and not h.bwd_hooks for h in model.hook_dict.values())
    return logits[:, -1]


def _candidate_accuracy(pf: PlantedFactModel, hooks=(), paraphrase: bool = False) -> float:
    model, ds = pf.model, pf.dataset
    prompts = [r.paraphrases[0] if paraphrase else r.prompt for r in ds]
    logits = _final_logits(pf, prompts, hooks)
    cands = ds.candidates
    cand_ids = torch.tensor([model.to_single_token(" " + c) for c in cands])
    pred = logits[:, cand_ids].argmax(-1)
    truth = torch.tensor([cands.index(r.answer) for r in ds])
    return (pred == truth).float().mean().item()


def _zero(act, hook):
    return torch.zeros_like(act)


def _zero_head(head: int):
    def fn(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return fn


def test_planted_structure(planted):
    pf = planted
    from factlens.components import Component

    assert pf.lookup_layer == 1 and pf.n_layers == 4 == pf.model.cfg.n_layers
    assert pf.extraction_head == Component("head", 2, 1) and pf.lookup_mlp == Component("mlp", 1)
    ds = pf.dataset
    assert ds.name == "planted" and ds.candidates == ("basketball", "baseball", "football")
    assert len(ds) == 48 and [r.id for r in ds] == [str(i) for i in range(48)]
    assert {r.answer for r in ds} == set(ds.candidates)
    assert all(r.template == "{} plays the sport of" and r.relation == "sport" for r in ds)
    tok = pf.model.tokenizer
    for r in ds:
        assert len(tok(" " + r.subject, add_special_tokens=False)["input_ids"]) == 1
    assert pf.model.cfg.d_mlp >= len(ds)


def test_planted_accuracy_and_probability(planted):
    assert _candidate_accuracy(planted) == 1.0
    assert _candidate_accuracy(planted, paraphrase=True) == 1.0
    model, ds = planted.model, planted.dataset
    probs = _final_logits(planted, [r.prompt for r in ds]).softmax(-1)
    answer_ids = torch.tensor([model.to_single_token(" " + r.answer) for r in ds])
    assert probs[torch.arange(len(ds)), answer_ids].min() > 0.5


@pytest.mark.parametrize(
    "hook_name, fn, keeps",
    [
        ("blocks.1.hook_mlp_out", _zero, False),
        ("blocks.2.attn.hook_z", _zero_head(1), False),
        ("blocks.0.hook_mlp_out", _zero, True),
        ("blocks.3.hook_mlp_out", _zero, True),
        ("blocks.2.attn.hook_z", _zero_head(0), True),
    ],
)
def test_planted_ablations(planted, hook_name, fn, keeps):
    acc = _candidate_accuracy(planted, hooks=[(hook_name, fn)])
    if keeps:
        assert acc == 1.0
    else:
        assert acc <= 0.5


def test_planted_probe(planted):
    from sklearn.linear_model import LogisticRegression

    model, ds = planted.model, planted.dataset
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens([r.prompt for r in ds]), names_filter=names)
    finally:
        model.reset_hooks()
    y = np.array([ds.candidates.index(r.answer) for r in ds])
    train, test = np.arange(0, len(ds), 2), np.arange(1, len(ds), 2)
    scores = {}
    for name in names:
        x = cache[name][:, 1].numpy()  # subject position (after <bos>)
        probe = LogisticRegression(max_iter=2000).fit(x[train], y[train])
        scores[name] = probe.score(x[test], y[test])
    assert scores["blocks.1.hook_resid_post"] >= 0.9, scores
    assert scores["blocks.0.hook_resid_post"] <= 0.6, scores


def test_planted_task(planted):
    """The lazily built task is cached and is the documented sports_athlete_editing of the planted facts."""
    from factlens.tasks import sports_athlete_editing

    task = planted.task
    assert task is planted.task  # built once (cached_property)
    expected = sports_athlete_editing(planted.dataset, n_forget=8, seed=planted.seed)
    assert [r.subject for r in task.forget] == [r.subject for r in expected.forget]
    assert len(task.forget) == 8 and {r.subject for r in task.forget} <= set(planted.subjects)
    assert not {r.subject for r in task.forget} & {r.subject for r in task.maintain}
