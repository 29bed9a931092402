"""Inputs of :func:`~factlens.evaluation.lora.add_lora` that used to fail obscurely or silently:
a single target name as a string, a float rank, and a non-positive alpha."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factlens.evaluation.lora import add_lora
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("forward", ["merged", "factored"])
def test_one_target_name_as_a_string_is_that_target(forward):
    """``targets="W_Q"`` was split into the targets 'W', '_', 'Q' and matched nothing."""
    m = tiny_model()
    h = add_lora(m, rank=2, targets="W_Q", forward=forward)
    try:
        assert sorted(h.ranks) == [f"blocks.{i}.attn.W_Q" for i in range(m.cfg.n_layers)]
    finally:
        h.remove()


@pytest.mark.parametrize("rank", [2.5, 2.0, True, "2", None])
def test_a_rank_that_is_not_an_integer_is_refused_clearly(rank):
    """``rank=2.5`` failed inside torch.rand ('type must be tuple of ints')."""
    m = tiny_model()
    before = [n for n, _ in m.named_parameters()]
    with pytest.raises(TypeError, match=r"LoRA rank must be an integer >= 1, got .*rank=8"):
        add_lora(m, rank=rank)
    assert [n for n, _ in m.named_parameters()] == before  # nothing was attached


def test_an_integer_rank_of_numpy_works_and_zero_is_refused():
    h = add_lora(tiny_model(), rank=np.int64(3), targets="W_in")
    assert set(h.ranks.values()) == {3} and type(next(iter(h.ranks.values()))) is int
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        add_lora(tiny_model(), rank=0)


@pytest.mark.parametrize("alpha", [0, 0.0, -4.0, float("nan"), float("inf")])
def test_alpha_must_be_positive(alpha):
    """``alpha=0`` gave scale 0: adapters that never change the model, trained for nothing."""
    with pytest.raises(ValueError, match=r"LoRA alpha must be a finite number > 0 .*alpha=None"):
        add_lora(tiny_model(), rank=2, alpha=alpha)


def test_a_positive_alpha_sets_the_scale():
    h = add_lora(tiny_model(), rank=4, alpha=8, targets=("W_in",))
    assert h.scale == 2.0 and all(p.dtype == torch.float32 for p in h.parameters())
