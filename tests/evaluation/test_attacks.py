"""Attack suites: quantization, update size, fine-tuning on unrelated data, direction ablation, damage flags."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os

import numpy as np
import pytest

from factlens.stats import wilson_interval
import torch

from factlens.components import Mask, ModelShape, project_out_hook, resid_hook
from factlens.data.records import FactDataset
from factlens.editing import EditConfig, EditResult, ParamDelta
from factlens.evaluation import evaluate
from factlens.evaluation.attacks import TaskScores, attack_damage, score_task
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.direction_ablation import (DirectionAblationConfig, ablation_layers, fact_folds,
                                                  mean_difference_directions,
                                                  run_direction_ablation)
from factlens.evaluation.quantization import (INT4_CODE, NF4_CODE, QuantizationConfig, _bnb_matrix, bin_widths,
                                            from_linear_view, linear_view, quantize_matrix, quantize_weight,
                                            quantized_copy, quantized_params, run_quantization, quantize_codes)
from factlens.evaluation.unrelated_finetune import UnrelatedFinetuneConfig, finetune_data, run_unrelated_finetune
from factlens.evaluation.update_size import UpdateSizeConfig, run_update_size, update_sizes
from factlens.tasks import Task, full_sports_editing
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.testing.planted import ATTRIBUTES, SPORTS

pytestmark = pytest.mark.usefixtures("one_thread")

GOLF_EDIT = 3.0  # added to the golf weight of each forget subject's lookup neuron
DEAD_NEURON, DEAD_WEIGHT = 63, 100.0


# -- reference values ------------------------------------------------------------------------
def test_nf4_code_book_is_the_normal_quantile_construction():
    """NF4 (QLoRA): 8 positive and 7 negative standard-normal quantiles between offset 0.9677083 and 1/2,
    plus an exact zero, divided by the largest (bitsandbytes' create_normal_map)."""
    from scipy.stats import norm

    offset = 0.9677083
    pos = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    v = np.sort(np.concatenate([pos, [0.0], neg]))
    v = v / np.abs(v).max()
    assert len(NF4_CODE) == 16 and NF4_CODE[7] == 0.0
    np.testing.assert_allclose(NF4_CODE, v, atol=1e-7)
    assert INT4_CODE[0] == -1.0 and INT4_CODE[7] == 0.0 and len(INT4_CODE) == 15


def test_hand_quantized_block():
    x = torch.zeros(1, 64)
    x[0, :6] = torch.tensor([4.0, -2.2, 1.0, 0.3, -0.3, 0.01])  # absmax 4; scaled 1, -.55, .25, .075, -.075, .0025
    nf4 = quantize_matrix(x, "nf4", block_size=64)[0, :6]
    # nearest code: 1.0, -0.5251 (not -0.6962), 0.2461, 0.0796 (midpoint to 0 is 0.0398), -0.0911, 0.0
    expect = torch.tensor([1.0, -0.5250730514526367, 0.24611230194568634, 0.07958029955625534, -0.09105003625154495,
                           0.0]) * 4
    torch.testing.assert_close(nf4, expect, rtol=0, atol=1e-6)
    int4 = quantize_matrix(x, "int4", block_size=64)[0, :6]  # round(scaled * 7) / 7 * 4
    torch.testing.assert_close(int4, torch.tensor([7, -4, 2, 1, -1, 0]) / 7 * 4, rtol=0, atol=1e-6)
    int8 = quantize_matrix(x, "int8")[0, :6]  # round(x * 127 / 4) * 4 / 127
    torch.testing.assert_close(int8, torch.tensor([127, -70, 32, 10, -10, 0]) * 4 / 127, rtol=0, atol=1e-6)
    # bins: around code 0.0796 the NF4 bin spans the midpoints 0.0398 .. 0.1203 (times absmax 4)
    w = bin_widths(x, "nf4", block_size=64)[0]
    assert float(w[3]) == pytest.approx(((0.16093020141124725 - 0.0) / 2) * 4, abs=1e-6)
    assert float(bin_widths(x, "int8")[0, 0]) == pytest.approx(4 / 127)


def test_blocks_span_rows_and_keep_a_partial_last_block():
    m = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))  # 150 = 2 blocks of 64 + 22
    q = quantize_matrix(m, "nf4", block_size=64)
    flat, qf = m.reshape(-1), q.reshape(-1)
    for sl in (slice(0, 64), slice(64, 128), slice(128, 150)):
        am = flat[sl].abs().max()
        assert qf[sl].abs().max() == pytest.approx(float(am))  # the block maximum is a code value (+-1)
        codes = torch.tensor(NF4_CODE) * am
        assert all(torch.isclose(codes, v, atol=1e-6).any() for v in qf[sl])


#: Matrix shapes for the bitsandbytes comparisons: rows of a multiple of the block size (every
#: weight of the supported models), a row shorter than a block, rows not a multiple of 16.
_BNB_SHAPES = [(64, 64), (32, 128), (3, 320), (7, 50), (4, 100)]


