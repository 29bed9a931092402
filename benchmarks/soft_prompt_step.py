"""Benchmark: one soft-prompt training step with and without each prompt's cached keys and values.

The soft-prompt attack appends ``length`` trained vectors to each prompt; nothing before them
depends on them. With ``factlens.prefix.row_prefix_reuse`` on (the default), each prompt's keys
and values are computed once per training run (kept in a store, as ``train_soft_prompt`` does)
and a step runs only the soft vectors; off, only the prefix every prompt shares is reused. Both
variants run alternately in this process on the same model and prompts, and the table gives
the CPU seconds of the forward pass and of forward + backward per step, the ratio, and the
largest difference of the log-probabilities and of the gradient between them.

Run: ``python benchmarks/soft_prompt_step.py [--model gemma-3-270m] [--n-facts 16] [--length 15] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import torch

import factlens
from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.evaluation.soft_prompts import _rows, _soft_logprobs
from factlens.layout import linear_layout
from factlens.prefix import row_prefix_reuse
from factlens.tokens import answer_token_ids


def _time_step(model, soft, prompts, answers, *, use: bool, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """CPU seconds per forward and per forward + backward, and the last log-probs and gradient."""
    with row_prefix_reuse(use):
        store: dict = {}
        _soft_logprobs(model, soft, prompts, answers, store=store)  # fills the store, as step 1 of a run does
        t0 = time.process_time()
        with torch.no_grad():
            for _ in range(repeats):
                _soft_logprobs(model, soft, prompts, answers, store=store)
        t1 = time.process_time()
        for _ in range(repeats):
            lp = _soft_logprobs(model, soft, prompts, answers, store=store)
            (grad,) = torch.autograd.grad(lp.sum(), [soft])
        t2 = time.process_time()
    return (t1 - t0) / repeats, (t2 - t1) / repeats, lp.detach(), grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--n-facts", type=int, default=16)
    ap.add_argument("--length", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = factlens.load_model(args.model)
    linear_layout(model)
    items = format_prompts(sports_facts()[: args.n_facts], "default")
    prompts, answers = [it.prompt for it in items], [it.answer for it in items]
    toks, starts, _ = _rows(model, prompts, [answer_token_ids(model, a) for a in answers], args.length)
    soft = (torch.randn(args.length, model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 0.1)
    soft.requires_grad_(True)
    rows = {False: [], True: []}
    for use in (False, True, False, True):  # alternate, so that both see the same machine
        rows[use].append(_time_step(model, soft, prompts, answers, use=use, repeats=args.repeats))
    print(f"{args.model}: {len(prompts)} prompts of {min(starts)}-{max(starts)} tokens + {args.length} soft vectors "
          f"(rows of {toks.shape[1]} tokens); {args.threads} thread(s), {args.repeats} steps per measurement\n")
    print("| variant | forward CPU s | forward + backward CPU s |\n|---|---:|---:|")
    best = {}
    for use, name in ((False, "shared prefix only"), (True, "each prompt cached")):
        f = min(r[0] for r in rows[use])
        fb = min(r[1] for r in rows[use])
        best[use] = (f, fb)
        print(f"| {name} | {f:.2f} | {fb:.2f} |")
    print(f"| ratio | {best[True][0] / best[False][0]:.2f} | {best[True][1] / best[False][1]:.2f} |")
    lp_diff = float((rows[True][-1][2] - rows[False][-1][2]).abs().max())
    g_diff = float((rows[True][-1][3] - rows[False][-1][3]).abs().max() / rows[False][-1][3].abs().max())
    print(f"\nmax |log-prob difference| {lp_diff:.2e}; max gradient difference / max |gradient| {g_diff:.2e}")


if __name__ == "__main__":
    main()
