"""The paired permutation (sign-flip) test of factlens's comparisons, its smallest attainable
p-value and the key that tells when two such tests are one test.

Under "no difference" each unit's paired difference is as likely to have either sign:
:func:`sign_flip_test` is exact by counting (sign counts per distinct difference size) for up
to :data:`EXACT_MAX_N` differing units or differences of few sizes (any number of 0/1
outcomes), otherwise it draws 99,999 seeded random sign patterns. Both are factlens's own
code rather than ``scipy.stats.permutation_test``, which enumerates all ``2**n`` patterns to be
exact (counting is exact and instant for the 0/1 outcomes of 32-100 facts) and took 9 s
for 99,999 random patterns of 192 units (:func:`_exact_sign_flip` and
:func:`_random_sign_flip` say more). :func:`smallest_attainable_p` feeds Tarone's selection
(:func:`factlens.multiple_testing.tarone_holm`), :func:`paired_test_key` its ``same=``.
Everything here is re-exported by :mod:`factlens.stats`.

Example:
    >>> round(sign_flip_test([1, 1, 1, 1, 1, 1]), 5)  # exact: 2 * 2**-6
    0.03125
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import numpy as np

__all__ = ["sign_flip_test", "sign_flip_interval", "smallest_attainable_p", "paired_test_key", "PairedTestKey", "EXACT_MAX_N"]

#: The sign-flip test is exact when it needs at most ``2**EXACT_MAX_N`` terms: up to this many
#: non-zero paired differences, or more of few distinct sizes (any number of 0/1 outcomes).
EXACT_MAX_N = 16


def sign_flip_test(differences: Sequence[float], *, weights: Sequence[float] | None = None,
                   exact_max_n: int = EXACT_MAX_N, n_resamples: int = 99_999, seed: int = 0,
                   alternative: str = "two-sided") -> float:
    """Paired permutation (sign-flip) test of "the mean paired difference is zero".

    Under the null hypothesis that the two evaluations do not differ, each unit's paired
    difference is equally likely to have either sign. The statistic is the (weighted) mean
    difference; its null distribution comes from flipping signs. The p-value is exact
    (units whose difference is zero cannot change the statistic) when the non-zero weighted
    differences need at most ``2**exact_max_n`` terms: a pattern's statistic depends only on how
    many differences of each distinct size keep their sign, so this holds for up to
    ``exact_max_n`` differences of any sizes and for any number of 0/1 outcomes (one size: the
    exact two-sided sign test) or of accuracies over a few prompts. The p-value then does not
    depend on which evaluation is subtracted from which. Otherwise ``n_resamples`` random
    patterns are drawn (seeded; the p-value then counts the observed pattern, so it is never 0;
    the units are put in a canonical order and orientation first, so the same differences and
    weights give the same p-value in any order and for ``x - y`` as for ``y - x``; see
    :func:`_random_sign_flip`).

    Args:
        differences: Paired differences ``x_i - y_i`` (NaN entries dropped).
        weights: Optional weight per unit (e.g. ``1 / n_facts`` of the unit's seed, so each
            seed counts once in the statistic).
        exact_max_n: Exact when the enumeration needs at most ``2**exact_max_n`` terms (at
            most ``exact_max_n`` non-zero differences, or more of few distinct sizes).
        n_resamples: Random sign patterns for larger ``n``.
        seed: Seed of the random patterns.
        alternative: ``"two-sided"``, ``"greater"`` (x > y) or ``"less"``.

    Returns:
        The p-value (1.0 when every difference is zero or there is none).

    Example:
        >>> round(sign_flip_test([1, 1, 1, 1, 1, 1]), 5)  # exact: 2 * 2**-6
        0.03125
        >>> sign_flip_test([1] * 30 + [-1] * 10) == sign_flip_test([-1] * 30 + [1] * 10)  # exact sign test
        True
    """
    d = np.asarray(differences, dtype=float).ravel()
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != d.shape:
        raise ValueError(f"weights ({w.shape}) must match differences ({d.shape})")
    if (w < 0).any():
        raise ValueError("weights must be >= 0 (0 leaves a unit out); a negative weight was silently dropped")
    _check_finite(d)
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    wd = _weighted_nonzero(d, w)
    if wd is None:
        return 1.0
    return _nonzero_p_value(wd, alternative, exact_max_n, n_resamples, seed)


def _check_finite(d: np.ndarray) -> None:
    """Refuse infinite differences: every pattern's statistic would be +-inf, p = 0 without meaning."""
    if np.isinf(d).any():
        raise ValueError("a paired difference is infinite; the sign-flip test needs finite differences (a metric "
                         "that can be infinite, e.g. a KL, should be compared on a bounded transform)")


