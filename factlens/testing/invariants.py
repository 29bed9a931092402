"""Checks of the library's promises to the user's model: no hooks left, nothing changed.

Every factlens call that takes a model must leave it as it was (no hooks on its hook
points, parameters bitwise identical, ``requires_grad`` flags restored, no ``.grad``
written) unless it edits in place on request. These helpers make that a one-liner in tests
of factlens and of methods users add:

>>> from factlens.testing import tiny_model
>>> m = tiny_model()
>>> snap = snapshot(m)
>>> _ = m(m.to_tokens("a b"))
>>> no_hooks(m), unchanged(m, snap)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ModelSnapshot", "snapshot", "no_hooks", "unchanged", "assert_unchanged"]


@dataclass(frozen=True)
class ModelSnapshot:
    """A copy of a model's state dict and of its parameters' ``requires_grad`` flags."""

    state: dict[str, torch.Tensor]
    requires_grad: dict[str, bool]


def snapshot(model) -> ModelSnapshot:
    """Copy ``model``'s state dict and ``requires_grad`` flags."""
    return ModelSnapshot({k: v.detach().clone() for k, v in model.state_dict().items()},
                         {n: p.requires_grad for n, p in model.named_parameters()})


def no_hooks(model) -> bool:
    """No hook is attached: none on the model's hook points, and no plain PyTorch forward,
    forward-pre or backward hook on any module (a method that hooks a module directly, as
    ROME's key/value capture does, must remove that hook too)."""
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values()) and all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        and not getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def unchanged(model, snap: ModelSnapshot) -> bool:
    """``model`` matches ``snap`` bitwise, has its flags, no ``.grad`` and no hooks."""
    now = model.state_dict()
    return (now.keys() == snap.state.keys() and all(torch.equal(now[k], v) for k, v in snap.state.items())
            and {n: p.requires_grad for n, p in model.named_parameters()} == snap.requires_grad
            and all(p.grad is None for p in model.parameters()) and no_hooks(model))


def assert_unchanged(model, snap: ModelSnapshot) -> None:
    """:func:`unchanged`, raising ``AssertionError`` that names what differs."""
    now = model.state_dict()
    assert now.keys() == snap.state.keys(), "the model's state dict has other entries"
    for k, v in snap.state.items():
        assert torch.equal(now[k], v), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == snap.requires_grad, "requires_grad flags"
    assert all(p.grad is None for p in model.parameters()), ".grad was written"
    assert no_hooks(model), "hooks were left on the model"
