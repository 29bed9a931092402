"""factlens.evaluation.logit_lens: a tie at the read layer is no answer of a control prompt."""

from __future__ import annotations

import dataclasses

import numpy as np

from factlens.data.formats import format_prompts
from factlens.evaluation.logit_lens import LensScores, _Read, _selectivity
from factlens.testing import planted_fact_model


def _scores(items, winner):
    n, L = len(items), winner.shape[1]
    return LensScores((0, 1), np.zeros((n, L)), np.full((n, L), np.nan), np.zeros((n, L)), np.zeros((n, L), int), winner)


def test_a_control_prompt_tied_at_the_read_layer_says_nothing():
    """With ties scored as -1, the lens's control answers indexed the candidates with it: a tied
    control "said" its last candidate, here the forget facts' answer, so the control bias was 1.0
    for those facts; and a tie at layer 0 dropped the control prompt at every layer."""
    t = planted_fact_model().task
    forget = tuple(format_prompts(t.forget))
    last = "basketball"  # every control's last candidate
    maintain = tuple(dataclasses.replace(it, candidates=tuple(c for c in it.candidates if c != last) + (last,))
                     for it in format_prompts(t.maintain))
    answers = [it.candidates.index(it.answer) for it in maintain]
    tied_at_1 = np.stack([answers, [-1] * len(maintain)], 1)
    read = _Read({"forget": forget, "maintain": maintain},
                 {"forget": _scores(forget, np.zeros((len(forget), 2), int)), "maintain": _scores(maintain, tied_at_1)})
    sel = _selectivity(read, {it.record_id: 1.0 for it in forget},
                       [{"layer": 1, "held_out": [it.record_id for it in forget]}], seed=0)
    assert sel is not None and set(sel.bias.values()) == {0.0}
    tied_at_0 = np.stack([[-1] * len(maintain), answers], 1)  # read at layer 1, where every control answers
    read0 = _Read({"forget": forget, "maintain": maintain},
                  {"forget": _scores(forget, np.zeros((len(forget), 2), int)), "maintain": _scores(maintain, tied_at_0)})
    assert _selectivity(read0, {it.record_id: 1.0 for it in forget},
                        [{"layer": 1, "held_out": [it.record_id for it in forget]}], seed=0) is not None
