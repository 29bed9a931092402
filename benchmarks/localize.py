"""Benchmark: exact activation patching, factlens vs ``transformer_lens.patching``.

On Gemma 3 270M with ``--n-pairs`` sports clean/corrupted pairs (one-shot prompt, subjects of
two tokens so all prompts have the same length), patch every attention head (``hook_z``,
all positions) and every MLP (``hook_mlp_out``, all positions):

* **factlens**: :func:`factlens.localization.activation.activation_patching` (``include_resid=False``).
* **TransformerLens**: ``run_with_cache`` on the clean prompts, then
  ``get_act_patch_attn_head_out_all_pos`` and the same ``generic_activation_patch`` loop for
  whole-layer ``mlp_out`` (TransformerLens's ``get_act_patch_mlp_out`` is per position; the
  all-position variant is its generic loop with a whole-tensor setter). The metric is the
  mean logit difference at each prompt's last token, computed from the full logits.

Both are timed in the same invocation, each in a fresh subprocess (so peak memory is not
polluted by the other method). Before the measured call each method runs once on two to four
pairs (allocator, kernels: no method pays a cold start; until 2026-12-06 TransformerLens got a
plain forward pass only, so its measured increase included a warm-up factlens had done). Peak
memory is the peak resident set size during the call minus the resident size before it (model
loaded, warmed up), in MiB, sampled every millisecond from ``/proc/self/statm``
(``tracemalloc`` does not see PyTorch's allocations). "Forward equivalents" divide a
method's time by the time of one plain forward pass over the clean prompts (final-position
logits), measured in the same subprocess. If ``factlens.localization.attribution`` exists, its
``attribution_patching`` is timed too and compared with the exact scores.

Usage::

    python benchmarks/localize.py --n-pairs 32 --out results.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from typing import Any

from _memory import PeakRSS  # benchmarks/_memory.py (the script's folder is on sys.path, also in spawned workers)

MODEL = "gemma-3-270m"


def _records(model, n_pairs: int):
    """``n_pairs`` sports facts with two-token subjects, round-robin over the sports."""
    from factlens.data import sports_facts
    from factlens.tokens import encode_records

    recs = list(sports_facts())
    b = encode_records(model, recs)
    n_tok = (b.subject_last - b.subject_first + 1).tolist()
    by_sport: dict[str, list] = {}
    for r, k in zip(recs, n_tok):
        if k == 2:
            by_sport.setdefault(r.answer, []).append(r)
    available = sum(len(v) for v in by_sport.values())
    if n_pairs > available:  # the loop below never ended (in a worker the parent waits on)
        raise SystemExit(f"only {available} facts have two-token subjects; use --n-pairs <= {available}")
    out, i = [], 0
    while len(out) < n_pairs:
        for sport in sorted(by_sport):
            if i < len(by_sport[sport]) and len(out) < n_pairs:
                out.append(by_sport[sport][i])
        i += 1
    return out


def _forward_time(model, pairs, repeats: int = 3) -> float:
    """Median time of one plain forward pass over the clean prompts: without prefix reuse
    (``final_logits`` runs a shared few-shot prefix once since 2026-11-30, which the hooked
    patching passes timed against it never do; the unit read 0.46 of a plain pass on Gemma)."""
    import torch

    from factlens.prefix import prefix_reuse
    from factlens.tokens import final_logits

    ts = []
    with torch.inference_mode(), prefix_reuse(False):
        for _ in range(repeats):
            t = time.perf_counter()
            final_logits(model, pairs.clean)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _tl_metric(pairs):
    """Mean logit difference at each prompt's last token, from full ``[batch, pos, d_vocab]`` logits."""
    import torch

    b = torch.arange(len(pairs))
    last, ca, cw = pairs.clean.last_pos, pairs.clean_answer, pairs.corrupted_answer

    def metric(logits):
        lg = logits[b, last]
        return (lg[b, ca] - lg[b, cw]).mean()

    return metric


def _all_pos_setter(corrupted_activation, index, clean_activation):
    corrupted_activation[...] = clean_activation
    return corrupted_activation


def _tl_warm_up(model, pairs) -> None:
    """TransformerLens's patching loop once on ``pairs`` (heads, then whole-layer MLP outputs of layer 0)."""
    import pandas as pd
    import torch
    from transformer_lens import patching as tlp

    metric = _tl_metric(pairs)
    with torch.inference_mode():
        _, cache = model.run_with_cache(pairs.clean.tokens, return_type=None)
        tlp.get_act_patch_attn_head_out_all_pos(model, pairs.corrupted.tokens, cache, metric)
        tlp.generic_activation_patch(model, pairs.corrupted.tokens, cache, metric, _all_pos_setter, "mlp_out",
                                     index_df=pd.DataFrame({"layer": [0]}))


def _worker(method: str, n_pairs: int, threads: int | None, tl_layers: list[int] | None, tl_chunk: int | None,
            q) -> None:
    from factlens.progress_bars import progress

    with progress(False):  # no bars in the timings (a spawned process starts with bars on)
        _measure(method, n_pairs, threads, tl_layers, tl_chunk, q)