def _need_bitsandbytes(module: str = "bitsandbytes"):
    """The module, or a skip where bitsandbytes is not installed; ``make test`` runs these tests
    once more with bitsandbytes beside the venv and ``FACTLENS_TEST_BITSANDBYTES=1``, where a
    missing bitsandbytes is a failure, not a skip."""
    if os.environ.get("FACTLENS_TEST_BITSANDBYTES") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def _bnb_or_skip(m, scheme):
    try:
        return _bnb_matrix(m, scheme, 64)
    except (RuntimeError, NotImplementedError) as e:  # no bitsandbytes backend on this device
        pytest.skip(f"bitsandbytes cannot quantize on {m.device}: {e}")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_same_weights_as_bitsandbytes(scheme, device):
    _need_bitsandbytes()
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(1)
    for shape in _BNB_SHAPES + ([(32, 96), (8, 48)] if scheme == "int8" or device == "cuda" else []):
        m = (torch.randn(shape, generator=g) * 0.05).to(device)
        assert torch.equal(quantize_matrix(m, scheme, block_size=64), _bnb_or_skip(m, scheme)), shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_is_what_bitsandbytes_stores_when_loading_in_8_bits(dtype):
    """LLM.int8() loading (bitsandbytes' Int8Params) quantizes the float16-rounded weights;
    factlens's int8 gives the same codes and weights (it quantized the float32 values before,
    about 1 % of the codes apart, and its bitsandbytes backend failed on CUDA)."""
    bnb = _need_bitsandbytes()
    bf = _need_bitsandbytes("bitsandbytes.functional")
    g = torch.Generator().manual_seed(3)
    for shape in _BNB_SHAPES + [(48, 256)]:
        M = (torch.randn(shape, generator=g) * 0.05).to(dtype)
        p = bnb.nn.Int8Params(M.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")  # quantizes
        assert torch.equal(quantize_codes(M, "int8", block_size=64), p.CB.int()), shape
        assert torch.equal(quantize_matrix(M, "int8", block_size=64), bf.int8_vectorwise_dequant(p.CB, p.SCB).to(dtype))
        assert torch.equal(_bnb_matrix(M, "int8", 64), quantize_matrix(M, "int8", block_size=64))


def test_int8_quantizes_the_float16_weights():
    M = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * 0.05
    M16 = M.half().float()
    codes = quantize_codes(M, "int8")
    assert torch.equal(codes, quantize_codes(M16, "int8"))
    assert torch.equal(quantize_matrix(M, "int8"), quantize_matrix(M16, "int8"))
    assert torch.equal(bin_widths(M, "int8"), bin_widths(M16, "int8"))
    own = torch.round(M * (127.0 / M.abs().amax(1, keepdim=True))).int()  # the float32 codes differ somewhere
    assert 0 < int((own != codes).sum()) < M.numel() // 20
    with pytest.raises(ValueError, match=r"beyond float16's range .*nf4"):
        quantize_matrix(torch.tensor([[7.0e4, 1.0]]), "int8")
    with pytest.raises(ValueError, match=r"NaN or inf"):  # an inf elsewhere: refused for itself
        quantize_matrix(torch.tensor([[float("inf"), 1.0], [7.0e4, 1.0]]), "int8")
    assert torch.equal(quantize_matrix(torch.tensor([[65519.0, 1.0]]), "int8"), torch.tensor([[65504.0, 0.0]]))


@pytest.mark.parametrize("scheme", ["int8", "nf4", "int4"])
def test_weights_with_nan_or_inf_are_refused_by_name(scheme):
    """A NaN in a row used to give that row as zeros under int8 (bitsandbytes gives NaN) and NaN
    codes under the block schemes: the attack scored a model that was not the one given."""
    M = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    for bad in (float("nan"), float("inf")):
        D = M.clone()
        D[2, 5] = bad
        for fn in (quantize_matrix, quantize_codes, bin_widths):
            with pytest.raises(ValueError, match=r"has 1 NaN or inf entries.*reload the model"):
                fn(D, scheme)
    m = tiny_model()
    name = "blocks.1.mlp.W_in"
    with torch.no_grad():
        m.get_parameter(name)[0, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"weight {name} has 1 NaN or inf"):
        quantized_copy(m, scheme)


def test_update_size_refuses_a_damaged_weight_by_name(sub_bin):
    p, orig, edited, task, er, name = sub_bin
    damaged = copy.deepcopy(edited)
    with torch.no_grad():
        w = damaged.get_parameter(name)
        free = (~er.deltas[name].mask.reshape(w.shape).to(w.device)).nonzero()[0]  # an entry the edit left alone
        w[tuple(free.tolist())] = float("inf")
    with pytest.raises(ValueError, match=rf"weight {name} \(its values before the edit\) has 1 NaN or inf"):
        update_sizes(er, damaged)
    d = er.deltas[name]  # an edit whose new values hold a NaN: named as such (the codes took it unnamed before)
    bad = d.new.clone()
    bad[0] = float("nan")
    diverged = dataclasses.replace(er, deltas={**er.deltas, name: dataclasses.replace(d, new=bad)})
    with pytest.raises(ValueError, match=rf"weight {name} \(its values after the edit\) has 1 NaN or inf"):
        update_sizes(diverged, edited)


@pytest.mark.parametrize("shape", [(32, 96), (8, 48), (5, 80)])
def test_nf4_codes_and_scales_are_bitsandbytes_own_where_its_cpu_kernel_reads_other_scales(shape):
    """bitsandbytes 0.50's CPU kernel dequantizes rows whose length is a multiple of 16 but not
    of 64 with other blocks' scales than its own quantization used; factlens keeps the blocks
    of the quantization (as bitsandbytes' CUDA kernel does) and its backend warns."""
    bf = _need_bitsandbytes("bitsandbytes.functional")
    m = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 0.05
    packed, state = bf.quantize_4bit(m.contiguous(), blocksize=64, quant_type="nf4")
    b = packed.reshape(-1)
    codes = torch.stack([b >> 4, b & 0xF], dim=1).reshape(-1)[:m.numel()].long()
    own_blocks = (torch.tensor(NF4_CODE)[codes] * state.absmax.repeat_interleave(64)[:m.numel()]).reshape(shape)
    assert torch.equal(quantize_matrix(m, "nf4", block_size=64), own_blocks)
    kernel = bf.dequantize_4bit(packed, state)
    if torch.equal(kernel, own_blocks):  # a bitsandbytes whose CPU kernel follows its own blocks
        return
    with pytest.warns(UserWarning, match="other blocks' scales"):
        got = _bnb_matrix(m, "nf4", 64)
    assert torch.equal(got, kernel)  # bitsandbytes' own output, with the warning


def test_bitsandbytes_backend_gives_the_same_copy():
    _need_bitsandbytes()
    m = tiny_model(variant="gqa_gated", d_model=64, d_head=16, d_mlp=128)  # rows of 64 or 128 weights
    a, _ = quantized_copy(m, "nf4")
    b, _ = quantized_copy(m, "nf4", backend="bitsandbytes")
    for (n, x), (_, y) in zip(quantized_params(a), quantized_params(b)):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("variant", ["standard", "gqa_gated"])
def test_linear_view_round_trip_and_orientation(variant):
    m = tiny_model(variant=variant)
    names = []
    for name, p in quantized_params(m):
        v = linear_view(name, p)
        assert torch.equal(from_linear_view(name, v, p.shape), p)
        names.append(name.split(".")[-1])
    assert {"W_Q", "W_O", "W_in", "W_out"} <= set(names)
    assert ("W_gate" in names) == (variant == "gqa_gated") and ("_W_K" in names) == (variant == "gqa_gated")
    W = m.blocks[0].mlp.W_in  # [d_model, d_mlp] -> up_proj.weight [d_mlp, d_model]: row = one neuron's input weights
    assert torch.equal(linear_view("blocks.0.mlp.W_in", W)[3], W[:, 3])


# -- a planted edit below half an NF4 bin ------------------------------------------------------
@pytest.fixture(scope="module")
def sub_bin():
    """Planted model with a dead lookup neuron holding a large golf weight (it sets that row's absmax to 100,
    so the golf row's NF4 bins are ~8.5 wide near 0), and an edit that adds 3.0 to the golf weight of each
    forget subject's neuron: enough to make golf win in float, less than half the NF4 bin of the original
    weight (but more than half an int8 step, 100/127)."""
    p = planted_fact_model()
    orig = copy.deepcopy(p.model)
    golf = p.layout["attr"]["golf"]
    mlp = orig.blocks[p.lookup_layer].mlp
    with torch.no_grad():
        mlp.b_in[DEAD_NEURON] = -10.0  # never fires
        mlp.W_out[DEAD_NEURON, golf] = DEAD_WEIGHT
    task = full_sports_editing(p.dataset, sport="basketball", target="golf", n_forget=8, seed=0)
    edited = copy.deepcopy(orig)
    ids = [int(r.id) for r in task.forget]  # neuron i belongs to subject i
    name = f"blocks.{p.lookup_layer}.mlp.W_out"
    mask = torch.zeros_like(mlp.W_out, dtype=torch.bool)
    mask[ids, golf] = True
    W = edited.blocks[p.lookup_layer].mlp.W_out
    old = W.detach()[mask].clone()
    with torch.no_grad():
        W[ids, golf] += GOLF_EDIT
    er = EditResult(model=edited, mask=Mask([p.lookup_mlp]), config=EditConfig(), objective="inject", history=(),
                    seconds=0.0, sft_kind="none", n_params_trained=int(mask.sum()),
                    deltas={name: ParamDelta(mask, old, W.detach()[mask].clone())}, shape=ModelShape.of(edited))
    return p, orig, edited, task, er, name


def test_sub_bin_edit_works_in_float(sub_bin):
    p, orig, edited, task, _, _ = sub_bin
    s, o = score_task(edited, task, EvalConfig()), score_task(orig, task, EvalConfig())
    assert o.accuracy("forget") == 1.0 and o.accuracy("maintain") == 1.0
    assert s.accuracy("forget") == 0.0 and s.accuracy("edit") == 1.0 and s.accuracy("maintain") == 1.0


def test_quantization_rounds_a_sub_bin_edit_away(sub_bin):
    p, orig, edited, task, _, name = sub_bin
    snaps = snapshot(edited), snapshot(orig)
    W_e, W_o = dict(edited.named_parameters())[name], dict(orig.named_parameters())[name]
    for scheme in ("nf4", "int4"):  # the quantized edited weight IS the quantized original weight
        assert torch.equal(quantize_weight(name, W_e, scheme), quantize_weight(name, W_o, scheme))
    assert not torch.equal(quantize_weight(name, W_e, "int8"), quantize_weight(name, W_o, "int8"))
    r = run_quantization(edited, task, original=orig)
    for scheme in ("nf4", "int4"):
        assert r[f"quant_{scheme}_forget_accuracy"].value == 1.0  # every true answer is back
        assert r[f"quant_{scheme}_forget_recovery"].value == 1.0
        assert r[f"quant_{scheme}_edit_accuracy"].value == 0.0
        assert r[f"quant_{scheme}_maintain_accuracy"].value == 1.0
        assert r[f"quant_{scheme}_forget_accuracy"].baseline == 1.0  # control: the quantized original knows them
        assert r.extra["schemes"][scheme]["attack_damage"]["damaged"] is False
    assert r["quant_int8_forget_accuracy"].value == 0.0 and r["quant_int8_forget_recovery"].value == 0.0
    assert r.extra["damaged"] == []
    rows = {row["record_id"]: row for row in r.per_fact}
    assert len(rows) == len(task.forget) + len(task.maintain)
    for f in task.forget:  # exactly the original's answers: quantized edited == quantized original per fact
        assert rows[f.id]["quant_nf4_answer_wins"] == rows[f.id]["baseline_quant_nf4_answer_wins"] == 1.0
        assert rows[f.id]["before_answer_wins"] == 0.0
    for m, snap in zip((edited, orig), snaps):
        assert_unchanged(m, snap)


def test_update_size_of_a_sub_bin_edit(sub_bin):
    p, orig, edited, task, er, name = sub_bin
    u = update_sizes(er, edited)
    (row,) = u.table
    assert row["param"] == name and row["component"] == "L1.mlp" and row["n_changed"] == 8 and row["quantized"]
    # NF4 bin of 0 in a block with absmax 100: (0.0398 + 0.0455) * 100 = 8.53; 3 / 8.53 = 0.35
    assert row["median_ratio_nf4"] == pytest.approx(GOLF_EDIT / ((NF4_CODE[8] - NF4_CODE[6]) / 2 * DEAD_WEIGHT), rel=0.01)
    assert row["below_half_nf4"] == 1.0 and row["erased_nf4"] == 1.0
    assert row["below_half_int4"] == 1.0 and row["erased_int4"] == 1.0
    assert row["below_half_int8"] == 0.0 and row["erased_int8"] == 0.0  # int8 step 100 / 127 < 3
    assert sum(u.histograms["nf4"][name]) == 8
    r = run_update_size(edited, task, edit_result=er)
    assert r["update_below_half_bin_nf4"].value == 1.0 and r["update_erased_int8"].value == 0.0
    assert r["update_erased_nf4"].n == 8 and r["update_erased_nf4"].unit == "entries"
    fig = u.plot("nf4")
    assert len(fig.data) == 1 and sum(fig.data[0].y) == pytest.approx(1.0)
    from factlens.evaluation.plots import update_size_histogram

    assert len(update_size_histogram(r, scheme="int8").data) == 1
    with pytest.raises(ValueError, match="model="):
        update_sizes(dataclasses.replace(er, model=None))


def test_an_update_of_every_weight_below_the_bin_counts_as_erased():
    """An unlearning-size update (1e-5) of EVERY weight of a matrix: every entry keeps its NF4 code,
    but each block's absmax moved by ~6e-5 relative, so the dequantized values all differ slightly and
    ``erased`` (exact equality of dequantized values) was 0.13 beside ``below_half`` 1.0."""
    from factlens.editing.result import ParamDelta, full_mask
    from factlens.evaluation.quantization import quantize_codes

    m = tiny_model()
    name = "blocks.1.mlp.W_in"
    p = dict(m.named_parameters())[name].detach()
    old = p.reshape(-1).clone()
    new = old + torch.randn(old.shape, generator=torch.Generator().manual_seed(0)) * 1e-5

    class Edit:  # the two fields update_sizes reads
        model, deltas = m, {name: ParamDelta(full_mask(p.shape), old, new)}

        def check_compatible(self, model):
            pass

    u = update_sizes(Edit(), m, config=UpdateSizeConfig(schemes=("nf4", "int4")))
    for s in ("nf4", "int4"):
        assert u.totals[f"below_half_{s}"] == 1.0 and u.totals[f"erased_{s}"] == 1.0
        view = linear_view(name, new.reshape(p.shape))
        assert torch.equal(quantize_codes(linear_view(name, p), s), quantize_codes(view, s))


# -- direction ablation ------------------------------------------------------------------------
U_EDIT = 4.0


@pytest.fixture(scope="module")
def suppressed():
    """An edit that works through ONE direction: each forget subject's lookup neuron also writes U_EDIT * 0.5
    into an unused residual dim U; head 2.1 reads U and writes +3 per unit into MOVED_golf, so golf wins."""
    p = planted_fact_model()
    ds = p.dataset.with_candidates(SPORTS + ("golf",))
    forget, rest = ds.split(8, seed=0)
    forget = forget.map(lambda r: dataclasses.replace(r, target_new="golf"))
    retain, maintain = rest.split(20, seed=0)
    task = Task("suppressed", "inject", forget, retain, maintain, seed=0)
    U = p.layout["moved"]["golf"] + 1  # first unused dim
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out[[int(r.id) for r in forget], U] += U_EDIT
        att = edited.blocks[2].attn
        att.W_V[1, U, len(ATTRIBUTES)] += 1.0
        att.W_O[1, len(ATTRIBUTES), p.layout["moved"]["golf"]] += 3.0
    return p, edited, task, U


def test_project_out_hook_removes_a_planted_direction(suppressed):
    p, edited, task, U = suppressed
    d = torch.zeros(edited.cfg.d_model)
    d[U] = 1.0
    toks = edited.to_tokens([r.prompt for r in task.forget])
    _, cache = edited.run_with_cache(toks, names_filter=resid_hook(1, "post"))
    assert cache[resid_hook(1, "post")][..., U].abs().max() > 1.0  # the edit writes U
    name, fn = project_out_hook(1, d * 5)
    with edited.hooks(fwd_hooks=[(name, fn)]):
        _, cache = edited.run_with_cache(toks, names_filter=resid_hook(1, "post"))
    assert cache[resid_hook(1, "post")][..., U].abs().max() < 1e-6
    assert no_hooks(edited)
    with pytest.raises(ValueError, match="non-zero"):
        project_out_hook(1, torch.zeros(3))


def test_direction_ablation_finds_and_removes_the_suppression(suppressed):
    p, edited, task, U = suppressed
    snaps = snapshot(edited), snapshot(p.model)
    assert score_task(edited, task, EvalConfig()).accuracy("forget") == 0.0
    dirs = mean_difference_directions(edited, task.forget, task.retain, layers=[1])
    d = dirs[0] / np.linalg.norm(dirs[0])
    assert abs(d[U]) > 0.9  # the forget-vs-retain mean difference is (mostly) the planted direction
    mask = Mask([p.lookup_mlp])
    # the edit's shift (edited minus unedited activations on the forget prompts) is the planted direction
    # exactly: fitted on 4 facts it removes the suppression from the other 4, in both folds
    shift = DirectionAblationConfig(direction="edit_shift")
    r = run_direction_ablation(edited, task, original=p.model, mask=mask, direction_ablation_config=shift)
    assert r.extra["layers"] == [0, 1, 2, 3] and [f["n_held_out"] for f in r.extra["folds"]] == [4, 4]
    assert r["ablation_forget_accuracy"].value == 1.0 and r["ablation_forget_recovery"].value == 1.0
    assert r["ablation_edit_accuracy"].value == 0.0 and r["ablation_maintain_accuracy"].value == 1.0
    assert all(f["layer"] in (1, 2) for f in r.extra["folds"])
    # each fact is scored under a direction and variant chosen without it: plain Wilson intervals, paired
    fa = r["ablation_forget_accuracy"]
    assert not fa.selected and fa.ci_method == "wilson" and (fa.ci_low, fa.ci_high) == pytest.approx(wilson_interval(8, 8))
    assert not r["ablation_edit_accuracy"].selected and not r["ablation_forget_recovery"].selected
    assert fa.baseline == 1.0 and r.extra["attack_damage"]["damaged"] is False  # the control loses nothing
    # the default forget-vs-retain direction fitted on 4 subjects also carries their own features: on the
    # 4 held out it brings back fewer than on the facts that fitted and chose it (the optimism folds=1 has)
    held = run_direction_ablation(edited, task, original=p.model, mask=mask)
    inside = run_direction_ablation(edited, task, original=p.model, mask=mask,
                                    direction_ablation_config=DirectionAblationConfig(folds=1))
    assert inside["ablation_forget_accuracy"].value == 1.0 > held["ablation_forget_accuracy"].value >= 0.5
    # folds=1 chooses on the facts it scores: marked selected, the forget accuracy with the interval of a maximum
    fa = inside["ablation_forget_accuracy"]
    assert fa.selected and fa.ci_method == "wilson-max" and inside["ablation_forget_recovery"].selected
    assert fa.ci_low < wilson_interval(8, 8)[0]
    ea = inside["ablation_edit_accuracy"]
    assert ea.selected and ea.ci_method == "wilson-selected" and not inside["ablation_maintain_accuracy"].selected
    for m, snap in zip((edited, p.model), snaps):
        assert_unchanged(m, snap)
    assert ablation_layers(edited, mask=None) == [0, 1, 2, 3]
    # every mask faces directions fitted at every layer; "from_mask" (before) started at the mask's first layer
    late = Mask([c for c in mask if c.layer == max(x.layer for x in mask)])
    st = DirectionAblationConfig(folds=1, positions=("final",), random_control=False)
    every = run_direction_ablation(edited, task, original=p.model, mask=late, direction_ablation_config=st)
    old = run_direction_ablation(edited, task, original=p.model, mask=late,
                                 direction_ablation_config=st.replace(search_layers="from_mask"))
    assert every.extra["layers"] == [0, 1, 2, 3] and old.extra["layers"] == list(range(min(c.layer for c in late), 4))
    with pytest.raises(ValueError, match="do not exist"):
        ablation_layers(edited, layers=[7])


def test_direction_ablation_scope_every_layer_removes_more(suppressed):
    """The edit also writes U a second time, in layer 2's MLP, and head 3.1 reads it there and votes golf
    as head 2.1 does. The edit's shift at layer 1 (subject position) is U; removed at layer 1 only, layer 2
    writes it back and head 3.1 still suppresses every fact; removed from every residual read (Arditi et
    al.'s ablation), nothing reads it and all 8 come back."""
    p, edited, task, U = suppressed
    twice = copy.deepcopy(edited)
    golf = p.layout["moved"]["golf"]
    with torch.no_grad():
        mlp, att = twice.blocks[2].mlp, twice.blocks[3].attn
        for r in task.forget:  # a layer-2 neuron per forget subject, firing on its token, writing U
            i = int(r.id)
            mlp.W_in[i, i] += 1.0
            mlp.b_in[i] -= 0.5
            mlp.W_out[i, U] += U_EDIT
        ref = p.model.blocks[2].attn  # head 3.1 attends from the query to the subject as head 2.1 does
        att.W_Q[1] += ref.W_Q[1]
        att.W_K[1] += ref.W_K[1]
        att.W_V[1, U, len(ATTRIBUTES)] += 1.0
        att.W_O[1, len(ATTRIBUTES), golf] += 3.0
    at1 = dict(direction="edit_shift", layers=(1,), positions=("subject_last",), folds=1)
    one = run_direction_ablation(twice, task, original=p.model,
                                 direction_ablation_config=DirectionAblationConfig(scope="layer", **at1))
    every = run_direction_ablation(twice, task, original=p.model, direction_ablation_config=DirectionAblationConfig(**at1))
    assert one["ablation_forget_accuracy"].value == 0.0 and every["ablation_forget_accuracy"].value == 1.0
    assert every["ablation_maintain_accuracy"].value == 1.0 and every.extra["attack_damage"]["damaged"] is False
    assert no_hooks(twice) and no_hooks(p.model)


def test_project_out_everywhere_hooks_clear_every_residual_read(suppressed):
    from factlens.components import project_out_everywhere_hooks

    p, edited, task, U = suppressed
    d = torch.zeros(edited.cfg.d_model)
    d[U] = 1.0
    hooks = project_out_everywhere_hooks(d * 2, edited.cfg)
    n = edited.cfg.n_layers
    assert [h for h, _ in hooks][-1] == resid_hook(n - 1, "post") and len(hooks) == 2 * n + 1
    toks = edited.to_tokens([r.prompt for r in task.forget])
    names = [h for h, _ in hooks]
    with edited.hooks(fwd_hooks=hooks):
        _, cache = edited.run_with_cache(toks, names_filter=lambda name: name in names)
    assert max(float(cache[h][..., U].abs().max()) for h in names) < 1e-6
    assert no_hooks(edited)


def test_direction_ablation_control_flags_a_direction_that_carries_the_answers(suppressed):
    """An "edit" that changed nothing: the forget-vs-retain direction is the unedited model's own, which
    carries the answers at the final position of layers 2-3: removing it costs the control 8 of 20
    maintain facts and the suite flags it. Its edit shift is zero: nothing is removed."""
    p, _, task, _ = suppressed
    same = copy.deepcopy(p.model)
    final = DirectionAblationConfig(positions=("final",), layers=(2, 3))
    r = run_direction_ablation(same, task, original=p.model, direction_ablation_config=final)
    assert r["ablation_maintain_accuracy"].baseline == 0.6 and r.extra["attack_damage"]["damaged"] is True
    zero = run_direction_ablation(same, task, original=p.model,
                                  direction_ablation_config=dataclasses.replace(final, direction="edit_shift"))
    assert zero["ablation_forget_recovery"].value == 0.0 and zero["ablation_maintain_accuracy"].value == 1.0
    assert zero.extra["attack_damage"]["damaged"] is False


def test_fact_folds_keep_the_facts_of_a_subject_in_one_fold(suppressed, monkeypatch):
    ids = [f"f{i}" for i in range(10)]
    subjects = [f"s{i // 2}" for i in range(10)]  # two facts per subject
    for seed in range(10):
        parts = fact_folds(ids, 3, seed=seed, subjects=subjects)
        fold_of = {f: k for k, part in enumerate(parts) for f in part}
        assert sorted(fold_of) == sorted(ids) and all(parts)
        assert all(fold_of[f"f{2 * s}"] == fold_of[f"f{2 * s + 1}"] for s in range(5)), seed
        # one fact per subject: the folds are the seeded permutation cut in near-equal parts, as before
        order = np.random.default_rng(seed).permutation(10)
        assert fact_folds(ids, 3, seed=seed, subjects=ids) == fact_folds(ids, 3, seed=seed) == [
            tuple(ids[i] for i in sorted(part)) for part in np.array_split(order, 3)]
    with pytest.raises(ValueError, match="about 2 subjects in 3 folds"):
        fact_folds(ids[:4], 3, seed=0, subjects=subjects[:4])
    # a subject too big for one fold does not leave a fold empty while subjects remain for it
    for seed in range(10):
        assert all(fact_folds(ids[:6], 3, seed=seed, subjects=list("aaaabc")))
    # the suite passes the forget facts' subjects
    import factlens.evaluation.direction_ablation as da
    seen = []
    monkeypatch.setattr(da, "fact_folds", lambda *a, **k: seen.append(k.get("subjects")) or fact_folds(*a, **k))
    p, edited, task, _ = suppressed
    run_direction_ablation(edited, task, direction_ablation_config=DirectionAblationConfig(layers=(3,)))
    assert seen == [[r.subject for r in task.forget]]


def test_direction_ablation_checks_its_inputs(suppressed):
    p, edited, task, _ = suppressed
    with pytest.raises(ValueError, match="pass original="):
        run_direction_ablation(edited, task, direction_ablation_config=DirectionAblationConfig(direction="edit_shift"))
    with pytest.raises(ValueError, match="every fold needs a fact"):
        run_direction_ablation(edited, task, direction_ablation_config=DirectionAblationConfig(folds=9))
    with pytest.raises(ValueError, match="folds must be"):
        DirectionAblationConfig(folds=0)
    with pytest.raises(ValueError, match="scope must be one of"):
        DirectionAblationConfig(scope="all")
    with pytest.raises(ValueError, match="direction must be one of"):
        DirectionAblationConfig(direction="pca")
    folds = fact_folds([str(i) for i in range(9)], 2, seed=3)
    assert sorted(folds[0] + folds[1]) == sorted(str(i) for i in range(9)) and sorted(map(len, folds)) == [4, 5]
    assert folds == fact_folds([str(i) for i in range(9)], 2, seed=3) != fact_folds([str(i) for i in range(9)], 2)


def test_direction_ablation_random_control(suppressed):
    """A random direction removed at the chosen places brings back none of the suppressed facts and costs
    the original nothing: the attack's null, reported beside it (``ablation_random_*``)."""
    p, edited, task, _ = suppressed
    st = DirectionAblationConfig(direction="edit_shift")
    r = run_direction_ablation(edited, task, original=p.model, direction_ablation_config=st)
    assert r["ablation_forget_accuracy"].value == 1.0
    ra = r["ablation_random_forget_accuracy"]
    assert ra.value == 0.0 and ra.baseline == 1.0 and ra.ci_method == "wilson" and ra.n == 8
    assert r["ablation_random_maintain_accuracy"].value == 1.0 and r.extra["random_attack_damage"]["damaged"] is False
    rows = {row["record_id"]: row for row in r.per_fact}  # per fact, pairable with the fitted direction's
    assert [rows[f.id]["ablation_random_answer_wins"] for f in task.forget] == [0.0] * 8
    assert [rows[f.id]["ablation_answer_wins"] for f in task.forget] == [1.0] * 8
    off = run_direction_ablation(edited, task, original=p.model,
                                 direction_ablation_config=dataclasses.replace(st, random_control=False))
    assert not [m for m in off.metrics if m.name.startswith("ablation_random")] and off.extra["random_attack_damage"] is None
    assert [m.value for m in off.metrics] == [m.value for m in r.metrics if not m.name.startswith("ablation_random")]


def test_direction_ablation_selective_choice_passes_over_a_collapse(suppressed, monkeypatch):
    """An ablation that makes the model give one answer to everyone "brings back" every forget fact of a
    one-answer forget set; "selective" (default) also counts retain facts (not scored by the suite) and
    takes the variant that keeps them; "forget" takes the collapse."""
    import factlens.evaluation.direction_ablation as da

    p, edited, task, _ = suppressed

    def fake(model, t, config, direction, layer, scope):  # layer 1: collapse; layer 2: selective recovery
        forget = {r.id: 1.0 if layer == 1 else float(i % 4 != 0) for i, r in enumerate(t.forget)}
        return TaskScores(forget, {}, {r.id: 0.0 if layer == 1 else 1.0 for r in t.maintain})

    monkeypatch.setattr(da, "_ablated", fake)
    chosen = {}
    for sel in ("selective", "forget"):
        st = DirectionAblationConfig(direction="edit_shift", selection=sel, random_control=False, layers=(1, 2))
        r = run_direction_ablation(edited, task, original=p.model, direction_ablation_config=st)
        chosen[sel] = {f["layer"] for f in r.extra["folds"]}
        assert r.extra["folds"][0]["guard_retain_accuracy"]["final"] == ([0.0, 1.0] if sel == "selective" else
                                                                           [None, None])
    assert chosen == {"selective": {2}, "forget": {1}}
    with pytest.raises(ValueError, match="selection must be one of"):
        DirectionAblationConfig(selection="best")


def test_direction_ablation_selective_choice_passes_over_a_partial_collapse(suppressed, monkeypatch):
    """Measured on Gemma 3 270M (docs/attacks.md): the chosen ablation made the model answer one sport
    for every athlete; its forget wins (that sport's players) plus its retain wins (that sport's share)
    beat every variant that kept the facts. Here layer 1 gives 4 of 4 fitting facts and 2 of 4 retain
    facts, layer 2 none of the forget facts and all retain facts: forget + retain alone chose layer 1
    (1.5 against 1.0). Of 4 guard facts, 3 may share a sport, and then not even 4 of 4 passes the
    best constant answer's bar (0.75 + 2 SE); the uniform-chance bar (1/4 + 2 SE = 0.68) still
    keeps layer 1 out."""
    import factlens.evaluation.direction_ablation as da

    p, edited, task, _ = suppressed

    def fake(model, t, config, direction, layer, scope):
        forget = {r.id: float(layer == 1) for r in t.forget}
        guard = {r.id: 1.0 if layer == 2 else float(i % 2 == 0) for i, r in enumerate(t.maintain)}
        return TaskScores(forget, {}, guard, chance={"forget": 0.25, "maintain": 0.25},
                          n_prompts={"forget": len(forget), "maintain": len(guard)})

    monkeypatch.setattr(da, "_ablated", fake)
    st = DirectionAblationConfig(direction="edit_shift", random_control=False, layers=(1, 2))
    r = run_direction_ablation(edited, task, original=p.model, direction_ablation_config=st)
    assert [f["layer"] for f in r.extra["folds"]] == [2, 2]
    assert [f["guard_retain_accuracy"]["final"] for f in r.extra["folds"]] == [[0.5, 1.0], [0.5, 1.0]]
    assert {f["guard_bar"] for f in r.extra["folds"]} <= {"constant answer", "uniform chance"}


def test_direction_ablation_guard_bar_is_the_best_constant_answer():
    """A collapsed variant answers one sport for everyone: on a guard of two sports, half each, it
    scores 0.5, above uniform chance + 2 SE (1/3 + 0.12 with 64 facts) but not above what one answer
    for everyone gets (0.5 + 0.125)."""
    from factlens.data.formats import FormattedPrompt
    from factlens.evaluation.direction_ablation import _guard_readable

    sports = ("basketball", "baseball", "football")
    items = [FormattedPrompt(f"r{i} plays", a, None, sports, f"r{i}", "default")
             for i, a in enumerate(["baseball", "football"] * 32)]
    collapsed = TaskScores({}, {}, {it.record_id: float(it.answer == "baseball") for it in items})
    kept = TaskScores({}, {}, {it.record_id: float(i < 58) for i, it in enumerate(items)})
    ok, bar = _guard_readable([collapsed, kept], items)
    assert ok.tolist() == [False, True] and bar == "constant answer"
    assert _guard_readable([collapsed], items)[1] == "uniform chance"  # alone it is kept, by the weaker bar
    ok, bar = _guard_readable([TaskScores({}, {}, {})], items)
    assert ok.tolist() == [True] and bar == "no guard"


def test_direction_ablation_selective_recovery(suppressed, monkeypatch):
    """Net of bias: the planted suppression comes back without the ablation giving any control athlete a
    forget fact's answer (selective recovery 1.0); an "ablation" that says one sport to every maintain
    athlete gets, for the forget facts of that sport, a bias of 1 and a selective recovery of 0."""
    import factlens.evaluation.direction_ablation as da

    p, edited, task, _ = suppressed
    st = DirectionAblationConfig(direction="edit_shift", random_control=False)
    r = run_direction_ablation(edited, task, original=p.model, direction_ablation_config=st)
    sr, bias = r["ablation_selective_recovery"], r["ablation_control_bias"]
    assert sr.value == 1.0 and bias.value == 0.0 and sr.baseline == 1.0 and not sr.selected
    sport = task.forget[0].answer

    def one_answer(model, t, config, direction, layer, scope):
        return TaskScores({f.id: 1.0 for f in t.forget}, {}, {m.id: float(m.answer == sport) for m in t.maintain},
                          maintain_said={m.id: sport for m in t.maintain})

    monkeypatch.setattr(da, "_ablated", one_answer)
    r = run_direction_ablation(edited, task, original=p.model, direction_ablation_config=st)
    rec, b = r["ablation_selective_recovery"].samples, r["ablation_control_bias"].samples
    assert r["ablation_forget_accuracy"].value == 1.0
    for f in task.forget:
        if f.id in rec:
            assert b[f.id] == (1.0 if f.answer == sport else 0.0) and rec[f.id] == 1.0 - b[f.id]
    assert any(f.answer == sport and f.id in rec for f in task.forget)


def test_direction_ablation_cache_keys_the_directions():
    """The control removes the edited model's forget-vs-contrast (retain) directions from the original: a
    task that differs only in its retain facts, or another edit, must not get the original's cached
    control of other directions (only the contrast's name was once in the key). At the final position of
    layers 2-3 the retain set changes what removing the direction costs the original."""
    from factlens.evaluation import BaselineCache

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out.mul_(0.7)
    t1 = p.task
    t2 = dataclasses.replace(t1, retain=t1.retain.filter(lambda r: r.answer == "baseball"))

    st = DirectionAblationConfig(positions=("final",), layers=(2, 3))

    def ablate(model, task, **kw):
        return run_direction_ablation(model, task, original=p.model, direction_ablation_config=st, **kw)

    def control(r):
        return [m.baseline for m in r.metrics], r.extra["attack_damage"]

    cache = BaselineCache()
    first = control(ablate(edited, t1, baselines=cache))
    misses = cache.misses
    shared = control(ablate(edited, t2, baselines=cache))
    alone = control(ablate(edited, t2))
    assert alone != first  # the contrast set changes the original's control (measured: maintain 0.8 -> 0.6)
    assert shared == alone and cache.misses == misses + 1  # recomputed, not served from t1's entry
    ablate(edited, t2, baselines=cache)
    assert cache.misses == misses + 1  # the same contrast set is still served from the cache
    other = copy.deepcopy(p.model)  # another edit: other directions, so the original's control is recomputed
    with torch.no_grad():
        other.blocks[1].mlp.W_out.mul_(0.4)
    again = control(ablate(other, t2, baselines=cache))
    # only the fitted control is new: the random control removes the same seeded directions everywhere
    # (scope every_layer), whatever variant an edit chose, so every edit shares it
    assert cache.misses == misses + 2 and again == control(ablate(other, t2))


# -- fine-tuning on unrelated data ------------------------------------------------------------
def test_unrelated_finetune_data_excludes_forget_facts(sub_bin):
    p, orig, edited, task, _, _ = sub_bin
    from factlens.data.records import FactDataset

    leaky = dataclasses.replace(task, retain=FactDataset(tuple(task.retain) + tuple(task.forget[:2]), name="r",
                                                         candidates=task.retain.candidates))
    data, info = finetune_data(orig, leaky, "retain", EvalConfig())
    assert info["n_dropped"] == 2 and not {r.id for r in data} & {r.id for r in task.forget}
    chunks, info = finetune_data(orig, task, "text", EvalConfig(text={"n_chunks": 2, "seq_len": 16}))
    assert tuple(chunks.shape) == (2, 16) and info["n_train"] == 2
    with pytest.raises(ValueError, match="unknown data source"):
        finetune_data(orig, task, "forget", EvalConfig())


def test_unrelated_finetune_data_excludes_maintain_subjects(sub_bin, tmp_path):
    """The attack is judged on the maintain facts too (scores and damage): text naming a maintain
    subject, or a retain fact about one, was trained on and could teach it back."""
    p, orig, edited, task, _, _ = sub_bin
    from factlens.data.records import FactDataset

    kept, forget, maintain = "A passage about the weather in spring.", task.forget[0].subject, task.maintain[0].subject
    src = tmp_path / "text.txt"
    src.write_text(f"{kept}\n\n{maintain} plays a sport.\n\n{forget} plays a sport.\n")
    cfg = EvalConfig(text={"source": str(src), "n_chunks": 1, "seq_len": 4})
    chunks, info = finetune_data(orig, task, "text", cfg)
    assert info["n_dropped_passages"] == 2
    leaky = dataclasses.replace(task, retain=FactDataset(tuple(task.retain) + tuple(task.maintain[:3]), name="r",
                                                         candidates=task.retain.candidates))
    data, info = finetune_data(orig, leaky, "retain", EvalConfig())
    assert info["n_dropped"] == 3 and not {r.subject for r in data} & {r.subject for r in task.maintain}
    src.write_text(f"{maintain} plays a sport.\n\n{forget} plays a sport.\n")  # the filter leaves nothing
    with pytest.raises(ValueError, match="names a subject of the evaluated .* nothing is left to fine-tune on"):
        finetune_data(orig, task, "text", cfg)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_unrelated_finetune_runs_both_models_and_leaves_them(sub_bin, method):
    p, orig, edited, task, _, _ = sub_bin
    snaps = snapshot(edited), snapshot(orig)
    st = UnrelatedFinetuneConfig(steps=3, lr=1e-2, rank=4, method=method)
    cfg = EvalConfig(text={"n_chunks": 4, "seq_len": 16})
    r = run_unrelated_finetune(edited, task, original=orig, config=cfg,
                               unrelated_finetune_config=st)
    for d in ("retain", "text"):
        m = r[f"finetune_{d}_forget_accuracy"]
        assert 0.0 <= m.value <= 1.0 and m.baseline is not None and m.n == len(task.forget)
        assert len(r.extra["data"][d]["history"]) == 3 and len(r.extra["data"][d]["baseline_history"]) == 3
        assert r.extra["data"][d]["attack_damage"]["damaged"] in (True, False)
        assert r[f"finetune_{d}_forget_recovery"].value == pytest.approx(m.value - 0.0)  # edited forget acc was 0
    assert r.extra["budget"]["steps"] == 3 and r.extra["budget"]["method"] == method
    assert len(r.per_fact) == len(task.forget) + len(task.maintain)
    for m, snap in zip((edited, orig), snaps):
        assert_unchanged(m, snap)


def test_unrelated_finetune_scores_the_fine_tuned_copies():
    """The attack's scores are those of the fine-tuned copies, not of the models it was given: on the
    planted model with the forget subjects' lookup neurons zeroed, 3 full steps on text change the
    answers of both models (the zeroed model gets 4 of 8 forget facts back, the original loses 16 of
    28), and each reported outcome equals scoring a copy fine-tuned the same way by hand."""
    from factlens.evaluation.unrelated_finetune import finetuned_copy

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[p.lookup_layer].mlp.W_out[[int(r.id) for r in p.task.forget]] = 0.0
    cfg = EvalConfig(text={"n_chunks": 4, "seq_len": 16})
    st = UnrelatedFinetuneConfig(steps=3, lr=1e-2, method="full", data=("text",))
    r = run_unrelated_finetune(edited, p.task, original=p.model, config=cfg, unrelated_finetune_config=st)
    chunks, _ = finetune_data(edited, p.task, "text", cfg)
    by_hand = {}
    for name, model in (("edited", edited), ("original", p.model)):
        work, cleanup, _ = finetuned_copy(model, chunks, settings=st, config=cfg)
        by_hand[name] = score_task(work, p.task, cfg)
        cleanup()
    before = score_task(edited, p.task, cfg)
    assert r["finetune_text_forget_accuracy"].samples == by_hand["edited"].forget
    assert r["finetune_text_maintain_accuracy"].samples == by_hand["edited"].maintain
    assert r["finetune_text_forget_accuracy"].baseline == pytest.approx(np.mean(list(by_hand["original"].forget.values())))
    # the attack did something to each model (scoring the models it was given would show no change)
    assert by_hand["edited"].forget != before.forget and r["finetune_text_forget_recovery"].value > 0
    dmg = r.extra["data"]["text"]["attack_damage"]
    assert dmg["n_lost"] > 0 and dmg["drop"] > 0
    rows = {row["record_id"]: row for row in r.per_fact}
    assert all(rows[k]["baseline_finetune_text_answer_wins"] == v
               for k, v in {**by_hand["original"].forget, **by_hand["original"].maintain}.items())


def test_unrelated_finetune_cache_keys_the_training_data():
    """With data "retain" the original is fine-tuned on task.retain: two tasks that differ only in retain
    must not share the fine-tuned original (they used to: the key covered only forget and maintain facts)."""
    from factlens.evaluation import BaselineCache

    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out.mul_(0.7)
    t1 = p.task
    t2 = dataclasses.replace(t1, retain=t1.retain[:4])  # same forget and maintain facts, other retain facts
    cfg = EvalConfig.from_dict({"unrelated_finetune": {"data": ["retain"], "steps": 10, "lr": 3e-2, "rank": 8}})

    def baseline(task, cache):  # the unedited model's fine-tuning: its loss curve and an accuracy after it
        r = run_unrelated_finetune(edited, task, original=p.model, config=cfg, baselines=cache)
        return r.extra["data"]["retain"]["baseline_history"], r["finetune_retain_maintain_accuracy"].baseline

    cache = BaselineCache()
    first = baseline(t1, cache)
    shared, alone = baseline(t2, cache), baseline(t2, None)
    # the loss curve, not an accuracy, tells the two trainings apart: the maintain accuracy after training on
    # 4 or on 20 retain facts was 0.9 vs 1.0 with one environment's packages and 1.0 vs 1.0 with another's
    assert alone[0] != first[0]
    assert shared == alone


def test_attack_caches_key_the_data_sets_candidate_answers():
    """score_task formats prompts with the data set's candidates (a fact without its own): two tasks
    with the same facts and another answer set must not share the unedited model's cached scores
    (task_key used to key only the facts, so the second task got the first one's baselines)."""
    from factlens.evaluation import BaselineCache
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing
    from factlens.tokens import answer_token_ids

    orig = tiny_model(seed=6)  # a random model: its accuracy depends on the candidate set
    edited = copy.deepcopy(orig)
    with torch.no_grad():
        edited.blocks[0].mlp.W_out.mul_(1.01)
    narrow = sports_athlete_editing(sports_facts()[:80], n_forget=16, seed=0)
    extra = [w for w in ("golf", "tennis", "hockey", "soccer", "cricket", "boxing")
             if len(answer_token_ids(orig, w)) == 1]
    wide_c = tuple(narrow.forget.candidates) + tuple(extra)
    wide = dataclasses.replace(narrow, forget=narrow.forget.with_candidates(wide_c),
                               maintain=narrow.maintain.with_candidates(wide_c))
    qc = QuantizationConfig(schemes=("int8",))
    names = ("quant_int8_forget_accuracy", "quant_int8_maintain_accuracy")

    def baselines(task, cache):
        r = run_quantization(edited, task, original=orig, baselines=cache, quantization_config=qc)
        return [r[n].baseline for n in names]

    cache = BaselineCache()
    first = baselines(wide, cache)
    shared, alone = baselines(narrow, cache), baselines(narrow, None)
    assert alone != first  # measured: 1.0 and 1.0 among the three sports, 0.0 and 0.0 among nine answers
    assert shared == alone


def test_a_cache_passed_straight_to_a_suite_is_bound_and_checked():
    """run_<suite>(..., baselines=cache) without evaluate(): a second call with another original
    raises instead of serving the first original's baselines (it used to: maintain 1.0 where 0.2
    is right), and an original changed in place is scored again."""
    from factlens.evaluation import BaselineCache
    from factlens.tokens import answer_token_ids

    p = planted_fact_model()
    orig_a = p.model
    orig_b = copy.deepcopy(orig_a)  # another original: two sports' unembedding columns swapped
    a, b = (answer_token_ids(orig_b, s)[0] for s in p.task.forget.candidates[:2])
    with torch.no_grad():
        orig_b.unembed.W_U[:, [a, b]] = orig_b.unembed.W_U[:, [b, a]]
    edited = copy.deepcopy(orig_a)
    qc = QuantizationConfig(schemes=("int8",))
    name = "quant_int8_maintain_accuracy"
    cache = BaselineCache()
    first = run_quantization(edited, p.task, original=orig_a, baselines=cache, quantization_config=qc)[name].baseline
    with pytest.raises(ValueError, match="another original"):
        run_quantization(edited, p.task, original=orig_b, baselines=cache, quantization_config=qc)
    want = run_quantization(edited, p.task, original=orig_b, quantization_config=qc)[name].baseline
    assert want != first  # measured: 0.2 and 1.0
    with torch.no_grad():  # the same object, changed in place: recomputed, not served
        orig_a.unembed.W_U[:, [a, b]] = orig_a.unembed.W_U[:, [b, a]]
    try:
        again = run_quantization(edited, p.task, original=orig_a, baselines=cache, quantization_config=qc)
    finally:
        with torch.no_grad():
            orig_a.unembed.W_U[:, [a, b]] = orig_a.unembed.W_U[:, [b, a]]
    assert again[name].baseline == want
    with pytest.raises(ValueError, match="not bound"):
        BaselineCache().get("k", lambda: 1.0)


def test_evaluate_fingerprints_the_original_once_per_call(monkeypatch):
    """evaluate() checks the cache once; the suites' own bind() inside it costs no fingerprint."""
    from factlens.evaluation import BaselineCache, baseline_cache

    calls = []
    real = baseline_cache._fingerprint
    monkeypatch.setattr(baseline_cache, "_fingerprint", lambda m, *a, **k: calls.append(1) or real(m, *a, **k))
    p = planted_fact_model()
    edited = copy.deepcopy(p.model)
    cfg = EvalConfig(quantization=QuantizationConfig(schemes=("int8",)))
    cache = BaselineCache()
    for n in (1, 2):
        evaluate(edited, p.task, original=p.model, suites=["standard", "quantization"], config=cfg, baselines=cache,
                 show_progress=False)
        assert len(calls) == n
    run_quantization(edited, p.task, original=p.model, baselines=cache, config=cfg)
    assert len(calls) == 3  # a direct call checks on its own


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_on_text_lowers_its_loss(method):
    """The attack trains (not a no-op): the next-token loss on the general text falls."""
    from factlens.evaluation.unrelated_finetune import finetuned_copy

    m = tiny_model()  # the planted model's huge planted weights make text fine-tuning unstable
    snap = snapshot(m)
    cfg = EvalConfig(text={"n_chunks": 4, "seq_len": 16})
    chunks, _ = finetune_data(m, planted_fact_model().task, "text", cfg)
    st = UnrelatedFinetuneConfig(steps=8, lr=1e-2, rank=4, method=method)
    work, cleanup, hist = finetuned_copy(m, chunks, settings=st, config=cfg)
    assert hist[-1] < 0.8 * hist[0]  # measured: 7.75 -> 5.19 (LoRA), 7.75 -> 4.47 (full)
    cleanup()
    # text.batch_size is a forward-pass size (it was the chunks per step); the attack's own field is
    _, cleanup, same = finetuned_copy(m, chunks, settings=st, config=cfg.replace(text=cfg.text.replace(batch_size=1)))
    cleanup()
    _, cleanup, other = finetuned_copy(m, chunks, settings=st.replace(text_batch_size=1), config=cfg)
    cleanup()
    assert same == hist and other != hist
    assert_unchanged(m, snap)


# -- damage flag -----------------------------------------------------------------------------
def test_attack_damage_flags_an_attack_that_breaks_the_original():
    keep = TaskScores({str(i): 1.0 for i in range(8)}, {}, {str(i): 1.0 for i in range(8, 16)})
    broke = TaskScores({str(i): float(i >= 3) for i in range(8)}, {}, {str(i): 1.0 for i in range(8, 16)})  # 1.0 -> 0.625
    d = attack_damage(keep, broke)
    assert d["damaged"] is True and d["n_lost"] == 3 and d["forget_drop"] == pytest.approx(0.375)
    # one-sided exact sign test of 3 lost and 0 gained: P(Binomial(3, 1/2) >= 3) = 1/8 (two-sided would be 1/4)
    assert d["n_gained"] == 0 and d["p_value"] == pytest.approx(0.5 ** 3)
    # only losses count against the attack: 3 facts gained and none lost is no evidence of damage (p = 1)
    assert attack_damage(broke, keep)["p_value"] == pytest.approx(1.0)
    assert attack_damage(keep, keep)["damaged"] is False
    assert attack_damage(None, keep)["damaged"] is None
    with pytest.raises(ValueError, match="tolerance"):
        attack_damage(keep, keep, tolerance=2)


def test_recovery_baseline_is_the_originals_change_after_minus_before():
    """The baseline of ``<prefix>_forget_recovery`` is the unedited model's own mean change under the
    attack, after minus before: an attack that breaks 3 of its 8 forget facts gives -3/8, so an edited
    model that recovers 2 of 8 (+2/8) is measured against a baseline below 0, not above it."""
    from factlens.evaluation.attacks import attack_metrics

    ids = [str(i) for i in range(8)]
    before = TaskScores({k: 0.0 for k in ids}, {}, {})
    attacked = TaskScores({k: float(i < 2) for i, k in enumerate(ids)}, {}, {})
    base_before = TaskScores({k: 1.0 for k in ids}, {}, {})
    base_attacked = TaskScores({k: float(i >= 3) for i, k in enumerate(ids)}, {}, {})
    ms = {m.name: m for m in attack_metrics("x", attacked, before, base_attacked=base_attacked,
                                            base_before=base_before)}
    assert ms["x_forget_recovery"].value == pytest.approx(2 / 8)
    assert ms["x_forget_recovery"].baseline == pytest.approx(-3 / 8)
    assert ms["x_forget_accuracy"].value == pytest.approx(2 / 8) and ms["x_forget_accuracy"].baseline == pytest.approx(5 / 8)


def test_soft_prompts_and_relearning_report_damage_and_budget():
    from factlens.evaluation.relearning import run_relearning
    from factlens.evaluation.soft_prompts import run_soft_prompts

    p = planted_fact_model()
    cfg = EvalConfig(soft_prompts={"steps": 2, "seeds": 1}, relearning={"steps": 2, "rank": 4})
    edited = copy.deepcopy(p.model)
    s = run_soft_prompts(edited, p.task, original=p.model, config=cfg)
    dmg = s.extra["attack_damage"]
    # half B and the maintain facts, as for the other attacks
    assert dmg["damaged"] in (True, False) and dmg["n_facts"] == len(s.extra["half_b"]) + len(p.task.maintain)
    rl = run_relearning(edited, p.task, original=p.model, config=cfg)
    assert rl.extra["budget"] == {"steps": 2, "lr": cfg.relearning.lr, "rank": 4, "batch_size": cfg.relearning.batch_size, "text_batch_size": 4,
                                  "n_train_facts": len(rl.extra["half_a"]), "n_lora_params": rl.extra["lora_params"],
                                  "both_halves": True, "n_attacks": 2, "lora_forward": "factored"}


def test_soft_prompt_damage_counts_the_maintain_facts():
    """An untrained soft prompt of a large norm leaves the unedited model's half B right but breaks its
    maintain facts (1.00 -> 0.00): the flag looked at half B alone and said not damaged."""
    from factlens.evaluation.soft_prompts import run_soft_prompts
    from factlens.tasks import sports_unlearning

    p = planted_fact_model()
    task = sports_unlearning(p.dataset, n_forget=12)
    cfg = EvalConfig(seed=3, soft_prompts={"steps": 0, "seeds": 1, "length": 4, "max_norm": 30.0})
    s = run_soft_prompts(copy.deepcopy(p.model), task, original=p.model, config=cfg)
    dmg = s.extra["attack_damage"]
    assert s["soft_prompt_forget_accuracy"].baseline == 1.0  # half B untouched on the unedited model
    assert dmg["damaged"] and dmg["n_facts"] == len(s.extra["half_b"]) + len(task.maintain)


# -- every suite through evaluate(): model unchanged, no hooks ----------------------------------
@pytest.mark.parametrize("suite", ["quantization", "update_size", "unrelated_finetune", "direction_ablation"])
def test_suites_leave_models_unchanged(sub_bin, suite):
    p, orig, edited, task, er, _ = sub_bin
    snaps = snapshot(edited), snapshot(orig)
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16})
    res = evaluate(edited, task, original=orig, suites=[suite], edit_result=er, mask=er.mask, config=cfg,
                   show_progress=False)
    assert res[suite].metrics
    if suite != "update_size":
        assert {r["record_id"] for r in res[suite].per_fact} == {r.id for r in (*task.forget, *task.maintain)}
    for m, snap in zip((edited, orig), snaps):
        assert_unchanged(m, snap)
        assert no_hooks(m)


