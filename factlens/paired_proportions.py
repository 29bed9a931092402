"""The interval of a difference of two paired proportions (factlens.compare's 0/1 metrics).

Kept apart from :mod:`factlens.stats` (which re-exports it, so this module imports stats'
helpers when called, not at import).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["paired_proportion_diff_interval"]


def paired_proportion_diff_interval(x: Sequence[float], y: Sequence[float], *,
                                    confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's square-and-add (hybrid score) interval for ``mean(x) - mean(y)`` of paired 0/1 outcomes.

    Newcombe (1998, Statistics in Medicine 17: 2635-2650), the paired form in Fagerland, Lydersen
    and Laake, *Statistical Analysis of Contingency Tables* (2017), ch. 8: each side's Wilson
    interval, combined with the correlation ``psi`` of the 2x2 table of pairs (its numerator
    ``ad - bc`` shrunk towards 0 by ``n / 2``). It keeps its coverage where few pairs differ,
    and has width when none does. Written here because neither scipy nor statsmodels has an
    interval for paired proportions (statsmodels' ``confint_proportions_2indep`` is for
    independent samples); it reproduces the book's example (59, 6, 16, 80: -0.0621
    [-0.1186, -0.0046]).

    Example:
        >>> [round(v, 4) for v in paired_proportion_diff_interval([1] * 65 + [0] * 96, [1] * 59 + [0] * 6 + [1] * 16 + [0] * 80)]
        [-0.1186, -0.0046]
    """
    from factlens.stats import is_binary, wilson_interval

    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or len(x) == 0 or not (is_binary(x) and is_binary(y)):
        raise ValueError("paired_proportion_diff_interval needs two equally long, non-empty sequences of 0/1 outcomes")
    n = len(x)
    a, b = float(((x == 1) & (y == 1)).sum()), float(((x == 1) & (y == 0)).sum())
    c, d = float(((x == 0) & (y == 1)).sum()), float(((x == 0) & (y == 0)).sum())
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence=confidence)
    l2, u2 = wilson_interval(a + c, n, confidence=confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    num = a * d - b * c
    psi = 0.0 if margins == 0 or 0 <= num <= n / 2 else (num - n / 2 if num > 0 else num) / math.sqrt(margins)
    low = p1 - p2 - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    high = p1 - p2 + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, low), min(1.0, high)
