"""The quantization attack and the update-size measure in the checkpoint's weights when the
loader folded the RMS norms' scales into them (``factlens.models.fold_scales``)."""

from __future__ import annotations

import copy

import pytest
import torch

from factlens.components import Component, Mask, ModelShape
from factlens.editing import EditConfig, EditResult, ParamDelta
from factlens.evaluation.quantization import norm_scales_note, quantize_weight, quantized_copy
from factlens.evaluation.update_size import UpdateSizeConfig, update_sizes
from factlens.models import _FOLD_ATTR
from factlens.testing import tiny_model

NAME = "blocks.0.mlp.W_in"  # [d_model, d_mlp]: ln2's scale multiplies its rows (the input dimension)


def _scale(d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    s = torch.rand(d, generator=g) * 20 + 0.05  # Gemma's norm scales span 0 to ~120 within one matrix
    s[0] = 0.0  # a dimension the norm zeroes (19 of 11,520 on Gemma 3 270M)
    return s


def test_quantize_weight_with_a_scale_is_the_folded_checkpoint_quantization():
    W = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    s = _scale(16)
    folded = W * s[:, None]
    for scheme in ("int8", "nf4", "int4"):
        got = quantize_weight(NAME, folded, scheme, scale=s)
        unfolded = W.clone()
        unfolded[0] = 0.0  # the zeroed dimension has no checkpoint value to quantize (its weights stay as loaded)
        want = quantize_weight(NAME, unfolded, scheme) * s[:, None]
        torch.testing.assert_close(got[1:], want[1:], rtol=1e-5, atol=1e-6)
        assert torch.equal(got[0], folded[0])
    with pytest.raises(ValueError, match=r"norm scale of blocks.0.mlp.W_in has shape \(3,\); its input dimension is 16"):
        quantize_weight(NAME, folded, "nf4", scale=torch.ones(3))


def test_the_note_says_when_folded_weights_are_quantized_as_they_are():
    m = tiny_model()
    assert norm_scales_note(m) == "none folded" and quantized_copy(m, "nf4")[1]["norm_scales"] == "none folded"
    m.cfg.normalization_type = "RMSPre"  # norms folded by a loader that kept no record
    assert norm_scales_note(m).startswith("folded weights quantized")
    setattr(m, _FOLD_ATTR, {"blocks.0.ln2.w": torch.ones(m.cfg.d_model)})
    assert norm_scales_note(m) == "unfolded"


def _edit(model, name: str, mask: torch.Tensor, new: torch.Tensor) -> EditResult:
    W = dict(model.named_parameters())[name]
    old = W.detach()[mask].clone()
    with torch.no_grad():
        W[mask] = new[mask]
    return EditResult(model=model, mask=Mask([Component("mlp", 0)]), config=EditConfig(), objective="inject",
                      history=(), seconds=0.0, sft_kind="none", n_params_trained=int(mask.sum()),
                      deltas={name: ParamDelta(mask, old, W.detach()[mask].clone())}, shape=ModelShape.of(model))


def test_update_size_with_scales_is_the_update_of_the_checkpoint_weights():
    """An edit of the folded weights measured with the recorded scales equals the same edit of
    the checkpoint's weights measured without: bins and codes are the checkpoint's. A changed
    entry of a zeroed dimension (no checkpoint counterpart) is neither below half a bin nor
    erased."""
    plain = tiny_model()
    d = plain.cfg.d_model
    s = _scale(d)
    g = torch.Generator().manual_seed(2)
    W = plain.blocks[0].mlp.W_in.detach().clone()
    W[0] = 0.0
    with torch.no_grad():
        plain.blocks[0].mlp.W_in.copy_(W)
    folded = copy.deepcopy(plain)
    with torch.no_grad():
        folded.blocks[0].mlp.W_in.mul_(s[:, None])
    setattr(folded, _FOLD_ATTR, {"blocks.0.ln2.w": s})
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[1:9, :6] = True
    delta = torch.randn(W.shape, generator=g) * 10 ** (torch.rand(W.shape, generator=g) * 5 - 5)  # 1e-5 to 1
    cfg = UpdateSizeConfig(schemes=("int8", "nf4"))
    ref = update_sizes(_edit(plain, NAME, mask, W + delta), plain, config=cfg)
    got = update_sizes(_edit(folded, NAME, mask, (W + delta) * s[:, None]), folded, config=cfg)
    for key in ("below_half_int8", "erased_int8", "below_half_nf4", "erased_nf4"):
        assert got.totals[key] == pytest.approx(ref.totals[key]), key
    assert 0 < ref.totals["erased_nf4"] < 1  # the test discriminates
    off = update_sizes(_edit(copy.deepcopy(folded), NAME, mask, (W + delta) * s[:, None]), folded,
                       config=UpdateSizeConfig(schemes=("int8", "nf4"), unfold_norms=False))
    assert off.totals["erased_nf4"] != got.totals["erased_nf4"]  # the folded bins are other bins
    zero = torch.zeros_like(mask)
    zero[0, :4] = True  # the zeroed dimension, changed in the folded weights
    z = update_sizes(_edit(copy.deepcopy(folded), NAME, zero, folded.blocks[0].mlp.W_in.detach() + 1e-6), folded,
                     config=cfg)
    assert z.totals["n_changed"] == 4 and z.totals["below_half_nf4"] == 0.0 and z.totals["erased_nf4"] == 0.0
    # and they have no bin: the histogram drew them in its top bin, as huge updates
    assert sum(z.histograms["nf4"][NAME]) == 0 and sum(z.histograms["int8"][NAME]) == 0


def test_update_size_medians_of_an_even_count_are_the_mean_of_the_two_middle_values():
    """torch.median gives the lower middle value: two updates of 1e-3 and 3e-3 had a median of 1e-3
    (median_abs_delta and median_ratio_*); numpy.median's is their mean, 2e-3."""
    import numpy as np

    m = tiny_model()
    W = m.blocks[0].mlp.W_in.detach().clone()
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[0, :2] = True
    new = W.clone()
    new[0, 0] += 1e-3
    new[0, 1] += 3e-3
    cfg = UpdateSizeConfig(unfold_norms=False, schemes=("int8",))
    row = update_sizes(_edit(copy.deepcopy(m), NAME, mask, new), m, config=cfg).table[0]
    d = (new - W)[mask].double().abs()
    assert row["median_abs_delta"] == float(np.median(d.numpy())) == float((d[0] + d[1]) / 2)
    ratios = []  # each entry's ratio alone (the bins are the original weight's: edits do not move them)
    for j in range(2):
        one = torch.zeros_like(mask)
        one[0, j] = True
        alone = update_sizes(_edit(copy.deepcopy(m), NAME, one, new), m, config=cfg)
        ratios.append(alone.table[0]["median_ratio_int8"])
    assert ratios[0] != ratios[1] and row["median_ratio_int8"] == pytest.approx(sum(ratios) / 2, rel=1e-12)
    mask[0, 2] = True  # an odd count: the middle value, as before
    new[0, 2] += 2.5e-3
    row = update_sizes(_edit(copy.deepcopy(m), NAME, mask, new), m, config=cfg).table[0]
    assert row["median_abs_delta"] == float((new - W)[0, 2].double().abs())


def test_the_median_helper_matches_numpy_beyond_the_size_torch_quantile_takes():
    """torch.quantile refuses more than 2**24 entries (an edited matrix of a 9B model has more)."""
    import numpy as np

    from factlens.evaluation.update_size import _median

    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 6, 2**24 + 2):
        x = torch.rand(n, generator=g, dtype=torch.float64)
        assert _median(x) == float(np.median(x.numpy())), n
    assert _median(torch.tensor([1.0, float("inf"), float("inf")])) == float("inf")
    assert np.isnan(_median(torch.tensor([1.0, float("nan"), 3.0, 2.0])))  # kthvalue alone would say 2.5
