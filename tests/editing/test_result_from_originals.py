"""EditResult.from_originals checks its originals against the model and the mask.

Accepted unchecked, a transposed copy (the right size, another shape) gave a delta whose mask
had the wrong shape: ``revert()`` failed with a bare IndexError and left the model edited. An
original of a parameter outside the mask was accepted, and ``apply()`` then called the result
"damaged". A whole-tensor original of a parameter the mask selects in part (a neuron's row)
made a result that ``apply()`` refused the same way.
"""

from __future__ import annotations

import copy

import pytest
import torch

from factlens.components import Component, Mask
from factlens.editing import EditConfig
from factlens.editing.result import EditResult
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def planted():
    return planted_fact_model(n_subjects=6)


def _halve(model, name: str, index=None) -> dict[str, torch.Tensor]:
    """Halve parameter ``name`` (only ``[index]`` if given) in place; the original, as from_originals wants it."""
    p = model.get_parameter(name)
    original = p.detach().clone()
    with torch.no_grad():
        if index is None:
            p.mul_(0.5)
        else:
            p[index] *= 0.5
    return {name: original}


def _from_originals(model, mask, originals) -> EditResult:
    return EditResult.from_originals(model, mask, originals, config=EditConfig(), objective="unlearn")


def test_an_original_of_another_shape_is_refused_naming_both_shapes(planted):
    name = f"blocks.{planted.lookup_layer}.mlp.W_out"
    W = planted.model.get_parameter(name)
    transposed = {name: W.detach().T.clone()}  # the same size, another shape
    with pytest.raises(ValueError, match=r"originals\['blocks\.1\.mlp\.W_out'\] has shape \(96, 64\) but the "
                                         r"parameter has shape \(64, 96\)"):
        _from_originals(planted.model, Mask([planted.lookup_mlp]), transposed)


def test_an_original_of_a_parameter_outside_the_mask_is_refused(planted):
    originals = _halve(planted.model, "blocks.0.attn.b_O")  # b_O belongs to no component
    with pytest.raises(ValueError, match=r"'blocks\.0\.attn\.b_O', a parameter the mask \(1 component\(s\)\) does "
                                         "not select"):
        _from_originals(planted.model, Mask([planted.lookup_mlp]), originals)


def test_changed_entries_outside_a_partly_selected_parameter_are_refused(planted):
    name = f"blocks.{planted.lookup_layer}.mlp.W_out"
    mask = Mask([Component("neuron", planted.lookup_layer, 3)])  # row 3 of W_out
    originals = _halve(planted.model, name, index=4)  # another neuron's row
    with pytest.raises(ValueError, match=r"changed entries of 'blocks\.1\.mlp\.W_out' outside its mask"):
        _from_originals(planted.model, mask, originals)


def test_a_neuron_edit_recorded_as_the_whole_tensor_applies_and_reverts(planted):
    name = f"blocks.{planted.lookup_layer}.mlp.W_out"
    mask = Mask([Component("neuron", planted.lookup_layer, 3)])
    fresh = copy.deepcopy(planted.model)
    originals = _halve(planted.model, name, index=3)
    edited = planted.model.get_parameter(name).detach().clone()
    res = _from_originals(planted.model, mask, originals)
    assert res.apply(fresh) is fresh  # refused as "the saved edit is damaged" before
    assert res.n_params_trained == 96 and res.n_changed > 0  # the neuron's row of W_out
    assert torch.equal(fresh.get_parameter(name), edited)
    res.revert(fresh)
    res.revert()
    assert torch.equal(planted.model.get_parameter(name), originals[name])
    assert torch.equal(fresh.get_parameter(name), originals[name])


def test_whole_tensors_of_the_mask_are_recorded_whole(planted):
    name = f"blocks.{planted.lookup_layer}.mlp.W_out"
    originals = _halve(planted.model, name)
    res = _from_originals(planted.model, Mask([planted.lookup_mlp]), originals)
    assert res.deltas[name].trains_all and res.n_params_trained == originals[name].numel()
    assert res.revert() is planted.model and torch.equal(planted.model.get_parameter(name), originals[name])