def _measure(method: str, n_pairs: int, threads: int | None, tl_layers: list[int] | None, tl_chunk: int | None,
             q) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from factlens.components import Component
    from factlens.localization.pairs import make_pairs
    from factlens.models import load_model

    model = load_model(MODEL)
    recs = _records(model, n_pairs)
    pairs = make_pairs(model, recs, seed=0)
    res: dict[str, Any] = {"method": method, "threads": torch.get_num_threads()}
    with torch.inference_mode():  # warm-up (allocator, kernels), so that no method pays a cold start
        model(pairs.clean.tokens[:2], return_type=None)
    if method in ("factlens", "factlens_resid"):
        from factlens.localization.activation import activation_patching

        activation_patching(model, recs[:4], include_resid=method == "factlens_resid")
    elif method == "attribution":
        from factlens.localization.attribution import attribution_patching

        attribution_patching(model, recs[:4])
    elif method == "transformer_lens":  # its patching loop once too, on two pairs, as factlens runs on four
        _tl_warm_up(model, pairs.subset(range(2)))
    if method == "factlens":
        from factlens.localization.activation import activation_patching

        with PeakRSS() as mem:
            t = time.perf_counter()
            s = activation_patching(model, recs, include_resid=False, batch_size=n_pairs)
            res["time_s"] = time.perf_counter() - t
        res["patched"] = dict(zip([c.label for c in s.components], s.patched.tolist()))
    elif method == "factlens_resid":
        from factlens.localization.activation import activation_patching

        with PeakRSS() as mem:
            t = time.perf_counter()
            s = activation_patching(model, recs, include_resid=True, batch_size=n_pairs)
            res["time_s"] = time.perf_counter() - t
        res["n_resid_patches"] = int(s.resid.values.size)
    elif method == "transformer_lens":
        import pandas as pd
        from transformer_lens import patching as tlp

        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        layers = tl_layers if tl_layers is not None else list(range(n_layers))
        chunk = tl_chunk or len(pairs)
        heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        mlps = torch.zeros(n_layers, dtype=torch.float64)
        with PeakRSS() as mem, torch.inference_mode():
            t = time.perf_counter()
            for s0 in range(0, len(pairs), chunk):  # TL patches one batch; chunks only bound memory
                part = pairs.subset(range(s0, min(len(pairs), s0 + chunk)))
                w = len(part) / len(pairs)  # the metric is a mean over the batch
                metric = _tl_metric(part)
                _, cache = model.run_with_cache(part.clean.tokens, return_type=None)
                if tl_layers is None:
                    h = tlp.get_act_patch_attn_head_out_all_pos(model, part.corrupted.tokens, cache, metric)
                    heads += w * h.double()
                else:
                    idx = pd.DataFrame([(L, h) for L in layers for h in range(n_heads)], columns=["layer", "head_index"])
                    flat = tlp.generic_activation_patch(model, part.corrupted.tokens, cache, metric,
                                                        tlp.layer_head_vector_patch_setter, "z", index_df=idx)
                    heads[layers] += w * flat.view(len(layers), n_heads).double()
                m = tlp.generic_activation_patch(model, part.corrupted.tokens, cache, metric, _all_pos_setter,
                                                 "mlp_out", index_df=pd.DataFrame({"layer": layers}))
                mlps[layers] += w * m.double()
                del cache
            res["time_s"] = time.perf_counter() - t
        patched = {}
        for L in layers:
            for h in range(n_heads):
                patched[Component("head", L, h).label] = float(heads[L, h])
            patched[Component("mlp", L).label] = float(mlps[L])
        res["patched"] = patched
        res["measured_fraction"] = len(layers) / n_layers
        res["tl_chunk"] = chunk
    elif method == "attribution":
        from factlens.localization.attribution import attribution_patching  # may not exist yet

        with PeakRSS() as mem:
            t = time.perf_counter()
            s = attribution_patching(model, recs, batch_size=n_pairs)
            res["time_s"] = time.perf_counter() - t
        res["scores"] = dict(zip([c.label for c in s.components], [float(v) for v in s.values]))
    else:  # pragma: no cover
        raise ValueError(method)
    res["peak_rss_mib"] = mem.delta / 2**20
    res["forward_s"] = _forward_time(model, pairs)  # after the method, so its memory is measured from scratch
    q.put(res)


def _run(method: str, args) -> dict[str, Any] | None:
    """Run one method in a fresh subprocess; ``None`` (with a message) if it died."""
    import queue

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(method, args.n_pairs, args.threads, args.tl_layers, args.tl_chunk, q))
    p.start()
    res = None
    while res is None:
        try:
            res = q.get(timeout=5)
        except queue.Empty:
            if not p.is_alive():
                print(f"  {method}: worker died with exit code {p.exitcode} (killed for memory?)", flush=True)
                break
    p.join()
    return res


