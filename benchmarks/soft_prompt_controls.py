"""Benchmark: what scoring the control facts adds to the soft-prompt attack.

``soft_prompt_selective_recovery`` needs the maintain facts scored with every trained soft
prompt (on the edited model, and once on the unedited one). This script trains one soft
prompt on ``--n-train`` facts for ``--steps`` steps, then scores ``--n-maintain`` other facts
with it, and prints both CPU times and their ratio, measured in the same process on the same
model for each position (appended, prepended).

Run: ``python benchmarks/soft_prompt_controls.py [--model gemma-3-270m] [--steps 25] [--n-train 16] [--n-maintain 64]``
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

import factlens
from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.evaluation import EvalConfig
from factlens.evaluation.soft_prompts import SOFT_PROMPT_POSITIONS, SoftPromptsConfig, soft_prompt_scores, train_soft_prompt


def measure(model, facts, *, steps: int, n_train: int, n_maintain: int) -> list[dict]:
    """One row per position: CPU seconds of training and of scoring the controls, and their ratio."""
    if len(facts) < n_train + n_maintain:
        raise ValueError(f"need {n_train + n_maintain} facts for --n-train {n_train} and --n-maintain {n_maintain}, "
                         f"got {len(facts)}")
    train = facts.subset(range(n_train))
    items = format_prompts(facts.subset(range(n_train, n_train + n_maintain)), "default")
    rows = []
    for position in SOFT_PROMPT_POSITIONS:
        cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=steps, position=position))
        t0 = time.process_time()
        soft, _ = train_soft_prompt(model, train, config=cfg)
        t1 = time.process_time()
        soft_prompt_scores(model, soft, items, batch_size=cfg.batch_size, position=position)
        t2 = time.process_time()
        rows.append({"position": position, "train_s": t1 - t0, "score_s": t2 - t1, "ratio": (t2 - t1) / (t1 - t0)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--n-maintain", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model == "planted":
        from factlens.testing import planted_fact_model

        p = planted_fact_model()
        model, facts = p.model, p.dataset
    else:
        model, facts = factlens.load_model(args.model), sports_facts()
    rows = measure(model, facts, steps=args.steps, n_train=args.n_train, n_maintain=args.n_maintain)
    print(f"{args.model}: train {args.steps} steps on {args.n_train} facts, then score {args.n_maintain} control "
          f"facts; {args.threads} thread(s), CPU seconds\n")
    print("| position | train | score controls | ratio |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['position']} | {r['train_s']:.1f} | {r['score_s']:.2f} | {r['ratio']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
