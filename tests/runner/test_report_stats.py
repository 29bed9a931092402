"""factlens.runner.report_stats: Table 1's intervals and significance marks (synthetic results)."""

from __future__ import annotations

import numpy as np

from factlens.evaluation.result import EvalResult, Metric, SuiteResult
from factlens.runner.report import table1_rows

_TOKENS = np.array([10.0] * 7 + [500.0])  # one long chunk, as in real text


def _token_run(localization: str, seed: int, values) -> dict:
    """A run record whose side-effects result is built as side_effects._token_metric builds it."""
    ids = [f"chunk:{i}" for i in range(len(values))]
    m = Metric.from_samples("next_token_accuracy", dict(zip(ids, map(float, values))), unit="tokens",
                            weights=dict(zip(ids, _TOKENS)))
    return {"localization": localization, "seed": seed,
            "eval": EvalResult({"side_effects": SuiteResult("side_effects", (m,))})}


def _cell(rows: list[dict], name: str, j: int = 0) -> dict:
    return rows[[r["name"] for r in rows].index(name)]["cells"][j]


def test_token_weighted_cells_over_seeds_contain_their_value():
    """The Text-acc cell's interval over two seeds was the plain chunk mean's: [0.50, 0.63]
    around a token-weighted 0.856."""
    loc, ref = np.array([0.5] * 7 + [0.9]), np.array([0.6] * 8)
    runs = [_token_run(name, s, v + 0.01 * s) for s in (0, 1) for name, v in (("flu", ref), ("random", loc))]
    _, rows = table1_rows(runs)
    cell = _cell(rows, "random")
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
