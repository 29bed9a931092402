"""Tests of ``factlens.scores``: typed fields, ResidMap, persistence (also of older files), selection order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factlens.components import Component, Mask, ModelShape
from factlens.scores import ComponentScores, ResidMap
from factlens.strict_json import strict_loads

SHAPE = ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)
COMPS = tuple(SHAPE.all_components())  # L0H0 L0H1 L0.mlp L1H0 L1H1 L1.mlp


def _scores(**kw) -> ComponentScores:
    per = np.arange(12, dtype=float).reshape(6, 2)
    resid = ResidMap([[0.1, 0.2, 0.3], [0.4, np.nan, 0.6]], offsets=[-3, -2, -1], counts=[1, 2, 2],
                     tokens=["<bos>", "A", "B"], by_role=[[1.0, np.nan], [3.0, 4.0]], roles=["first", "last"],
                     patched=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    fields = dict(per_example=per, example_ids=["a", "b"], clean_metric=[2.0, 4.0], corrupted_metric=[-1.0, 0.0],
                  patched=per.mean(1), resid=resid, dropped_ids=["c"])
    fields.update(kw)
    return ComponentScores(COMPS, per.mean(1), "activation_patching", "logit_diff", SHAPE, {"direction": "noising"},
                           **fields)


def test_typed_fields_and_properties():
    s = _scores()
    assert s.clean_mean == 3.0 and s.corrupted_mean == -0.5
    assert s.n_examples == 2 and s.n_dropped == 1 and s.dropped_ids == ("c",) and s.example_ids == ("a", "b")
    assert s.resid.n_positions == 3 and s.resid.tokens == ("<bos>", "A", "B")
    bare = ComponentScores(COMPS, np.zeros(6), "random", "uniform", SHAPE)
    assert bare.clean_mean is None and bare.n_dropped is None and bare.n_examples is None and bare.resid is None


def test_json_round_trip_keeps_typed_fields(tmp_path):
    s = _scores()
    s.save(tmp_path / "s.json")
    d = strict_loads((tmp_path / "s.json").read_text())  # standard JSON: the NaN below is written as null
    assert d["resid"]["by_role"][0] == [1.0, None] and d["resid"]["values"][1] == [0.4, None, 0.6]
    assert d["extra"] == {"direction": "noising"} and d["dropped_ids"] == ["c"] and d["resid"]["offsets"] == [-3, -2, -1]
    back = ComponentScores.load(tmp_path / "s.json")
    assert back.components == s.components and back.extra == s.extra
    for f in ("values", "per_example", "clean_metric", "corrupted_metric", "patched"):
        np.testing.assert_array_equal(getattr(back, f), getattr(s, f))
    for f in ("values", "by_role", "patched"):
        np.testing.assert_array_equal(getattr(back.resid, f), getattr(s.resid, f))  # NaN survives
    assert back.resid.roles == ("first", "last") and back.example_ids == ("a", "b") and back.dropped_ids == ("c",)
    assert back.mlp_window is None


def test_files_saved_with_the_keys_in_extra_still_load():
    """Older runs kept these fields in ``extra``; loading maps them onto the typed fields."""
    old_activation = {
        "method": "activation_patching", "metric": "logit_diff", "name": "", "shape": SHAPE.to_dict(),
        "scores": {c.label: float(i) for i, c in enumerate(COMPS)},
        "extra": {"direction": "denoising", "normalize": True, "n_examples": 2, "n_dropped": 1, "dropped_ids": ["x"],
                  "patched": [0.5] * 6, "per_example": [[0.0, 1.0]] * 6, "clean_metric": [2.0, 4.0],
                  "corrupted_metric": [0.0, 1.0], "clean_mean": 3.0, "corrupted_mean": 0.5, "prompts": ["p", "q"],
                  "resid": [[0.1, 0.2], [0.3, 0.4]], "resid_patched": [[1.0, 2.0], [3.0, 4.0]],
                  "resid_offsets": [-2, -1], "resid_counts": [2, 2], "resid_tokens": ["A", "B"]},
    }
    s = ComponentScores.from_dict(json.loads(json.dumps(old_activation)))
    assert s.extra == {"direction": "denoising", "normalize": True, "prompts": ["p", "q"]}
    assert s.dropped_ids == ("x",) and s.n_dropped == 1 and s.n_examples == 2 and s.clean_mean == 3.0
    assert s.patched.tolist() == [0.5] * 6 and s.per_example.shape == (6, 2) and s.corrupted_mean == 0.5
    assert s.resid.values.tolist() == [[0.1, 0.2], [0.3, 0.4]] and s.resid.patched.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert s.resid.offsets == (-2, -1) and s.resid.tokens == ("A", "B") and s.resid.by_role is None

    old_tracing = {
        "method": "causal_tracing", "metric": "prob", "name": "", "shape": SHAPE.to_dict(),
        "scores": {c.label: 0.5 for c in COMPS},
        "extra": {"clean_prob": 0.9, "noised_prob": 0.2, "clean_prob_per_example": [0.9], "noised_prob_per_example": [0.2],
                  "indirect_effect": [0.3] * 6, "per_example": [[0.5]] * 6, "per_example_ids": ["f1"], "sigma": 1.0,
                  "resid": [[0.1], [0.2]], "mlp_window": [[0.3], [0.4]], "resid_offsets": [-1], "resid_counts": [1],
                  "resid_tokens": ["A"], "resid_by_role": [[0.1, 0.1], [0.2, 0.2]],
                  "mlp_window_by_role": [[0.3, 0.3], [0.4, 0.4]], "roles": ["r1", "r2"]},
    }
    t = ComponentScores.from_dict(old_tracing)
    assert t.extra == {"indirect_effect": [0.3] * 6, "sigma": 1.0}
    assert t.clean_mean == 0.9 and t.corrupted_mean == 0.2 and t.example_ids == ("f1",) and t.dropped_ids is None
    assert t.mlp_window.values.tolist() == [[0.3], [0.4]] and t.mlp_window.by_role.tolist() == [[0.3, 0.3], [0.4, 0.4]]
    assert t.resid.roles == t.mlp_window.roles == ("r1", "r2") and t.mlp_window.tokens == ("A",)

    old_path = {"method": "path_patching", "metric": "logit_diff", "name": "", "shape": SHAPE.to_dict(),
                "scores": {c.label: 0.0 for c in COMPS},
                "extra": {"n_dropped": 0, "dropped_ids": [], "per_example": [[0.0]] * 6, "record_ids": ["f1"],
                          "clean_metric": [1.0], "receivers": "logits", "direction": "noising"}}
    p = ComponentScores.from_dict(old_path)
    assert p.example_ids == ("f1",) and p.dropped_ids == () and p.n_dropped == 0
    assert p.extra == {"receivers": "logits", "direction": "noising"}


def test_restrict_keeps_the_matching_rows():
    s = _scores()
    m = s.restrict("mlp")
    assert [c.label for c in m.components] == ["L0.mlp", "L1.mlp"]
    np.testing.assert_array_equal(m.per_example, s.per_example[[2, 5]])
    np.testing.assert_array_equal(m.patched, s.patched[[2, 5]])
    assert m.resid is s.resid and m.clean_metric is s.clean_metric and m.dropped_ids == ("c",)


@pytest.mark.parametrize("kw, match", [
    ({"per_example": np.zeros((5, 2))}, "per_example has 5 rows for 6 components"),
    ({"patched": np.zeros(3)}, "patched has 3 rows"),
    ({"example_ids": ["a"]}, "per_example has 2 examples but there are 1 example_ids"),
    ({"clean_metric": [[1.0]]}, "clean_metric must be a 1-d array"),
])
def test_inconsistent_typed_fields_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        _scores(**kw)


def test_resid_must_be_a_resid_map():
    with pytest.raises(TypeError, match="resid must be a ResidMap"):
        _scores(resid={"values": [[0.0]]})


def test_resid_map_checks_its_columns():
    with pytest.raises(ValueError, match="3 columns but 2 offsets"):
        ResidMap(np.zeros((2, 3)), offsets=[-2, -1], counts=[1, 1, 1])
    with pytest.raises(ValueError, match="by_role has shape"):
        ResidMap(np.zeros((2, 1)), offsets=[-1], counts=[1], by_role=np.zeros((2, 3)), roles=["a"])
    with pytest.raises(ValueError, match="patched has shape"):
        ResidMap(np.zeros((2, 1)), offsets=[-1], counts=[1], patched=np.zeros((1, 1)))


def test_selection_does_not_depend_on_the_listing_order():
    """Ties break in Component order, so methods that list components differently select the same mask."""
    values = {"L0H0": 0.0, "L0H1": 1.0, "L0.mlp": 0.0, "L1H0": 0.0, "L1H1": 1.0, "L1.mlp": 0.0}
    canonical = ComponentScores.from_dict_of_scores(values, method="m", metric="x", shape=SHAPE)
    shuffled = ComponentScores.from_dict_of_scores(dict(reversed(list(values.items()))), method="m", metric="x",
                                                   shape=SHAPE)
    assert canonical.top(4) == shuffled.top(4) == [Component("head", 0, 1), Component("head", 1, 1),
                                                   Component("head", 0, 0), Component("head", 1, 0)]
    budget = Mask.from_labels(["L0H1", "L1H1", "L0H0"]).n_params(SHAPE)
    assert canonical.to_mask(param_budget=budget) == shuffled.to_mask(param_budget=budget)
    assert canonical.to_mask(param_budget=budget).labels == ["L0H0", "L0H1", "L1H1"]


def test_extra_keys_of_a_method_of_ones_own_survive_a_round_trip(tmp_path):
    """Every file went through the migration of older files: ``extra`` keys called ``roles``,
    ``n_examples``, ``patched``... were deleted or moved into typed fields, and an ``extra["resid"]``
    that is not a map made ``load`` fail on a file ``save`` had just written."""
    extra = {"roles": ["subject"], "n_examples": 7, "patched": [1, 2], "resid": "none", "mine": {"a": 1}}
    s = ComponentScores(COMPS, np.arange(6.0), "my_method", "x", SHAPE, extra)
    s.save(tmp_path / "s.json")
    back = ComponentScores.load(tmp_path / "s.json")
    assert back.extra == extra and back.patched is None and back.resid is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # written through a temporary file


def test_nan_scores_are_never_selected():
    """``threshold=`` left NaN-scored components out, but ``top_k`` and a budget took them once the
    finite scores ran out (``rank_by="abs"``)."""
    values = {"L0H0": 0.5, "L1H0": 0.2, "L0H1": np.nan, "L0.mlp": np.nan, "L1H1": np.nan, "L1.mlp": np.nan}
    s = ComponentScores.from_dict_of_scores(values, method="m", metric="x", shape=SHAPE)
    assert s.to_mask(top_k=4).labels == s.to_mask(param_budget=10**6).labels == s.to_mask(threshold=0).labels \
        == ["L0H0", "L1H0"]


def test_selection_scores_never_fill_a_budget_with_unselected_components():
    """FLU and manual scores are 1 (selected) or 0: ranked by |value|, ``top(k)`` and a budget added
    zero-scored layer-0 heads after the selected MLP."""
    from factlens.localization.controls import manual_scores
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    s = manual_scores(p.model, p.dataset, components=[Component("mlp", 1)])
    assert s.top(3) == [Component("mlp", 1)]
    assert s.to_mask(param_budget=10**9).labels == s.to_mask(threshold=0.5).labels == ["L1.mlp"]
    from factlens.localization.flu import _mlp_scores

    flu = _mlp_scores(p.model, [1], {})  # the FLU's scores of its fact-lookup MLPs
    assert flu.top(3) == [Component("mlp", 1)] and flu.to_mask(param_budget=10**9).labels == ["L1.mlp"]


def test_scores_refuse_input_that_would_land_on_the_wrong_components():
    """A 2-d grid was flattened onto the components, components the model lacks counted in masks,
    ``restrict("mlps")`` gave no component, and the scores shared the caller's array."""
    with pytest.raises(ValueError, match=r"1-d\), got shape \(2, 3\)"):
        ComponentScores(COMPS, np.zeros((2, 3)), "m", "x", SHAPE)
    with pytest.raises(ValueError, match=r"L7.mlp does not exist in a model with 2 layers"):
        ComponentScores.from_dict_of_scores({"L0H0": 1.0, "L7.mlp": 2.0}, method="m", metric="x", shape=SHAPE)
    values = np.arange(6.0)
    s = ComponentScores(COMPS, values, "m", "x", SHAPE)
    values[:] = 0.0
    assert s["L1.mlp"] == 5.0  # its own copy
    assert [c.label for c in s.restrict("mlps").components] == ["L0.mlp", "L1.mlp"] == \
        [c.label for c in s.restrict("mlp").components]
    with pytest.raises(KeyError, match="L0.N3 has no score here"):
        s["L0.N3"]
    with pytest.raises(TypeError, match=r"Component index must be an int, got 2.0"):
        Component("head", 1, 2.0)
    assert Component("head", np.int64(1), np.int64(0)).label == "L1H0"
    frame = s.to_frame()
    assert list(frame.columns) == ["component", "kind", "layer", "index", "score"] and str(frame["index"].dtype) == "Int64"


