"""evaluate() leaves every submodule's train/eval mode as it was, and refuses a mask of another model
before any suite runs (audit findings 3 and 7)."""

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def _modes(model) -> dict[str, bool]:
    return {name: mod.training for name, mod in model.named_modules()}


def test_evaluate_restores_each_submodules_own_mode(planted):
    """A model in train mode with an eval-mode first block came back with the block in train mode
    (evaluate restored only the top-level flag, with model.train(flag))."""
    from factlens.evaluation import evaluate

    m = planted.model
    m.train()
    m.blocks[0].eval()
    try:
        before = _modes(m)
        evaluate(m, planted.task, original=m, suites=["standard"], show_progress=False)
        changed = [n for n, was in before.items() if _modes(m)[n] != was]
        assert changed == [] and m.training and not m.blocks[0].training
    finally:
        m.eval()


def test_evaluate_restores_modes_after_a_failing_suite(planted):
    """The modes come back also when a suite raises."""
    from factlens.evaluation import Suite, SuiteResult, evaluate

    def boom(model, task, **kw) -> SuiteResult:
        assert not any(mod.training for mod in model.modules())  # the suites see an eval-mode model
        raise RuntimeError("boom")

    m = planted.model
    m.train()
    m.blocks[1].eval()
    try:
        before = _modes(m)
        with pytest.raises(RuntimeError, match="boom"):
            evaluate(m, planted.task, suites=[Suite("boom_suite", boom)], show_progress=False)
        assert _modes(m) == before
    finally:
        m.eval()


@pytest.mark.parametrize("label", ["L9.mlp", "L1H7"])
def test_evaluate_refuses_a_mask_the_model_does_not_have_before_any_suite(planted, label):
    """direction_ablation with search_layers="from_mask" failed with "max() arg is an empty sequence"
    (L9.mlp of a 4-layer model) or accepted a head the model lacks (L1H7 of a 2-head model)."""
    from factlens import Mask
    from factlens.evaluation import EvalConfig, Suite, evaluate

    ran = []
    first = Suite("first", lambda model, task, **kw: ran.append(1))
    cfg = EvalConfig(direction_ablation={"search_layers": "from_mask"})
    with pytest.raises(ValueError, match=rf"evaluate\(mask=...\).*{label} does not exist in a model with 4 layers"):
        evaluate(planted.model, planted.task, original=planted.model, suites=[first, "direction_ablation"],
                 mask=Mask.from_labels([label]), config=cfg, show_progress=False)
    assert ran == []  # refused before the first suite ran


def test_evaluate_refuses_an_edit_results_mask_of_another_model(planted):
    """Without mask=, the suites read edit_result.mask: it is checked the same way."""
    from types import SimpleNamespace

    from factlens import Mask
    from factlens.evaluation import evaluate

    fake = SimpleNamespace(mask=Mask.from_labels(["L9.mlp"]))
    with pytest.raises(ValueError, match=r"evaluate\(edit_result.mask=...\).*L9.mlp does not exist"):
        evaluate(planted.model, planted.task, suites=["direction_ablation"], edit_result=fake, show_progress=False)


def test_evaluate_accepts_a_mask_of_the_model(planted):
    from factlens import Mask
    from factlens.evaluation import evaluate

    res = evaluate(planted.model, planted.task, suites=["standard"], mask=Mask([planted.lookup_mlp]),
                   show_progress=False)
    assert res.meta["mask"] == [planted.lookup_mlp.label]