def test_quantized_copy_gqa_model_is_separate():
    m = tiny_model(variant="gqa_gated")
    snap = snapshot(m)
    q, info = quantized_copy(m, "int4")
    toks = m.to_tokens("LeBron James plays the sport of")
    assert torch.isfinite(q(toks)).all() and info["relative_error"] > 0
    assert not torch.equal(q.blocks[0].attn._W_K, m.blocks[0].attn._W_K)
    assert_unchanged(m, snap)


# -- bad input --------------------------------------------------------------------------------
def test_bad_settings_are_refused_with_clear_errors(sub_bin):
    p, orig, edited, task, er, _ = sub_bin
    with pytest.raises(ValueError, match="schemes"):
        QuantizationConfig(schemes=("fp8",))
    with pytest.raises(ValueError, match="neighborhood"):
        QuantizationConfig(formats=("neighborhood",))
    with pytest.raises(ValueError, match="int4"):
        QuantizationConfig(backend="bitsandbytes")
    with pytest.raises(ValueError, match="method"):
        UnrelatedFinetuneConfig(method="rlhf")
    with pytest.raises(ValueError, match="positions"):
        DirectionAblationConfig(positions=("first",))
    with pytest.raises(ValueError, match="log10_min"):
        UpdateSizeConfig(log10_min=1, log10_max=0)
    with pytest.raises(ValueError, match="edit_result"):
        evaluate(edited, task, suites=["update_size"], show_progress=False)
    with pytest.raises(TypeError, match="QuantizationConfig"):
        run_quantization(edited, task, quantization_config=UpdateSizeConfig())
    with pytest.raises(ValueError, match="scheme"):
        quantize_matrix(torch.ones(2, 2), "fp4")


