"""Measurement: which MLP would ROME itself choose to edit? Causal tracing by two criteria.

``causal_tracing_top_mlp`` (the layer factlens gives ``method="rome"``) ranks MLPs by the answer
probability when an MLP's clean output is restored at **every** position of a subject-noised run.
ROME (Meng et al. 2022) chose its layer from the trace at the subject's **last token**: the clean
MLP output restored there alone (with a window of MLPs around each layer; 10 of GPT-2 XL's 48).
This runs :func:`factlens.localization.causal_tracing` once per window on the main job's forget
facts (Sports-Athlete-Editing, seed 0) and prints, per MLP layer, both criteria and the layer
each picks::

    OMP_NUM_THREADS=2 python benchmarks/rome_layer.py [--n-forget 16] [--windows 1,5] [--json out.json]

``--model planted`` runs on the planted-fact model (seconds; its lookup MLP is layer 1).
Results: docs/methods/rome.md ("Which layer"). Each value is a mean over the facts and 10 noise
samples of one seed; the report gives the choice, not an interval.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)


def layer_choice(model, facts, *, windows=(1, 5), n_samples: int = 10) -> dict[str, Any]:
    """Per window: every MLP's restored answer probability at all positions and at the last
    subject token (window centred on it), and the layer each criterion picks."""
    from factlens.localization.causal_tracing import causal_tracing

    out: dict[str, Any] = {"n_facts": len(facts), "n_samples": n_samples}
    for window in windows:
        t0 = time.perf_counter()
        s = causal_tracing(model, facts, components="mlps", include_resid=True, window=int(window),
                           n_samples=n_samples)
        at_last = s.mlp_window.by_role[:, s.mlp_window.roles.index("last_subject")]
        out[f"window_{window}"] = {
            "all_positions": np.round(s.values, 4).tolist(), "last_subject": np.round(at_last, 4).tolist(),
            "clean": round(float(s.clean_mean), 4), "noised": round(float(s.corrupted_mean), 4),
            "top_all_positions": int(np.argmax(s.values)), "top_last_subject": int(np.nanargmax(at_last)),
            "seconds": round(time.perf_counter() - t0, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--n-forget", type=int, default=16)
    ap.add_argument("--windows", default="1,5")
    ap.add_argument("--n-samples", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    import factlens
    from factlens.runner.config import RunConfig
    from factlens.runner.pipeline import prepare

    bars_off = factlens.progress(False)  # bars off while main runs; kept referenced: a bare call's manager was
    bars_off.__enter__()  # collected at once, and closing its generator put the bars back on
    cfg = RunConfig.from_dict({"task": "sports-athlete-editing", "model": args.model, "forget_size": args.n_forget,
                               "localizations": ["causal_tracing_top_mlp"], "methods": ["rome"]})
    prep = prepare(cfg, 0)
    windows = tuple(int(w) for w in args.windows.split(","))
    emit({"model": args.model, **layer_choice(prep.model, prep.task.forget, windows=windows,
                                              n_samples=args.n_samples)}, args.json)


if __name__ == "__main__":
    main()
