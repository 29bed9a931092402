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

A cache belongs to one original model *object*. Every ``evaluate`` call (and every direct
``run_<suite>(..., original=..., baselines=cache)`` call) re-checks a fingerprint of the
original (its config and every bit of its parameters and buffers, one pass over the
weights: 2.0 s for tensors of Gemma 3 270M's shapes in float32 on one CPU thread,
``python benchmarks/fingerprint.py``) and empties the cache if it changed, so a cache can
never serve numbers of another model state (values changed, moved or swapped in place);
using it with a different model object raises ``ValueError``. Entries are keyed by
everything that decides them (suite, facts, prompts, settings), so evaluating another task
or config simply adds entries. Memory: the entries are small (scores, final residuals of
the general-text chunks, probe curves), a few MB for the default settings.

``BaselineCache(store=BaselineStore(folder))`` also shares the entries between processes:
each computed value is written to the folder, and a cache of another process (the runner's
other worker) reads it there instead of computing it (:mod:`factlens.evaluation.baseline_store`;
``store_hits`` counts those reads).
"""

from __future__ import annotations

import dataclasses
import hashlib
from contextlib import contextmanager
import json
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, Mapping, TypeVar

import torch

from factlens.digests import content_digests

if TYPE_CHECKING:
    from factlens.evaluation.baseline_store import BaselineStore

__all__ = ["BaselineCache", "bound", "cached", "facts_key", "items_key", "config_key", "arrays_key"]

T = TypeVar("T")


def model_config_text(model) -> str:
    """The model's architecture config (``model.cfg``) as sorted JSON (``""`` without one)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return ""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else (
        dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg)))
    return json.dumps(d, sort_keys=True, default=str)


