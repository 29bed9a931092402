"""Every localization method lists its components in the same order and accepts the same spellings."""

from __future__ import annotations

import pytest

from factlens.components import ModelShape
from factlens.localization.activation import activation_patching
from factlens.localization.attribution import attribution_patching
from factlens.localization.controls import manual_scores, random_scores
from factlens.localization.causal_tracing import causal_tracing
from factlens.localization.flu import flu_scores
from factlens.localization.path_patching import path_patching
from factlens.localization.probing import probing

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = {
    "activation_patching": lambda m, d, **kw: activation_patching(m, d, include_resid=False, **kw),
    "attribution_patching": lambda m, d, **kw: attribution_patching(m, d, **kw),
    "causal_tracing": lambda m, d, **kw: causal_tracing(m, d, n_samples=2, include_resid=False, **kw),
    "path_patching": lambda m, d, **kw: path_patching(m, d, **kw),
    "probing": lambda m, d, **kw: probing(m, d, cv=2, **kw),
    "flu": lambda m, d, **kw: flu_scores(m, d, cv=2, repeats=1, **kw),
    "random": lambda m, d, **kw: random_scores(m, d, **kw),
    "manual": lambda m, d, **kw: manual_scores(m, d, components=["L1.mlp"], **kw),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_lists_components_in_the_canonical_order(planted12, method):
    """Per layer, the heads then the MLP (attribution patching used to list all heads, then all MLPs)."""
    s = METHODS[method](planted12.model, planted12.dataset)
    assert list(s.components) == ModelShape.of(planted12.model).all_components()


@pytest.mark.parametrize("spec", ["heads", "mlps", ["L2H1", "L1.mlp"]])
def test_component_options_agree_across_methods(planted12, spec):
    """``components=`` (``senders=`` for path patching) means the same in every method that takes it."""
    m, d = planted12.model, planted12.dataset
    act = METHODS["activation_patching"](m, d, components=spec)
    trace = METHODS["causal_tracing"](m, d, components=spec)
    path = METHODS["path_patching"](m, d, senders=spec)
    assert act.components == trace.components == path.components
    if spec == "heads":
        assert all(c.kind == "head" for c in act.components) and len(act) == 4 * planted12.model.cfg.n_heads
    if spec == "mlps":
        assert [c.label for c in act.components] == [f"L{l}.mlp" for l in range(4)]
    if isinstance(spec, list):
        assert [c.label for c in act.components] == spec  # an explicit list keeps its order

