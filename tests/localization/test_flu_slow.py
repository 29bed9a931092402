"""Slow test: probing and the FLU localization on the real Gemma 3 270M with known sports facts.

Measured (60 known facts, 20 per sport, one-shot prompt, 3x5-fold CV, chance 0.33), subject's
last token, layers 0..17: 0.35 0.41 0.59 0.77 0.80 0.82 0.82 0.87 0.86 0.86 0.91 0.91 0.97
0.96 0.98 0.97 0.99 0.97 -> FLU = MLPs 2, 3 (the rule is discussed in factlens.localization.flu).
"""

from __future__ import annotations

import pytest

from factlens.data import filter_known, sports_facts
from factlens.localization.registry import localization_mask

pytestmark = pytest.mark.slow

N_PER_SPORT = 20


@pytest.fixture(scope="module")
def known_sports(gemma):
    """~60 facts Gemma 3 270M knows (argmax among the three sports), balanced across sports."""
    ds = sports_facts()
    by: dict[str, list[int]] = {}
    for i, r in enumerate(ds):
        by.setdefault(r.answer, []).append(i)
    # screen a balanced pool (not all 385 facts: keeps the test fast), then keep 20 per sport
    pool = ds.subset(sorted(i for idx in by.values() for i in idx[:34]))
    known = filter_known(gemma, pool, batch_size=32)
    keep: dict[str, list[int]] = {}
    for i, r in enumerate(known):
        if len(keep.setdefault(r.answer, [])) < N_PER_SPORT:
            keep[r.answer].append(i)
    assert all(len(v) >= 15 for v in keep.values()), {k: len(v) for k, v in keep.items()}
    return known.subset(sorted(i for v in keep.values() for i in v))


def test_flu_probing_on_gemma(gemma, known_sports):
    mask, scores = localization_mask(gemma, known_sports, "flu", show_progress=False)
    n = gemma.cfg.n_layers
    acc = scores.extra["probe_accuracy"]["subject_last"]
    chance = scores.extra["chance"]
    print("chance", round(chance, 3))
    for pos, curve in scores.extra["probe_accuracy"].items():
        print(pos, [round(a, 2) for a in curve])
    print("FLU layers", scores.extra["flu_layers"], mask.labels)
    assert scores.extra["approach"] == "probing" and len(acc) == n
    assert acc[0] < chance + 0.15  # token identity alone: ~chance for held-out athletes
    assert max(acc) > 0.85  # the sport becomes decodable at the subject
    layers = scores.extra["flu_layers"]
    assert mask and all(c.kind == "mlp" for c in mask) and [c.layer for c in mask] == layers
    assert 1 <= len(layers) <= n // 3
    assert max(layers) < n // 2  # early-to-middle layers
    for hp in gemma.hook_dict.values():
        assert not hp.fwd_hooks
