"""The memory an edit's record holds: an all-True mask is one byte, new values one copy.

The non-localized edit trains every block tensor whole; its record used to hold a boolean
byte per parameter for masks that select everything (0.1 GB on Gemma 3 270M, 9 GB on
Gemma-2-9B) and allocated the new values twice for tensors stored transposed."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from factlens.components import Component, Mask
from factlens.editing import EditConfig, EditResult, edit
from factlens.editing.result import ParamDelta, flat_copy, full_mask
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = EditConfig(lr=1e-2, steps=2, batch_size=None, n_sft_chunks=4)
# a whole MLP (every tensor fully selected) and one head (slices of shared tensors)
MASK = Mask([Component("mlp", 1), Component("head", 0, 1)])


def _transpose_storage(model, name: str) -> None:
    """Store ``name`` transposed, as the runner's weight layout does (same values, other strides)."""
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        p.data = p.data.T.contiguous().T
    assert not p.is_contiguous()


@pytest.fixture()
def edited():
    p = planted_fact_model()
    _transpose_storage(p.model, "blocks.1.mlp.W_in")
    before = snapshot(p.model)
    res = edit(p.model, MASK, p.task, config=CFG, inplace=True)
    return p, before, res


def test_fully_selected_masks_hold_one_byte_and_partial_masks_stay_whole(edited):
    _, _, res = edited
    full = [n for n in res.deltas if n.startswith("blocks.1.mlp.")]
    assert full and all(res.deltas[n].mask.untyped_storage().nbytes() == 1 for n in full)
    assert all(bool(res.deltas[n].mask.all()) for n in full)
    partial = res.deltas["blocks.0.attn.W_Q"]
    assert not bool(partial.mask.all())
    assert partial.mask.untyped_storage().nbytes() == partial.mask.numel()


def test_new_and_old_values_are_row_major_copies_also_for_a_transposed_tensor(edited):
    p, before, res = edited
    params = dict(p.model.named_parameters())
    for name, d in res.deltas.items():
        now = params[name].detach()
        assert torch.equal(d.new, now[d.mask]), name  # row-major order of the masked entries
        assert torch.equal(d.old, before.state[name][d.mask]), name
        assert d.new.untyped_storage().data_ptr() != now.untyped_storage().data_ptr()
        assert d.new.untyped_storage().nbytes() == d.new.numel() * d.new.element_size()  # no larger buffer kept
    res.revert()
    assert_unchanged(p.model, before)


def test_a_full_mask_edit_saves_loads_and_reapplies_bitwise(edited, tmp_path):
    p, before, res = edited
    after = snapshot(p.model)
    res.save(tmp_path / "e.safetensors")
    res.revert()
    loaded = EditResult.load(tmp_path / "e.safetensors")
    assert all(loaded.deltas[n].mask.untyped_storage().nbytes() == 1 for n in loaded.deltas if ".mlp." in n)
    fresh = copy.deepcopy(p.model)
    loaded.apply(fresh)
    assert_unchanged(fresh, after)
    loaded.revert(fresh)
    assert_unchanged(fresh, before)


def test_param_delta_compacts_any_all_true_mask():
    m = torch.ones(3, 4, dtype=torch.bool)
    d = ParamDelta(m, torch.zeros(12), torch.ones(12))
    assert d.mask.untyped_storage().nbytes() == 1 and torch.equal(d.mask, m)
    part = torch.zeros(3, 4, dtype=torch.bool)
    part[0] = True
    assert ParamDelta(part, torch.zeros(4), torch.ones(4)).mask is part
    assert torch.equal(full_mask((2, 3)), torch.ones(2, 3, dtype=torch.bool))
    t = torch.arange(6.0).reshape(2, 3).T  # transposed view
    assert torch.equal(flat_copy(t), t.reshape(-1)) and flat_copy(t).is_contiguous()


def test_offloaded_record_reverts_saves_and_reapplies_bitwise(edited, tmp_path):
    p, before, res = edited
    after = snapshot(p.model)
    values = {n: (d.mask.clone(), d.old.clone(), d.new.clone()) for n, d in res.deltas.items()}
    moved = res.offload(tmp_path)
    assert moved == sum(d.old.numel() * 4 * 2 + (d.mask.numel() if not bool(d.mask.all()) else 0)
                        for d in res.deltas.values())
    assert list(tmp_path.iterdir()) == []
    for n, (m, old, new) in values.items():
        d = res.deltas[n]
        assert torch.equal(d.mask, m) and torch.equal(d.old, old) and torch.equal(d.new, new), n
    res.save(tmp_path / "e.safetensors")
    res.revert()
    assert_unchanged(p.model, before)
    loaded = EditResult.load(tmp_path / "e.safetensors")
    loaded.apply(p.model)
    assert_unchanged(p.model, after)
    loaded.revert()
    res.apply(p.model)  # the offloaded result applies again too
    assert_unchanged(p.model, after)


