"""How much of MEMIT's target gap is left through post-MLP RMS norms (Gemma 2/3's ``ln2_post``).

MEMIT writes a residual-stream change ``R`` into ``W_out``'s output; with a norm after the MLP,
:func:`factlens.editing.memit.residual_to_mlp_output` maps ``R`` through the norm linearized at
each fact's current MLP output. This prints the gap left at the targets (``final_residual_norm``)
after MEMIT on 1, 2 and 3 layers of a random 4-layer Gemma-3-shaped model, with the map
(``library``) or without it (``--unmapped``: ``R`` written as is, MEMIT's reference), once with the
model's own norm weights and once with lognormal ones (non-uniform, as real Gemma's are).
3 athletes, ``lambda`` = 0, bare prompts only (no prefixes), 8 target steps.

Run: ``OMP_NUM_THREADS=1 python benchmarks/memit_post_norm.py [--unmapped]`` (about a minute).
"""

from __future__ import annotations

import argparse

import torch


def gaps(*, unmapped: bool = False, layers=(1, 2, 3)) -> list[dict]:
    """One row per (norm weights, number of layers): the gap before and after the update."""
    import factlens.editing.memit as memit_module
    from factlens.components import Mask
    from factlens.data import sports_facts
    from factlens.tasks import sports_athlete_editing
    from factlens.testing.shaped import gemma3_shaped

    task = sports_athlete_editing(sports_facts()[:40], n_forget=3, seed=0, n_retain=8, n_maintain=8)
    cfg = memit_module.MemitConfig(v_num_grad_steps=8, prefix_lengths=(), n_cov_tokens=1500, mom2_update_weight=0.0)
    keep = memit_module.residual_to_mlp_output
    if unmapped:
        memit_module.residual_to_mlp_output = lambda model, layer, records, residuals, **kw: residuals
    rows = []
    try:
        for weights in ("own", "lognormal"):
            for n in layers:
                m = gemma3_shaped(n_layers=4)
                if weights == "lognormal":
                    g = torch.Generator().manual_seed(0)
                    with torch.no_grad():
                        for b in m.blocks:
                            b.ln2_post.w.copy_(torch.exp(torch.randn(b.ln2_post.w.shape, generator=g)))
                res = memit_module.memit(m, Mask.from_labels([f"L{l}.mlp" for l in range(n)]), task, config=cfg)
                rows.append({"weights": weights, "layers": n, "gap_before": res.meta["layers"][0]["residual_norm"],
                             "gap_after": res.meta["final_residual_norm"]})
    finally:
        memit_module.residual_to_mlp_output = keep
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unmapped", action="store_true", help="write R as is (MEMIT's reference, no norm mapping)")
    args = ap.parse_args(argv)
    from factlens.progress_bars import progress

    with progress(False):
        rows = gaps(unmapped=args.unmapped)
    print("| norm weights | MEMIT layers | gap before | gap left |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['weights']} | {r['layers']} | {r['gap_before']:.3f} | {r['gap_after']:.3f} |")


if __name__ == "__main__":
    main()
