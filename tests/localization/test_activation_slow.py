"""Exact activation patching on Gemma 3 270M against ``transformer_lens.patching`` (slow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching

from factlens.components import Component
from factlens.data import sports_facts
from factlens.localization.activation import activation_patching
from factlens.localization.pairs import make_pairs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# two-token subjects (Gemma tokenizer), so the one-shot prompts have the same length
SUBJECTS = ("LeBron James", "Babe Ruth", "Tom Brady", "Derek Jeter")
# TransformerLens takes one full forward pass (full logits) per patch: compare a subset of
# layers (first, middle, last) to keep the test within a few minutes
LAYERS = (0, 8, 17)




def _all_pos_setter(corrupted_activation, index, clean_activation):
    corrupted_activation[...] = clean_activation
    return corrupted_activation


def test_matches_transformer_lens_on_gemma(gemma):
    recs = [r for r in sports_facts() if r.subject in SUBJECTS]
    assert len(recs) == 4
    pairs = make_pairs(gemma, recs, seed=0)
    assert len(set(pairs.clean.lengths.tolist())) == 1
    s = activation_patching(gemma, recs, include_resid=False)
    assert len(s) == gemma.cfg.n_layers * (gemma.cfg.n_heads + 1)
    # the model knows these facts: clean logit diff positive, corrupted negative
    assert min(s.clean_metric) > 0 and max(s.corrupted_metric) < 0

    b = torch.arange(len(pairs))
    last = pairs.clean.last_pos

    def metric(logits):
        lg = logits[b, last]
        return (lg[b, pairs.clean_answer] - lg[b, pairs.corrupted_answer]).mean()

    with torch.inference_mode():
        _, clean_cache = gemma.run_with_cache(pairs.clean.tokens)
        heads_idx = pd.DataFrame([(L, h) for L in LAYERS for h in range(gemma.cfg.n_heads)],
                                 columns=["layer", "head_index"])
        heads = tl_patching.generic_activation_patch(gemma, pairs.corrupted.tokens, clean_cache, metric,
                                                     tl_patching.layer_head_vector_patch_setter, "z",
                                                     index_df=heads_idx)
        mlps = tl_patching.generic_activation_patch(gemma, pairs.corrupted.tokens, clean_cache, metric,
                                                    _all_pos_setter, "mlp_out",
                                                    index_df=pd.DataFrame({"layer": list(LAYERS)}))
    ours = dict(zip(s.components, s.patched))
    got = [ours[Component("head", L, h)] for L, h in heads_idx.itertuples(index=False)]
    got += [ours[Component("mlp", L)] for L in LAYERS]
    ref = np.concatenate([heads.numpy(), mlps.numpy()])
    # measured max difference: ~3e-6 on logit differences of size ~3
    np.testing.assert_allclose(np.array(got), ref, atol=1e-4, rtol=0)
