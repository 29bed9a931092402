"""Is MEMIT's specificity a matter of its covariance? A ``mom2_update_weight`` x covariance-text sweep.

Re-creates the facts and mask of one MEMIT unit of a finished run folder (the runner's own
``prepare``), optimizes MEMIT's target residuals once (they depend on neither setting), then,
for every covariance text and every ``mom2_update_weight`` (``lambda``), writes the update into
the mask's layers (:func:`factlens.editing.memit.memit_apply`), evaluates the edited model with
the run's evaluation settings and reverts it. Printed per row: edit accuracy and maintain
accuracy (Wilson 95 % intervals, n), the mean update norm and the residual left at the last
layer.

Why: MEMIT solves ``(lambda C + K^T K) Delta = K^T R``. A covariance ``C`` estimated on too
few tokens (the built-in text gives ~2,700 for 2,048-dimensional keys on Gemma 3 270M) is
nearly singular in the directions it never saw, so the update leaks into unrelated keys;
a larger ``lambda`` trades edit strength for preservation. The targets are the expensive part
(one optimization per fact), so the sweep costs one MEMIT edit plus one evaluation per row.

Run (after ``factlens run sports-athlete-editing --localizations flu --methods memit --out RUN``):
``python benchmarks/memit_sweep.py RUN --unit flu+memit --weights 1.5e3,1.5e4,1.5e5,1.5e6
--text-sources builtin,../shared/data/wikitext2/test.txt --out sweep.json``
The row with the run's own setting reproduces its stored ``standard`` numbers (``matches_run``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--unit", default="flu+memit", help="a MEMIT unit of the run (flu+memit, causal_tracing_mlps+memit)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the run (default: its first)")
    ap.add_argument("--weights", default="1.5e3,1.5e4,1.5e5,1.5e6", help="comma-separated mom2_update_weight values")
    ap.add_argument("--text-sources", default="builtin",
                    help="comma-separated covariance texts: 'builtin' or a text file / dataset name")
    ap.add_argument("--norm-weight-floors", default=None,
                    help="comma-separated MemitConfig.norm_weight_floor values (default: the run's)")
    ap.add_argument("--suites", default="standard", help="evaluation suites of each row (the run's settings)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    return ap.parse_args(argv)


def _prepare(run_dir: Path, unit: str, seed: int | None):
    """The run's unit (:func:`_runs.open_unit`) and the MEMIT config its edit used."""
    from _runs import open_unit  # benchmarks/_runs.py (the script's folder is on sys.path)
    from factlens.editing import EditConfig
    from factlens.editing.memit import MemitConfig
    from factlens.runner.pipeline import method_edit_config

    u = open_unit(run_dir, unit, seed)
    if u.method != "memit":
        raise SystemExit(f"unit {unit!r} is not a MEMIT unit (its method is {u.method!r}); pass e.g. --unit flu+memit")
    stored = u.record.get("edit", {}).get("config")  # what the run used (older runs: no covariance text -> built-in)
    ec = EditConfig.from_dict(stored) if stored else method_edit_config(u.config, u.seed, "memit")
    base = MemitConfig.from_edit_config(ec)
    if stored and "norm_weight_floor" not in ec.methods.get("memit", {}):
        meta = u.record.get("edit", {}).get("meta", {}).get("memit_config", {})
        base = base.replace(norm_weight_floor=meta.get("norm_weight_floor", 0.0))  # older code wrote every non-zero weight
    return u, base


def _row(ev, weight: float, source: str, per_layer: list, final: float, cpu: float) -> dict:
    row = {"mom2_update_weight": weight, "text_source": source, "cpu_seconds": cpu,
           "update_norm": sum(p["update_norm"] for p in per_layer) / len(per_layer),
           "residual_norm_before": per_layer[0]["residual_norm"], "final_residual_norm": final}
    for suite in ev.suites.values():
        for m in suite.metrics:
            row[m.name] = {"value": m.value, "ci": [m.ci_low, m.ci_high], "n": m.n}
    return row


