"""Gradients of half-precision models are accumulated over micro-batches in float32."""

from __future__ import annotations

import pytest
import torch

import factlens.editing.editor as editor
import factlens.editing.training as training
from factlens.components import Mask
from factlens.data import sports_facts
from factlens.editing import EditConfig, edit
from factlens.tasks import sports_athlete_editing
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _exact_sum_step(captured):
    """A train step that takes each backward pass's bf16 gradient out at once and sums them in float64."""

    def step_fn(state, step):
        cfg = state.config
        acc = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in state.params.items()}

        def drain():
            for n, p in state.params.items():
                if p.grad is not None:
                    acc[n] += p.grad.double()
                    p.grad = None

        for _ in range(cfg.grad_accum):
            lf, lr = state.objective.losses(state.model, state.forget.next(), state.retain.next())
            ((cfg.l_forget * lf + cfg.l_retain * lr) / cfg.grad_accum).backward()
            drain()
            ls = state.text.loss(state.model, state.originals)
            (cfg.l_sft * ls / cfg.grad_accum).backward()
            drain()
        for n, m in state.unselected.items():
            acc[n].masked_fill_(m, 0.0)
        captured.update(acc)
        return {"step": step, "loss": 0.0, "loss_forget": 0.0, "loss_retain": 0.0, "loss_sft": 0.0, "lr": cfg.lr}

    return step_fn


def test_bf16_gradients_accumulate_in_float32(monkeypatch):
    """Each ``backward()`` used to add into the bf16 ``.grad`` (8 significant bits): after 2 x 16
    micro-batch passes the stepped gradient was off by 4e-3 of its norm; it is now summed in
    the float32 master's gradient, off only by float32 rounding."""
    tiny_task = sports_athlete_editing(sports_facts()[:40], n_forget=4, seed=0, n_retain=8, n_maintain=8)
    mask = Mask.from_labels(["L0H1", "L1.mlp"])
    cfg = EditConfig(lr=1e-4, steps=1, batch_size=2, grad_accum=16, n_sft_chunks=4, sft_batch_size=2, clip_grad=1e9,
                     sft_seq_len=16, sft_positions=4, seed=0)
    seen: dict[str, torch.Tensor] = {}
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(tensors, max_norm, *a, **k):
        tensors = list(tensors)
        seen["grads"] = [t.grad.detach().double().clone() for t in tensors]
        return real_clip(tensors, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    edit(tiny_model().to(torch.bfloat16), mask, tiny_task, config=cfg, show_progress=False)
    exact: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(editor, "train_step", _exact_sum_step(exact))
    edit(tiny_model().to(torch.bfloat16), mask, tiny_task, config=cfg, show_progress=False)
    got = torch.cat([g.flatten() for g in seen["grads"]])
    want = torch.cat([g.flatten() for g in exact.values()])
    assert got.shape == want.shape and want.norm() > 0
    assert float((got - want).norm() / want.norm()) < 1e-5
