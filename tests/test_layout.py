"""factlens.layout: weights re-stored so TransformerLens copies none per forward; every result bitwise identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from factlens.components import Mask
from factlens.data import sports_facts
from factlens.editing import EditConfig, edit
from factlens.evaluation import EvalConfig, evaluate
from factlens.layout import contiguous_layout, linear_layout
from factlens.tasks import sports_athlete_editing
from factlens.testing import planted_fact_model
from factlens.testing.shaped import gemma3_shaped

pytestmark = pytest.mark.usefixtures("one_thread")


def _job(model, task):
    """An edit of two gated MLPs and a head, then two suites: everything a job computes with these weights."""
    mask = Mask.from_labels(["L1.mlp", "L2.mlp", "L0H1"])
    res = edit(model, mask, task, config=EditConfig(lr=1e-3, steps=2, batch_size=8, n_sft_chunks=4), inplace=True,
               show_progress=False)
    ev = evaluate(model, task, original=None, suites=["standard", "relearning"], show_progress=False,
                  config=EvalConfig(relearning={"steps": 2, "rank": 4}, text={"n_chunks": 2, "seq_len": 16}))
    deltas = {n: d.new.clone() for n, d in res.deltas.items()}
    res.revert()
    return deltas, ev.flat(), [h["loss"] for h in res.history]


def test_gemma_shaped_job_is_bitwise_identical():
    plain = gemma3_shaped()
    fast = copy.deepcopy(plain)
    names = linear_layout(fast)
    assert names and all(n.endswith(("W_O", "W_gate", "W_in", "W_out")) for n in names)
    assert linear_layout(fast) == []  # idempotent
    for n, p in fast.named_parameters():
        assert torch.equal(p, plain.get_parameter(n)), n
    task = sports_athlete_editing(sports_facts(), n_forget=8, seed=0, n_maintain=8)
    a, b = _job(plain, task), _job(fast, task)
    assert a[0].keys() == b[0].keys()
    for n in a[0]:
        assert torch.equal(a[0][n], b[0][n]), n
    assert a[1] == b[1] and a[2] == b[2]
    assert fast.blocks[1].mlp.W_in.T.is_contiguous()  # the layout survives training and revert
    assert contiguous_layout(fast) == names
    assert all(p.is_contiguous() for p in fast.parameters())


def test_planted_model_only_w_o():
    """The standard (non-gated) MLP multiplies W_in as stored: its layout is left alone."""
    p = planted_fact_model()
    before = p.model(torch.tensor([[0, 5, 6, 7]]))
    names = linear_layout(p.model)
    assert names and all(n.endswith("attn.W_O") for n in names)
    np.testing.assert_array_equal(p.model(torch.tensor([[0, 5, 6, 7]])).detach().numpy(), before.detach().numpy())
