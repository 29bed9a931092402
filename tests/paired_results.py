"""Results built by hand for the tests of paired comparisons (compare, equivalence, verdicts)."""

from __future__ import annotations

from factlens.evaluation.result import EvalResult, Metric, SuiteResult


def result(*metrics: tuple[str, list[float]], proportion: bool = True, at_chance: bool = False) -> EvalResult:
    """One evaluation whose standard suite holds each ``(name, per-fact values)`` (facts ``f0``, ``f1``...)."""
    ms = tuple(Metric.from_samples(name, {f"f{i}": float(x) for i, x in enumerate(v)}, proportion=proportion,
                                   at_chance=at_chance) for name, v in metrics)
    return EvalResult({"standard": SuiteResult("standard", ms)})


def pair(n_both: int, n_loc_only: int, n_ref_only: int, n_neither: int) -> tuple[list[int], list[int]]:
    """Paired 0/1 outcomes with the given 2 x 2 table (localization, reference)."""
    x = [1] * n_both + [1] * n_loc_only + [0] * n_ref_only + [0] * n_neither
    y = [1] * n_both + [0] * n_loc_only + [1] * n_ref_only + [0] * n_neither
    return x, y