def test_relearning_text_leaves_out_passages_that_name_an_evaluated_subject(tmp_path):
    """The SFT text must not teach the held-out facts the attack is judged on: a passage naming a
    forget (or maintain) subject is dropped, and the record counts it."""
    from factlens.evaluation.relearning import run_relearning

    p = planted_fact_model()
    subject = p.task.forget[0].subject
    lines = [f"{subject} plays {p.task.forget[0].answer} every day ."] + [
        "the river runs past the old mill and the town sleeps ."] * 12
    src = tmp_path / "text.txt"
    src.write_text("\n".join(lines) + "\n")
    cfg = EvalConfig(relearning={"steps": 1, "rank": 2}, text={"source": str(src), "n_chunks": 2, "seq_len": 8})
    rl = run_relearning(copy.deepcopy(p.model), p.task, original=p.model, config=cfg)
    assert [a["n_dropped_passages"] for a in rl.extra["attacks"]] == [1, 1]
    only = tmp_path / "only.txt"
    only.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match="names a subject of the evaluated facts"):
        run_relearning(copy.deepcopy(p.model), p.task, original=p.model, config=cfg.replace(text={"source": str(only)}))


def test_relearning_retain_loss_leaves_out_facts_about_an_evaluated_subject(monkeypatch):
    """A retain fact about a held-out forget fact's subject ("The official language of Italy" beside
    "The capital of Italy") trained in the retain loss could teach the held-out fact back; the
    general-text passages naming one were dropped, the retain facts were not (the unrelated
    fine-tuning attack did drop them). Older folders resume with the old behaviour."""
    from dataclasses import replace

    import factlens.evaluation.relearning as R

    p = planted_fact_model()
    about = replace(p.task.retain[0], subject=p.task.forget[1].subject, id="about-forget")
    task = replace(p.task, retain=p.task.retain.concat(FactDataset([about])))
    seen = []
    real = R.relearn
    monkeypatch.setattr(R, "relearn", lambda *a, retain, **k: seen.append({r.id for r in retain}) or real(*a, retain=retain, **k))
    cfg = EvalConfig(relearning={"steps": 1, "rank": 2, "both_halves": False}, text={"n_chunks": 2, "seq_len": 8})
    rl = R.run_relearning(copy.deepcopy(p.model), task, original=p.model, config=cfg)
    assert "about-forget" not in seen[-1] and len(seen[-1]) == len(p.task.retain)
    assert [(a["n_retain"], a["n_dropped_retain"]) for a in rl.extra["attacks"]] == [(len(p.task.retain), 1)]
    R.run_relearning(copy.deepcopy(p.model), task, original=p.model,
                     config=cfg.override({"relearning.retain_avoids_subjects": False}))
    assert "about-forget" in seen[-1]


