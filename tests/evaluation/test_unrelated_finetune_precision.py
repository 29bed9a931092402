"""The unrelated-fine-tuning attack on half-precision models (method="full"), and the budget it records.

Until 2026-12-06 ``method="full"`` stepped a bf16/fp16 model's block parameters with AdamW in
their own dtype: in fp16 AdamW's eps (1e-8) is 0, so the first step gave NaN weights (and the
suite then failed with a FloatingPointError that blamed the learning rate); in bf16 small
updates were rounded away at every step, a weaker attack than the same settings in float32."""

from __future__ import annotations

import copy

import pytest
import torch

from factlens.evaluation import EvalConfig
from factlens.evaluation.unrelated_finetune import (TEXT_POSITIONS, UnrelatedFinetuneConfig, finetuned_copy,
                                                    run_unrelated_finetune)

pytestmark = pytest.mark.usefixtures("one_thread")

FULL = UnrelatedFinetuneConfig(method="full", steps=10, lr=3e-5, data=("retain",))


def _block_update(model, planted, settings=FULL) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The change of every block parameter after fine-tuning a copy of ``model``, in float32, and the losses."""
    work, cleanup, history = finetuned_copy(model, planted.task.retain, settings=settings, config=EvalConfig())
    try:
        return {n: a.detach().float() - b.detach().float()
                for (n, a), (_, b) in zip(work.named_parameters(), model.named_parameters())
                if n.startswith("blocks")}, history
    finally:
        cleanup()


def _relative_distance(d: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    num = sum(float((d[n] - ref[n]).pow(2).sum()) for n in ref)
    return (num / sum(float(ref[n].pow(2).sum()) for n in ref)) ** 0.5


@pytest.fixture(scope="module")
def float32_update(planted):
    return _block_update(planted.model, planted)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_full_finetuning_of_a_half_precision_model_follows_the_float32_one(planted, float32_update, dtype):
    """fp16: NaN weights after one step before the fix; bf16: the update was 0.68 of the float32
    update's norm away from it (lr 3e-5, 10 steps: most steps rounded away), 0.10 with float32 masters."""
    model = copy.deepcopy(planted.model).to(dtype)
    ref, ref_history = float32_update
    update, history = _block_update(model, planted)
    assert all(bool(torch.isfinite(d).all()) for d in update.values())
    assert all(torch.isfinite(torch.tensor(history)))
    assert _relative_distance(update, ref) < 0.25
    assert history == pytest.approx(ref_history, rel=0.1, abs=1e-3)
    assert all(p.dtype == dtype for p in model.parameters())  # the model itself is not changed or cast


def test_full_finetuning_of_a_float32_model_has_no_master_copies(planted, float32_update):
    """The float32 copies are for half precision only: a float32 model is stepped as before, bitwise."""
    again, history = _block_update(planted.model, planted)
    ref, ref_history = float32_update
    assert history == ref_history and all(torch.equal(again[n], ref[n]) for n in ref)


def test_fp16_full_finetuning_suite_runs_without_a_false_divergence(planted):
    """The audit's fp16 run stopped with 'the model gave NaN log-probabilities ... lower the learning rate'."""
    model = copy.deepcopy(planted.model).to(torch.float16)
    st = UnrelatedFinetuneConfig(method="full", steps=3, data=("retain",))
    r = run_unrelated_finetune(model, planted.task, original=model, unrelated_finetune_config=st)
    assert r["finetune_retain_maintain_accuracy"].value == 1.0
    assert all(torch.isfinite(torch.tensor(r.extra["data"]["retain"]["history"])))


def test_the_budget_records_the_positions_the_text_loss_reads(planted):
    """The text loss reads 16 evenly spaced positions per chunk, not every token: the budget says how many."""
    st = UnrelatedFinetuneConfig(steps=1, data=("text",), rank=2)
    r = run_unrelated_finetune(planted.model, planted.task, unrelated_finetune_config=st)
    assert r.extra["budget"]["text_positions"] == TEXT_POSITIONS == 16  # default 64-token chunks: 62 could be read
    short = EvalConfig().replace(text=EvalConfig().text.replace(seq_len=8))
    r = run_unrelated_finetune(planted.model, planted.task, config=short, unrelated_finetune_config=st)
    assert r.extra["budget"]["text_positions"] == 6  # positions 1..6 of an 8-token chunk have a next token
    retain = run_unrelated_finetune(planted.model, planted.task,
                                    unrelated_finetune_config=st.replace(data=("retain",)))
    assert retain.extra["budget"]["text_positions"] is None
