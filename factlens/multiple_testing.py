"""Multiple testing for factlens's comparisons: Holm's step-down correction and Tarone's modification.

Split from :mod:`factlens.stats` (which re-exports :func:`holm`, :func:`tarone_holm` and
:class:`TaroneHolm`) to keep that module small; see docs/statistics.md, "Paired comparisons".
The keys of ``same=`` come from :func:`factlens.stats.paired_test_key`, the smallest
attainable p-values of ``tarone_holm`` from :func:`factlens.stats.smallest_attainable_p`.

Example:
    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

__all__ = ["holm", "tarone_holm", "TaroneHolm"]


def _same_test_groups(p: np.ndarray, same: Sequence[Hashable] | None) -> dict[Hashable, list[int]]:
    """Indices of the non-NaN p-values grouped by their ``same=`` key (one group per distinct test)."""
    keys = list(range(len(p))) if same is None else list(same)
    if len(keys) != len(p):
        raise ValueError(f"same= needs one key per p-value ({len(keys)} keys for {len(p)} p-values)")
    groups: dict[Hashable, list[int]] = {}
    for i in np.flatnonzero(~np.isnan(p)):
        groups.setdefault(keys[i], []).append(int(i))
    return groups


def holm(pvalues: Sequence[float], *, alpha: float = 0.05, same: Sequence[Hashable] | None = None) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error across ``pvalues``); NaN entries stay NaN.

    Args:
        pvalues: One p-value per test.
        alpha: The family-wise level (kept for callers; the adjusted values do not depend on it).
        same: Optional key per p-value (:func:`factlens.stats.paired_test_key`): p-values with equal keys come
            from the same test on the same data (two metrics with the same per-fact outcomes,
            or one the complement of the other) and count once in the family, each getting the
            group's adjusted value. Counting such a test twice only makes the correction
            stricter than the number of distinct hypotheses needs. Such p-values agree; if
            rounding ever made them differ, the group's largest counts (never anti-conservative).

    Raises:
        ValueError: ``same`` has another length.

    Example:
        >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
        [0.03, 0.06, 0.06]
        >>> holm([0.01, 0.01, 0.04], same=["a", "a", "b"]).round(2).tolist()  # two distinct tests
        [0.02, 0.02, 0.04]
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full_like(p, np.nan)
    groups = _same_test_groups(p, same)
    if groups:
        adj = _holm_adjusted(np.array([max(p[m]) for m in groups.values()]))
        for members, a in zip(groups.values(), adj):
            out[members] = a
    return out


def _holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values: the i-th smallest times the number of tests left (m - i),
    made non-decreasing along the order and capped at 1 (Holm 1979).

    Written here rather than taken from ``statsmodels.stats.multitest.multipletests(...,
    method="holm")``, which gives the same values (tests/test_stats.py checks it) but runs a
    full ``gc.collect()`` on every call (statsmodels 0.15.0): about 0.2 s in a small process,
    more in a notebook holding a model, for what is a sort and a cumulative maximum.
    """
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty_like(stepped)
    out[order] = stepped
    return out


def _tarone_k(smallest: Sequence[float], alpha: float) -> int:
    """Tarone's K: the smallest K >= 1 such that at most K tests have a smallest attainable p <= alpha / K."""
    return next((k for k in range(1, len(smallest) + 1) if sum(f <= alpha / k for f in smallest) <= k),
                max(len(smallest), 1))


@dataclass(frozen=True)
class TaroneHolm:
    """The result of :func:`tarone_holm`.

    Attributes:
        adjusted: Adjusted p-value per input (NaN for NaN inputs and untestable tests).
        testable: Whether each test's smallest attainable p reaches the level it faces: ``alpha / K`` at its
            step, and for the tests after the first one the procedure cannot reject, ``alpha / K`` of that
            step (the procedure stops there; the ``K`` of later steps would shrink as if it went on).
        k: Tarone's ``K`` at the first step, over all distinct tests: a raw p-value at most
            ``alpha / k`` is rejected whatever the other tests show (the level for power).
    """

    adjusted: np.ndarray
    testable: np.ndarray
    k: int


