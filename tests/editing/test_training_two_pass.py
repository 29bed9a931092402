"""train_step backpropagates the fact terms and the text term separately: the same edit as one summed backward."""

from __future__ import annotations

import math

import pytest
import torch

from factlens.components import Mask
import factlens.editing.editor as editor
import factlens.editing.training as training
from factlens.editing import EditConfig, edit
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_backward(state, step):
    """The single summed backward of earlier versions (reference)."""
    cfg = state.config
    lr_now = cfg.lr * training.lr_factor(cfg, step)
    for g in state.optimizer.param_groups:
        g["lr"] = lr_now
    sums = dict.fromkeys(("loss", "loss_forget", "loss_retain", "loss_sft"), 0.0)
    for _ in range(cfg.grad_accum):
        terms = training.micro_batch_losses(state)
        loss = cfg.l_forget * terms["loss_forget"] + cfg.l_retain * terms["loss_retain"] + cfg.l_sft * terms["loss_sft"]
        values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        assert all(math.isfinite(v) for v in values.values())
        (loss / cfg.grad_accum).backward()
        for k, v in values.items():
            sums[k] += v / cfg.grad_accum
    training.masked_update(state)
    return {"step": step, **sums, "lr": lr_now}


@pytest.mark.parametrize("objective", ["inject", "unlearn", "npo"])
def test_two_backward_passes_equal_one(monkeypatch, objective):
    p = planted_fact_model()
    cfg = EditConfig(lr=1e-2, steps=4, batch_size=4, grad_accum=2, n_sft_chunks=4, sft_batch_size=2)
    kw = dict(config=cfg, show_progress=False, objective=objective)
    new = edit(p.model, Mask([p.lookup_mlp, p.extraction_head]), p.task, **kw)
    monkeypatch.setattr(editor, "train_step", _one_backward)
    old = edit(p.model, Mask([p.lookup_mlp, p.extraction_head]), p.task, **kw)
    for a, b in zip(new.history, old.history):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (k, a, b)
    for n in new.deltas:
        torch.testing.assert_close(new.deltas[n].new, old.deltas[n].new, atol=1e-5, rtol=1e-5)
