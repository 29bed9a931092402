"""EditResult.revert refuses, changing nothing, when a later edit (or any change) overwrote the
entries it wrote: reverting stacked edits out of order left the model edited without a word."""

from __future__ import annotations

import pytest
import torch

import factlens
from factlens.components import Mask
from factlens.editing import EditConfig
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:applying an edit")]  # stacked edits: expected

CFG = EditConfig(lr=1e-2, steps=1, batch_size=4, grad_accum=1, l_sft=0.0)


@pytest.fixture()
def two_edits():
    """A planted model (unedited) and two edits made on copies of it, both touching the lookup MLP."""
    p = planted_fact_model()
    a = factlens.edit(p.model, Mask([p.lookup_mlp, p.extraction_head]), p.task, config=CFG, show_progress=False)
    b = factlens.edit(p.model, Mask([p.lookup_mlp]), p.task, config=CFG.replace(lr=5e-2), show_progress=False)
    return p, a, b


def test_out_of_order_revert_is_refused_and_changes_nothing(two_edits):
    p, a, b = two_edits
    m, original = p.model, snapshot(p.model)
    a.apply(m)
    b.apply(m)
    both = snapshot(m)
    with pytest.raises(RuntimeError, match=r"blocks\.1\.mlp\.W_in.*another edit or change.*revert it first"):
        a.revert(m)
    assert_unchanged(m, both)
    assert a.is_applied_to(m) and b.is_applied_to(m)
    b.revert(m)  # the right order still restores the model bitwise
    a.revert(m)
    assert_unchanged(m, original)


def test_a_change_by_hand_after_apply_is_refused(two_edits):
    p, a, _ = two_edits
    m = p.model
    a.apply(m)
    with torch.no_grad():
        m.blocks[1].mlp.W_out.add_(1.0)
    changed = snapshot(m)
    with pytest.raises(RuntimeError, match="no longer hold its values"):
        a.revert()
    assert_unchanged(m, changed)


def test_stacked_edits_on_other_entries_revert_in_any_order(two_edits):
    p, a, _ = two_edits
    m, original = p.model, snapshot(p.model)
    c = factlens.edit(m, Mask([p.extraction_head]), p.task, config=CFG.replace(lr=3e-2), show_progress=False)
    mlp_only = factlens.edit(m, Mask([p.lookup_mlp]), p.task, config=CFG, show_progress=False)
    c.apply(m)
    mlp_only.apply(m)
    c.revert(m)  # the MLP edit did not touch the head's entries: nothing to undo first
    mlp_only.revert(m)
    assert_unchanged(m, original)


def test_the_same_edit_applied_twice_reverts_twice(two_edits):
    p, a, _ = two_edits
    m, original = p.model, snapshot(p.model)
    a.apply(m)
    a.apply(m)
    a.revert(m)
    a.revert(m)
    assert_unchanged(m, original)
