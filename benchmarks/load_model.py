"""Benchmark: peak memory and time of loading the embedded model, first load against cached load.

The first ``factlens.load_model()`` on a machine converts the GGUF file (GGUF -> Hugging Face
-> TransformerLens, with TransformerLens's weight processing) and caches the converted
checkpoint; every later load reads the cache. Each load runs in a fresh subprocess (one
thread, its own empty cache folder for the first load), and a sampling thread attributes
the resident memory to the loading phase that is running::

    python benchmarks/load_model.py [--json load.json]

Phases are found by wrapping factlens's and TransformerLens's loading functions in this
process only (the library is not changed). Results: docs/performance.md (Memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1e9


class Phases:
    """Names the loading phase that ``peaks`` (a running :class:`factlens.memory.StagePeaks`)
    counts for, and keeps the resident size when each phase first began."""

    def __init__(self, peaks) -> None:
        from factlens.memory import rss

        self.rss, self.peaks, self.starts, self.now = rss, peaks, {}, None

    def begin(self, label: str) -> None:
        self.starts.setdefault(label, self.rss())
        self.now = label
        self.peaks.begin(label)

    def wrap(self, owner, name: str, label: str) -> None:
        f = getattr(owner, name)

        def wrapped(*a, **k):
            old = self.now
            self.begin(label)
            try:
                return f(*a, **k)
            finally:
                self.begin(old)

        setattr(owner, name, wrapped)

    def rows(self) -> list[dict]:
        return [{"phase": p, "start_gb": self.starts[p] / GB, "peak_gb": self.peaks.by_stage[p] / GB}
                for p in self.starts]


def one_load() -> dict:
    """Load the embedded model in this process; per-phase start and peak RSS (GB)."""
    import torch

    from factlens.memory import StagePeaks

    torch.set_num_threads(1)
    with StagePeaks(interval=0.0005) as peaks:
        phases = Phases(peaks)
        phases.begin("import")
        import safetensors.torch as st
        import transformer_lens.loading_from_pretrained as tl_loading
        from transformer_lens import HookedTransformer

        import factlens.models as models

        phases.wrap(models, "_load_gguf_hf", "GGUF -> Hugging Face model")
        phases.wrap(tl_loading, "get_pretrained_state_dict", "TransformerLens: convert the state dict")
        phases.wrap(HookedTransformer, "__init__", "TransformerLens: build the model")
        phases.wrap(HookedTransformer, "load_and_process_state_dict", "TransformerLens: process weights and load")
        phases.wrap(HookedTransformer, "from_pretrained_no_processing", "TransformerLens: load unprocessed")
        from transformer_lens.weight_processing import ProcessWeights

        for step in ("fold_layer_norm", "center_unembed", "fold_value_biases"):  # each copies what it is given
            phases.wrap(ProcessWeights, step, f"TransformerLens: {step}")
        if hasattr(models, "_finish_processing"):  # since 1b124d2 (the script also runs on older checkouts)
            phases.wrap(models, "_finish_processing", "factlens: the late processing steps")
        phases.wrap(st, "save_file", "write the cache")
        phases.begin("load_model (rest)")
        t0 = time.perf_counter()
        model = models.load_model("gemma-3-270m")
        seconds = time.perf_counter() - t0
        phases.begin("loaded")
    model_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / GB
    rows = phases.rows()
    return {"seconds": seconds, "model_gb": model_gb, "rows": rows,
            "process_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
            **tokenizer_sizes(model)}


def tokenizer_sizes(model) -> dict:
    """Resident size after loading (freed heap returned), and what a second copy of the model's
    tokenizer adds with and without its build copies (``factlens.models.drop_tokenizer_build_copies``)."""
    from transformers import AutoTokenizer

    from factlens.memory import release_memory, rss
    from factlens.models import drop_tokenizer_build_copies

    from factlens.models import cache_dir

    release_memory()
    loaded = rss()
    folder = next(cache_dir().glob("gemma-3-270m-tl-v*/tokenizer"))  # as cached by the load (also after converting)
    tok = AutoTokenizer.from_pretrained(str(folder))
    release_memory()
    with_copies = rss() - loaded
    dropped = drop_tokenizer_build_copies(tok)
    release_memory()
    return {"loaded_rss_gb": loaded / GB, "tokenizer_gb": with_copies / GB,
            "tokenizer_without_build_copies_gb": (rss() - loaded) / GB, "build_copy_entries": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write both loads' tables to this file")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one load, write its JSON here
    args = ap.parse_args()
    if args.one:
        Path(args.one).write_text(json.dumps(one_load()))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="factlens-load-") as cache:
        env = {**os.environ, "FACTLENS_CACHE": cache, "OMP_NUM_THREADS": "1"}
        for kind in ("first load (converts and caches)", "cached load"):
            out = Path(cache) / "result.json"
            subprocess.run([sys.executable, __file__, "--one", str(out)], check=True, env=env)
            results[kind] = json.loads(out.read_text())
    for kind, r in results.items():
        print(f"\n#### {kind}: {r['seconds']:.1f} s, process peak {r['process_peak_gb']:.2f} GB "
              f"({r['process_peak_gb'] / r['model_gb']:.1f}x the {r['model_gb']:.3f} GB model)\n")
        print("| phase | RSS at start GB | peak RSS GB |\n|---|---:|---:|")
        for row in r["rows"]:
            print(f"| {row['phase']} | {row['start_gb']:.2f} | {row['peak_gb']:.2f} |")
        print(f"\nloaded, freed heap returned: {r['loaded_rss_gb']:.2f} GB; a second copy of the tokenizer: "
              f"{r['tokenizer_gb']:.3f} GB, {r['tokenizer_without_build_copies_gb']:.3f} GB without its build copies "
              f"({r['build_copy_entries']} entries)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
