"""The closed-form editors' shared plumbing: updates added to half-precision weights."""

from __future__ import annotations

import warnings

import pytest
import torch

from factlens.editing.memory_editing import ROUNDING_WARN, add_update, warn_rounding


def test_add_update_measures_what_bfloat16_rounds_away():
    """AlphaEdit's update on a bfloat16 model was almost entirely rounded away without a word."""
    W = torch.full((4, 8), 1e-2, dtype=torch.bfloat16)
    tiny = torch.full((4, 8), 1e-6)  # far below bfloat16's step at 1e-2 (about 6e-5)
    assert add_update(W, tiny) == pytest.approx(1.0)
    assert torch.equal(W, torch.full((4, 8), 1e-2, dtype=torch.bfloat16))
    big = torch.full((4, 8), 0.5)
    lost = add_update(W, big)
    assert 0 <= lost < 0.01 and torch.allclose(W.float(), torch.full((4, 8), 0.51), atol=4e-3)


def test_add_update_rounds_once_and_leaves_float32_as_before():
    W32 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    upd = 1e-3 * torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    expected = W32 + upd
    assert add_update(W32, upd) == 0.0 and torch.equal(W32, expected)  # float32: W += update, bit for bit
    Wb = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    exact = Wb.float() + upd
    add_update(Wb, upd)
    assert torch.equal(Wb, exact.bfloat16())  # the sum rounded once, not the update first


def test_warn_rounding_names_the_worst_layer():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_rounding({0: ROUNDING_WARN / 2}, method="MEMIT", dtype=torch.bfloat16, where="layer")  # silent
    with pytest.warns(RuntimeWarning, match=r"AlphaEdit: 97% of the update's norm .* \(layer 2;"):
        warn_rounding({1: 0.5, 2: 0.97}, method="AlphaEdit", dtype=torch.bfloat16, where="layer")


def test_rome_records_the_rounding_of_each_fact(planted_small_rome):
    res = planted_small_rome(torch.bfloat16)
    lost = [f["update_lost"] for f in res.meta["facts"]]
    assert len(lost) == len(res.meta["facts"]) > 0 and all(0 <= x < 1 for x in lost)
    res32 = planted_small_rome(torch.float32)
    assert all(f["update_lost"] == 0.0 for f in res32.meta["facts"])


@pytest.fixture
def planted_small_rome():
    import copy

    from factlens.editing.rome import RomeConfig, rome
    from factlens.testing import planted_fact_model

    p = planted_fact_model()

    def run(dtype):
        model = copy.deepcopy(p.model).to(dtype)
        cfg = RomeConfig(v_num_grad_steps=2, n_cov_tokens=200, cache_covariance=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rome(model, [p.lookup_mlp], p.task, config=cfg, inplace=True)

    return run


def test_closed_form_editors_refuse_scores_where_a_mask_belongs():
    """Scores iterate over their components now: passed as ROME's or MEMIT's mask, scores of MLPs
    would have edited every scored layer instead of being refused."""
    from factlens.editing.memory_editing import mask_mlp_layers
    from factlens.localization.controls import random_scores
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    scores = random_scores(p.model, p.dataset).restrict("mlp")
    with pytest.raises(TypeError, match=r"scores.to_mask\(param_budget=...\)"):
        mask_mlp_layers(scores, p.model, method="MEMIT")
    assert mask_mlp_layers(["L1.mlp", "L0.mlp"], p.model, method="MEMIT") == [0, 1]
    assert mask_mlp_layers("L1.mlp", p.model, method="ROME") == [1]


def test_a_rounding_warning_raised_as_an_error_restores_the_weights():
    """The warning came after the editors' restore guard: under warnings-as-errors an in-place
    AlphaEdit of a bfloat16 model raised and left its two W_out edited, with no record to revert."""
    import copy

    from factlens.components import Mask
    from factlens.data.records import FactDataset, FactRecord
    from factlens.editing.alphaedit import AlphaEditConfig, alphaedit
    from factlens.tasks import Task
    from factlens.testing.invariants import assert_unchanged, snapshot
    from factlens.testing.shaped import gemma3_shaped

    recs = (FactRecord("Question", "{} plays the sport of", "golf", target_new="sport", id="a"),
            FactRecord("Answer player", "Fact : {} is a", "golf", target_new="team sports", id="b"))
    ds = FactDataset(recs, name="x", candidates=("golf", "sport", "team sports"))
    task = Task("x", "inject", ds, ds.subset([]), ds.subset([]))
    torch.manual_seed(0)
    model = copy.deepcopy(gemma3_shaped(n_layers=4)).to(torch.bfloat16)
    before = snapshot(model)
    cfg = AlphaEditConfig(n_cov_tokens=2000, v_num_grad_steps=10, cache_covariance=False, prefix_lengths=((3, 2),))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="lost to rounding"):
            alphaedit(model, Mask.from_labels(["L1.mlp", "L2.mlp"]), task, config=cfg, inplace=True)
    assert_unchanged(model, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_update_refuses_a_non_finite_update_and_leaves_the_weight(dtype):
    """A NaN/inf update was added to W_out silently (ROME and AlphaEdit returned a NaN layer)."""
    W = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    before = W.clone()
    for bad in (float("nan"), float("inf")):
        upd = torch.zeros(4, 8, dtype=torch.float64)
        upd[1, 2] = bad
        with pytest.raises(FloatingPointError, match=r"the closed-form update has 1 non-finite \(NaN or infinite\) "
                                                     r"entries of 32; it was not written .* float32 copy"):
            add_update(W, upd)
        assert torch.equal(W, before)


@pytest.mark.parametrize("bad", [((5.7, 2.9),), (("10", "5"),), ((True, 3),), ((5, 2.0),)])
def test_prefix_lengths_must_be_integers(bad):
    """``int()`` made (5.7, 2.9) two 5-word prefixes and ("10", "5") five 10-word ones, without a word."""
    from factlens.editing.alphaedit import AlphaEditConfig
    from factlens.editing.memit import MemitConfig
    from factlens.editing.rome import RomeConfig

    for cls in (RomeConfig, MemitConfig, AlphaEditConfig):
        with pytest.raises(ValueError, match=rf"{cls.__name__}.prefix_lengths must be pairs of integers \(words, "
                                             r"count\), got .*; write whole numbers"):
            cls(prefix_lengths=bad)


def test_prefix_lengths_take_lists_and_numpy_integers_as_python_ints():
    import numpy as np

    from factlens.editing.rome import RomeConfig

    cfg = RomeConfig(prefix_lengths=[[np.int64(4), 2], (10, np.int32(0))])
    assert cfg.prefix_lengths == ((4, 2), (10, 0))
    assert all(type(x) is int for pair in cfg.prefix_lengths for x in pair)
    for bad in ((5, 10), "5,10", ((5, 10, 1),)):
        with pytest.raises(ValueError, match=r"RomeConfig.prefix_lengths must be \(words, count\) pairs"):
            RomeConfig(prefix_lengths=bad)
    with pytest.raises(ValueError, match="need words >= 1 and count >= 0"):
        RomeConfig(prefix_lengths=((0, 3),))
