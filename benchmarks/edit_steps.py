"""Benchmark: resident memory inside each step of one unit's edit (the stage that sets a worker's peak).

Runs the main job's edit for one localization (the runner's ``prepare``, mask and ``_edit``,
with the run folder as the editor's ``offload`` folder, as the runner does) and prints, for
every optimizer step, the resident size at its start, the peak of its forward and backward
passes, the size before the optimizer update, the update's peak and the size at its end
(``factlens.memory.PeakRSS``, sampled every millisecond), with the optimizer state and the
editor's saved originals that are in memory::

    python benchmarks/edit_steps.py [--localization nonlocalized] [--steps 5] [--in-memory]

``--in-memory``: the editor keeps its originals in memory (``edit`` without ``offload``), as
before ``8171069``. The steps' losses are printed as a hash, so two runs can be compared bit
for bit. Results: docs/performance.md (The editor's saved originals...).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import main_job  # noqa: E402 - the benchmark's own helpers, next to this file

GB = 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--localization", default="nonlocalized")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--forget-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the run's)")
    ap.add_argument("--in-memory", action="store_true", help="the editor's originals in memory (no offload)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from factlens.memory import PeakRSS, release_memory, rss
    from factlens.runner import pipeline as P

    ns = argparse.Namespace(model=args.model, localization=args.localization, seed=0, forget_size=args.forget_size,
                            suites="standard")
    cfg = main_job.run_config(ns).replace(out=tempfile.mkdtemp(prefix="factlens-bench-"))
    if args.steps is not None:
        cfg = cfg.replace(edit={**cfg.edit.to_dict(), "steps": args.steps})
    prep = P.prepare(cfg, 0, workspace=P.Workspace())
    plan = P.plan_budget(prep, cfg, 0, need_budget=args.localization not in P.UNBUDGETED)
    mask, *_ = P._mask_and_scores(prep, cfg, 0, args.localization, plan)
    release_memory()
    print(f"{args.localization}: {mask.n_params(prep.model) / 1e6:.1f} M parameters trained; before the edit "
          f"{rss() / GB:.2f} GB", flush=True)

    training = importlib.import_module("factlens.editing.training")
    editor = importlib.import_module("factlens.editing.editor")
    real_update, real_step, real_edit = training.masked_update, training.train_step, editor.edit
    marks: dict[str, float] = {}
    current: dict[str, PeakRSS] = {}

    def update(state):
        marks["pre_update"], marks["fwd_bwd_peak"] = rss(), current["step"].peak
        with PeakRSS() as m:
            real_update(state)
        marks["update_peak"] = m.peak

    def step(state, s):
        with PeakRSS() as mon:
            current["step"] = mon
            row = real_step(state, s)
        opt = sum(t.numel() * t.element_size() for st in state.optimizer.state.values() for t in st.values()
                  if torch.is_tensor(t))
        resident = sum(t.numel() * t.element_size() for n, t in state.originals.items() if n in state.unselected)
        print(f"step {s}: start {mon.start / GB:.2f}, forward/backward peak {marks['fwd_bwd_peak'] / GB:.2f}, before "
              f"the update {marks['pre_update'] / GB:.2f}, update peak {marks['update_peak'] / GB:.2f}, end "
              f"{rss() / GB:.2f} GB (AdamW state {opt / GB:.2f} GB; partial tensors' originals {resident / GB:.2f} GB)",
              flush=True)
        return row

    def edit(*a, offload=None, **kw):
        return real_edit(*a, offload=None if args.in_memory else offload, **kw)

    training.masked_update, editor.train_step, editor.edit = update, step, edit
    from factlens import progress

    with PeakRSS() as whole, progress(False):  # no bar between the printed lines
        res = P._edit(prep, mask, cfg, 0)
    losses = json.dumps([[h["loss"], h["loss_forget"], h["loss_sft"]] for h in res.history])
    model_gb = sum(p.numel() * p.element_size() for p in prep.model.parameters()) / GB
    print(f"edit: peak {whole.peak / GB:.2f} GB ({whole.peak / GB / model_gb:.2f}x the {model_gb:.3f} GB model), "
          f"{res.meta['seconds_per_step']:.1f} s per step; losses sha256 {hashlib.sha256(losses.encode()).hexdigest()[:16]}")
    res.revert()


if __name__ == "__main__":
    main()