def test_probe_curve_draws_each_accuracy_at_its_probed_layer(planted):
    """probing(layers=[1, 2]) drew its two accuracies at x = 0, 1 while the FLU shading used layer numbers."""
    from factlens.localization.probing import probing

    s = probing(planted.model, planted.dataset, layers=[1, 2], cv=2, positions=("subject_last",))
    s.extra["flu_layers"] = [2]
    fig = s.plot()
    assert [list(t.x) for t in fig.data] == [[1, 2]]
    assert fig.layout.shapes[-1].x0 == 1.5  # the shaded layer 2 sits on the curve's second point


def test_a_heatmap_of_neuron_scores_says_it_leaves_them_out(planted):
    """A manual localization of neurons drew an all-empty heatmap without a word."""
    import factlens

    s = factlens.localize(planted.model, planted.dataset, method="manual", components=["L1.N3", "L0.N5"])
    fig = s.plot()
    assert any("2 neuron score(s) not drawn" in a.text for a in fig.layout.annotations)
    no_neurons = factlens.localize(planted.model, planted.dataset, method="manual", components=["L1.mlp"]).plot()
    assert not any("neuron" in (a.text or "") for a in no_neurons.layout.annotations)


def test_scores_iterate_over_components_and_look_up_by_component_or_label():
    """list(scores), ``"L1.mlp" in scores`` and scores[0] failed with "'int' object has no attribute
    'label'" (Python fell back on __getitem__(0, 1, ...))."""
    order = (COMPS[5], COMPS[0], COMPS[2])  # a method's own listing order
    s = ComponentScores(order, np.array([3.0, 1.0, 2.0]), "m", "x", SHAPE)
    assert list(s) == list(order) == [Component.parse(c) for c in s.to_frame()["component"]]
    assert "L1.mlp" in s and COMPS[0] in s and "L1H1" not in s and COMPS[1] not in s and 3 not in s
    assert s["L1.mlp"] == 3.0 and s[COMPS[2]] == 2.0
    with pytest.raises(TypeError, match=r"looked up by component or label .*got int 0; by position use "
                                        r"scores.components\[i\] and scores.values\[i\]"):
        s[0]