def _attribution_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("factlens.localization.attribution") is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-pairs", type=int, default=32)
    ap.add_argument("--out", default=None, help="write all results to this JSON file")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--tl-layers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="time TransformerLens on these layers only and EXTRAPOLATE (labelled); default: all")
    ap.add_argument("--tl-chunk", type=int, default=None,
                    help="pairs per TransformerLens batch (bounds its memory; default: all pairs in one batch)")
    ap.add_argument("--skip-resid", action="store_true", help="skip the factlens run with resid patching")
    args = ap.parse_args(argv)

    methods = ["factlens", "transformer_lens"] + ([] if args.skip_resid else ["factlens_resid"])
    if _attribution_available():
        methods.append("attribution")
    results: dict[str, Any] = {}
    for m in methods:
        t = time.perf_counter()
        try:
            results[m] = _run(m, args)
        except Exception as e:  # pragma: no cover
            print(f"{m}: failed ({type(e).__name__}: {e})")
            results[m] = None
        print(f"  {m}: done in {time.perf_counter() - t:.0f} s (incl. model load)", flush=True)
        if args.out:  # partial results survive a later failure
            with open(args.out, "w") as f:
                json.dump({"results": results}, f, indent=1)
    if not results.get("factlens") or not results.get("transformer_lens"):
        raise SystemExit("a required run failed; see the messages above")

    fl, tl = results["factlens"], results["transformer_lens"]
    common = [k for k in tl["patched"] if k in fl["patched"]]
    diffs = [abs(fl["patched"][k] - tl["patched"][k]) for k in common]
    scale = max(abs(tl["patched"][k]) for k in common)
    frac = tl.get("measured_fraction", 1.0)
    tl_time = tl["time_s"] / frac
    label = "" if frac == 1.0 else f" (EXTRAPOLATED from {frac:.0%} of layers)"
    if tl["tl_chunk"] < args.n_pairs:
        label += f" ({tl['tl_chunk']} pairs per batch)"
    n_comp = len(fl["patched"])
    summary = {
        "model": MODEL, "n_pairs": args.n_pairs, "n_components": n_comp,
        "max_abs_diff": max(diffs), "max_abs_metric": scale, "n_compared": len(common),
        "speedup": tl_time / fl["time_s"], "tl_extrapolated": frac != 1.0,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {fl['threads']}",
        "load_avg": os.getloadavg(),
    }
    rows = [
        ("factlens `activation_patching` (heads + MLPs)", fl["time_s"], fl["time_s"] / fl["forward_s"], fl["peak_rss_mib"], 1.0),
        (f"TransformerLens `patching` (heads + MLPs){label}", tl_time, tl_time / tl["forward_s"], tl["peak_rss_mib"],
         tl_time / fl["time_s"]),
    ]
    fr = results.get("factlens_resid")
    if fr:
        rows.append((f"factlens incl. resid_pre x position ({fr['n_resid_patches']} more patches)", fr["time_s"],
                     fr["time_s"] / fr["forward_s"], fr["peak_rss_mib"], fr["time_s"] / fl["time_s"]))
    at = results.get("attribution")
    if at:
        rows.append(("factlens `attribution_patching` (approximate)", at["time_s"], at["time_s"] / at["forward_s"],
                     at["peak_rss_mib"], at["time_s"] / fl["time_s"]))
        try:
            from scipy.stats import spearmanr

            from factlens.localization.activation import activation_patching  # noqa: F401 (same scores)

            keys = [k for k in at["scores"] if k in fl["patched"]]
            summary["attribution_spearman_vs_exact"] = float(spearmanr(
                [at["scores"][k] for k in keys], [fl["patched"][k] for k in keys]).correlation)
        except Exception:  # pragma: no cover
            pass
    else:
        rows.append(("factlens `attribution_patching`", None, None, None, None))

    print(f"\n{MODEL}, {args.n_pairs} sports pairs, {n_comp} components (all heads + MLPs), "
          f"{summary['machine']}, load avg {summary['load_avg'][0]:.1f}\n")
    print("| method | time (s) | forward-pass equivalents | peak RSS increase (MiB) | time / factlens |")
    print("|---|---:|---:|---:|---:|")
    for name, t, fe, mem, ratio in rows:
        if t is None:
            print(f"| {name} | not available | - | - | - |")
        else:
            print(f"| {name} | {t:.1f} | {fe:.1f} | {mem:.0f} | {ratio:.2f} |")
    print(f"\nmax |factlens - TransformerLens| over {len(common)} components: {summary['max_abs_diff']:.2e} "
          f"(metric values up to {scale:.2f}); speedup {summary['speedup']:.1f}x"
          + (" (EXTRAPOLATED)" if frac != 1.0 else ""))
    if "attribution_spearman_vs_exact" in summary:
        print(f"attribution vs exact Spearman: {summary['attribution_spearman_vs_exact']:.3f}")
    out = {"summary": summary, "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