def test_soft_prompt_scores_refuse_non_finite_log_probabilities():
    """torch.argmax counts NaN as the largest: a diverged soft prompt scored as its first candidate, often
    the true answer, i.e. as recovered knowledge."""
    import torch

    from factlens.data.formats import format_prompts
    from factlens.evaluation.soft_prompts import soft_prompt_scores

    p = planted_fact_model()
    items = format_prompts(p.task.forget)[:2]
    soft = torch.full((2, p.model.cfg.d_model), float("nan"))
    with pytest.raises(FloatingPointError, match="soft prompt"):
        soft_prompt_scores(p.model, soft, items)


def test_unrelated_finetune_runs_under_inference_mode(sub_bin):
    """torch.enable_grad() does not leave torch.inference_mode(): the fine-tuning attack failed there
    ("element 0 of tensors does not require grad")."""
    p, orig, edited, task, _, _ = sub_bin
    st = UnrelatedFinetuneConfig(steps=2, lr=1e-2, rank=4, method="lora")
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16})
    plain = run_unrelated_finetune(edited, task, original=orig, config=cfg, unrelated_finetune_config=st)
    with torch.inference_mode():
        inside = run_unrelated_finetune(edited, task, original=orig, config=cfg, unrelated_finetune_config=st)
    assert [(m.name, m.value) for m in inside.metrics] == [(m.name, m.value) for m in plain.metrics]
