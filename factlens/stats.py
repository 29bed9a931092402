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
  modification for discrete tests; it lives in :mod:`factlens.multiple_testing` and is
  re-exported here), with :func:`smallest_attainable_p` (:mod:`factlens.sign_flip`, as the
  sign-flip test and :func:`paired_test_key`).
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
from typing import Callable, Sequence

import numpy as np

from factlens.multiple_testing import TaroneHolm, holm, tarone_holm
from factlens.paired_proportions import paired_proportion_diff_interval
from factlens.power import minimum_detectable_difference
from factlens.sign_flip import EXACT_MAX_N, paired_test_key, sign_flip_interval, sign_flip_test, smallest_attainable_p

__all__ = ["wilson_interval", "max_wilson_interval", "bootstrap_mean_interval", "bootstrap_interval",
           "hierarchical_bootstrap_interval", "mean_interval",
           "paired_bootstrap_diff", "paired_diff", "paired_proportion_diff_interval", "weighted_mean_se", "sign_flip_test", "sign_flip_interval", "holm", "tarone_holm", "TaroneHolm",
           "smallest_attainable_p",
           "paired_test_key", "minimum_detectable_difference",
           "variance_components",
           "is_binary", "EXACT_MAX_N", "N_RESAMPLES"]

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
