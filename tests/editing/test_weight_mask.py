"""Learned weight masks (``factlens.editing.weight_mask``) on the planted-fact model."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from factlens.components import Component, Mask
from factlens.editing import EditConfig
from factlens.editing.weight_mask import WeightMaskConfig, WeightMaskResult, default_evaluate, learn_weight_mask
from factlens.tasks import sports_unlearning
from factlens.testing import tiny_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = WeightMaskConfig(lr=0.2, steps=20, l_sft=0.0, l_reg=1.0)


@pytest.fixture(scope="module")
def task(planted):
    return sports_unlearning(planted.dataset)


@pytest.fixture(scope="module")
def mask(planted):
    return Mask(frozenset({planted.lookup_mlp}))


@pytest.fixture(scope="module")
def learned(planted, task, mask):
    return learn_weight_mask(planted.model, mask, task, config=FAST)


def test_learned_under_no_grad_as_outside_it(planted, task, mask, learned):
    """Under torch.no_grad() learning failed with an autograd error about tensors without grad."""
    import torch

    with torch.no_grad():
        quiet = learn_weight_mask(planted.model, mask, task, config=FAST)
    assert [h["loss"] for h in quiet.history] == [h["loss"] for h in learned.history]


def test_user_model_untouched_and_sft_path(planted, task, mask):
    before = snapshot(planted.model)
    res = learn_weight_mask(planted.model, mask, task, config=FAST.replace(steps=3, l_sft=1.0, n_sft_chunks=4, sft_seq_len=16))
    assert "loss_sft" in res.history[-1] and len(res.history) == 3
    assert_unchanged(planted.model, before)


def test_ablates_only_inside_the_mask(planted, learned):
    ablate = learned.discretize()
    assert set(ablate) == set(learned.region) and all(n.startswith("blocks.1.mlp.") for n in ablate)
    assert learned.n_masked() > 0
    edited = learned.apply(planted.model)
    assert edited is not planted.model
    orig = dict(planted.model.named_parameters())
    for n, p in edited.named_parameters():
        w = orig[n].detach()
        if n not in ablate:
            assert torch.equal(p.detach(), w), n
            continue
        m = ablate[n]
        assert bool((m <= learned.region[n]).all())
        assert torch.equal(p.detach()[~m], w[~m]) and bool((p.detach()[m] == 0).all()), n


def test_forget_accuracy_drops_maintain_stays(planted, task, learned):
    evaluate = default_evaluate(task)
    assert evaluate(planted.model) == {"forget_acc": 1.0, "maintain_acc": 1.0}
    after = evaluate(learned.apply(planted.model))
    assert after["forget_acc"] <= 0.1 and after["maintain_acc"] >= 0.9
    # the loss history went down and the hard count is logged
    assert learned.history[-1]["loss_forget"] < learned.history[0]["loss_forget"]
    assert learned.history[-1]["n_ablated"] > 0


def test_larger_l_reg_ablates_fewer_weights(planted, task, mask, learned):
    none = learn_weight_mask(planted.model, mask, task, config=FAST.replace(l_reg=0.0))
    strong = learn_weight_mask(planted.model, mask, task, config=FAST.replace(l_reg=10.0))
    assert none.n_masked() > learned.n_masked() > strong.n_masked() > 0


def test_counts_sum_to_total_with_overlapping_components(planted, learned):
    comp = learned.counts_per_component()
    assert comp == {"L1.mlp": learned.n_masked()}
    # overlapping components: a neuron inside the whole MLP is counted once (for the MLP)
    mixed = dataclasses.replace(learned, mask=learned.mask | Mask(frozenset({Component("neuron", 1, 3)})))
    counts = mixed.counts_per_component(0.9)
    assert sum(counts.values()) == learned.n_masked(0.9) and counts["L1.N3"] == 0
    mech = learned.counts_per_mechanism(0.5, {"lookup": learned.mask, "neuron3": Mask(frozenset({Component("neuron", 1, 3)})),
                                              "elsewhere": Mask(frozenset({planted.extraction_head}))})
    assert mech["lookup"] == learned.n_masked() and mech["elsewhere"] == 0
    assert 0 <= mech["neuron3"] <= mech["lookup"]
    with pytest.raises(ValueError, match="mechanisms"):
        learned.counts_per_mechanism(0.5, {})


def test_discretize_by_threshold_and_count(learned):
    gen = torch.Generator().manual_seed(0)
    rnd = dataclasses.replace(learned, logits={n: torch.randn(s.shape, generator=gen) for n, s in learned.logits.items()})
    n_lo, n_mid, n_hi = rnd.n_masked(0.2), rnd.n_masked(0.5), rnd.n_masked(0.8)
    assert 0 < n_lo < n_mid < n_hi < rnd.n_entries
    top = rnd.discretize(n_masked=100)
    assert sum(int(m.sum()) for m in top.values()) == 100
    chosen = torch.cat([rnd.logits[n][m] for n, m in top.items()])
    rest = torch.cat([rnd.logits[n][~m & rnd.region[n]] for n, m in top.items()])
    assert float(chosen.max()) <= float(rest.min())  # the most-ablated entries
    assert rnd.discretize(n_masked=n_mid).keys() == rnd.discretize(0.5).keys()
    with pytest.raises(ValueError, match="either"):
        rnd.discretize(0.5, n_masked=3)
    with pytest.raises(ValueError, match="n_masked"):
        rnd.discretize(n_masked=rnd.n_entries + 1)
    with pytest.raises(ValueError, match="threshold"):
        rnd.discretize(1.5)


def test_threshold_sweep(planted, task, learned):
    before = snapshot(planted.model)
    rows = learned.threshold_sweep(planted.model, [0.01, 0.5, 0.99])
    assert [r["threshold"] for r in rows] == [0.01, 0.5, 0.99]
    assert rows[0]["n_masked"] <= rows[1]["n_masked"] <= rows[2]["n_masked"]
    assert rows[1]["n_masked"] == learned.n_masked() and rows[1]["forget_acc"] <= 0.1
    assert set(rows[0]) == {"threshold", "n_masked", "forget_acc", "maintain_acc"}
    custom = learned.threshold_sweep(planted.model, [0.5], lambda m: {"zeros": int((m.blocks[1].mlp.W_in == 0).sum())})
    assert custom[0]["zeros"] >= int(learned.discretize()["blocks.1.mlp.W_in"].sum())
    assert_unchanged(planted.model, before)


def test_apply_inplace(planted, learned):
    m = copy.deepcopy(planted.model)
    out = learned.apply(m, inplace=True)
    assert out is m and int((m.blocks[1].mlp.W_in == 0).sum()) >= int(learned.discretize()["blocks.1.mlp.W_in"].sum())
    with pytest.raises(ValueError, match="shape"):
        learned.apply(tiny_model())


def test_save_load_round_trip(tmp_path, planted, task, learned):
    learned.save(tmp_path / "wm")
    back = WeightMaskResult.load(tmp_path / "wm")
    assert back.config == learned.config and back.mask == learned.mask and back.shape == learned.shape
    assert all(torch.equal(back.logits[n], learned.logits[n]) for n in learned.logits)
    assert back.counts_per_component() == learned.counts_per_component()
    assert back.task is None and back.history == learned.history
    with pytest.raises(ValueError, match="task"):
        back.threshold_sweep(planted.model, [0.5])
    assert back.threshold_sweep(planted.model, [0.5], task=task)[0]["forget_acc"] <= 0.1
    with pytest.raises(FileNotFoundError):
        WeightMaskResult.load(tmp_path / "nothing")


def test_inject_task_and_gqa_head_mask(planted12):
    res = learn_weight_mask(planted12.model, Mask(frozenset({planted12.lookup_mlp})), planted12.task, config=FAST.replace(steps=2))
    assert res.objective == "inject" and "edit_acc" in default_evaluate(planted12.task)(res.apply(planted12.model))
    # grouped-query attention: a head's entries include its group's shared K/V slice
    from factlens.data import sports_facts

    model = tiny_model(variant="gqa")
    t = sports_unlearning(sports_facts().shuffled(0)[:40])
    head = Mask(frozenset({Component("head", 1, 1)}))
    res = learn_weight_mask(model, head, t, config=FAST.replace(steps=2, lr=2.0, forget_batch_size=4, retain_batch_size=4))
    assert set(res.region) == set(head.to_param_masks(model))
    assert res.n_entries == head.n_params(model)
    out = res.apply(model, n_masked=50)
    changed = {n for n, p in out.named_parameters() if not torch.equal(p, dict(model.named_parameters())[n])}
    assert changed <= set(res.region)


def test_bad_input(planted, task):
    with pytest.raises(ValueError, match="non-empty"):
        learn_weight_mask(planted.model, Mask.empty(), task)
    with pytest.raises(ValueError, match="Task"):
        learn_weight_mask(planted.model, Mask(frozenset({planted.lookup_mlp})), object())
    with pytest.raises(ValueError, match="relaxation"):
        WeightMaskConfig(relaxation="gumbel")
    with pytest.raises(ValueError, match="l_reg"):
        WeightMaskConfig(l_reg=-1)
    # batch sizes of 0 trained without the forget loss (or crashed deep inside); NaN and floats passed
    with pytest.raises(ValueError, match="forget_batch_size must be >= 1 or None, got 0"):
        WeightMaskConfig(forget_batch_size=0)
    with pytest.raises(ValueError, match="sft_batch_size must be >= 1, got 0"):
        WeightMaskConfig(sft_batch_size=0)
    with pytest.raises(ValueError, match="WeightMaskConfig.init must be a finite number, got nan"):
        WeightMaskConfig(init=float("nan"))
    with pytest.raises(TypeError, match="WeightMaskConfig.steps must be an integer, got 2.5"):
        WeightMaskConfig(steps=2.5)


def test_sigmoid_relaxation_runs(planted, task, mask):
    res = learn_weight_mask(planted.model, mask, task, config=FAST.replace(relaxation="sigmoid", steps=3))
    assert len(res.history) == 3 and res.n_masked() == 0  # logits start at 3 and move <= 0.2 per step


def test_straight_through_forward_uses_exactly_the_hard_mask(planted, task, mask, monkeypatch):
    """(hard + soft) - soft rounded to 0.99999994 for about a quarter of the kept entries, so the
    trained forward pass was not the hard mask that discretize()/apply() give."""
    import torch

    seen = []
    real = torch.func.functional_call

    def spy(module, params, *args, **kwargs):
        seen.append({n: t.detach().clone() for n, t in params.items()})
        return real(module, params, *args, **kwargs)

    monkeypatch.setattr(torch.func, "functional_call", spy)
    # init 4.0: sigmoid(4) is one of the values where (1 + soft) - soft rounds to 0.99999994
    learn_weight_mask(planted.model, mask, task, config=FAST.replace(steps=1, init=4.0, relaxation="straight_through"))
    weights = dict(planted.model.named_parameters())
    for n in mask.to_param_masks(planted.model):  # the initial logits keep every entry
        assert torch.equal(seen[0][f"model.{n}"], weights[n].detach()), n


def test_save_replaces_its_own_files_and_refuses_others(tmp_path, learned):
    """WeightMaskResult.save overwrote a meta.json (or mask_logits.safetensors) of anything else in the folder."""
    learned.save(tmp_path / "wm")
    learned.save(tmp_path / "wm")  # a re-run cell replaces the earlier weight mask
    assert WeightMaskResult.load(tmp_path / "wm").mask == learned.mask
    for name in ("meta.json", "mask_logits.safetensors"):
        folder = tmp_path / f"mine_{name}"
        folder.mkdir()
        (folder / name).write_bytes(b'{"mine": true}')
        with pytest.raises(ValueError, match=rf"{name} exists and is not a weight mask's .* factlens wrote"):
            learned.save(folder)
        assert [p.name for p in folder.iterdir()] == [name]  # neither file written, the user's one unchanged
        assert (folder / name).read_bytes() == b'{"mine": true}'
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file; WeightMaskResult.save writes a folder"):
        learned.save(tmp_path / "a_file")


def test_discretize_refuses_a_count_that_is_not_an_integer(learned):
    """n_masked=2.5 failed in slicing with a bare TypeError; n_masked=True ablated one entry."""
    import numpy as np

    for bad in (2.5, True, "3"):
        with pytest.raises(ValueError, match=f"n_masked must be an integer .*got {bad!r}"):
            learned.discretize(n_masked=bad)
    with pytest.raises(ValueError, match="n_masked must be an integer"):
        learned.counts_per_component(n_masked=1.0)
    assert sum(int(m.sum()) for m in learned.discretize(n_masked=np.int64(3)).values()) == 3


def test_history_frame_has_the_recorded_keys(planted, task, mask, learned):
    """The docs said a weight mask's history could be read with to_frame() and had EditResult's columns;
    it had no to_frame, no lr, and only the loss terms of nonzero weight."""
    frame = learned.to_frame()
    assert list(frame.columns) == list(learned.history[0]) and len(frame) == len(learned.history)
    assert set(frame.columns) == {"step", "loss", "loss_forget", "loss_retain", "loss_reg", "n_ablated"}  # l_sft=0
    assert frame["loss"].tolist() == [h["loss"] for h in learned.history]
    no_retain = learn_weight_mask(planted.model, mask, task, config=FAST.replace(steps=2, l_retain=0.0))
    assert list(no_retain.to_frame().columns) == ["step", "loss", "loss_forget", "loss_reg", "n_ablated"]
    empty = learn_weight_mask(planted.model, mask, task, config=FAST.replace(steps=0)).to_frame()
    assert empty.empty and list(empty.columns) == ["step", "loss", "loss_reg", "n_ablated"]


@pytest.mark.parametrize("config", [EditConfig(steps=1), None], ids=["EditConfig", "None"])
def test_a_config_that_is_not_a_weight_mask_config_is_refused(planted, task, mask, config):
    # failed with an AttributeError deep inside (cfg.train_format); None is not documented as the defaults
    with pytest.raises(TypeError, match=f"config must be a WeightMaskConfig, got {type(config).__name__}; leave it "
                                        "out for the defaults"):
        learn_weight_mask(planted.model, mask, task, config=config)
