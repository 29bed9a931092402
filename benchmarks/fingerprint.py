"""Benchmark: time of the BaselineCache fingerprint on tensors of Gemma 3 270M's shapes.

``BaselineCache.bind`` fingerprints the unedited model (every bit of its parameters and
buffers, :func:`factlens.evaluation.baseline_cache._fingerprint`). This builds random tensors
of Gemma 3 270M's TransformerLens shapes (no model is loaded: the cost depends only on the
shapes and the dtype) and times the fingerprint of the largest one, the 262144 x 640
embedding, and of the whole set, next to the former fingerprint (a float64 sum per
parameter, in chunks), which missed values that moved::

    OMP_NUM_THREADS=1 python benchmarks/fingerprint.py [--dtype float32] [--repeats 3] [--json out.json]

Results: docs/performance.md (the BaselineCache fingerprint).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)

#: Gemma 3 270M: vocabulary, d_model, layers, query heads, key/value heads, d_head, d_mlp, n_ctx of the runner.
VOCAB, D, LAYERS, HEADS, KV_HEADS, D_HEAD, D_MLP, N_CTX = 262144, 640, 18, 4, 1, 256, 2048, 8192


def shaped(dtype: torch.dtype, *, buffers: bool = True) -> nn.Module:
    """A module holding random parameters (and rotary-table buffers) of Gemma 3 270M's shapes."""
    g = torch.Generator().manual_seed(0)
    m = nn.Module()

    def add(name: str, *shape: int) -> None:
        m.register_parameter(name, nn.Parameter(torch.randn(*shape, generator=g).to(dtype), requires_grad=False))

    add("embed_W_E", VOCAB, D)
    for i in range(LAYERS):
        add(f"b{i}_W_Q", HEADS, D, D_HEAD), add(f"b{i}_W_K", KV_HEADS, D, D_HEAD), add(f"b{i}_W_V", KV_HEADS, D, D_HEAD)
        add(f"b{i}_W_O", HEADS, D_HEAD, D)
        add(f"b{i}_W_in", D, D_MLP), add(f"b{i}_W_gate", D, D_MLP), add(f"b{i}_W_out", D_MLP, D)
        for n in ("ln1", "ln1_post", "ln2", "ln2_post"):
            add(f"b{i}_{n}", D)
        add(f"b{i}_q_norm", D_HEAD), add(f"b{i}_k_norm", D_HEAD)
        if buffers:
            m.register_buffer(f"b{i}_rotary_sin", torch.randn(N_CTX, D_HEAD, generator=g).to(dtype))
            m.register_buffer(f"b{i}_rotary_cos", torch.randn(N_CTX, D_HEAD, generator=g).to(dtype))
    add("ln_final", D)
    add("unembed_W_U", D, VOCAB)
    return m


def sums(model, chunk: int = 2**20) -> tuple[float, ...]:
    """The former fingerprint: a float64 sum of each parameter, in chunks."""
    with torch.no_grad():
        return tuple(math.fsum(float(c.double().sum()) for c in p.detach().reshape(-1).split(chunk))
                     for p in model.parameters())


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (first-touch page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    from factlens.evaluation.baseline_cache import _fingerprint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = shaped(dtype)
    emb = nn.Module()
    emb.W_E = model.embed_W_E
    n_param = sum(p.numel() for p in model.parameters())
    gb = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 1e9
    out = {"dtype": args.dtype, "threads": torch.get_num_threads(), "parameters": n_param, "gb_with_buffers": gb,
           "embedding_s": best_of(lambda: _fingerprint(emb), args.repeats),
           "embedding_sums_s": best_of(lambda: sums(emb), args.repeats),
           "model_s": best_of(lambda: _fingerprint(model), args.repeats),
           "model_sums_s": best_of(lambda: sums(model), args.repeats)}
    emit(out, args.json)


if __name__ == "__main__":
    main()
