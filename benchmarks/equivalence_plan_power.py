"""Check: does an equivalence plan (``factlens.plan_units(..., margin=)``) reach its power?

For two setups it takes a pilot, plans the units needed to show equivalence within the margin
when the localizations truly do not differ, then simulates ``--reps`` runs of that many units
(and of fewer and more) and counts how often :func:`factlens.equivalence` itself declares them
equivalent:

* ``fact``: paired 0/1 outcomes, a fifth of the facts discordant (half each way), margin 0.1;
* ``seed``: seeds as the unit, each seed's mean difference normal with sd 0.08, margin 0.1.

::

    OMP_NUM_THREADS=1 python benchmarks/equivalence_plan_power.py [--reps 100] [--seed 0] [--json out.json]

Results: docs/statistics.md (Plans to show equivalence).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)


def _ev(values, name: str):
    from factlens.evaluation.result import EvalResult, Metric, SuiteResult

    m = Metric.from_samples(name, {f"f{i}": float(x) for i, x in enumerate(values)})
    return EvalResult({"standard": SuiteResult("standard", (m,))})


def fact_runs(n: int, rng: np.random.Generator, discordant: float = 0.2, *, exact: bool = False) -> dict:
    """One seed of ``n`` paired 0/1 outcomes: ``discordant`` of the facts differ, half each way
    (``exact``: exactly that many, the pilot whose spread is the truth)."""
    u = rng.random(n) if not exact else (np.arange(n) + 0.5) / n
    ref = np.where(u < discordant / 2, 1, np.where(u < discordant, 0, 1))
    loc = np.where(u < discordant / 2, 0, np.where(u < discordant, 1, 1))
    return {"flu": [_ev(ref, "forget_accuracy")], "random": [_ev(loc, "forget_accuracy")]}


def seed_runs(n: int, rng: np.random.Generator, sd: float = 0.08, facts: int = 4, *, exact: bool = False) -> dict:
    """``n`` seeds whose mean paired differences are normal with ``sd`` around 0 (``exact``: rescaled
    to mean 0 and sample sd ``sd``, the pilot whose spread is the truth)."""
    d = rng.normal(0.0, sd, n)
    if exact:
        d = (d - d.mean()) / d.std(ddof=1) * sd
    return {"flu": {s: _ev([0.5] * facts, "forget_probability") for s in range(n)},
            "random": {s: _ev([0.5 + d[s]] * facts, "forget_probability") for s in range(n)}}


def declared(make, n: int, reps: int, rng: np.random.Generator, *, unit: str, margin: float) -> float:
    """Share of ``reps`` simulated runs of ``n`` units that factlens.equivalence declares equivalent."""
    import factlens

    hits = 0
    for _ in range(reps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = factlens.equivalence(make(n, rng), margin=margin, unit=unit)
        hits += bool(t["equivalent"].iloc[0])
    return hits / reps


def check(setup: str, *, reps: int, seed: int, margin: float = 0.1, pilot: int | None = None) -> dict:
    """The plan of one setup from a pilot whose spread is the true one (400 facts or 30 seeds: a
    real pilot's sd is itself uncertain, which this leaves out), and the share declared equivalent
    at 0.6, 1 and 1.2 times the plan."""
    import factlens

    rng = np.random.default_rng(seed)
    make, unit, pilot_n = (fact_runs, "fact", 400) if setup == "fact" else (seed_runs, "seed", 30)
    pilot_n = pilot or pilot_n
    plan = factlens.plan_units(make(pilot_n, rng, exact=True), margin=margin, unit=unit).iloc[0]
    n = int(plan["units_needed"])
    t0 = time.perf_counter()
    shares = {str(k): declared(make, k, reps, rng, unit=unit, margin=margin)
              for k in sorted({max(2, int(0.6 * n)), n, int(1.2 * n)})}
    return {"setup": setup, "unit": unit, "margin": margin, "pilot_sd": float(plan["sd"]), "planned": n,
            "declared_equivalent": shares, "reps": reps, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100, help="simulated runs per n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setups", default="fact,seed", help="comma-separated: fact, seed")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    emit({"checks": [check(s, reps=args.reps, seed=args.seed) for s in args.setups.split(",")]}, args.json)


if __name__ == "__main__":
    main()
