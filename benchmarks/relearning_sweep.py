"""How strong should the relearning attack be? A learning-rate x steps sweep on one edited unit.

Re-creates one unit of a finished run folder (same task, mask, edit settings and seed: the
runner's own ``prepare`` and ``_edit``), then attacks the edited model with the relearning
suite once per ``(lr, steps)`` and prints, per setting: the held-out forget accuracy after
relearning (what the attack brings back; Wilson 95 % interval over the held-out facts), the
same facts before the attack, the maintain accuracy after the attack and whether it collapsed
(``extra["maintain_collapse"]``), and the attack's CPU seconds. The other relearning settings
(rank, batch size, both halves, text) are the run's.

Why a sweep: a relearning attack that is too weak calls a suppressed fact "removed"; one that
is too strong teaches the answers back to any model (or collapses it onto one answer). The
strongest setting whose maintain accuracy does not collapse is the one worth reporting.

Run (after ``factlens run sports-athlete-editing ... --out RUN``):
``python benchmarks/relearning_sweep.py RUN --unit flu --lrs 1e-4,3e-4,1e-3 --steps 20 --out sweep.json``
The first setting equal to the run's own reproduces its stored relearning numbers
(printed as ``matches_run``), which checks that the unit was re-created exactly.
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
    ap.add_argument("--unit", default="flu", help="unit of the run to re-create (flu, random, flu+memit...)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the run (default: its first)")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--steps", default="20", help="comma-separated step counts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    return ap.parse_args(argv)


def _recreate(run_dir: Path, unit: str, seed: int | None):
    """The run's config, the prepared seed and the unit's edit, applied in place (as the runner does)."""
    from _runs import open_unit  # benchmarks/_runs.py (the script's folder is on sys.path)
    from factlens.runner.pipeline import _edit

    u = open_unit(run_dir, unit, seed)
    res = _edit(u.prep, u.mask, u.config, u.seed, method=u.method, objective=u.objective)
    u.prep.pristine.show(res)
    return u.config, u.seed, u.record, u.prep, res


def _row(ev, lr: float, steps: int, cpu: float) -> dict:
    s = ev["relearning"]
    m = {x.name: x for x in s.metrics}
    held, before = m["relearn_forget_accuracy"], m["relearn_forget_accuracy_before"]
    keep = m.get("relearn_maintain_accuracy")
    col = s.extra.get("maintain_collapse", {})
    return {"lr": lr, "steps": steps, "held_out_after": held.value, "ci": [held.ci_low, held.ci_high], "n": held.n,
            "held_out_before": before.value, "original": held.baseline,
            "maintain_after": None if keep is None else keep.value, "maintain_before": col.get("maintain_before"),
            "collapsed": col.get("collapsed"), "cpu_seconds": cpu}


def main(argv=None) -> int:
    a = _args(argv)
    torch.set_num_threads(a.threads)
    import factlens

    with factlens.progress(False):  # a bare progress(False) call set nothing: it is a context manager
        return _sweep(a)


def _same_edit(rec: dict, res) -> bool:
    """The re-created edit took the stored unit's steps: its loss history, bit for bit (an edit at
    another learning rate can still give the same relearned accuracy over 8 facts)."""
    stored = [h.get("loss") for h in (rec.get("edit") or {}).get("history") or []]
    return bool(stored) and stored == [h.get("loss") for h in res.history]


def _sweep(a) -> int:
    from factlens.evaluation import evaluate

    cfg, seed, rec, prep, res = _recreate(a.run_dir, a.unit, a.seed)
    stored = rec["eval"].get("suites", {}).get("relearning") if isinstance(rec.get("eval"), dict) else None
    base = cfg.eval_config(seed)
    rows = []
    try:
        for lr in (float(x) for x in a.lrs.split(",")):
            for steps in (int(x) for x in a.steps.split(",")):
                ec = base.replace(relearning=base.relearning.replace(lr=lr, steps=steps))
                c0 = time.process_time()
                ev = evaluate(prep.model, prep.task, original=prep.original, suites=["relearning"], config=ec)
                row = _row(ev, lr, steps, time.process_time() - c0)
                if stored is not None and ec.relearning == base.relearning:
                    # the run's own unit: the same edit, and every stored relearning value (one accuracy over 8
                    # facts matched an edit at 0.75x the learning rate too)
                    want = {x["name"]: x["value"] for x in stored.get("metrics", [])}
                    got = {m.name: m.value for m in ev["relearning"].metrics}
                    row["matches_run"] = (_same_edit(rec, res) and bool(want)
                                          and all(got.get(k) == v or (v != v and got.get(k) != got.get(k))
                                                  for k, v in want.items()))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        res.revert()
    out = {"run_dir": str(a.run_dir), "unit": a.unit, "seed": seed, "relearning": base.relearning.to_dict(), "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    print("| lr | steps | held-out forget acc. after [95% CI] (n) | before | maintain after | collapsed | CPU s |")
    print("|---:|---:|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['steps']} | {r['held_out_after']:.3f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] ({r['n']}) "
              f"| {r['held_out_before']:.3f} | {r['maintain_after'] if r['maintain_after'] is None else round(r['maintain_after'], 3)} "
              f"| {r['collapsed']} | {r['cpu_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
