"""How much of each metric's variance comes from fact sampling and how much from the training seed
(:func:`variance_split`; also importable from :mod:`factlens.comparison`, which it reads runs with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["variance_split"]


def variance_split(runs: str | Path | Mapping[str, Any], metrics: str | Sequence[str] | None = None):
    """How much of each metric's variance comes from fact sampling and how much from the training seed.

    For every localization and metric with per-unit samples in at least two seeds,
    :func:`factlens.stats.variance_components` of the per-seed samples: ``var_facts`` (the
    sampling variance of one seed's mean over its facts), ``var_seed`` (the extra spread of
    the seed means) and ``seed_share = var_seed / (var_seed + var_facts)``.

    Returns:
        A DataFrame with columns ``localization, metric, suite, n_seeds, var_facts, var_seed,
        seed_share`` (empty with a single seed).
    """
    import pandas as pd

    from factlens.comparison import _metric_index, _metric_names, _unit_values, _wanted, load_evaluations
    from factlens.stats import variance_components

    rows = []
    evals = load_evaluations(runs)
    metrics = _metric_names(metrics, evals)
    for loc, res in evals.items():
        for key, per_seed in _metric_index(res).items():
            if not _wanted(key, metrics):
                continue
            units = [_unit_values(m) for m in per_seed.values() if m.samples]
            if len(units) < 2:
                continue
            weighted = any(m.weights is not None for m in per_seed.values())  # token-weighted: split its variance
            vc = variance_components([v for v, _ in units], weights=[w for _, w in units] if weighted else None)
            rows.append({"localization": loc, "metric": key[1], "suite": key[0], **vc})
    cols = ["localization", "metric", "suite", "n_seeds", "var_facts", "var_seed", "seed_share"]
    return pd.DataFrame(rows, columns=cols)
