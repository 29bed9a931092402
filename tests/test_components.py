import pytest
import torch

from factlens.components import Component, Mask, ModelShape, resolve_components
from factlens.scores import ComponentScores
from factlens.testing import tiny_model


@pytest.fixture(scope="module", params=["standard", "gqa", "gated", "gqa_gated"])
def model(request):
    return tiny_model(variant=request.param)


def test_labels_round_trip():
    for c in [Component("head", 3, 2), Component("mlp", 5), Component("neuron", 1, 17)]:
        assert Component.parse(c.label) == c
        assert str(c) == c.label
    with pytest.raises(ValueError, match="cannot parse"):
        Component.parse("layer3")
    with pytest.raises(ValueError):
        Component("mlp", 1, 3)
    with pytest.raises(ValueError):
        Component("attn", 1, 3)


def test_param_masks_match_n_params(model):
    shape = ModelShape.of(model)
    masks = [
        Mask.from_labels(["L0H0"]),
        Mask.from_labels(["L0H0", "L0H1"]),  # same KV group in GQA: shared K/V counted once
        Mask.from_labels(["L1.mlp", "L0H3"]),
        Mask.from_labels(["L1.N3", "L1.N4", "L0.mlp"]),
        Mask.everything(model),
        Mask.empty(),
    ]
    for m in masks:
        pm = m.to_param_masks(model)
        assert sum(int(t.sum()) for t in pm.values()) == m.n_params(model) == m.n_params(shape)


def test_gqa_head_includes_shared_kv():
    m = tiny_model(variant="gqa")
    pm = Mask.from_labels(["L0H1"]).to_param_masks(m)
    kv = pm["blocks.0.attn._W_K"]
    assert kv[0].all() and not kv[1].any()  # heads 0,1 share KV group 0
    assert pm["blocks.0.attn.W_Q"][1].all() and not pm["blocks.0.attn.W_Q"][0].any()
    two = Mask.from_labels(["L0H0", "L0H1"]).n_params(m)
    one = Mask.from_labels(["L0H0"]).n_params(m)
    s = ModelShape.of(m)
    assert two - one == 2 * s.d_model * s.d_head + s.d_head  # only Q and O of the second head


