"""Computations on the unedited model, done once and reused across :func:`~factlens.evaluation.evaluate` calls.

Every suite measures the original (unedited) model next to the evaluated one: its scores
in each prompt format, its general-text residuals, its MMLU answers, its probes, the
soft-prompt attack on it. When several edits of the same model are evaluated on the same
task (the runner's six localizations, a sweep), these numbers are identical every time.
A :class:`BaselineCache` passed as ``evaluate(..., baselines=cache)`` keeps them:

>>> import copy
>>> from factlens.testing import planted_fact_model
>>> from factlens.evaluation import evaluate
>>> p = planted_fact_model()
>>> edited = copy.deepcopy(p.model)  # stands in for an edit
>>> cache = BaselineCache()
>>> a = evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=cache)
>>> b = evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=cache)
>>> cache.misses, cache.hits  # forget and maintain scores of the original: computed once, then reused
(2, 2)

A cache belongs to one original model *object*. Every ``evaluate`` call re-checks a
fingerprint of the original's parameters (float64 sums, one pass over the weights) and
empties the cache if they changed, so a cache can never serve numbers of another model
state; using it with a different model object raises ``ValueError``. Entries are keyed by
everything that decides them (suite, facts, prompts, settings), so evaluating another task
or config simply adds entries. Memory: the entries are small (scores, final residuals of
the general-text chunks, probe curves), a few MB for the default settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Hashable, Iterable, TypeVar

import torch

__all__ = ["BaselineCache", "cached", "facts_key", "items_key", "config_key"]

T = TypeVar("T")


def _fingerprint(model, chunk: int = 2**20) -> tuple[float, ...]:
    """Float64 sum of each parameter, in chunks (a float64 copy of a 262k-token embedding would be 1.3 GB)."""
    with torch.no_grad():
        return tuple(math.fsum(float(c.double().sum()) for c in p.detach().reshape(-1).split(chunk))
                     for p in model.parameters())


class BaselineCache:
    """Results on one unedited model, reused across evaluations (see the module docs).

    Attributes:
        hits: Lookups answered from the cache.
        misses: Lookups that computed (and stored) their value.
    """

    def __init__(self) -> None:
        self._original: Any = None
        self._fingerprint: tuple[float, ...] | None = None
        self._store: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"BaselineCache(entries={len(self)}, hits={self.hits}, misses={self.misses})"

    def clear(self) -> None:
        """Drop every entry (the binding to the original model stays)."""
        self._store.clear()

    def bind(self, original) -> None:
        """Bind to ``original`` (first call) or check it is the same object, unchanged.

        Raises:
            ValueError: ``original`` is another object than the one the cache belongs to.
        """
        if original is None:
            return
        if self._original is None:
            self._original = original
        elif self._original is not original:
            raise ValueError("this BaselineCache holds results of another original model object; use one cache per "
                             "original model (or cache.clear() and a new BaselineCache)")
        fp = _fingerprint(original)
        if fp != self._fingerprint:
            self._store.clear()  # the original's parameters changed since the entries were made
            self._fingerprint = fp

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under ``key``, computing and storing it on the first call."""
        if key in self._store:
            self.hits += 1
            return self._store[key]
        self.misses += 1
        value = compute()
        self._store[key] = value
        return value


def cached(cache: BaselineCache | None, key: Hashable, compute: Callable[[], T]) -> T:
    """``cache.get(key, compute)``, or just ``compute()`` without a cache."""
    return compute() if cache is None else cache.get(key, compute)


def facts_key(facts: Iterable[Any]) -> tuple:
    """A hashable key of fact records (id, subject, template, answer, target, relation, candidates)."""
    return tuple((r.id, r.subject, r.template, r.answer, r.target_new, r.relation, tuple(r.candidates)) for r in facts)


def items_key(items: Iterable[Any]) -> tuple:
    """A hashable key of formatted prompts (prompt, answer, target, candidates)."""
    return tuple((it.prompt, it.answer, it.target, tuple(it.candidates)) for it in items)


def config_key(config: Any) -> str:
    """A hashable key of a dataclass config (its fields as sorted JSON)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.dumps(d, sort_keys=True, default=str)
