"""localize() refuses anything but a TransformerLens model with the same clear TypeError for every
method (audit finding 5: patching, tracing and attribution failed with "'NoneType' object has no
attribute 'cfg'")."""

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

_OPTIONS = {"manual": {"components": ["L1.mlp"]}}


def _methods():
    from factlens.localization import METHODS

    return list(METHODS.names())


@pytest.mark.parametrize("method", _methods())
@pytest.mark.parametrize("bad", [None, "gpt2", "linear"])
def test_localize_refuses_a_non_model_for_every_method(planted12, method, bad):
    import torch

    import factlens

    model = torch.nn.Linear(2, 2) if bad == "linear" else bad
    with pytest.raises(TypeError, match="TransformerLens HookedTransformer.*load_model"):
        factlens.localize(model, planted12.dataset, method=method, show_progress=False, **_OPTIONS.get(method, {}))


def test_localize_refuses_an_edit_result(planted12):
    """An edit's result instead of result.model."""
    import factlens
    from factlens import EditConfig, Mask

    res = factlens.edit(planted12.model, Mask([planted12.lookup_mlp]), planted12.task,
                        config=EditConfig(lr=1e-2, steps=1, batch_size=4, grad_accum=1, l_sft=0.0), show_progress=False)
    with pytest.raises(TypeError, match="model must be a TransformerLens HookedTransformer, got EditResult"):
        factlens.localize(res, planted12.dataset, method="activation_patching", show_progress=False)


def test_localization_scores_checks_the_model_too(planted12):
    from factlens.localization import localization_scores

    with pytest.raises(TypeError, match="TransformerLens HookedTransformer.*load_model"):
        localization_scores(None, planted12.dataset, "causal_tracing", seed=0)