def tarone_holm(pvalues: Sequence[float], smallest: Sequence[float], *, alpha: float = 0.05,
                same: Sequence[Hashable] | None = None) -> TaroneHolm:
    """Holm's step-down correction that counts only the tests able to reach significance (Tarone).

    A discrete test has a smallest attainable p-value (:func:`factlens.stats.smallest_attainable_p`): a
    metric whose paired differences are all zero can only give p = 1, one with five differing
    0/1 facts no less than 0.0625. Plain Holm divides the level by the number of tests left,
    these included, and every other test pays for them. Tarone (1990, Biometrics 46:515)
    divides by ``K``, the smallest number such that at most ``K`` tests have a smallest
    attainable p of at most ``alpha / K`` (never more than the number of tests). This is the
    step-down version (Hommel & Krummenauer 1998, Biometrics 54:673): tests are taken in
    order of their p-values, and at each step ``K`` is recomputed over the tests not yet
    rejected; the procedure rejects while ``p <= alpha / K`` and stops at the first test that
    fails. ``K`` never exceeds Holm's count, so it rejects whatever Holm rejects.

    Valid because it is a shortcut of closed testing with Tarone's test of each intersection
    (a subset of tests never has a larger ``K``, so the hardest intersection containing a test
    is the set still open at its step), and each Tarone test is valid: it chooses the tests
    it counts by the differences' sizes alone, which the sign-flip null leaves unchanged.
    The adjusted p-values are Holm's with ``K`` in place of the count, so ``adjusted <=
    alpha`` is the procedure's decision at *this* ``alpha`` (``K`` depends on it).
    Hand-written because neither statsmodels nor scipy implements Tarone's procedure.

    Args:
        pvalues: One p-value per test (NaN: not tested).
        smallest: Each test's smallest attainable p-value.
        alpha: The family-wise level.
        same: Optional key per test: equal keys are the same test (count once, see :func:`holm`).

    Returns:
        A :class:`TaroneHolm`: adjusted p-values (NaN for NaN inputs and for tests that are
        not testable), whether each test's smallest attainable p reaches the level it faces
        (``alpha / K`` at its step, or at the step where the procedure stopped: whether it could
        be rejected there at all), and the first step's ``K``.

    Example:
        >>> r = tarone_holm([0.01, 0.02, 1.0, 0.3], [1e-4, 1e-3, 1.0, 0.0625])
        >>> r.adjusted.round(3).tolist(), r.testable.tolist(), r.k  # two tests can reach the level
        ([0.02, 0.02, nan, nan], [True, True, False, False], 2)
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    lo = np.asarray(smallest, dtype=float).ravel()
    if lo.shape != p.shape:
        raise ValueError(f"smallest= needs one value per p-value ({lo.shape[0]} for {p.shape[0]})")
    groups = _same_test_groups(p, same)
    # one test per key; should rounding ever part a group's values, the larger ones count. Ties in p
    # go smallest attainable p first (the test that can be rejected), so tied tests' flags do not
    # depend on their input order
    tests = sorted(((max(p[m]), max(lo[m]), m) for m in groups.values()), key=lambda t: (t[0], t[1]))
    adj, testable = np.full_like(p, np.nan), np.zeros(len(p), bool)
    running, k_stop = 0.0, None
    for j, (pj, lj, members) in enumerate(tests):
        k = _tarone_k([t[1] for t in tests[j:]], alpha)  # K over the tests from here on, as Holm's count
        running = max(running, min(1.0, k * pj))  # beyond alpha from the stop on (p >= smallest > alpha / K)
        # the level a test faces: alpha / K at its step, and once the procedure has stopped (at the first
        # test it cannot reject) the level of that step: no test after it is reached, so K no longer shrinks
        level = alpha / (k if k_stop is None else k_stop)
        if lj <= level:
            testable[members] = True
            adj[members] = running
        if k_stop is None and (lj > level or running > alpha):
            k_stop = k
    return TaroneHolm(adj, testable, _tarone_k([t[1] for t in tests], alpha) if tests else 0)
