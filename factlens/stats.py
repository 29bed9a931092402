"""Statistics for factlens results: confidence intervals, paired tests, multiple testing, power.

Every function wraps a well-kept implementation (scipy, statsmodels) where one fits (the
sign-flip test's exact counting and random draw are factlens's own; their docstrings say why)
and fixes the choices that matter for factlens, where the unit of sampling is the *fact* (or a general-text chunk,
an MMLU question) and two localizations are evaluated on the same units:

* :func:`wilson_interval` — 95 % Wilson score interval of an accuracy ``k / n``
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).
* :func:`bootstrap_mean_interval` — seeded percentile bootstrap interval of a mean
  (``scipy.stats.bootstrap``, 2,000 resamples by default); :func:`bootstrap_interval` for
  any statistic of the units (e.g. a maximum over layers).
* :func:`hierarchical_bootstrap_interval` — several training seeds: resample seeds, then
  units within each drawn seed, so the interval includes the seed-to-seed variance.
* :func:`paired_bootstrap_diff` — the difference of two paired evaluations and its interval.
* :func:`weighted_mean_se` — standard error of a mean over units, with per-unit weights
  (tokens per text chunk) when the metric is token-weighted.
* :func:`sign_flip_test` — paired permutation test: under "no difference" each paired
  difference is as likely to have either sign. Exact (sign counts per distinct difference
  size) for up to 16 differing units or differences of few sizes (0/1 outcomes), otherwise
  99,999 seeded random sign patterns.
* :func:`holm` — Holm's step-down correction (own code, checked against
  ``statsmodels.stats.multitest.multipletests``, which runs the garbage collector at every call).
* :func:`tarone_holm` — Holm over the tests that can reach significance at all (Tarone's
  modification for discrete tests), with :func:`smallest_attainable_p` (both live in
  :mod:`factlens.multiple_testing` and are re-exported here).
* :func:`minimum_detectable_difference` — the smallest true paired difference the test
  finds with the given power (see its docstring for how it is computed; it lives in
  :mod:`factlens.power` and is re-exported here).
* :func:`variance_components` — the split of the variance of a seed-averaged mean between
  fact sampling and training seed.

Example:
    >>> [round(x, 3) for x in wilson_interval(8, 16)]
    [0.28, 0.72]
    >>> round(sign_flip_test([0.0] * 10), 3)
    1.0
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Hashable, Sequence

import numpy as np

from factlens.multiple_testing import TaroneHolm, holm, tarone_holm
from factlens.paired_proportions import paired_proportion_diff_interval
from factlens.power import minimum_detectable_difference

__all__ = ["wilson_interval", "max_wilson_interval", "bootstrap_mean_interval", "bootstrap_interval",
           "hierarchical_bootstrap_interval", "mean_interval",
           "paired_bootstrap_diff", "paired_diff", "paired_proportion_diff_interval", "weighted_mean_se", "sign_flip_test", "holm", "tarone_holm", "TaroneHolm",
           "smallest_attainable_p",
           "paired_test_key", "minimum_detectable_difference",
           "variance_components",
           "is_binary", "EXACT_MAX_N", "N_RESAMPLES"]

#: The sign-flip test is exact when it needs at most ``2**EXACT_MAX_N`` terms: up to this many
#: non-zero paired differences, or more of few distinct sizes (any number of 0/1 outcomes).
EXACT_MAX_N = 16
#: Default number of bootstrap resamples (intervals); the sign-flip test draws 99,999 patterns.
N_RESAMPLES = 2000


def _rng_kwargs(fn: Callable, seed: int) -> dict:
    """scipy >= 1.15 takes ``rng=``; older versions ``random_state=``."""
    name = "rng" if "rng" in inspect.signature(fn).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _clean(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[~np.isnan(v)]


def is_binary(values: Sequence[float]) -> bool:
    """True when every (non-NaN) value is 0 or 1 (then a mean is a proportion)."""
    v = _clean(values)
    return bool(len(v)) and bool(np.all((v == 0) | (v == 1)))


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``.

    Args:
        k: Successes (e.g. facts whose true answer still wins).
        n: Trials (facts, prompts, questions); must be >= 1.
        confidence: Coverage (0.95: a 95 % interval).

    Returns:
        ``(low, high)`` within ``[0, 1]``.

    Example:
        >>> [round(x, 3) for x in wilson_interval(0, 8)]
        [0.0, 0.324]
    """
    from scipy.stats import binomtest

    k, n = int(round(k)), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(n: int, statistic: Callable[[np.ndarray], np.ndarray], *, confidence: float = 0.95,
                       n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of any statistic of ``n`` units (resampled with replacement).

    Args:
        n: Number of units.
        statistic: Called with an integer index array of shape ``[..., n]`` (a resample of
            ``range(n)`` along the last axis; leading axes are a batch of resamples) and
            returns one value per resample (shape ``[...]``).
        confidence: Coverage.
        n_resamples: Bootstrap resamples (>= 2,000 recommended).
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``, or ``None`` when ``n < 2`` (no spread to resample).

    Example:
        >>> acc = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], float)  # 4 facts x 2 layers
        >>> lo, hi = bootstrap_interval(4, lambda i: acc[i].mean(-2).max(-1))
        >>> lo <= 0.75 <= hi
        True
    """
    from scipy.stats import bootstrap

    if n < 2:
        return None
    res = bootstrap((np.arange(n),), lambda i, axis=-1: statistic(np.asarray(i, dtype=int)), vectorized=True,
                    paired=False, method="percentile", confidence_level=confidence, n_resamples=n_resamples,
                    batch=max(1, min(n_resamples, 2_000_000 // max(n, 1))), **_rng_kwargs(bootstrap, seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if not (math.isnan(lo) or math.isnan(hi)) else None


def max_wilson_interval(ks: Sequence[int], n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the largest of several proportions (``ks[j] / n``, the same ``n`` units), such as
    a probe's accuracy at its best layer chosen on the same facts.

    Each proportion gets its Wilson interval at the Bonferroni level ``1 - (1 - confidence) / J``,
    so all ``J`` intervals hold together with probability at least ``confidence``; then the largest
    true proportion lies between the largest lower and the largest upper end. A percentile bootstrap
    of the maximum (what factlens used before) re-selects the best in every resample and sits above
    the already optimistic sample maximum: it covered the true best of 12 close layers at 27-36 %.

    Example:
        >>> [round(x, 3) for x in max_wilson_interval([10, 12, 9], 16)]
        [0.452, 0.916]
        >>> [round(x, 3) for x in max_wilson_interval([12], 16)] == [round(x, 3) for x in wilson_interval(12, 16)]
        True
    """
    if len(ks) < 1:
        raise ValueError("max_wilson_interval needs at least one proportion")
    level = 1 - (1 - confidence) / len(ks)
    ends = [wilson_interval(k, n, confidence=level) for k in ks]
    return max(lo for lo, _ in ends), max(hi for _, hi in ends)