def _fingerprint(model, chunk: int = 2**20) -> str:
    """A digest of the model's architecture config and of the content of every parameter and buffer
    (name, dtype, shape and every bit of its values, in order: :func:`factlens.digests.content_digests`).

    One pass over the weights where they are, ``chunk`` words at a time (three int64 vectors of
    ``chunk`` entries per device, 24 MB), never a float64 copy of a weight. On one CPU thread the
    262144 x 640 embedding takes 0.65 s in float32 (0.33 s in bfloat16), all of Gemma 3 270M's
    parameters and rotary tables 2.0 s (1.0 s), 3-5.5x the former float64 sums
    (``OMP_NUM_THREADS=1 python benchmarks/fingerprint.py --dtype float32``; docs/performance.md).
    Unlike a sum per parameter, it changes when values move (two unembedding columns swapped,
    neurons permuted)."""
    h = hashlib.blake2b(model_config_text(model).encode(), digest_size=20)
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        tensors = dict(named)
        for name, digest in content_digests(tensors, words=chunk).items():
            t = tensors[name]
            h.update(f"\n{kind}|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(digest)
    return h.hexdigest()


class BaselineCache:
    """Results on one unedited model, reused across evaluations (see the module docs).

    Args:
        store: A :class:`~factlens.evaluation.baseline_store.BaselineStore` shared with other
            processes (default: none, entries stay in this process).
        recheck: Fingerprint the original at every :meth:`bind` (every ``evaluate`` call;
            default), emptying the cache when its parameters changed. ``False``: only at the
            first bind; the caller guarantees that the original keeps its values and calls
            :meth:`clear` otherwise. The fingerprint reads every parameter, so a caller whose
            original is a view that pages some of them in from a file (the runner's unedited
            view of an offloaded edit) keeps them out of memory this way; the runner checks
            every parameter bit for bit after each revert instead.

    Attributes:
        hits: Lookups answered from the cache's memory.
        store_hits: Lookups answered from the shared store (computed by another process).
        misses: Lookups that computed (and stored) their value.
    """

    def __init__(self, *, store: "BaselineStore | None" = None, recheck: bool = True) -> None:
        self._original: Any = None
        self._held: Any = None  # the original that the running evaluate() call has checked (see held())
        self._fingerprint: str | None = None
        self._digest: str | None = None
        self._store: dict[Hashable, Any] = {}
        self.shared = store
        self.recheck = bool(recheck)
        self.hits = 0
        self.store_hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        shared = f", store_hits={self.store_hits}" if self.shared is not None else ""
        return f"BaselineCache(entries={len(self)}, hits={self.hits}{shared}, misses={self.misses})"

    def clear(self) -> None:
        """Drop every entry (the binding to the original model stays); the next :meth:`bind`
        fingerprints the original again, also with ``recheck=False``, so that the shared store
        is read and written under its current key, not the old weights' key."""
        self._store.clear()
        self._fingerprint = None
        self._digest = None

    def bind(self, original) -> None:
        """Bind to ``original`` (first call) or check it is the same object, unchanged
        (with ``recheck=False``, or inside :meth:`held` for that object, only the same object).

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
        elif (not self.recheck or self._held is original) and self._fingerprint is not None:
            return  # fingerprinted at the first bind (the caller vouches), or by the running evaluate() call
        fp = _fingerprint(original)
        if fp != self._fingerprint:
            self._store.clear()  # the original's parameters changed since the entries were made
            self._fingerprint = fp
            self._digest = None if self.shared is None else self.shared.model_digest(fp, original)

    @contextmanager
    def held(self, original) -> Iterator["BaselineCache"]:
        """:meth:`bind` to ``original`` once, then trust that check inside the block: the suites
        that ``evaluate`` runs bind the cache again (as direct calls must), and inside the block
        that costs no second fingerprint. Whoever holds it must not change ``original`` meanwhile."""
        self.bind(original)
        before, self._held = self._held, original
        try:
            yield self
        finally:
            self._held = before

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under ``key``, computing and storing it on the first call.

        Raises:
            ValueError: The cache was never bound to an original model (its entries could
                belong to any model).
        """
        if self._original is None:
            raise ValueError("this BaselineCache is not bound to an original model: call cache.bind(original) first "
                             "(evaluate() and every run_<suite>(..., original=..., baselines=cache) do)")
        if key in self._store:
            self.hits += 1
            return self._store[key]
        if self._digest is not None:
            found, value = self.shared.get(self._digest, key)
            if found:
                self.store_hits += 1
                self._store[key] = value
                return value
        self.misses += 1
        value = compute()
        self._store[key] = value
        if self._digest is not None:
            self.shared.put(self._digest, key, value)
        return value


def cached(cache: BaselineCache | None, key: Hashable, compute: Callable[[], T]) -> T:
    """``cache.get(key, compute)``, or just ``compute()`` without a cache."""
    return compute() if cache is None else cache.get(key, compute)


def bound(cache: BaselineCache | None, model, original) -> BaselineCache | None:
    """``cache`` bound to (and checked against) ``original``, or ``None`` when there is nothing to reuse
    (no cache, no original, or the original is the evaluated model itself).

    Every suite calls it first, so a cache passed straight to ``run_<suite>`` is checked as in
    :func:`~factlens.evaluation.evaluate`: another original object raises ``ValueError``, a changed
    one empties the cache. Inside ``evaluate`` (:meth:`BaselineCache.held`) this costs no fingerprint.

    Raises:
        TypeError: ``cache`` is not a :class:`BaselineCache`.
        ValueError: ``cache`` belongs to another original model object.
    """
    cache = reusable(cache, model, original)
    if cache is not None:
        cache.bind(original)
    return cache


def reusable(cache: BaselineCache | None, model, original) -> BaselineCache | None:
    """``cache``, or ``None`` when there is nothing to reuse (no cache, no original, or the original
    is the evaluated model itself); does not bind it (:func:`bound` does).

    Raises:
        TypeError: ``cache`` is not a :class:`BaselineCache`.
    """
    if cache is None:
        return None
    if not isinstance(cache, BaselineCache):
        raise TypeError(f"baselines must be a factlens.evaluation.BaselineCache, got {type(cache).__name__}")
    if original is None or original is model:
        return None  # nothing to reuse: no original, or the original is the model itself
    return cache


def facts_key(facts: Iterable[Any]) -> tuple:
    """A hashable key of fact records (id, subject, template, answer, target, relation, candidates)."""
    return tuple((r.id, r.subject, r.template, r.answer, r.target_new, r.relation, tuple(r.candidates)) for r in facts)


def items_key(items: Iterable[Any]) -> tuple:
    """A hashable key of formatted prompts (prompt, answer, target, candidates, fact id, format).

    The fact id and format are part of the key because cached scores carry their items, and
    per-fact values are keyed by the items' ids.
    """
    return tuple((it.prompt, it.answer, it.target, tuple(it.candidates), it.record_id, it.format) for it in items)


def arrays_key(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of named arrays or tensors (name, dtype, shape and values), for what a key cannot hold
    as a tuple: the training tokens of unrelated fine-tuning, the directions a control removes.

    Example:
        >>> import numpy as np
        >>> a = np.arange(6).reshape(2, 3)
        >>> arrays_key({"x": a}) == arrays_key({"x": torch.arange(6).reshape(2, 3)})
        True
        >>> arrays_key({"x": a}) == arrays_key({"x": a.reshape(3, 2)})
        False
    """
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays):
        v = arrays[name]
        a = np.ascontiguousarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def config_key(config: Any) -> str:
    """A hashable key of a dataclass config (its fields as sorted JSON)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.dumps(d, sort_keys=True, default=str)
