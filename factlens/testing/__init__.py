"""Test models: tiny random ``HookedTransformer`` variants and a planted-fact model.

* :func:`tiny_model` - small random models (standard, GQA, gated MLP) with a word tokenizer
  covering the built-in data sets.
* :func:`planted_fact_model` - a hand-built model whose fact lookup lives in MLP layer 1 and
  whose attribute mover is head 2.1 (see :mod:`factlens.testing.planted`).
* :func:`word_tokenizer` - the offline word-level tokenizer they use.
* :mod:`factlens.testing.invariants` - ``snapshot`` / ``assert_unchanged`` / ``no_hooks``:
  a call left the user's model as it was.
"""

from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.testing.planted import PlantedFactModel, planted_fact_model
from factlens.testing.tiny import tiny_model
from factlens.testing.tokenizer import word_tokenizer

__all__ = ["tiny_model", "planted_fact_model", "PlantedFactModel", "word_tokenizer", "snapshot", "assert_unchanged",
           "no_hooks"]