def bootstrap_mean_interval(values: Sequence[float], *, weights: Sequence[float] | None = None,
                            confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                            seed: int = 0) -> tuple[float, float] | None:
    """Seeded percentile bootstrap interval of a (weighted) mean over units.

    Args:
        values: One value per unit (NaN entries are dropped, with their weights).
        weights: Optional weight per unit (e.g. tokens per text chunk): the statistic is then
            ``sum(w * v) / sum(w)`` and units are resampled with their weights.
        confidence: Coverage.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``, or ``None`` for fewer than 2 units.

    Example:
        >>> lo, hi = bootstrap_mean_interval([0.1, 0.2, 0.3, 0.4, 0.5])
        >>> 0.1 <= lo < 0.3 < hi <= 0.5
        True
    """
    v, w = _values_and_weights(values, weights)
    if weights is None:
        return bootstrap_interval(len(v), lambda i: v[i].mean(-1), confidence=confidence,
                                  n_resamples=n_resamples, seed=seed)
    return bootstrap_interval(len(v), lambda i: (w[i] * v[i]).sum(-1) / w[i].sum(-1), confidence=confidence,
                              n_resamples=n_resamples, seed=seed)


def hierarchical_bootstrap_interval(groups: Sequence[Sequence[float]], *,
                                    weights: Sequence[Sequence[float]] | None = None, confidence: float = 0.95,
                                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Interval of the mean over groups (seeds) of per-group means, resampling seeds then units.

    Each resample draws as many groups as there are, with replacement, then resamples the
    units (facts) of each drawn group with replacement, and averages the group means. The
    interval therefore includes both the fact-sampling and the seed-to-seed variance. With
    one group it is the ordinary percentile bootstrap of the mean.

    Args:
        groups: Per group (seed), one value per unit (NaN entries are dropped, with their weights).
        weights: Optional weight per unit, shaped like ``groups`` (tokens per text chunk): each
            group's mean is then ``sum(w * v) / sum(w)`` over its resampled units, the
            statistic a token-weighted metric reports; ``None``: plain means.
        confidence, n_resamples, seed: As for :func:`bootstrap_mean_interval`.

    Example:
        >>> lo, hi = hierarchical_bootstrap_interval([[0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1]])
        >>> lo < 10 / 12 < hi
        True
    """
    pairs = [p for p in _weighted_groups(groups, weights) if len(p[0])]
    if not pairs:
        return None
    if len(pairs) == 1:
        return bootstrap_mean_interval(pairs[0][0], weights=None if weights is None else pairs[0][1],
                                       confidence=confidence, n_resamples=n_resamples, seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(pairs), size=(n_resamples, len(pairs)))  # seeds drawn per resample

    def resampled_means(g: np.ndarray, w: np.ndarray) -> np.ndarray:
        i = rng.integers(0, len(g), size=(n_resamples, len(g)))
        # with unit weights this is g[i].mean(1) to the last bit (the same sum, divided by len(g))
        return (w[i] * g[i]).sum(1) / w[i].sum(1)

    # every draw resamples its seed's facts afresh, also when a resample draws a seed twice:
    # slot j of resample b uses boot[j][pick[b, j], b]
    boot = np.stack([np.stack([resampled_means(g, w) for g, w in pairs]) for _ in range(len(pairs))])  # [slot, G, B]
    b = np.arange(n_resamples)[:, None]
    stats = boot[np.arange(len(pairs))[None, :], pick, b].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def mean_interval(groups: Sequence[Sequence[float]], *, weights: Sequence[Sequence[float]] | None = None,
                  seed: int = 0, proportion: bool = True) -> tuple[float, float] | None:
    """Interval of a mean over seeds and units: :func:`hierarchical_bootstrap_interval`, except
    where every unit has the same value 0 or 1, where it is the Wilson interval of the pooled count.

    A percentile bootstrap of identical outcomes has no width: 32 facts edited in two seeds
    gave [1.00, 1.00] where one seed's Wilson interval is [0.81, 1.00]. A mean is never known
    better than that count allows, so the degenerate case takes the Wilson interval of all
    units (k of n), which ignores the seed variance that identical outcomes do not show.
    Only for values, not for paired differences (all-zero differences are not a proportion),
    and not for token-weighted means (``weights`` given: a KL of 0 on every text chunk is not
    0 successes of n), as :meth:`~factlens.evaluation.result.Metric.from_samples` does for one seed.
    ``proportion=False``: values that can lie outside [0, 1] (a selective recovery, -1 ... 1)
    are never read as 0/1 outcomes, even when they all are 0 or 1.

    Example:
        >>> [round(x, 2) for x in mean_interval([[1.0] * 16, [1.0] * 16])]
        [0.89, 1.0]
    """
    if weights is None and proportion and identical_binary(groups):
        flat = [float(v) for g in groups for v in g if not math.isnan(float(v))]
        return wilson_interval(int(sum(flat)), len(flat))
    return hierarchical_bootstrap_interval(groups, weights=weights, seed=seed)


def identical_binary(groups: Sequence[Sequence[float]]) -> bool:
    """Do all (non-NaN) units of ``groups`` have the same value, 0 or 1? (:func:`mean_interval`'s Wilson case.)"""
    flat = {float(v) for g in groups for v in g if not math.isnan(float(v))}
    return len(flat) == 1 and flat <= {0.0, 1.0}


def _weighted_groups(groups, weights) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group, ``(values, weights)`` without NaN values (unit weights when ``weights`` is None)."""
    gs = [np.asarray(g, dtype=float).ravel() for g in groups]
    ws = [np.ones_like(g) for g in gs] if weights is None else [np.asarray(w, dtype=float).ravel() for w in weights]
    if len(ws) != len(gs) or any(w.shape != g.shape for g, w in zip(gs, ws)):
        raise ValueError(f"weights need one entry per unit of every group: {[len(g) for g in gs]} units, "
                         f"{[len(w) for w in ws]} weights")
    out = [(g[~np.isnan(g)], w[~np.isnan(g)]) for g, w in zip(gs, ws)]
    if any(len(w) and (np.any(~(w >= 0)) or not w.sum() > 0) for _, w in out):
        raise ValueError("weights must be >= 0, with a positive one in every group that has values")
    # a unit of weight 0 is not in the weighted mean: resampled alone it made 0/0 (a NaN interval)
    return [(g[w > 0], w[w > 0]) for g, w in out]


def _values_and_weights(values, weights) -> tuple[np.ndarray, np.ndarray]:
    """``values`` and their ``weights`` (ones when ``None``) as flat arrays, NaN values dropped with their weights."""
    v = np.asarray(values, dtype=float).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != v.shape:
        raise ValueError(f"weights ({w.shape}) must match values ({v.shape})")
    keep = ~np.isnan(v) & ~(w == 0)  # weight 0: not in the weighted mean (and 0/0 when resampled alone)
    return v[keep], w[keep]


def weighted_mean_se(values: Sequence[float], *, weights: Sequence[float] | None = None) -> float | None:
    """Standard error of a (weighted) mean over independent units; ``None`` for fewer than 2 units.

    With weights (tokens per text chunk) the mean ``sum(w v) / sum(w)`` is a ratio of two sums
    over units, and its standard error is the usual linearization
    ``sqrt(n / (n - 1) * sum(w**2 (v - mean)**2)) / sum(w)``; with equal weights it is
    ``sd / sqrt(n)`` (ddof = 1). Written here because ``statsmodels``' ``DescrStatsW`` reads
    weights as frequencies (500 tokens would count as 500 independent units, while the
    tokens of one chunk are not independent).

    Example:
        >>> round(weighted_mean_se([0.0, 1.0, 0.0, 1.0]), 4), round(weighted_mean_se([0.0, 1.0], weights=[1, 3]), 4)
        (0.2887, 0.375)
    """
    v, w = _values_and_weights(values, weights)
    if len(v) < 2:
        return None
    if weights is None:
        return float(v.std(ddof=1) / math.sqrt(len(v)))
    m = (w * v).sum() / w.sum()
    return float(math.sqrt(len(v) / (len(v) - 1) * float((w ** 2 * (v - m) ** 2).sum())) / w.sum())


def paired_bootstrap_diff(x: Sequence[float] | Sequence[Sequence[float]], y: Sequence[float] | Sequence[Sequence[float]],
                          *, weights: Sequence[float] | Sequence[Sequence[float]] | None = None,
                          confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                          seed: int = 0) -> tuple[float, tuple[float, float] | None]:
    """Mean paired difference ``x - y`` and its bootstrap interval.

    Args:
        x, y: Paired per-unit values (same length, same unit order), or one such sequence
            per seed (``[[seed 0 units], [seed 1 units], ...]``): then the difference is the
            mean over seeds of the per-seed mean differences and the interval comes from
            :func:`hierarchical_bootstrap_interval` (seeds, then facts within seed).
        weights: Optional weight of each pair, shaped like ``x`` (tokens per text chunk): each
            seed's difference is then ``sum(w (x - y)) / sum(w)``, which is the difference of
            the two weighted means when both sides are on the same units; the bootstrap
            resamples pairs with their weights.
        confidence, n_resamples, seed: As for :func:`bootstrap_mean_interval`.

    Returns:
        ``(diff, (low, high) or None)``; pairs with a NaN on either side are dropped.

    Example:
        >>> d, (lo, hi) = paired_bootstrap_diff([1, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 0])
        >>> round(d, 3), lo > 0
        (0.667, True)
        >>> round(paired_bootstrap_diff([0.5, 0.9], [0.6, 0.6], weights=[10, 500])[0], 3)
        0.292
    """
    xs, ys = _as_groups(x), _as_groups(y)
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} seed groups, y has {len(ys)}")
    if any(a.shape != b.shape for a, b in zip(xs, ys)):
        raise ValueError(f"paired values need equal lengths, got {[a.shape for a in xs]} and {[b.shape for b in ys]}")
    ws = None if weights is None else _as_groups(weights)
    pairs = [p for p in _weighted_groups([a - b for a, b in zip(xs, ys)], ws) if len(p[0])]
    if not pairs:
        return float("nan"), None
    if weights is None:
        diff = float(np.mean([d.mean() for d, _ in pairs]))
    else:
        diff = float(np.mean([(w * d).sum() / w.sum() for d, w in pairs]))
    return diff, hierarchical_bootstrap_interval([d for d, _ in pairs], weights=None if weights is None else
                                                 [w for _, w in pairs], confidence=confidence,
                                                 n_resamples=n_resamples, seed=seed)


def paired_diff(x: Sequence[float] | Sequence[Sequence[float]], y: Sequence[float] | Sequence[Sequence[float]],
                *, weights: Sequence[float] | Sequence[Sequence[float]] | None = None, confidence: float = 0.95,
                n_resamples: int = N_RESAMPLES, seed: int = 0,
                proportion: bool = True) -> tuple[float, tuple[float, float] | None]:
    """Mean paired difference ``x - y`` and its interval: what :func:`factlens.compare` reports.

    Arguments and the difference as :func:`paired_bootstrap_diff`. The interval is its
    bootstrap interval, except for unweighted 0/1 outcomes on both sides (facts recalled or
    not), where a percentile bootstrap covers far less than it claims when few facts differ
    (zero width when none differs: 16 facts edited by both sides gave [0, 0]; measured coverage
    0.53-0.64 when one side is at 0.9-0.97 and the other at 1). There it is
    :func:`paired_proportion_diff_interval` of all pairs (one seed), or, with several seeds, the
    hull of that pooled interval and the bootstrap over seeds then facts (the pooled interval
    ignores the seed variance the bootstrap sees; the bootstrap misses what few differing facts
    leave open). ``proportion=False``: outcomes that can lie outside [0, 1] always take the
    bootstrap (:func:`mean_interval`).

    Example:
        >>> d, ci = paired_diff([1] * 16, [1] * 16)
        >>> d, [round(v, 3) for v in ci]
        (0.0, [-0.194, 0.194])
    """
    diff, ci = paired_bootstrap_diff(x, y, weights=weights, confidence=confidence, n_resamples=n_resamples, seed=seed)
    xs, ys = _as_groups(x), _as_groups(y)
    flat_x, flat_y = np.concatenate(xs), np.concatenate(ys)
    ok = ~(np.isnan(flat_x) | np.isnan(flat_y))
    if weights is not None or not proportion or not ok.any() or not (is_binary(flat_x[ok]) and is_binary(flat_y[ok])):
        return diff, ci
    score = paired_proportion_diff_interval(flat_x[ok], flat_y[ok], confidence=confidence)
    if len(xs) == 1 or ci is None:
        return diff, score
    return diff, (min(ci[0], score[0]), max(ci[1], score[1]))


def _as_groups(x) -> list[np.ndarray]:
    if len(x) and isinstance(x[0], (list, tuple, np.ndarray)):
        return [np.asarray(g, dtype=float).ravel() for g in x]
    return [np.asarray(x, dtype=float).ravel()]


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
    if np.isinf(d).any():  # every pattern's statistic would be +-inf: p = 0 without meaning
        raise ValueError("a paired difference is infinite; the sign-flip test needs finite differences (a metric "
                         "that can be infinite, e.g. a KL, should be compared on a bounded transform)")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    keep = ~np.isnan(d) & (w > 0)
    d, w = d[keep], w[keep] / w[keep].sum() if keep.any() else w[keep]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    moved = d != 0
    wd = d[moved] * w[moved]
    if _n_sign_counts(wd) <= 2 ** exact_max_n:
        # a zero difference adds nothing to the statistic whatever its sign, so the share of
        # the 2**n patterns at least as extreme is the share of the 2**k patterns of the k
        # non-zero differences: exact, and cheap however many units did not move
        return _exact_sign_flip(wd, alternative)
    return _random_sign_flip(wd, alternative, n_resamples, seed)


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


def _n_sign_counts(wd: np.ndarray) -> int:
    """How many (sum, probability) terms :func:`_exact_sign_flip` enumerates: one per number of
    positive signs among the differences of each distinct size."""
    _, counts = np.unique(np.abs(wd), return_counts=True)
    return math.prod(int(c) + 1 for c in counts)


def _half_binomial_pmf(c: int) -> np.ndarray:
    """``comb(c, k) / 2**c`` for ``k = 0 ... c``: exact in float up to ``c = 56`` (dyadic), from
    the exact integers up to ``c = 1000``, from scipy beyond (``comb`` no longer fits a float)."""
    if c > 1000:
        from scipy.stats import binom

        return binom.pmf(np.arange(c + 1), c, 0.5)
    return np.array([math.comb(c, j) for j in range(c + 1)], dtype=float) * 2.0 ** -c


def _exact_sign_flip(wd: np.ndarray, alternative: str) -> float:
    """Exact sign-flip p-value of the weighted differences ``wd`` (all non-zero).

    The statistic of a sign pattern depends only on how many differences of each distinct size
    ``m`` (there are ``c`` of them) keep their sign: ``m * (2 * k - c)`` with probability
    ``comb(c, k) / 2**c``. Enumerating these counts instead of the ``2**n`` patterns gives the
    same null distribution, and stays small when the differences take few sizes: 0/1 outcomes
    (one size: the two-sided sign test, the model of the binary power calculation in
    :mod:`factlens.power`) and accuracies over a few prompts per fact are exact at any number of
    facts. Written here because scipy's ``permutation_test`` enumerates patterns, not counts.
    """
    sizes, counts = np.unique(np.abs(wd), return_counts=True)
    values, probs = np.zeros(1), np.ones(1)
    for m, c in zip(sizes, counts):
        k = np.arange(c + 1)
        pk = _half_binomial_pmf(int(c))
        values = (values[:, None] + m * (2 * k - c)[None, :]).ravel()
        probs = (probs[:, None] * pk[None, :]).ravel()
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


def paired_test_key(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None, *,
                    ids: Sequence[Hashable]) -> frozenset:
    """A key that two paired tests share when they compare the same per-unit outcomes on the same units.

    ``x`` and ``y`` are the paired values (a localization's and the reference's, unit by
    unit), ``weights`` the units' weights and ``ids`` the units' ids (a fact's ``record.id``,
    ``"chunk:<i>"``; ``(seed, id)`` when several seeds are pooled); units that
    :func:`sign_flip_test` drops (NaN, zero weight) are left out. Two metrics get the same
    key when they are on the same units and their values agree unit by unit for both sides,
    or one is the complement ``1 - v`` of the other (a forget error and a forget accuracy;
    values are compared to 12 decimals, so that a complement stored in floating point counts):
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

    def exact(v: np.ndarray) -> bytes:
        # to 12 decimals: a stored complement (edit_prob = 1 - forget_prob) differs from 1 - v by
        # ~1e-16 and was a second test; + 0.0: -0.0 and 0.0 give the same bytes
        return (np.round(v, 12) + 0.0).tobytes()

    return frozenset({(on, exact(a), exact(b), w.tobytes()), (on, exact(1.0 - a), exact(1.0 - b), w.tobytes())})


def variance_components(groups: Sequence[Sequence[float]], *,
                        weights: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
    """Split the variance of a seed-averaged mean between fact sampling and training seed.

    With ``S`` seeds, per-seed means ``m_s`` over ``n_s`` units and within-seed variances
    ``v_s``: the fact-sampling variance of one seed's mean is ``mean(v_s / n_s)``; the seed
    variance is the method-of-moments estimate ``max(var(m_s) - mean(v_s / n_s), 0)`` (the
    spread of the seed means beyond what fact sampling explains). Both are variances of a
    *single seed's* mean; the seed share is ``seed / (seed + facts)``. With ``weights``
    (one per unit, shaped like ``groups``: tokens per text chunk) ``m_s`` is the weighted
    mean and ``v_s / n_s`` the squared :func:`weighted_mean_se`, the statistic a
    token-weighted metric reports.

    Returns:
        ``{"var_facts", "var_seed", "seed_share", "n_seeds"}`` (NaN with fewer than 2 seeds).

    Example:
        >>> vc = variance_components([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
        >>> vc["var_seed"] > vc["var_facts"] > 0
        True
    """
    gs = [(g, w) for g, w in _weighted_groups(groups, weights) if len(g) > 1]
    if len(gs) < 2:
        return {"var_facts": float("nan"), "var_seed": float("nan"), "seed_share": float("nan"), "n_seeds": len(gs)}
    if weights is None:
        means = np.array([g.mean() for g, _ in gs])
        within = float(np.mean([g.var(ddof=1) / len(g) for g, _ in gs]))
    else:
        means = np.array([(w * g).sum() / w.sum() for g, w in gs])
        within = float(np.mean([weighted_mean_se(g, weights=w) ** 2 for g, w in gs]))
    seed = max(float(means.var(ddof=1)) - within, 0.0)
    total = seed + within
    return {"var_facts": within, "var_seed": seed, "seed_share": seed / total if total > 0 else float("nan"),
            "n_seeds": len(gs)}
