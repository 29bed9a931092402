"""Measurement: how much an AlphaEdit edit changes the MLP output at BOS, with and without ``protect_bos``.

The key covariance ``C`` leaves position 0 out (``factlens.editing.covariance``), so the BOS key,
the same in every prompt and an attention sink, need not lie outside AlphaEdit's null space. This
edits the embedded Gemma 3 270M (its default settings, ``n_forget`` sports facts, seed 0) at the
given MLPs with ``AlphaEditConfig(protect_bos=...)`` both ways and prints, per layer: the share of
the BOS key's norm in the null space, and ``|k_BOS dW| / |k_BOS W_out|`` (the relative change of
the MLP output at BOS) next to the mean and largest change at the other positions of a prompt,
and the KL of the next token on an unrelated prompt::

    OMP_NUM_THREADS=1 python benchmarks/alphaedit_bos.py [--layers 2,3,4] [--n-forget 8] [--json out.json]
    OMP_NUM_THREADS=1 python benchmarks/alphaedit_bos.py --no-edit --layers 2,3,4,5,13   # the shares only (~1 min)

``--no-edit`` prints only, per layer, the share of the BOS key's norm in the null space and the mean
share of the other tokens' keys of the prompts (no edit).

Results: docs/methods/alphaedit.md ("The BOS key"). One edit per setting: no interval (a
deterministic edit of one fact sample; the change is what it is for these facts).
"""

from __future__ import annotations

import argparse
import time

import torch

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)

PROMPTS = ("Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of", "The capital of France is")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="2,3,4")
    ap.add_argument("--n-forget", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--no-edit", action="store_true", help="only the null-space shares of the keys")
    args = ap.parse_args()
    import factlens
    from factlens.components import Component, Mask, mlp_hook
    from factlens.data import sports_facts
    from factlens.editing.alphaedit import AlphaEditConfig
    from factlens.tasks import sports_athlete_editing

    layers = [int(x) for x in args.layers.split(",")]
    model = factlens.load_model()
    task = sports_athlete_editing(sports_facts(), n_forget=args.n_forget, seed=0, n_maintain=8)
    mask = Mask([Component("mlp", l) for l in layers])
    out = {"layers": layers, "n_forget": args.n_forget, "shares": shares(model, layers), "runs": {}}
    for protect in (() if args.no_edit else (False, True)):
        t0 = time.perf_counter()
        res = factlens.edit(model, mask, task, method="alphaedit", config=AlphaEditConfig(protect_bos=protect),
                            show_progress=False)
        run = {"seconds": round(time.perf_counter() - t0, 1), "layers": {}}
        with torch.no_grad():
            for info, l in zip(res.meta["layers"], layers):
                dW = (res.model.blocks[l].mlp.W_out - model.blocks[l].mlp.W_out).double()
                _, cache = model.run_with_cache(model.to_tokens(PROMPTS[0]), names_filter=mlp_hook(l, "post"))
                k = cache[mlp_hook(l, "post")][0].double()
                rel = (k @ dW).norm(dim=-1) / (k @ model.blocks[l].mlp.W_out.double()).norm(dim=-1)
                run["layers"][l] = {"nullspace_dim": info["nullspace_dim"],
                                    "bos_key_in_nullspace": info.get("bos_key_in_nullspace"),
                                    "bos_change": float(rel[0]), "other_positions_mean": float(rel[1:].mean()),
                                    "other_positions_max": float(rel[1:].max())}
            a = model(PROMPTS[1])[0, -1].log_softmax(-1)
            b = res.model(PROMPTS[1])[0, -1].log_softmax(-1)
            run["kl_unrelated_next_token"] = float((a.exp() * (a - b)).sum())
        out["runs"]["protect_bos" if protect else "unprotected"] = run
    emit(out, args.json)


def shares(model, layers: list[int]) -> dict[int, dict[str, float]]:
    """Per layer: the share of the BOS key's norm in AlphaEdit's default null space, and the mean
    share of the other positions' keys of :data:`PROMPTS`."""
    from factlens.components import mlp_hook
    from factlens.editing.alphaedit import AlphaEditConfig, bos_key, null_space_basis
    from factlens.editing.covariance import key_statistics

    out = {}
    with torch.no_grad():
        for l in layers:
            U, info = null_space_basis(key_statistics(model, l), AlphaEditConfig().nullspace_threshold)
            U = U.double()
            k0 = bos_key(model, l).double().cpu()
            others = []
            for p in PROMPTS:
                _, cache = model.run_with_cache(model.to_tokens(p), names_filter=mlp_hook(l, "post"))
                k = cache[mlp_hook(l, "post")][0, 1:].double().cpu()
                others.append((k @ U).norm(dim=-1) / k.norm(dim=-1))
            out[l] = {"nullspace_dim": info["nullspace_dim"], "bos": float((k0 @ U).norm() / k0.norm()),
                      "other_tokens_mean": float(torch.cat(others).mean())}
    return out


if __name__ == "__main__":
    main()
