"""Measurement: what removing a *random* direction from the residual stream costs an unedited model.

The direction-ablation attack (:mod:`factlens.evaluation.direction_ablation`) removes a fitted
direction; its control removes the same direction from the unedited model. This asks the prior
question: does removing *any* one direction break the model? It scores the task of a run folder
(its forget and maintain facts, seed 0) on the unedited model with seeded Gaussian directions
removed from every residual-stream read (``everywhere``), from ``resid_post`` of single layers,
and with the component set to its mean over the first 64 retain prompts (positions from 1 on)
instead of 0 (affine ablation); and, per layer, the residual dimensions of largest mean
|activation| against the median one::

    OMP_NUM_THREADS=1 python benchmarks/ablation_sensitivity.py results/ablation-v2 [--directions 3] \
        [--layers 2 9] [--json out.json]

Results: docs/attacks.md (Sports-Athlete-Editing, every attack). The planted model's residual
stream has no such dimensions, and removing a random direction costs it nothing (tests).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)


def _affine_hooks(model, d: torch.Tensor, names: list[str], reference) -> list[tuple[str, Any]]:
    """Hooks setting the component along ``d`` to its mean over ``reference`` prompts (their real
    tokens from position 1 on; each prompt runs alone, so no padding enters the mean)."""
    sums = dict.fromkeys(names, 0.0)
    count = 0
    with torch.no_grad():
        for r in reference:
            _, cache = model.run_with_cache(model.to_tokens(r.prompt), names_filter=lambda n: n in names)
            for n in names:
                sums[n] += float((cache[n][0, 1:].float() @ d.to(cache[n].device)).sum())
            count += int(cache[names[0]].shape[1]) - 1
    means = {n: sums[n] / count for n in names}

    def hook_for(name: str):
        def hook(act, hook):
            u = d.to(device=act.device, dtype=act.dtype)
            return act - ((act @ u) - means[name]).unsqueeze(-1) * u
        return hook

    return [(n, hook_for(n)) for n in names]


def measure(model, task, *, n_directions: int, layers: Sequence[int], seed: int = 0) -> list[dict[str, Any]]:
    """One row per (direction, place): forget and maintain accuracy of ``model`` with it removed."""
    from factlens.components import project_out_everywhere_hooks, project_out_hook
    from factlens.evaluation.attacks import score_task
    from factlens.evaluation.config import EvalConfig

    cfg = EvalConfig()
    rows = [{"direction": None, "place": "none", **_acc(score_task(model, task, cfg))}]
    names = [n for n, _ in project_out_everywhere_hooks(torch.ones(model.cfg.d_model), model.cfg)]
    for i in range(n_directions):
        d = torch.from_numpy(np.random.default_rng([seed, i]).standard_normal(model.cfg.d_model)).float()
        d = d / d.norm()
        places = {"everywhere": project_out_everywhere_hooks(d, model.cfg),
                  "everywhere, affine": _affine_hooks(model, d, names, list(task.retain)[:64]),
                  **{f"layer {L} only": [project_out_hook(L, d)] for L in layers if L < model.cfg.n_layers}}
        for place, hooks in places.items():
            t0 = time.perf_counter()
            with model.hooks(fwd_hooks=hooks):
                s = score_task(model, task, cfg)
            rows.append({"direction": i, "place": place, **_acc(s), "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def largest_dimensions(model, task, layers: Sequence[int], k: int = 5) -> list[dict[str, Any]]:
    """Per layer, the ``k`` residual dimensions of largest mean |activation| (``resid_post``, the
    subject's last token of the forget prompts) and the median over all dimensions."""
    from factlens.evaluation.probes import collect_activations

    layers = [L for L in layers if L < model.cfg.n_layers]
    acts = np.abs(collect_activations(model, task.forget, layers=layers, position="subject_last")).mean(0)
    out = []
    for j, L in enumerate(layers):
        top = np.argsort(-acts[j])[:k]
        out.append({"layer": L, "dims": top.tolist(), "mean_abs": [round(float(x), 2) for x in acts[j][top]],
                    "median_mean_abs": round(float(np.median(acts[j])), 3)})
    return out


def _acc(s) -> dict[str, float]:
    return {"forget_accuracy": s.accuracy("forget"), "maintain_accuracy": s.accuracy("maintain"),
            "n_forget": len(s.forget), "n_maintain": len(s.maintain)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder (its task and model), or 'planted'")
    ap.add_argument("--directions", type=int, default=3)
    ap.add_argument("--layers", type=int, nargs="*", default=[2, 9])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import factlens

    with factlens.progress(False):
        if args.run == "planted":
            from factlens.testing import planted_fact_model

            p = planted_fact_model()
            model, task = p.model, p.task
        else:
            from factlens.runner.pipeline import prepare

            rc = json.loads((Path(args.run) / "run_config.json").read_text())
            prepared = prepare(rc["config"], 0)
            model, task = prepared.model, prepared.task  # unedited: nothing has run on it yet
        rows = measure(model, task, n_directions=args.directions, layers=args.layers)
        dims = largest_dimensions(model, task, args.layers)
    emit({"run": args.run, "rows": rows, "largest_dimensions": dims}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