# --- edit(..., offload=folder): the editor's saved originals in a mapped file -------------------


def _file_backed(t: torch.Tensor) -> bool:
    """Whether ``t``'s memory lies in a mapping of a factlens temporary file (``/proc/self/maps``)."""
    addr = t.untyped_storage().data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            span, *rest = line.split()
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return ".factlens-mapped." in line
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_offloaded_originals_give_the_same_edit_bitwise_and_map_the_old_values(tmp_path):
    plain_p, mapped_p = planted_fact_model(), planted_fact_model()
    for p in (plain_p, mapped_p):
        _transpose_storage(p.model, "blocks.1.mlp.W_in")
    before = snapshot(mapped_p.model)
    plain = edit(plain_p.model, MASK, plain_p.task, config=CFG, inplace=True)
    mapped = edit(mapped_p.model, MASK, mapped_p.task, config=CFG, inplace=True, offload=tmp_path)
    assert_unchanged(mapped_p.model, snapshot(plain_p.model))  # the same edit, bit for bit
    assert [h["loss"] for h in mapped.history] == [h["loss"] for h in plain.history]
    for n, d in mapped.deltas.items():
        assert torch.equal(d.old, plain.deltas[n].old) and torch.equal(d.new, plain.deltas[n].new), n
        # whole tensors' old values are the mapped copies (no second copy); partial ones stay in memory
        assert _file_backed(d.old) == n.startswith("blocks.1.mlp."), n
    assert list(tmp_path.iterdir()) == []  # the file was unlinked at once
    mapped.revert()
    assert_unchanged(mapped_p.model, before)


def test_offload_to_a_missing_folder_is_refused_before_any_work(tmp_path):
    p = planted_fact_model()
    before = snapshot(p.model)
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        edit(p.model, MASK, p.task, config=CFG, inplace=True, offload=tmp_path / "nosuch")
    assert_unchanged(p.model, before)


def test_a_failed_edit_restores_from_offloaded_originals(tmp_path):
    p = planted_fact_model()
    before = snapshot(p.model)
    with pytest.raises(FloatingPointError):
        edit(p.model, MASK, p.task, config=EditConfig(lr=1e30, steps=3, batch_size=None, n_sft_chunks=4, clip_grad=None),
             inplace=True, offload=tmp_path)
    assert_unchanged(p.model, before)


def test_edit_passes_offload_only_to_methods_that_take_it(tmp_path):
    from factlens.editing.registry import EditMethod

    seen = {}

    def mine(model, mask, task, *, objective, config, inplace):  # a method of one's own, without offload
        seen["called"] = True
        return edit(model, mask, task, objective=objective, config=config, inplace=inplace)

    p = planted_fact_model()
    res = edit(p.model, MASK, p.task, method=EditMethod("mine", mine, ("inject",)), config=CFG, offload=tmp_path)
    assert seen["called"] and res.deltas


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_rome_offloads_its_original_bitwise(tmp_path):
    from factlens.editing.rome import RomeConfig

    p = planted_fact_model()
    before = snapshot(p.model)
    cfg = RomeConfig(v_num_grad_steps=4, prefix_lengths=((5, 3),), n_cov_tokens=1500, cache_covariance=False)
    plain = edit(p.model, Mask([Component("mlp", 1)]), p.task, method="rome", config=cfg)
    mapped = edit(p.model, Mask([Component("mlp", 1)]), p.task, method="rome", config=cfg, inplace=True,
                  offload=tmp_path)
    d = mapped.deltas["blocks.1.mlp.W_out"]
    assert _file_backed(d.old) and torch.equal(d.old, plain.deltas["blocks.1.mlp.W_out"].old)
    assert torch.equal(d.new, plain.deltas["blocks.1.mlp.W_out"].new)
    mapped.revert()
    assert_unchanged(p.model, before)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_sequential_editing_offloads_each_chunk_and_reverts_bitwise(tmp_path):
    from dataclasses import replace

    from factlens.editing.sequential import edit_sequential

    p = planted_fact_model()
    before = snapshot(p.model)
    task = replace(p.task, chunks=(p.task.forget[:4], p.task.forget[4:]))
    plain = edit_sequential(p.model, MASK, task, config=CFG)
    res = edit_sequential(p.model, MASK, task, config=CFG, inplace=True, offload=tmp_path)
    assert_unchanged(p.model, snapshot(plain.model))
    for r in res.results:  # every chunk's record, old and new values, lives in the mapped file
        assert all(_file_backed(d.old) and _file_backed(d.new) for d in r.deltas.values())
    res.revert()
    assert_unchanged(p.model, before)