def _sweep_row(u, mask, layers, records, targets, history, stats, row_cfg, prefixes, *, suites, eval_config) -> dict:
    """Write MEMIT's update with ``row_cfg`` into the run's model, evaluate it, revert it; the row."""
    from factlens.components import param_name
    from factlens.editing.memit import _current_z, memit_apply
    from factlens.editing.memory_editing import build_result
    from factlens.evaluation import evaluate

    model, prep = u.prep.model, u.prep
    c0 = time.process_time()
    params = dict(model.named_parameters())
    originals = {n: params[n].detach().clone() for n in (param_name(l, "mlp", "W_out") for l in layers)}
    per_layer = memit_apply(model, layers, records, targets, stats=stats, config=row_cfg, prefixes=prefixes)
    final = float((targets - _current_z(model, layers[-1], records)).norm(dim=1).mean())
    res = build_result(model, mask, u.config.edit_config(u.seed), originals, task=prep.task, t0=time.perf_counter(),
                       history=history, meta={"method": "memit"})
    try:
        prep.pristine.show(res)
        ev = evaluate(model, prep.task, original=prep.original, suites=suites, config=eval_config)
    finally:
        res.revert()
        prep.pristine.reset()
    return {**_row(ev, row_cfg.mom2_update_weight, row_cfg.text_source or "builtin", per_layer, final,
                   time.process_time() - c0), "norm_weight_floor": row_cfg.norm_weight_floor}


def main(argv=None) -> int:
    a = _args(argv)
    torch.set_num_threads(a.threads)
    import factlens
    from factlens.editing.memit import memit_targets
    from factlens.editing.memory_editing import layer_key_statistics, mask_mlp_layers
    from factlens.editing.rome import context_prefixes

    bars_off = factlens.progress(False)  # bars off while main runs; kept referenced: a bare call's manager was
    bars_off.__enter__()  # collected at once, and closing its generator put the bars back on
    u, base = _prepare(a.run_dir, a.unit, a.seed)
    cfg, seed, prep, mask = u.config, u.seed, u.prep, u.mask
    model, records = prep.model, list(prep.task.forget)
    layers = mask_mlp_layers(mask, model, method="MEMIT")
    prefixes = context_prefixes(base.prefix_lengths, base.seed)
    sources = [None if s == "builtin" else s for s in a.text_sources.split(",")]
    stats = {s: {l: layer_key_statistics(model, l, base.replace(text_source=s)) for l in layers} for s in sources}
    t0 = time.process_time()
    targets, history = memit_targets(model, layers[-1], records, config=base, prefixes=prefixes)
    target_cpu = time.process_time() - t0
    print(json.dumps({"targets_cpu_seconds": target_cpu, "layers": layers, "n_facts": len(records)}), flush=True)
    ec, want, rows = cfg.eval_config(seed), u.stored_metrics(), []
    floors = [base.norm_weight_floor] if a.norm_weight_floors is None else [float(x) for x in a.norm_weight_floors.split(",")]
    for src in sources:
        for w in (float(x) for x in a.weights.split(",")):
            for floor in floors:
                row_cfg = base.replace(text_source=src, mom2_update_weight=w, norm_weight_floor=floor)
                row = _sweep_row(u, mask, layers, records, targets, history, stats[src], row_cfg, prefixes,
                                 suites=a.suites.split(","), eval_config=ec)
                if row_cfg == base and want:  # nothing compared (other suites than the run's) is no match
                    compared = [want[k] == v["value"] for k, v in row.items() if isinstance(v, dict) and k in want]
                    row["matches_run"] = bool(compared) and all(compared)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"run_dir": str(a.run_dir), "unit": a.unit, "seed": seed, "layers": layers, "targets_cpu_seconds": target_cpu,
           "memit": base.to_dict(), "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    _table(rows)
    return 0


def _table(rows: list[dict]) -> None:
    def cell(r, k):
        m = r.get(k)
        return "–" if m is None else f"{m['value']:.3f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}] ({m['n']})"

    print("| covariance text | mom2_update_weight | norm_weight_floor | edit acc. [95% CI] (n) | maintain acc. [95% CI] (n) "
          "| mean update norm | residual left | CPU s |")
    print("|---|---:|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {Path(r['text_source']).name} | {r['mom2_update_weight']:g} | {r['norm_weight_floor']:g} | {cell(r, 'edit_accuracy')} "
              f"| {cell(r, 'maintain_accuracy')} | {r['update_norm']:.3g} | {r['final_residual_norm']:.3g} "
              f"| {r['cpu_seconds']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