def _weighted_nonzero(d: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """The non-zero differences times their normalized weights (NaN and zero-weight units
    dropped), or ``None`` when no unit differs."""
    keep = ~np.isnan(d) & (w > 0)
    d, w = d[keep], w[keep] / w[keep].sum() if keep.any() else w[keep]
    if len(d) == 0 or np.all(d == 0):
        return None
    moved = d != 0
    return d[moved] * w[moved]


def _nonzero_p_value(wd: np.ndarray, alternative: str, exact_max_n: int, n_resamples: int, seed: int,
                     nulls: dict | None = None) -> float:
    """:func:`sign_flip_test`'s p-value of the weighted non-zero differences ``wd``; ``nulls``
    memoizes the exact null distributions by sizes and counts (:func:`_exact_sign_flip`)."""
    sizes, counts = _sizes(wd)
    if _n_terms(counts) <= 2 ** exact_max_n:
        # a zero difference adds nothing to the statistic whatever its sign, so the share of
        # the 2**n patterns at least as extreme is the share of the 2**k patterns of the k
        # non-zero differences: exact, and cheap however many units did not move
        return _exact_sign_flip(wd, alternative, sized=(sizes, counts), nulls=nulls)
    return _random_sign_flip(wd, alternative, n_resamples, seed)


def memoized_sign_flip_test(differences: Sequence[float], nulls: dict) -> float:
    """:func:`sign_flip_test` (two-sided, unweighted, default settings) with the exact null
    distributions memoized in ``nulls`` (a dict the caller keeps): the same p-value, bit for bit.

    The power simulation (:func:`factlens.power._sizes_effect`) tests thousands of datasets drawn
    from a few difference sizes, whose null distributions depend only on how many differences of
    each size there are: most of them repeat (``factlens compare`` of a two-seed, five-unit
    Sports-Unlearning folder spent 28 of its 40 s in that simulation).

    Example:
        >>> memo = {}
        >>> memoized_sign_flip_test([1, 1, 0, 1, 1, 1, 1], memo) == sign_flip_test([1, 1, 0, 1, 1, 1, 1]), len(memo)
        (True, 1)
    """
    d = np.asarray(differences, dtype=float).ravel()
    _check_finite(d)
    wd = _weighted_nonzero(d, np.ones_like(d))
    if wd is None:
        return 1.0
    return _nonzero_p_value(wd, "two-sided", EXACT_MAX_N, 99_999, 0, nulls)


def _random_sign_flip(wd: np.ndarray, alternative: str, n_resamples: int, seed: int) -> float:
    """Monte Carlo sign-flip p-value of the weighted non-zero differences ``wd``.

    The differences are put in a canonical orientation (the sign of their sum; a tie by the
    sorted values) and order (sorted), so the same data give the same p-value whatever order the
    units come in and whichever side is subtracted (``x - y`` and ``y - x`` drew other patterns
    before, p-values apart by Monte Carlo error). As ``scipy.stats.permutation_test`` does, the
    observed pattern counts (``(k + 1) / (n + 1)``, never 0) and the two-sided p-value doubles
    the smaller tail. Written here rather than with ``permutation_test`` because that took
    0.15 s for 9,999 patterns of 64 units and 9 s for 99,999 of 192; drawing the sign matrix in
    blocks and multiplying takes milliseconds, which affords 99,999 patterns (Monte Carlo
    standard error of a two-sided p about 0.0003 at p = 0.005, against 0.001 with 9,999).
    """
    if wd.sum() < 0 or (wd.sum() == 0 and tuple(np.sort(-wd)) > tuple(np.sort(wd))):
        wd = -wd
        alternative = {"greater": "less", "less": "greater"}.get(alternative, alternative)
    wd = np.sort(wd)
    obs = float(wd.sum())
    tol = 1e-9 * float(np.abs(wd).sum())  # ties up to float rounding, as in the exact test
    rng = np.random.default_rng(seed)
    ge = le = 0
    block = max(1, min(8192, 2_000_000 // len(wd)))  # patterns per block: at most ~16 MB of signs
    for start in range(0, n_resamples, block):
        signs = rng.integers(0, 2, (min(block, n_resamples - start), len(wd))) * 2.0 - 1.0
        null = signs @ wd
        ge += int(np.count_nonzero(null >= obs - tol))
        le += int(np.count_nonzero(null <= obs + tol))
    greater, less = (ge + 1) / (n_resamples + 1), (le + 1) / (n_resamples + 1)
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    return min(1.0, 2 * min(greater, less))


def _sizes(wd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct sizes ``|wd|`` up to float rounding (12 significant digits relative to the
    largest) and how many differences have each. Exact equality split one size into several:
    ``1/3 - 0`` and ``2/3 - 1/3`` differ in the last bit, so accuracies over three prompts took
    thousands of times more terms and fell back to Monte Carlo where the docs promise an exact
    p-value."""
    a = np.abs(wd)
    scale = float(a.max(initial=0.0)) or 1.0
    _, inverse, counts = np.unique(np.round(a / scale, 12), return_inverse=True, return_counts=True)
    sizes = np.bincount(inverse, weights=a) / counts  # each group's mean size
    return sizes, counts


def _n_sign_counts(wd: np.ndarray) -> int:
    """How many (sum, probability) terms :func:`_exact_sign_flip` enumerates: one per number of
    positive signs among the differences of each distinct size (:func:`_sizes`)."""
    return _n_terms(_sizes(wd)[1])


def _n_terms(counts: np.ndarray) -> int:
    """:func:`_n_sign_counts` from the counts of each distinct size."""
    return math.prod(int(c) + 1 for c in counts)


def _half_binomial_pmf(c: int) -> np.ndarray:
    """``comb(c, k) / 2**c`` for ``k = 0 ... c``: exact in float up to ``c = 56`` (dyadic), from
    the exact integers up to ``c = 1000``, from scipy beyond (``comb`` no longer fits a float)."""
    if c > 1000:
        from scipy.stats import binom

        return binom.pmf(np.arange(c + 1), c, 0.5)
    return np.array([math.comb(c, j) for j in range(c + 1)], dtype=float) * 2.0 ** -c


def _exact_sign_flip(wd: np.ndarray, alternative: str, *, sized: tuple[np.ndarray, np.ndarray] | None = None,
                     nulls: dict | None = None) -> float:
    """Exact sign-flip p-value of the weighted differences ``wd`` (all non-zero).

    The statistic of a sign pattern depends only on how many differences of each distinct size
    ``m`` (there are ``c`` of them) keep their sign: ``m * (2 * k - c)`` with probability
    ``comb(c, k) / 2**c``. Enumerating these counts instead of the ``2**n`` patterns gives the
    same null distribution, and stays small when the differences take few sizes: 0/1 outcomes
    (one size: the two-sided sign test, the model of the binary power calculation in
    :mod:`factlens.power`) and accuracies over a few prompts per fact are exact at any number of
    facts. Written here because scipy's ``permutation_test`` enumerates patterns, not counts.
    ``sized``: :func:`_sizes` of ``wd`` when the caller has it; ``nulls``: a memo of null
    distributions by sizes and counts.
    """
    sizes, counts = _sizes(wd) if sized is None else sized
    key = (sizes.tobytes(), counts.tobytes())
    if nulls is not None and key in nulls:
        values, probs = nulls[key]
    else:
        values, probs = _null_distribution(sizes, counts)
        if nulls is not None:
            nulls[key] = values, probs
    obs = wd.sum()
    # ties up to float rounding, relative to the data's own scale (an absolute tolerance would
    # call every pattern a tie for differences of ~1e-13, e.g. tiny KL changes)
    tol = 1e-9 * float(np.abs(wd).sum())
    greater = min(1.0, float(probs[values >= obs - tol].sum()))
    less = min(1.0, float(probs[values <= obs + tol].sum()))
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    return min(1.0, 2 * min(greater, less))


def _null_distribution(sizes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistic's values and probabilities over the sign counts of each size (see
    :func:`_exact_sign_flip`)."""
    values, probs = np.zeros(1), np.ones(1)
    for m, c in zip(sizes, counts):
        k = np.arange(c + 1)
        pk = _half_binomial_pmf(int(c))
        values = (values[:, None] + m * (2 * k - c)[None, :]).ravel()
        probs = (probs[:, None] * pk[None, :]).ravel()
    return values, probs


def smallest_attainable_p(differences: Sequence[float], *, weights: Sequence[float] | None = None,
                          exact_max_n: int = EXACT_MAX_N, n_resamples: int = 99_999, seed: int = 0) -> float:
    """The smallest p-value :func:`sign_flip_test` can give for differences of these sizes.

    The sign-flip test conditions on the sizes ``|d_i|`` and asks how extreme the signs are;
    the most extreme case is all signs alike, so this is the test's p-value on ``|d|``. With
    ``k`` non-zero differences it is ``2 / 2**k`` (exact test): 0.0625 for five differing 0/1
    facts, so such a test can never be significant at 0.05. It depends on the sizes only,
    which flipping signs leaves unchanged: choosing tests by it does not bias them
    (:func:`tarone_holm`).

    Example:
        >>> smallest_attainable_p([1, -1, 0, 0, 1, 0, 0, -1, 1])  # 5 facts differ
        0.0625
        >>> smallest_attainable_p([0, 0, 0])
        1.0
    """
    d = np.abs(np.asarray(differences, dtype=float))
    return sign_flip_test(d, weights=weights, exact_max_n=exact_max_n, n_resamples=n_resamples, seed=seed)


def sign_flip_interval(differences: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 99_999,
                       seed: int = 0) -> tuple[float, float] | None:
    """Interval of the mean paired difference that inverts :func:`sign_flip_test`.

    The shifts ``delta`` that the two-sided test does not reject when applied to
    ``differences - delta``: exact coverage (up to the test's discreteness) when the
    differences are symmetric about their true mean, however few they are, and consistent with
    the test (``0`` lies outside exactly when ``sign_flip_test(differences) <= 1 - confidence``).
    factlens uses it where the units are few, such as the per-seed mean differences of a
    comparison over mask draws (:func:`factlens.compare` with ``unit="seed"``), where a
    percentile bootstrap of seven values covers less than it claims. Neither SciPy nor
    statsmodels inverts a permutation test, hence this code. Each end is found by bisection
    between the mean (p = 1) and just beyond the farthest difference (every sign alike,
    ``p = 2 * 2**-n``), to ``1e-9`` of the differences' range: the test's p-value falls as the
    shift moves away from the mean, which the tests check on a grid.

    Args:
        differences: Paired differences (NaN entries dropped).
        confidence: Coverage, in (0, 1).
        n_resamples, seed: Random sign patterns beyond :data:`EXACT_MAX_N` differences, as for
            :func:`sign_flip_test` (the same patterns at every shift).

    Returns:
        ``(low, high)``; ``None`` for fewer than 2 differences; ``(-inf, inf)`` when even every
        sign alike cannot reach the level (``2 * 2**-n > 1 - confidence``: at 95 %, fewer than
        6 differences); ``(mean, mean)`` when all differences are equal (no spread: every
        other shift makes them all of one sign).

    Example:
        >>> lo, hi = sign_flip_interval([0.1, 0.3, 0.2, 0.4, 0.25, 0.35, 0.15])
        >>> round(lo, 3), round(hi, 3)
        (0.15, 0.35)
        >>> sign_flip_interval([0.1, 0.2, 0.3])
        (-inf, inf)
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence is a coverage between 0 and 1 (e.g. 0.95), got {confidence!r}")
    d = np.asarray(differences, dtype=float).ravel()
    d = d[~np.isnan(d)]
    _check_finite(d)
    if len(d) < 2:
        return None
    alpha = 1.0 - confidence
    if 2.0 * 2.0 ** -len(d) > alpha:
        return float("-inf"), float("inf")
    centre = float(d.mean())
    span = float(d.max() - d.min())
    if span == 0:
        return centre, centre

    def rejected(delta: float) -> bool:
        return sign_flip_test(d - delta, n_resamples=n_resamples, seed=seed) <= alpha

    ends = []
    for beyond in (float(d.min()) - 1e-6 * span, float(d.max()) + 1e-6 * span):
        inside, outside = centre, beyond
        while abs(outside - inside) > 1e-9 * span:
            mid = 0.5 * (inside + outside)
            inside, outside = (inside, mid) if rejected(mid) else (mid, outside)
        ends.append(inside)
    return ends[0], ends[1]


def paired_test_key(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None, *,
                    ids: Sequence[Hashable]) -> "PairedTestKey":
    """A key that two paired tests share when they compare the same per-unit outcomes on the same units.

    ``x`` and ``y`` are the paired values (a localization's and the reference's, unit by
    unit), ``weights`` the units' weights and ``ids`` the units' ids (a fact's ``record.id``,
    ``"chunk:<i>"``; ``(seed, id)`` when several seeds are pooled); units that
    :func:`sign_flip_test` drops (NaN, zero weight) are left out. Two metrics get the same
    key when they are on the same units and their values agree unit by unit for both sides,
    or one is the complement ``1 - v`` of the other (a forget error and a forget accuracy):
    values agree to 12 significant digits, complements to that or to four units in the last
    place of 1 (a complement stored in floating point is ~1e-16 off, which is most of a
    probability of 1e-13; see :class:`PairedTestKey`):
    their two-sided tests are then one test on the same data. Which keys coincide depends
    only on which values coincide, and swapping a unit's two sides (the sign-flip null) does
    not change that, so Holm over the distinct keys keeps its guarantee. Equal differences
    alone are not enough (different outcomes that move by the same amounts stay separate
    tests), and neither are equal values on different units: two metrics on disjoint facts
    are independent hypotheses, whose sides are swapped independently, however alike their
    outcomes look (until this key took the ids, they were merged, which was anti-conservative).

    Raises:
        ValueError: ``x``, ``y``, ``weights`` and ``ids`` differ in length, or an id repeats.

    Example:
        >>> f, g = ["f0", "f1", "f2"], ["g0", "g1", "g2"]
        >>> key = paired_test_key([1, 0, 1], [0, 0, 1], ids=f)
        >>> key == paired_test_key([0, 1, 0], [1, 1, 0], ids=f)  # complements
        True
        >>> key == paired_test_key([1, 1, 1], [0, 1, 1], ids=f)  # same differences, other outcomes
        False
        >>> key == paired_test_key([1, 0, 1], [0, 0, 1], ids=g)  # same outcomes on other facts
        False
        >>> p = paired_test_key([0.7, 0.2], [0.1, 0.9], ids=["f0", "f1"])
        >>> p == paired_test_key([1 - 0.7, 1 - 0.2], [1 - 0.1, 1 - 0.9], ids=["f0", "f1"])  # 0.30000000000000004
        True
    """
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=float).ravel()
    units = list(ids)
    if not a.shape == b.shape == w.shape == (len(units),):
        raise ValueError(f"x ({a.shape}), y ({b.shape}), weights ({w.shape}) and ids ({len(units)}) must have one "
                         "entry per unit")
    if len(set(units)) != len(units):
        raise ValueError("ids must name each unit once")
    keep = np.flatnonzero(~np.isnan(a - b) & (w > 0))
    order = keep[sorted(range(len(keep)), key=lambda i: repr(units[keep[i]]))]  # the units, canonically ordered
    a, b, w = a[order], b[order], w[order]
    on = tuple(units[i] for i in order)

    return PairedTestKey(on, a + 0.0, b + 0.0, w)  # + 0.0: -0.0 and 0.0 alike


#: Relative agreement of two tests' values (12 significant digits) and the absolute slack of a
#: complement ``1 - v`` stored in floating point (four units in the last place of 1).
_RTOL, _COMPLEMENT_ATOL = 1e-12, 4 * float(np.finfo(float).eps)


class PairedTestKey:
    """:func:`paired_test_key`'s key: two keys are equal when they are one test on the same data.

    Equality compares the units and weights exactly and the values with a tolerance: unit by
    unit to 12 significant digits on both sides, or, for complements, ``a`` against ``1 - b`` to
    that or to ``4 * eps``. A relative tolerance because rounding to 12 *decimals* (before) made
    every probability below 5e-13 zero, so two unrelated metrics on the same facts (a true
    answer's probability after unlearning, in two prompt formats) were one test and Holm's
    count shrank; the absolute slack only for complements, whose stored value carries the
    rounding of ``1 - v`` (1.1e-16 at most). Equality with a tolerance is not transitive, so
    the key hashes the units and weights only and :func:`~factlens.multiple_testing.holm`
    groups keys by ``==`` within a hash bucket, joining a key to the first group whose first key
    it equals (so members of a group agree with that key to 1e-12, with each other to 2e-12,
    and a chain of near-equal keys can group differently in another order; only values that
    agree to about 12 digits are ever at stake).
    """

    __slots__ = ("units", "x", "y", "w")

    def __init__(self, units: tuple, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        self.units, self.x, self.y, self.w = units, x, y, w

    def __hash__(self) -> int:
        return hash((self.units, self.w.tobytes()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PairedTestKey):
            return NotImplemented
        if self.units != other.units or not np.array_equal(self.w, other.w):
            return False
        return ((_agree(self.x, other.x) and _agree(self.y, other.y))
                or (_complements(self.x, other.x) and _complements(self.y, other.y)))

    def __repr__(self) -> str:
        return f"PairedTestKey({len(self.units)} units)"


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities agree through a == b
        return bool(np.all((a == b) | (np.abs(a - b) <= _RTOL * np.maximum(np.abs(a), np.abs(b)))))


def _complements(a: np.ndarray, b: np.ndarray) -> bool:
    c = 1.0 - b
    with np.errstate(invalid="ignore"):
        return bool(np.all((a == c) | (np.abs(a - c) <= _RTOL * np.maximum(np.abs(a), np.abs(c)) + _COMPLEMENT_ATOL)))
