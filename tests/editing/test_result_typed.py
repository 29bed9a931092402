"""EditResult as a typed result (issue 12, section 3): its history as a DataFrame, and the
apply/revert state kept out of the frozen fields."""

from __future__ import annotations

import copy
import dataclasses
import math

import pandas as pd
import pytest
import torch

from factlens.components import Component, Mask, ModelShape
from factlens.editing import EditConfig, edit
from factlens.editing.result import HISTORY_COLUMNS, EditResult, ParamDelta
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

MASK = Mask([Component("mlp", 1), Component("head", 2, 1)])


def _result(model, history=()) -> EditResult:
    """A small real delta on the mask's parameters, written into ``model`` (as an editor does)."""
    deltas = {}
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in sorted(MASK.to_param_masks(model).items()):
            old = params[name][m].detach().clone()
            new = old + 0.1 * torch.randn(old.shape, generator=gen)
            params[name][m] = new
            deltas[name] = ParamDelta(m.clone(), old, new.clone())
    return EditResult(model=model, mask=MASK, config=EditConfig.fast(), objective="inject", history=tuple(history),
                      seconds=0.0, sft_kind="none", n_params_trained=sum(int(d.mask.sum()) for d in deltas.values()),
                      deltas=deltas, shape=ModelShape.of(model), model_name="planted")


def test_to_frame_of_a_real_edit(planted):
    model = planted.model
    before = snapshot(model)
    cfg = EditConfig(lr=1e-2, steps=3, batch_size=None, grad_accum=1, n_sft_chunks=2, sft_batch_size=2,
                     sft_seq_len=16)
    res = edit(model, Mask([planted.lookup_mlp]), planted.task, config=cfg, show_progress=False)
    assert_unchanged(model, before)  # inplace=False: the user's model is untouched
    df = res.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == len(res.history) == 3
    assert list(df.columns) == list(HISTORY_COLUMNS)
    assert df["step"].tolist() == [0, 1, 2]
    for col in HISTORY_COLUMNS:  # the frame holds exactly the recorded values
        assert df[col].tolist() == pytest.approx([h[col] for h in res.history])


def test_to_frame_without_steps_and_with_method_keys():
    model = planted_fact_model(n_subjects=6).model
    empty = _result(model).to_frame()
    assert empty.empty and list(empty.columns) == list(HISTORY_COLUMNS)
    # ROME/MEMIT record per-fact value-optimization steps with their own keys
    hist = [{"step": 0, "fact": "a", "loss": 2.0, "p_target": 0.1, "lr": 0.5},
            {"step": 1, "fact": "a", "loss": 1.0, "p_target": 0.4, "lr": 0.5, "layer": 3}]
    df = _result(copy.deepcopy(model), hist).to_frame()
    assert df.shape == (2, 6) and df["p_target"].tolist() == [0.1, 0.4]
    assert math.isnan(df.loc[0, "layer"]) and df.loc[1, "layer"] == 3


def test_frozen_result_holds_no_mutable_list():
    res = _result(planted_fact_model(n_subjects=6).model)
    assert not [f.name for f in dataclasses.fields(res) if isinstance(getattr(res, f.name), list)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res._applied = None  # type: ignore[misc]


def test_apply_revert_stack_unchanged():
    """apply/revert still stack per model: revert(model) undoes that model's latest application,
    revert() the most recent one, and a copy made with ``dataclasses.replace`` keeps its own state."""
    model = planted_fact_model(n_subjects=6).model
    pristine = copy.deepcopy(model)
    res = _result(model)
    edited = snapshot(model)
    assert res.applied
    a, b = copy.deepcopy(pristine), copy.deepcopy(pristine)
    before_a = snapshot(a)
    res.apply(a)
    res.apply(b)
    assert_unchanged(a, edited)
    res.revert(a)  # a, not the most recent (b)
    assert_unchanged(a, before_a)
    assert_unchanged(b, edited)
    assert res.revert() is b  # the most recent left
    assert_unchanged(b, before_a)
    twin = dataclasses.replace(res, model=None)
    assert not twin.applied  # a loaded-like copy is applied nowhere
    with pytest.raises(RuntimeError, match="nothing to revert: this edit is not applied to any model"):
        twin.revert()
    with pytest.raises(RuntimeError, match="not applied to that model"):
        res.revert(a)
    assert res.revert() is model  # the model the edit was made on, still tracked
    assert_unchanged(model, snapshot(pristine))
    assert not res.applied


def test_delta_norm_does_not_depend_on_the_order_of_the_deltas():
    # the deltas' order follows the mask's set iteration (PYTHONHASHSEED): two worker
    # processes wrote delta norms differing in the last bit. Norms^2 of 1e16, 1, 1 sum to
    # 1e16 in one order and 1e16 + 2 in another.
    import types

    from factlens.editing.result import EditResult

    class D:
        def __init__(self, n):
            self.n = n

        def norm(self):
            return self.n

    big, one = D(1e8), D(1.0)
    a = types.SimpleNamespace(deltas={"a": big, "b": one, "c": one})
    b = types.SimpleNamespace(deltas={"b": one, "c": one, "a": big})
    assert EditResult.delta_norm(a) == EditResult.delta_norm(b)
    assert list(EditResult.delta_norms(b)) == ["a", "b", "c"]
