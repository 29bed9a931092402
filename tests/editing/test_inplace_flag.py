"""``inplace`` takes only True or False: ``inplace="False"`` (a non-empty string, so true) edited
the caller's model in place."""

from __future__ import annotations

from dataclasses import replace

import pytest

from factlens.components import Mask
from factlens.editing import EditConfig, edit, edit_sequential
from factlens.editing.editor import finetune
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EditConfig(lr=1e-2, steps=1, batch_size=4, grad_accum=1, l_sft=0.0)


@pytest.fixture(scope="module")
def planted_model():
    return planted_fact_model()


@pytest.mark.parametrize("bad", ["False", 0, 1, None])
@pytest.mark.parametrize("call", ["edit", "finetune", "edit_sequential"])
def test_inplace_that_is_not_a_bool_is_refused_and_the_model_left_alone(planted_model, call, bad):
    p = planted_model
    before = snapshot(p.model)
    mask = Mask([p.lookup_mlp])
    with pytest.raises(TypeError, match=r"inplace takes True or False, got"):
        if call == "edit":
            edit(p.model, mask, p.task, config=CFG, inplace=bad, show_progress=False)
        elif call == "finetune":
            finetune(p.model, mask, p.task, config=CFG, inplace=bad)
        else:
            task = replace(p.task, chunks=(p.task.forget[:4], p.task.forget[4:]))
            edit_sequential(p.model, mask, task, config=CFG, inplace=bad)
    assert_unchanged(p.model, before)


def test_a_real_bool_still_works(planted_model):
    p = planted_model
    before = snapshot(p.model)
    res = edit(p.model, Mask([p.lookup_mlp]), p.task, config=CFG, inplace=False, show_progress=False)
    assert res.model is not p.model
    assert_unchanged(p.model, before)


@pytest.mark.parametrize("method", ["rome", "memit", "alphaedit"])
def test_the_value_editors_called_directly_refuse_a_non_bool_inplace(planted_model, method):
    import importlib

    p = planted_model
    before = snapshot(p.model)
    fn = getattr(importlib.import_module(f"factlens.editing.{method}"), method)
    with pytest.raises(TypeError, match=r"inplace takes True or False, got str 'False'"):
        fn(p.model, Mask([p.lookup_mlp]), p.task, inplace="False")
    assert_unchanged(p.model, before)
