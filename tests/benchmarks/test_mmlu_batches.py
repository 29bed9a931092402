"""benchmarks/mmlu_batches.py: its "earlier" form is the earlier batching, and it is undone afterwards."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_earlier_batches_cut_character_sorted_prompts_and_restore_the_module(load_benchmark, monkeypatch):
    import factlens.data.mmlu as mmlu
    from factlens.data.mmlu import MMLUQuestion, mmlu_accuracy
    from factlens.testing import tiny_model

    bench = load_benchmark("mmlu_batches")
    seen = []
    real = mmlu.tokenize_prompts
    monkeypatch.setattr(mmlu, "tokenize_prompts", lambda m, ps: seen.append(list(ps)) or real(m, ps))
    m = tiny_model()
    qs = [MMLUQuestion("s", "Q" + "x" * k, ("a", "b", "c", "d"), k % 4) for k in (9, 1, 30, 4, 2)]
    with bench.earlier_batches():
        before = mmlu_accuracy(m, qs, batch_size=2)
    assert [len(b) for b in seen] == [2, 2, 1]
    assert [len(p) for b in seen for p in b] == sorted(len(mmlu.mmlu_prompt(q, [])) for q in qs)
    assert mmlu.length_batches.__module__ == "factlens.tokens" and mmlu._encode.__module__ == "factlens.tokens"
    seen.clear()
    after = mmlu_accuracy(m, qs, batch_size=2)
    assert np.array_equal(before.predicted, after.predicted)
    np.testing.assert_allclose(before.p_correct, after.p_correct, rtol=0, atol=1e-6)