def test_edit_refuses_scores_where_a_mask_belongs(planted):
    """edit(model, scores, task) failed with "'int' object has no attribute 'label'"; iterated now,
    the scores would have edited every scored component."""
    from factlens.editing import edit

    s = ComponentScores.from_dict_of_scores({"L1.mlp": 1.0, "L2H1": 0.5}, method="m", metric="x",
                                            shape=ModelShape.of(planted.model))
    with pytest.raises(TypeError, match=r"mask is a ComponentScores .* scores.to_mask\(param_budget=...\)"):
        edit(planted.model, s, planted.task)


def test_scores_save_replaces_its_own_file_and_refuses_any_other(tmp_path):
    """ComponentScores.save overwrote any file (a notebook's notes, a CSV) without a word."""
    notes = tmp_path / "notes.json"
    notes.write_bytes(b'{"my": "notes"}\n')
    with pytest.raises(ValueError, match=r"notes.json exists and is not a saved ComponentScores factlens wrote"):
        _scores().save(notes)
    assert notes.read_bytes() == b'{"my": "notes"}\n'
    path = tmp_path / "s.json"
    _scores().save(path)
    again = ComponentScores(COMPS, np.arange(6.0), "probing", "probe_accuracy", SHAPE, name='a "quoted" name')
    again.save(path)  # a re-run cell replaces the earlier scores
    assert ComponentScores.load(path).as_dict() == again.as_dict()
