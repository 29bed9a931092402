"""factlens.prompt_scores: scoring formatted prompts among their candidates."""

from __future__ import annotations

import copy

import pytest
import torch

from factlens.data.formats import format_prompts
from factlens.prompt_scores import score_prompts
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nan_log_probabilities_raise_instead_of_picking_the_first_candidate():
    """A model with NaN weights gave NaN log-probs for every candidate; argmax picked index 0, the true
    answer, so a diverged model scored as knowing every fact (or, in an unlearning run, as forgetting none)."""
    p = planted_fact_model()
    broken = copy.deepcopy(p.model)
    with torch.no_grad():
        broken.blocks[1].mlp.W_out.fill_(float("nan"))
    items = format_prompts(p.dataset)
    assert score_prompts(p.model, items).accuracy() == 1.0
    with pytest.raises(FloatingPointError, match="NaN log-probabilities"):
        score_prompts(broken, items)
