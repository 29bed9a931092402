"""Benchmark: before/after of each stage of one main-job (localization, seed), interleaved in one process.

``benchmarks/main_job.py`` runs each variant in its own process (clean memory numbers), but
on a shared machine the CPU seconds of two runs half an hour apart differ by 20-30 % from the
load of other processes alone. Here every stage runs twice back to back, as the code was
before the speed-ups and as it is now (the edit "before" first, the suites alternating which
runs first), on the same loaded model, so both see the same machine; the metrics of both runs are compared one by one.

"before" is: no shared-prefix reuse (``factlens.prefix.prefix_reuse(False)``), contiguous
weights (``factlens.layout.contiguous_layout``), one summed backward per editing step (the
earlier ``train_step``, below). The suites alternate which variant runs first
(:func:`variant_order`). Both variants use the same unedited view (memory is measured
by ``main_job.py``). Each variant of a suite gets its own empty ``BaselineCache``, so both
include the work on the unedited model (a first localization).

Run: ``python benchmarks/main_job_ab.py [--localization random] [--suites ...] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager

import torch

from _memory import PeakRSS, release_memory
from main_job import GB, VARIANTS, applied, job_arguments, metric_values, run_config, value_diffs


def variant_order(i: int) -> tuple[str, str]:
    """Which variant of the ``i``-th suite runs first: alternately "before" and "after" (ABBA), so
    that neither always meets the machine first (cold memory, caches) and the ratio is not biased
    by the order. (The edit always runs "before" first: the "after" edit is the one evaluated.)"""
    return ("before", "after") if i % 2 == 0 else ("after", "before")


@contextmanager
def variant(model, name: str):
    with applied(VARIANTS[name], model):
        yield


def measure(fn):
    release_memory()
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {"wall_s": wall, "cpu_s": cpu, "peak_delta_gb": mem.delta / GB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    job_arguments(ap)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from factlens.evaluation import evaluate
    from factlens.evaluation.baseline_cache import BaselineCache
    from factlens.runner import pipeline as P

    cfg = run_config(args)
    ws = P.Workspace()
    prep = P.prepare(cfg, args.seed, workspace=ws)
    P._seed_everything(args.seed)
    plan = P.plan_budget(prep, cfg, args.seed, need_budget=args.localization not in P.UNBUDGETED)
    if "mechanisms" in cfg.suites:
        plan["mechanisms"] = P.plan_mechanisms(prep, cfg, args.seed, plan)
    mask, *_ = P._mask_and_scores(prep, cfg, args.seed, args.localization, plan)
    print(f"torch threads {torch.get_num_threads()}; {args.localization}: {len(mask)} components", flush=True)
    rows, diffs = [], {}

    results = {}
    for name in ("before", "after"):
        with variant(prep.model, name):
            P._seed_everything(args.seed)
            res, m = measure(lambda: P._edit(prep, mask, cfg, args.seed))
        rows.append({"stage": "edit", "variant": name, **m})
        print(f"  edit {name}: {m['cpu_s']:.1f} CPU s, {m['wall_s']:.1f} s wall", flush=True)
        results[name] = res
        if name == "before":
            deltas = {n: d.new.clone() for n, d in res.deltas.items()}
            res.revert()
    res = results["after"]
    diffs["edit.delta"] = max(float((deltas[n] - d.new).abs().max()) for n, d in res.deltas.items())
    prep.pristine.show(res)
    try:
        for i, suite in enumerate(cfg.suites):
            vals = {}
            for name in variant_order(i):
                with variant(prep.model, name):
                    P._seed_everything(args.seed)
                    ev, m = measure(lambda: evaluate(
                        prep.model, prep.task, original=prep.original, suites=[suite], config=cfg.eval_config(args.seed),
                        mask=mask, mechanisms=P._mechanisms(plan), edit_result=res, baselines=BaselineCache(),
                        show_progress=False))
                vals[name] = metric_values(ev)
                rows.append({"stage": f"evaluate.{suite}", "variant": name, **m})
                print(f"  {suite} {name}: {m['cpu_s']:.1f} CPU s, {m['wall_s']:.1f} s wall", flush=True)
            a, b = vals["before"], vals["after"]
            d = list(value_diffs(a, b).values())
            diffs[suite] = max(d) if d else 0.0
    finally:
        res.revert()
        prep.pristine.reset()
    lines = ["| stage | before CPU s | after CPU s | after / before | max abs metric diff |", "|---|---:|---:|---:|---:|"]
    tb = ta = 0.0
    for stage in dict.fromkeys(r["stage"] for r in rows):
        b = next(r for r in rows if r["stage"] == stage and r["variant"] == "before")
        a = next(r for r in rows if r["stage"] == stage and r["variant"] == "after")
        tb, ta = tb + b["cpu_s"], ta + a["cpu_s"]
        key = "edit.delta" if stage == "edit" else stage.split(".", 1)[1]
        lines.append(f"| {stage} | {b['cpu_s']:.1f} | {a['cpu_s']:.1f} | {a['cpu_s'] / max(b['cpu_s'], 1e-9):.2f} | "
                     f"{diffs.get(key, float('nan')):.2g} |")
    lines.append(f"| **edit + evaluate** | {tb:.1f} | {ta:.1f} | {ta / tb:.2f} | |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "diffs": diffs, "table": "\n".join(lines)}, f, indent=1)


if __name__ == "__main__":
    from factlens.progress_bars import progress

    with progress(False):  # no bars in the timings
        main()