def test_kv_heads_equal_to_heads_use_grouped_parameter_names():
    """TransformerLens builds its grouped-query module (``_W_K``, ``_b_K`` ...) whenever the config sets
    ``n_key_value_heads``, also where it equals ``n_heads`` (its Gemma-7B config): a head mask raised
    KeyError for ``W_K`` there."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=20, n_ctx=16,
                                  act_fn="gelu", n_key_value_heads=2, device="cpu")
    m = HookedTransformer(cfg)
    mask = Mask.from_labels(["L0H1"])
    pm = mask.to_param_masks(m)
    assert pm["blocks.0.attn._W_K"][1].all() and not pm["blocks.0.attn._W_K"][0].any()
    assert pm["blocks.0.attn._b_V"][1].all() and not pm["blocks.0.attn._b_V"][0].any()
    assert sum(int(t.sum()) for t in pm.values()) == mask.n_params(m)
    shape = ModelShape.of(m)
    assert shape.grouped and ModelShape.from_dict(shape.to_dict()) == shape
    # files written before the field: what grouped meant then (n_kv_heads != n_heads)
    old = {k: v for k, v in ModelShape.of(tiny_model(variant="gqa")).to_dict().items() if k != "grouped_kv_params"}
    assert ModelShape.from_dict(old) == ModelShape.of(tiny_model(variant="gqa"))
    # files written before has_bias was dropped (always True, never read from the model)
    with_bias = {**ModelShape.of(m).to_dict(), "has_bias": True}
    assert ModelShape.from_dict(with_bias) == shape and "has_bias" not in shape.to_dict()


def test_mask_set_operations_and_io(tmp_path):
    a = Mask.from_labels(["L0H1", "L1.mlp"], name="a")
    b = Mask.from_labels(["L1.mlp", "L0.mlp"])
    assert (a | b).labels == ["L0H1", "L0.mlp", "L1.mlp"]
    assert (a & b).labels == ["L1.mlp"]
    assert (a - b).labels == ["L0H1"]
    assert "L0H1" in a
    a.save(tmp_path / "m.json")
    assert Mask.load(tmp_path / "m.json") == a


def test_scores_budget_and_top(tmp_path):
    m = tiny_model(variant="gqa_gated")
    shape = ModelShape.of(m)
    comps = shape.all_heads() + shape.all_mlps()
    vals = torch.linspace(1, 0.1, len(comps)).numpy()
    sc = ComponentScores(tuple(comps), vals, "manual", "x", shape)
    assert sc.top(2) == comps[:2]
    mlp = Mask.from_labels(["L0.mlp"]).n_params(shape)
    for budget in [0, mlp, mlp + 1, 3 * mlp, 10**9]:
        mask = sc.to_mask(param_budget=budget)
        n = mask.n_params(shape)
        assert n <= budget
        # nothing left out could still fit
        for c in comps:
            if c not in mask:
                assert Mask(mask.components | {c}).n_params(shape) > budget
    with pytest.raises(ValueError, match="exactly one"):
        sc.to_mask(top_k=1, threshold=0.5)
    sc.save(tmp_path / "s.json")
    back = ComponentScores.load(tmp_path / "s.json")
    assert back.as_dict() == pytest.approx(sc.as_dict())
    fig = sc.plot()
    assert fig.data[0].zmid == 0
    df = sc.to_frame()
    assert len(df) == len(comps)


# --- resolve_components: one set of spellings for every method ---------------------------------


def _shape(**kw):
    return ModelShape(**{"n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "d_model": 8, "d_head": 4, "d_mlp": 16, **kw})


def test_resolve_components_spellings():
    s = _shape()
    every = ["L0H0", "L0H1", "L0.mlp", "L1H0", "L1H1", "L1.mlp"]
    assert [c.label for c in s.all_components()] == every
    assert list(Mask(frozenset(s.all_components()))) == s.all_components()  # the order of Mask iteration
    for spec in (None, "all"):
        assert [c.label for c in resolve_components(s, spec)] == every
    for spec in ("heads", "head"):
        assert [c.label for c in resolve_components(s, spec)] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    for spec in ("mlps", "mlp"):
        assert [c.label for c in resolve_components(s, spec)] == ["L0.mlp", "L1.mlp"]
    # explicit components keep the order given, as labels, Components, a single one or a Mask
    assert resolve_components(s, ["L1.mlp", Component("head", 0, 1)]) == [Component("mlp", 1), Component("head", 0, 1)]
    assert resolve_components(s, "L1H0") == resolve_components(s, Component("head", 1, 0)) == [Component("head", 1, 0)]
    assert resolve_components(s, ("L0.mlp",)) == [Component("mlp", 0)]
    assert resolve_components(s, Mask.from_labels(["L1.mlp", "L0H0"])) == [Component("head", 0, 0), Component("mlp", 1)]
    assert resolve_components(s, ["L0.N3", "L1H1"], neurons=True) == [Component("neuron", 0, 3), Component("head", 1, 1)]
    # a model or its config works as the shape
    m = tiny_model(n_layers=2)
    assert resolve_components(m) == ModelShape.of(m).all_components()
    # attention-only models have no MLPs
    attn = _shape(attn_only=True)
    assert [c.label for c in resolve_components(attn)] == ["L0H0", "L0H1", "L1H0", "L1H1"]


@pytest.mark.parametrize("spec, kw, err, match", [
    ("everything", {}, ValueError, r"components: cannot parse .*'everything'.*valid spellings: None or 'all'.*'heads', 'mlps'"),
    ("L0 mlp", {}, ValueError, "cannot parse"),
    ([], {}, ValueError, "components is empty; pass None or 'all'"),
    (["L0H0", "L1.mlp", "L0H0"], {}, ValueError, r"duplicates: \['L0H0'\]"),
    (["L0.N3"], {}, ValueError, "L0.N3 is a neuron.*not single neurons"),
    (["L2H0"], {}, ValueError, "L2H0 does not exist in a model with 2 layers x 2 heads"),
    (["L0H2"], {}, ValueError, "L0H2 does not exist"),
    (["L0.N16"], {"neurons": True}, ValueError, r"L0.N16 does not exist: neuron index out of range \(d_mlp=16\)"),
    ([3], {}, TypeError, "components must be None or 'all'.*got the item 3"),
    (3, {}, TypeError, "components must be None or 'all'"),
    (["L9.mlp"], {"what": "senders"}, ValueError, "^senders: L9.mlp does not exist"),
])
def test_resolve_components_errors(spec, kw, err, match):
    with pytest.raises(err, match=match):
        resolve_components(_shape(), spec, **kw)


def test_resolve_components_attention_only_errors():
    attn = _shape(attn_only=True)
    with pytest.raises(ValueError, match="components='mlps': the model is attention-only"):
        resolve_components(attn, "mlps")
    with pytest.raises(ValueError, match="L0.mlp does not exist: the model is attention-only"):
        resolve_components(attn, ["L0.mlp"])


def test_an_interrupted_mask_save_leaves_the_old_file(tmp_path, monkeypatch):
    """Mask.save wrote the file in place: interrupted half way, the saved mask was lost (the same
    as ComponentScores.save before it wrote a temporary file first)."""
    import pathlib

    path = tmp_path / "mask.json"
    old = Mask([Component("mlp", 1)])
    old.save(path)
    real = pathlib.Path.write_text

    def half_then_fail(self, text, *a, **kw):
        real(self, text[: len(text) // 2], *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Mask([Component("mlp", 2), Component("head", 0, 1)]).save(path)
    monkeypatch.undo()
    assert Mask.load(path) == old


def test_a_mask_with_components_the_model_lacks_is_refused(model):
    """n_params counted from the shape alone: L7H9 of a 2-layer model had 1,048 parameters, L0.N999
    65, while to_param_masks raised (a mask loaded from another model's file sets a budget)."""
    for labels, what in ((["L7H9"], "does not exist in a model with 2 layers"),
                         (["L0H0", "L0.N999"], "neuron index out of range")):
        m = Mask.from_labels(labels, name="saved")
        for count in (lambda: m.n_params(model), lambda: m.n_params(ModelShape.of(model)),
                      lambda: m.to_param_masks(model)):
            with pytest.raises(ValueError, match=f"mask 'saved': .*{what}"):
                count()
    attn_only = tiny_model(variant="attn_only")
    with pytest.raises(ValueError, match="attention-only and has no MLPs"):
        Mask.from_labels(["L0.mlp"]).n_params(attn_only)


def test_mask_items_are_parsed_and_a_bare_string_is_refused(model):
    """Mask(["L1.mlp"]) kept the raw string and Mask("L1.mlp") six letters: both failed only later
    (repr, n_params, edit: "'str' object has no attribute 'layer'"); from_labels("L1.mlp") parsed
    the letters ("cannot parse component label 'L'")."""
    m = Mask(["L1.mlp", Component("head", 0, 1)])
    assert m == Mask.from_labels(["L1.mlp", "L0H1"]) and repr(m) == "Mask(L0H1, L1.mlp)"
    assert m.n_params(model) == Mask.from_labels(["L0H1", "L1.mlp"]).n_params(model)
    for bad, match in (("L1.mlp", r"got the single str 'L1.mlp'; write Mask\(\['L1.mlp'\]\)"),
                       (Component("mlp", 1), r"got the single Component 'L1.mlp'"),
                       ([1], r"got the item int '1'"), (5, r"got int '5'")):
        with pytest.raises(TypeError, match=match):
            Mask(bad)
    with pytest.raises(ValueError, match="cannot parse component label 'L9'"):
        Mask(["L9"])
    with pytest.raises(TypeError, match=r"from_labels takes a list of labels, got the string 'L1.mlp'"):
        Mask.from_labels("L1.mlp")
    scores = ComponentScores.from_dict_of_scores({"L0H1": 1.0, "L1.mlp": 0.5}, method="manual", metric="x",
                                                 shape=ModelShape.of(model))
    with pytest.raises(TypeError, match=r"scores.to_mask\(top_k=...\)"):
        Mask(scores)  # every scored component, where a chosen few were meant


def test_mask_save_replaces_its_own_file_and_refuses_any_other(tmp_path):
    """Mask.save overwrote any file (a notebook's notes, a CSV) without a word."""
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my precious notes\n")
    with pytest.raises(ValueError, match=r"notes.txt exists and is not a saved mask factlens wrote; it is left alone"):
        Mask.from_labels(["L1.mlp"]).save(notes)
    assert notes.read_bytes() == b"my precious notes\n"
    path = tmp_path / "m.json"
    for labels in (["L1.mlp"], ["L0H1", "L0.mlp"], []):  # a re-run cell replaces the earlier mask
        Mask.from_labels(labels, name='a "quoted" name').save(path)
        assert Mask.load(path) == Mask.from_labels(labels, name='a "quoted" name')


def _cfg(**kw):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(**{"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "n_ctx": 16,
                                      "d_vocab": 20, "act_fn": "silu", **kw})


def test_model_shape_refuses_mixture_of_experts():
    """A mixture-of-experts layer was counted as one dense MLP (6,240 of its 24,704 parameters),
    edits crashed with a KeyError on W_in and the LoRA / quantization attacks skipped the experts."""
    with pytest.raises(ValueError, match=r"mixture-of-experts models \(cfg.num_experts=4\) are not supported"):
        ModelShape.of(_cfg(num_experts=4, experts_per_token=2, gated_mlp=True))


def test_model_shape_refuses_bidirectional_attention():
    """With bidirectional attention the right padding and the later tokens of a shared prefix reach
    every position: activation patching was off by up to 0.32 and scores moved with batch_size."""
    with pytest.raises(ValueError, match="attention_dir='bidirectional' is not supported.*causal"):
        ModelShape.of(_cfg(attention_dir="bidirectional"))
    assert ModelShape.of(_cfg()).n_layers == 2  # the causal default passes


def test_localize_refuses_a_bidirectional_model_before_scoring():
    import factlens
    from factlens.data import sports_facts
    from factlens.testing.tiny import build_hooked, seeded

    tok = tiny_model().tokenizer
    with seeded(0):
        m = build_hooked(_cfg(attention_dir="bidirectional", d_vocab=len(tok), act_fn="gelu"), tok)
    with pytest.raises(ValueError, match="attention_dir='bidirectional' is not supported"):
        factlens.localize(m, list(sports_facts())[:8], method="activation_patching")
