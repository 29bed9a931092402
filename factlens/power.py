"""Power of factlens's paired sign-flip test: the minimum detectable difference.

Split from :mod:`factlens.stats` (which re-exports :func:`minimum_detectable_difference`) to keep
that module small; see docs/statistics.md, "Power".

Example:
    >>> round(minimum_detectable_difference(16, sd=0.5), 3)
    0.377
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["minimum_detectable_difference", "lattice_step", "units_needed"]

#: The largest number of prompts per fact whose averages :func:`lattice_step` recognises (1/12: the
#: common step of averages over 3 and 4 prompts).
LATTICE_MAX_DENOMINATOR = 12


def minimum_detectable_difference(n: int, *, sd: float | None = None, alpha: float = 0.05,
                                  power: float = 0.8, binary: bool | None = None,
                                  step: float | None = None, sizes: tuple[float, ...] | None = None) -> float:
    """Smallest true mean paired difference detected with probability ``power`` at level ``alpha``.

    How it is computed:

    * Whatever the data, the sign-flip test's smallest attainable two-sided p-value is
      ``2 * 2**-n``, so for ``n < k`` with ``2 * 2**-k <= alpha`` (k = 6 at 0.05) no
      difference can be significant: the result is ``inf``.
    * With ``sd`` > 0 (the standard deviation of the paired differences), normal
      differences: for ``n`` <= 16 the smallest standardized effect ``d`` comes from the power of
      the exact sign-flip test itself, simulated (2,000 seeded datasets) under normal
      differences: its few attainable p-values cost power (the t-test's ``d`` gives it 0.6 at
      n = 6 or at n = 8 with 0.05/4, 0.74 at n = 13 with 0.05/28). Above 16 units, the
      two-sided paired (one-sample) t-test's power calculation
      (``statsmodels.stats.power.TTestPower().solve_power``) times ``1 + 0.13 / sqrt(M)``, ``M =
      floor(alpha * 2**(n - 1))`` (fitted to the exact test's ``d`` at n = 13-20: +1.2 % at
      n = 17 and 0.05/28, +0.1 % at n = 24). Exact power at the result, counted on other
      simulated datasets (4,000 per case; 2,000 at n = 28, 32): 0.79-0.81 at n = 13-32 and
      levels 0.05 to 0.05/28 (the t-test's ``d`` alone: 0.74-0.80). The result is ``d * sd``.
    * For 0/1 outcomes (``binary=True``, such as an accuracy over facts) without a spread
      (``sd`` is ``None`` or 0: no unit differed, e.g. both evaluations forget every fact),
      and as a floor whatever ``sd`` is: a true difference ``delta`` of 0/1 outcomes is at
      best each unit changing by 1 with probability ``delta``, all in one direction; the
      exact test rejects once ``k`` units changed with ``2 * 2**-k <= alpha`` (k = 6 at
      0.05), so ``delta`` solves ``P(Binomial(n, delta) >= k) = power``. For 0/1 outcomes no
      difference below that is detected with the stated power, however few units differed
      in the data (an ``sd`` from one differing fact alone would promise 0.19 at n = 16).
    * ``binary=False`` (continuous outcomes: probabilities, KL) without a spread: NaN. Equal
      paired differences give no scale for a true difference (the 0/1 model above would
      call 16 differences of 0.2, p = 3e-5, undetectable below 0.45).
    * ``binary=None`` (the caller does not know): with ``sd`` > 0 no floor (as ``False``),
      without a spread the 0/1 model (as ``True``).
    * ``step`` (with ``sd`` > 0 and not ``binary``): the paired differences lie on a lattice of
      this step (:func:`lattice_step`: accuracies averaged over a few prompts per fact, in
      thirds). Their few sizes and many ties cost the exact test power as 0/1 outcomes do (the
      t-test's ``d * sd`` left it 0.69-0.75 at n = 16-64), so the result is at least
      ``step`` times the 0/1 model's effect at ``sd / step``: differences that move one step
      at a time, the trinomial below on the lattice (simulated power at the t-test's value
      at n = 32, differences in thirds: 0.71; realistic counts of 3 prompts, 0.73-0.75).
      With ``sizes`` (the non-zero ``|differences|`` seen, on the lattice) of more than one
      size, also the effect of the same model with the sizes drawn from those seen: a unit
      differs with probability ``P(+) + P(-)`` and then by a size drawn from ``sizes``, the
      sign bias and the rate set by the mean ``delta`` and ``sd``; its power is simulated
      (600 seeded datasets through the exact :func:`~factlens.sign_flip.sign_flip_test`,
      bisection: about 2 s). Where differences span several steps the one-step trinomial is
      clipped and fell below the t-test's value, whose power was 0.72-0.77.

    Example:
        >>> round(minimum_detectable_difference(16, sd=0.5), 3)
        0.377
        >>> round(minimum_detectable_difference(16), 3), minimum_detectable_difference(5)
        (0.449, inf)
        >>> round(minimum_detectable_difference(16, sd=0.25, binary=True), 3)  # one of 16 facts differed
        0.449
        >>> minimum_detectable_difference(16, sd=0.0, binary=False)  # continuous, all differences equal
        nan
    """
    _check_power_inputs(alpha=alpha, power=power, sd=sd)
    k = int(math.ceil(math.log2(2 / alpha)))  # smallest k with 2 * 2**-k <= alpha
    if n < max(k, 2):
        return float("inf")
    spread = sd is not None and sd > 0
    if binary is False and not spread:
        return float("nan")
    floor = 0.0
    if binary or not spread:
        from scipy.optimize import brentq
        from scipy.stats import binom

        floor = float(brentq(lambda p: binom.sf(k - 1, n, p) - power, 1e-9, 1 - 1e-9))
    if not spread:
        return floor
    if binary:
        return max(_binary_sign_test_effect(n, float(sd), alpha, power), floor)
    if step is not None and step > 0:
        floor = float(step) * _binary_sign_test_effect(n, float(sd) / float(step), alpha, power)
        if sizes is not None and len(set(sizes)) > 1:
            floor = max(floor, _sizes_effect(n, float(sd), tuple(sorted(float(x) for x in sizes)), alpha, power))
    d = _sign_flip_effect(n, alpha, power)
    return max(d * float(sd), floor)


#: The most units :func:`units_needed` searches (a plan beyond it says ``inf``).
MAX_PLANNED_UNITS = 1_000_000
#: The most units at which :func:`units_needed` runs the MDD's several-sizes simulation (``sizes``):
#: under a second per ``n`` up to 64, half a minute at 128, minutes beyond.
SIZES_PLANNED_MAX_N = 64


def units_needed(difference: float, *, sd: float | None = None, alpha: float = 0.05, power: float = 0.8,
                 binary: bool | None = None, step: float | None = None,
                 sizes: tuple[float, ...] | None = None, max_units: int = MAX_PLANNED_UNITS) -> int | float:
    """Fewest paired units at which :func:`minimum_detectable_difference` (same arguments) is at
    most ``|difference|``: how many facts or seeds a run needs to find a true difference of that
    size with probability ``power``, if the paired differences keep the spread ``sd`` of a pilot.

    Searched by doubling and then bisection on ``n``. The exact tests are discrete, so the MDD
    falls with ``n`` in small steps rather than strictly (the 0/1 model's sawtooth): the answer is
    the ``n`` that bisection finds between a power of two that fails and the next that succeeds,
    whose MDD is at most ``|difference|``, and a few units more are safer. ``inf`` when even
    ``max_units`` do not suffice; NaN when no MDD exists (continuous values without a spread).
    The MDD's several-sizes model (``sizes``: lattice differences of more than one size, a
    simulation that takes minutes per ``n`` in the hundreds) is searched where the answer without
    it is at most :data:`SIZES_PLANNED_MAX_N` units, so that a small plan is the ``n`` whose MDD,
    as :func:`factlens.compare` computes it, reaches the difference; above, the one-step model and
    the t-test plan alone (the simulation raised the MDD by 0-8.4 % at n = 32-96, so such plans
    can be up to a sixth small: docs/statistics.md, "Planning").

    Example:
        >>> units_needed(0.449)  # 0/1 outcomes, no spread: 16 facts, as minimum_detectable_difference(16)
        16
        >>> n = units_needed(0.2, sd=0.5)
        >>> n, minimum_detectable_difference(n - 1, sd=0.5) > 0.2 >= minimum_detectable_difference(n, sd=0.5)
        (52, True)
        >>> units_needed(0.05, sd=0.5, max_units=100)
        inf
    """
    ok = not isinstance(difference, bool) and isinstance(difference, (int, float, np.floating, np.integer))
    target = abs(float(difference)) if ok else float("nan")
    if not target > 0 or math.isinf(target):
        raise ValueError(f"difference must be a finite non-zero number (the smallest true difference to find, on "
                         f"the metric's scale, e.g. 0.1 for accuracies), got {difference!r}")
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 2:
        raise ValueError(f"max_units must be an integer of at least 2, got {max_units!r}")

    def mdd(n: int) -> float:
        return minimum_detectable_difference(n, sd=sd, alpha=alpha, power=power, binary=binary, step=step)

    lo, hi = 1, 2  # mdd(lo) > target (one unit detects nothing), hi to be found
    while True:
        m = mdd(hi)
        if math.isnan(m):
            return float("nan")
        if m <= target:
            break
        if hi >= max_units:
            return float("inf")
        lo, hi = hi, min(2 * hi, max_units)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mdd(mid) <= target else (mid, hi)
    if sizes is not None and len(set(sizes)) > 1 and step is not None and step > 0 and not binary:
        def with_sizes(n: int) -> float:
            return minimum_detectable_difference(n, sd=sd, alpha=alpha, power=power, binary=binary, step=step,
                                                 sizes=tuple(sizes))

        found = _with_sizes(hi, target, with_sizes)
        if found is None:  # beyond the simulated range: the plan without sizes for a target shrunk by the MDD's
            # rise at its end (the simulation's excess changes slowly with n: 0-8.4 % over n = 32-96)
            rise = with_sizes(SIZES_PLANNED_MAX_N) / mdd(SIZES_PLANNED_MAX_N)
            found = max(units_needed(target / rise, sd=sd, alpha=alpha, power=power, binary=binary, step=step,
                                     max_units=max_units), SIZES_PLANNED_MAX_N + 1)
        return found
    return hi


def _with_sizes(n0: int, target: float, mdd) -> int | None:
    """The fewest ``n >= n0`` whose MDD with the several-sizes simulation (``mdd``) reaches ``target``,
    where ``n0`` is the answer without it (the simulation only raises the MDD): ``n0`` itself when it
    is above :data:`SIZES_PLANNED_MAX_N` (too slow to simulate), ``None`` when the answer is above it."""
    if n0 > SIZES_PLANNED_MAX_N or mdd(n0) <= target:
        return n0
    lo = hi = n0
    while True:  # a few units more (the simulation raised the MDD by at most ~8 %): steps that double
        hi = min(hi + max(1, n0 // 8, 2 * (hi - n0)), SIZES_PLANNED_MAX_N)
        if mdd(hi) <= target:
            break
        if hi >= SIZES_PLANNED_MAX_N:
            return None
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mdd(mid) <= target else (mid, hi)
    return hi


def _check_power_inputs(*, alpha: float, power: float, sd: float | None) -> None:
    """Refuse a level or power outside (0, 1) and a negative spread: ``alpha=0`` divided by zero, ``power=1.2``
    failed inside the root finder, ``power=0`` returned the largest simulated threshold (the same as
    ``power=1``), and ``sd=-1`` was read as "no spread"."""
    for name, v in (("alpha", alpha), ("power", power)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0 < v < 1:
            raise ValueError(f"{name} must be a number strictly between 0 and 1, got {v!r}")
    if sd is not None and not (sd >= 0 or sd != sd):  # NaN: no spread measured, as None
        raise ValueError(f"sd (the standard deviation of the paired differences) must be >= 0, got {sd!r}")


def lattice_step(differences, *, max_denominator: int = LATTICE_MAX_DENOMINATOR) -> float | None:
    """``1 / q`` for the smallest ``q`` in 2..``max_denominator`` such that every (non-NaN) paired
    difference is a multiple of ``1 / q`` (to 1e-9), ``None`` when there is none or no difference
    is non-zero (0/1 differences, ``q = 1``, are the ``binary`` case).

    Example:
        >>> lattice_step([1 / 3, -2 / 3, 0.0, 1.0]), lattice_step([0.25, 0.5, -1 / 3])
        (0.3333333333333333, 0.08333333333333333)
        >>> lattice_step([1.0, -1.0, 0.0]) is None, lattice_step([0.123, 0.5]) is None
        (True, True)
    """
    d = np.asarray(differences, dtype=float).ravel()
    d = d[~np.isnan(d)]
    if not len(d) or not np.any(d != 0) or np.all(np.abs(d - np.round(d)) <= 1e-9):
        return None
    for q in range(2, max_denominator + 1):
        if np.all(np.abs(d * q - np.round(d * q)) <= 1e-9 * q):
            return 1.0 / q
    return None


@functools.lru_cache(maxsize=256)  # a pure function of its arguments: compare() asks once per row
def _binary_sign_test_effect(n: int, sd: float, alpha: float, power: float) -> float:
    """Smallest mean ``delta`` of paired 0/1 differences (values -1, 0, +1 with standard deviation ``sd``)
    that the exact two-sided sign-flip test detects with ``power``.

    On such differences the sign-flip test is the sign test on the ``D`` units that differ, which is
    discrete and conservative: it has less power than the t-test (whose ``d * sd`` left it 0.70-0.75
    at n = 24-64). The trinomial ``P(+1) = p_minus + delta``, ``P(-1) = p_minus`` with
    ``p_minus = (sd**2 + delta**2 - delta) / 2`` has mean ``delta`` and standard deviation ``sd``
    (where no such trinomial exists ``p_minus`` is clipped: at 0, all changes going one way, the
    binomial floor's model; at ``(1 - delta) / 2``, every unit differing). Its power is summed
    exactly over ``D`` and the number of ``+1``; the effect is solved by bisection. Written here
    because no library computes this test's power.
    """
    from scipy.stats import binom

    ds = np.arange(n + 1)
    # [d]: reject k among d when min(k, d - k) <= crit[d]. Cached for the n of compare's rows (few, and
    # shared by its rows); the n of a power plan's search (up to MAX_PLANNED_UNITS, each asked once) are
    # not: ~40 of them at 8 bytes per d held up to ~180 MB for the whole process
    crit = _sign_test_critical(n, alpha) if n <= _CACHED_CRITICAL_N else _sign_test_critical.__wrapped__(n, alpha)

    def achieved(delta: float) -> float:
        pm = min(max(0.0, (sd * sd + delta * delta - delta) / 2), (1 - delta) / 2)
        pp = pm + delta
        q = min(1.0, pp + pm)
        if q <= 0:
            return 0.0
        r = min(1.0, pp / q)
        p_d = binom.pmf(ds, n, q)  # [d]
        # P(reject | d) = P(Bin(d, r) <= crit) + P(Bin(d, r) >= d - crit): the two tails of the rejection region,
        # O(n) where summing the pmf over every (d, k) was O(n^2) (two thirds of a three-folder compare, 2026-12-07)
        p_reject = binom.cdf(crit, ds, r) + binom.sf(ds - crit - 1, ds, r)
        return float((p_d * p_reject).sum())

    if achieved(1.0) < power:
        return float("inf")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if achieved(mid) >= power else (mid, hi)
    return hi


_CACHED_CRITICAL_N = 4096  # the largest n whose critical counts are cached (64 entries: at most ~2 MB)


@functools.lru_cache(maxsize=64)  # one per (n, alpha): the rows of one compare() share them
def _sign_test_critical(n: int, alpha: float) -> np.ndarray:
    """Per number of differing units ``d`` (0..n): the largest ``c`` whose two-sided sign-test p-value
    ``min(1, 2 P(Bin(d, 1/2) <= c))`` is at most ``alpha`` (-1 where none is): the test rejects ``k``
    successes among ``d`` exactly when ``min(k, d - k) <= c``, the p-value growing with ``min(k, d - k)``.

    Example:
        >>> _sign_test_critical(8, 0.05).tolist()  # from d = 6 on, all-in-one-direction rejects
        [-1, -1, -1, -1, -1, -1, 0, 0, 0]
    """
    from scipy.stats import binom

    d = np.arange(n + 1)
    # the smallest c with P(Bin(d, 1/2) <= c) >= alpha / 2, and its neighbours: the critical c is one of them (the
    # p-value grows with c; the neighbours absorb the quantile's rounding), tested with the p-value itself. O(n):
    # testing every c of every d was O(n^2) in time and memory (a plan of thousands of units)
    c0 = np.nan_to_num(binom.ppf(alpha / 2, np.maximum(d, 1), 0.5), nan=0.0).astype(int)
    cands = c0[:, None] + np.array([-1, 0, 1])[None, :]
    ok = ((cands >= 0) & (cands <= (d // 2)[:, None]) & (d[:, None] > 0)
          & (np.minimum(1.0, 2 * binom.cdf(cands, d[:, None], 0.5)) <= alpha))
    out = np.where(ok.any(axis=1), np.where(ok, cands, -1).max(axis=1), -1)
    out.flags.writeable = False  # cached: shared by every call with these arguments
    return out


@functools.lru_cache(maxsize=128)  # a pure function of its arguments: compare() asks once per row
def _sizes_effect(n: int, sd: float, sizes: tuple[float, ...], alpha: float, power: float, n_sim: int = 600) -> float:
    """Smallest mean ``delta`` that the exact two-sided sign-flip test detects with ``power`` when each
    of ``n`` units differs with probability ``P(+) + P(-)``, by a size drawn from ``sizes`` (those seen)
    and with sign ``+``/``-`` in proportion ``P(+)``/``P(-)``; mean ``delta`` and standard deviation
    ``sd`` fix the two probabilities (``P(+) - P(-) = delta / E[S]``, ``P(+) + P(-) = (sd**2 +
    delta**2) / E[S**2]``, clipped where no such law exists, as the trinomial of
    :func:`_binary_sign_test_effect`, which this is for one size). Simulated with common random
    numbers (fixed seed), so the answer is deterministic; ``inf`` when even every unit moving by a
    drawn size in one direction is not detected with ``power``. Written here because no library
    computes this test's power."""
    from factlens.sign_flip import memoized_sign_flip_test

    S = np.asarray(sizes, dtype=float)
    m1, m2 = float(S.mean()), float((S * S).mean())
    rng = np.random.default_rng(12345)
    u = rng.random((n_sim, n))
    drawn = S[rng.integers(0, len(S), (n_sim, n))]
    # a dataset's p-value depends only on its multiset of differences (the test is exact and invariant to
    # order, or canonically ordered when random), and the datasets take their values from the few sizes
    # seen: across the bisection's steps most repeat one already tested (the report's markdown of a
    # two-seed planted run spent 86 of its 124 s here, 225,000 tests)
    p_of: dict[bytes, float] = {}
    nulls: dict = {}  # datasets of other signs share a null distribution: it depends on the sizes' counts only

    def p_value(row: np.ndarray) -> float:
        key = row.tobytes()
        if key not in p_of:
            p_of[key] = memoized_sign_flip_test(row, nulls)
        return p_of[key]

    def achieved(delta: float) -> float:
        bias = delta / m1
        pm = min(max(0.0, ((sd * sd + delta * delta) / m2 - bias) / 2), (1 - bias) / 2)
        pp = pm + bias
        d = np.sort(np.where(u < pp, drawn, np.where(u < pp + pm, -drawn, 0.0)), axis=1)
        return float(np.mean([p_value(row) <= alpha for row in d]))

    if achieved(m1) < power:
        return float("inf")
    lo, hi = 0.0, m1
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if achieved(mid) >= power else (mid, hi)
    return hi


_EXACT_POWER_MAX_N = 12  # 4,096 sign patterns: a second or two of simulation
_ENUMERATED_MAX_N = 16  # 65,536 sign patterns per dataset, enumerated in blocks: about 1 s
#: Fitted ``c`` of the exact test's excess effect over the t-test's, ``1 + c / sqrt(M)`` with ``M`` the
#: sign patterns in its rejection region (:func:`_sign_flip_effect`).
_DISCRETENESS = 0.13


def _sign_flip_effect(n: int, alpha: float, power: float) -> float:
    """Standardized mean difference that the exact two-sided sign-flip test detects with ``power``.

    For ``n`` <= 16 the test's own power under normal differences, simulated (2,000 seeded
    datasets, every sign pattern enumerated). Above, the t-test's effect times ``1 + 0.13 /
    sqrt(M)``, ``M = floor(alpha * 2**(n - 1))`` the sign-pattern pairs in the exact test's
    rejection region: its few attainable p-values near ``alpha`` cost power. The factor was
    fitted to the exact test's effect at n = 13-20 and levels 0.05 to 0.05/28 (1.047 at M = 7,
    n = 13 and 0.05/28; 1.012 at n = 17 and 0.05/28; within the simulation's 1 % noise
    elsewhere), where the t-test's effect alone had power 0.74-0.79.
    """
    if n <= _EXACT_POWER_MAX_N:
        return _exact_sign_flip_effect(n, alpha, power)
    if n <= _ENUMERATED_MAX_N:
        return _enumerated_sign_flip_effect(n, alpha, power)
    from statsmodels.stats.power import TTestPower

    # the two-sided power is symmetric in d, and statsmodels' root finder can return the negative
    # root (-0.402 at n = 96, alpha = 0.05/19), which the caller's max() turned into an mdd of 0
    d = abs(float(np.asarray(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                                      alternative="two-sided")).item()))
    m = max(math.floor(math.ldexp(alpha, min(n, 80) - 1)), 1)  # beyond n = 80 the factor is 1 to 1e-7
    return d * (1 + _DISCRETENESS / math.sqrt(m))


@functools.lru_cache(maxsize=64)  # a pure function of its arguments: compare() asks once per row
def _exact_sign_flip_effect(n: int, alpha: float, power: float, n_sim: int = 2000) -> float:
    """Standardized mean difference that the exact two-sided sign-flip test detects with ``power``.

    Simulated under normal differences ``delta + N(0, 1)`` with common random numbers
    (fixed seed), so the answer is deterministic; solved by bisection on ``delta``. Written
    here because no library computes the power of this permutation test.
    """
    rng = np.random.default_rng(12345)
    z = rng.standard_normal((n_sim, n))
    signs = (1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)).astype(float)  # [2**n, n]

    def rejects(delta: float) -> float:
        d = z + delta
        null = np.abs(d @ signs.T)  # [n_sim, 2**n]
        obs = np.abs(d.sum(1, keepdims=True))
        p = (null >= obs - 1e-9 * np.abs(d).sum(1, keepdims=True)).mean(1)
        return float((p <= alpha).mean())

    lo, hi = 0.0, 1.0
    while rejects(hi) < power:
        lo, hi = hi, 2 * hi
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rejects(mid) >= power else (mid, hi)
    return hi


@functools.lru_cache(maxsize=64)  # a pure function of its arguments: compare() asks once per row
def _enumerated_sign_flip_effect(n: int, alpha: float, power: float, n_sim: int = 2000) -> float:
    """:func:`_exact_sign_flip_effect` (the same seeded datasets) solved without bisection, for ``n`` up to ~16.

    Flipping the signs of a set ``A`` of the differences ``d_i = z_i + delta`` changes the sum
    ``S`` to ``S - 2 T_A``; for ``S > 0`` as many patterns reach ``|S|`` with ``T_A <= 0`` as
    with ``T_A >= S`` (``A`` and its complement), so the test rejects (towards ``delta``) iff
    at most ``M = floor(alpha * 2**(n - 1))`` sets ``A``, the empty one included, have
    ``Z_A + |A| delta <= 0``, i.e. iff ``delta`` exceeds the ``M``-th largest ``-Z_A / |A|``
    over the non-empty sets (and ``-Z / n``, for ``S > 0``). That threshold is computed once
    per dataset; the effect is the ``power`` quantile of the thresholds. Rejections of the
    wrong sign, which the bisection also counted, are left out: the two agree to 0.1 % at n = 11-13.
    """
    rng = np.random.default_rng(12345)
    z = rng.standard_normal((n_sim, n))
    m = math.floor(math.ldexp(alpha, n - 1))
    if m < 1:
        return float("inf")
    sizes = np.zeros(1)
    for _ in range(n):
        sizes = np.concatenate([sizes, sizes + 1])
    thresholds = np.empty(n_sim)
    block = max(1, 2 ** 21 // 2 ** n)  # datasets per block: arrays of 2**21 floats (16 MB)
    for start in range(0, n_sim, block):
        zb = z[start:start + block]
        sums = np.zeros((len(zb), 1))
        for i in range(n):  # subset sums Z_A of every set A, the empty one first
            sums = np.concatenate([sums, sums + zb[:, i:i + 1]], axis=1)
        means = sums[:, 1:] / sizes[1:]  # Z_A / |A|: the M-th smallest is minus the M-th largest -Z_A / |A|
        kth = np.partition(means, m - 1, axis=1)[:, m - 1]
        thresholds[start:start + block] = np.maximum(-kth, -zb.sum(1) / n)
    return float(np.sort(thresholds)[math.ceil(power * n_sim) - 1])
