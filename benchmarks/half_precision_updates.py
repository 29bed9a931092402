"""Benchmark: how much of ROME's, MEMIT's and AlphaEdit's update a bfloat16 model keeps.

Each editor edits the same random-weight Gemma-3-shaped tiny model (4 layers) twice: in
bfloat16 and in float32 (the float32 weights are the bfloat16 ones, so only the edit's
arithmetic differs). Prints the share of the update's norm lost to rounding in the bfloat16
weights (``update_lost`` in the edit's meta, :func:`factlens.editing.memory_editing.add_update`),
how many entries of ``W_out`` changed, and the bfloat16 delta's relative distance from the
float32 edit's (which also holds the value optimisation's own half-precision error).

Run: ``OMP_NUM_THREADS=1 python benchmarks/half_precision_updates.py`` (about a minute on CPU).
"""

from __future__ import annotations

import copy
import warnings

import torch

from factlens.components import Mask
from factlens.data.records import FactDataset, FactRecord
from factlens.editing.alphaedit import AlphaEditConfig, alphaedit
from factlens.editing.memit import MemitConfig, memit
from factlens.editing.rome import RomeConfig, rome
from factlens.progress_bars import progress
from factlens.tasks import Task
from factlens.testing.shaped import gemma3_shaped


def main() -> None:
    torch.manual_seed(0)
    recs = (FactRecord("Question", "{} plays the sport of", "golf", target_new="sport", id="a"),
            FactRecord("Answer player", "Fact : {} is a", "golf", target_new="team sports", id="b"))
    ds = FactDataset(recs, name="half-precision", candidates=("golf", "sport", "team sports"))
    task = Task("half-precision", "inject", ds, ds.subset([]), ds.subset([]))
    f32 = gemma3_shaped(n_layers=4)
    with torch.no_grad():
        for p in f32.parameters():
            p.copy_(p.bfloat16().float())
    bf16 = copy.deepcopy(f32).to(torch.bfloat16)
    common = dict(n_cov_tokens=2000, v_num_grad_steps=10, cache_covariance=False, prefix_lengths=((3, 2),))
    runs = [(rome, RomeConfig, ["L1.mlp"]), (memit, MemitConfig, ["L0.mlp", "L1.mlp"]),
            (alphaedit, AlphaEditConfig, ["L1.mlp", "L2.mlp"])]
    print("| method | weight | share of the update lost (bf16) | entries changed (bf16) | bf16 delta vs float32 delta |")
    print("|---|---|---:|---:|---:|")
    for fn, cls, labels in runs:
        cfg = cls(**common)
        with warnings.catch_warnings(), progress(False):
            warnings.simplefilter("ignore")
            rb = fn(bf16, Mask.from_labels(labels), task, config=cfg)
            rf = fn(f32, Mask.from_labels(labels), task, config=cfg)
        if "facts" in rb.meta:  # ROME: one layer, a share per fact
            shares = {name: "/".join(f"{f['update_lost']:.3f}" for f in rb.meta["facts"]) for name in rb.deltas}
        else:  # MEMIT, AlphaEdit: a share per layer
            shares = {f"blocks.{d['layer']}.mlp.W_out": f"{d['update_lost']:.3f}" for d in rb.meta["layers"]}
        for name, share in shares.items():
            db = rb.deltas[name].new.double() - rb.deltas[name].old.double()
            df = rf.deltas[name].new.double() - rf.deltas[name].old.double()
            print(f"| {fn.__name__} | {name} | {share} | {int((db != 0).sum())} / {db.numel()} | "
                  f"{float((db - df).norm() / df.norm()):.3f} |")


if __name__ == "__main__":
    main()
