"""Benchmark: cost of a localized (FLU) edit vs. full fine-tuning on Gemma 3 270M.

Edits 16 athletes (Sports-Athlete-Editing on the built-in ``sports_facts()``) with

* the FLU mask (``factlens.localization_mask(model, ds, "flu")``; if the FLU localization is
  not available, the MLPs of layers 1-6, labelled as a stand-in),
* ``Mask.everything`` (every attention head and MLP: "non-localized" fine-tuning),
* optionally every parameter (embeddings, norms and unembedding too; a plain AdamW loop
  with the same losses, since those parameters are not components),

all in the same process, and prints a markdown table: seconds per optimizer step, peak
process-RSS increase during the edit (sampled every millisecond, benchmarks/_memory.py) and the size of the
optimizer state + gradients (AdamW: two states and one gradient per *touched* tensor).

Run: ``python benchmarks/edit.py [--steps 3] [--batch-size 4] [--grad-accum 1] [--no-all-params]``
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

import factlens
from factlens.components import Mask
from factlens.data import sports_facts
from factlens.data.formats import format_prompts
from factlens.data.text import load_texts, token_chunks
from factlens.editing import EditConfig, edit
from factlens.editing.editor import lr_factor
from factlens.editing.losses import fact_losses, reference_logprobs, sft_loss, sft_positions
from factlens.tasks import sports_athlete_editing

from _memory import PeakRSS, release_memory  # benchmarks/_memory.py (the script's folder is on sys.path)

GiB = 2**30


def flu_mask(model, ds) -> Mask:
    if importlib.util.find_spec("factlens.localization.flu") is not None:
        from factlens.data import filter_known

        known = filter_known(model, ds)
        mask, _ = factlens.localization_mask(model, known, "flu")
        return Mask(mask.components, name="flu")
    return Mask.from_labels([f"L{l}.mlp" for l in range(1, 7)], name="mlps_1-6 (FLU stand-in)")


def state_bytes(tensors) -> int:
    """AdamW exp_avg + exp_avg_sq + grad for each trained tensor."""
    return sum(3 * t.numel() * t.element_size() for t in tensors)


def plain_finetune_all(model, task, cfg: EditConfig) -> tuple[float, int]:
    """Plain AdamW over every parameter with the editor's losses; returns (s/step, state bytes)."""
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    orig = [p.detach().clone() for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    forget, retain = format_prompts(task.forget), format_prompts(task.retain)
    toks = token_chunks(model, load_texts(None), seq_len=cfg.sft_seq_len, n_chunks=cfg.n_sft_chunks)
    pos = sft_positions(toks.shape[1], cfg.sft_positions, kl=True)
    named = {n: o for (n, _), o in zip(model.named_parameters(), orig)}
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size
    # the original's KL reference of every chunk, once before the clock starts, as the editor caches it
    # (GeneralText.prepare): computed per micro-batch inside the timed loop, this row paid one more
    # forward pass per step than the editor rows it is compared with (until 2026-12-03)
    ref_all = reference_logprobs(model, toks, pos, named)
    try:
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            for grp in opt.param_groups:
                grp["lr"] = cfg.lr * lr_factor(cfg, step)
            for _ in range(cfg.grad_accum):
                fi = torch.randperm(len(forget), generator=g)[:bs].tolist()
                ri = torch.randperm(len(retain), generator=g)[:bs].tolist()
                si = torch.randperm(len(toks), generator=g)[:cfg.sft_batch_size or bs]
                lf, lr = fact_losses(model, [forget[i] for i in fi], [retain[i] for i in ri], task.objective)
                ls = sft_loss(model, toks[si], pos, reference=ref_all[si])
                ((lf + lr + ls) / cfg.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            opt.step()
            opt.zero_grad(set_to_none=True)
        sec = (time.perf_counter() - t0) / max(1, cfg.steps)
    finally:
        with torch.no_grad():
            for p, o, f in zip(params, orig, flags):
                p.copy_(o)
                p.requires_grad_(f)
                p.grad = None
    return sec, state_bytes(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--no-all-params", action="store_true", help="skip the every-parameter fine-tuning row")
    ap.add_argument("--flu-layers", default=None,
                    help="comma-separated MLP layers of a known FLU mask (skips filter_known + localization)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = factlens.load_model("gemma-3-270m")
    ds = sports_facts()
    task = sports_athlete_editing(ds, n_forget=16, seed=0)
    print(f"model loaded in {time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}; {task}")
    cfg = EditConfig(lr=1e-5, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum)
    t0 = time.perf_counter()
    if args.flu_layers:
        flu = Mask.from_labels([f"L{int(l)}.mlp" for l in args.flu_layers.split(",")], name="flu (given)")
    else:
        flu = flu_mask(model, ds)
    masks = [flu, Mask.everything(model)]
    print(f"masks in {time.perf_counter() - t0:.1f}s: {masks[0]!r}")

    rows = []
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    edit(model, masks[0], task, config=cfg.replace(steps=1), inplace=True, show_progress=False).revert()  # warm-up
    for mask in masks:
        release_memory()
        with PeakRSS() as mem:
            res = edit(model, mask, task, config=cfg, inplace=True, show_progress=False)
        res.revert()
        touched = [params[n] for n in res.deltas]
        rows.append({"mask": mask.name or repr(mask), "n_components": len(mask), "n_params": res.n_params_trained,
                     "s_per_step": res.meta["seconds_per_step"], "rss": mem.delta, "state": state_bytes(touched)})
        print(rows[-1], flush=True)
    assert all(torch.equal(before[n], p.detach()) for n, p in params.items()), "revert failed"
    del before
    if not args.no_all_params:
        release_memory()
        with PeakRSS() as mem:
            sec, st = plain_finetune_all(model, task, cfg)
        rows.append({"mask": "all parameters (plain AdamW)", "n_components": len(masks[1]),
                     "n_params": sum(p.numel() for p in model.parameters()), "s_per_step": sec, "rss": mem.delta,
                     "state": st})
        print(rows[-1], flush=True)

    base = rows[0]
    print(f"\nGemma 3 270M, CPU ({torch.get_num_threads()} threads), Sports-Athlete-Editing 16 facts; "
          f"{cfg.steps} optimizer steps of batch {cfg.batch_size} forget + {cfg.batch_size} retain + "
          f"{cfg.sft_batch_size or cfg.batch_size} KL chunks x {cfg.grad_accum} accumulation\n")
    print("| mask | components | trained params | s / step | x FLU | peak RSS increase (GiB) | x FLU | "
          "optimizer state + grads (GiB) | x FLU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mask']} | {r['n_components']} | {r['n_params'] / 1e6:.1f}M | {r['s_per_step']:.2f} | "
              f"{r['s_per_step'] / base['s_per_step']:.2f} | {r['rss'] / GiB:.2f} | {r['rss'] / max(base['rss'], 1):.2f} | "
              f"{r['state'] / GiB:.3f} | {r['state'] / base['state']:.2f} |")


if __name__ == "__main__":
    main()
