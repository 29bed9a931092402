"""Benchmark: how much of an offloaded edit record is back in memory after each stage.

The runner moves each unit's edit record to a mapped file while the unit is evaluated
(``EditResult.offload``); a page of it is resident again once something reads it. This
script runs units one after another in one process and worker, as a runner worker does
(so the second unit finds the unedited model's numbers cached), and prints after every stage
the resident size of the mapping (its ``Rss`` lines in ``/proc/self/smaps``; Linux only)::

    python benchmarks/record_residency.py --units random,nonlocalized

Result: docs/performance.md (The edit's record while evaluating).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import main_job  # noqa: E402 - the benchmark's own helpers, next to this file

GB = 1e9


def mapped_record_gb() -> float:
    """Resident bytes (GB) of this process's mappings of ``mapped_copies`` files."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):  # a mapping's first line
                inside = ".factlens-mapped." in line
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total / GB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", default="random,nonlocalized", help="localizations run one after another")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--forget-size", type=int, default=32)
    ap.add_argument("--suites", default="standard,formats,side_effects,relearning,probes,soft_prompts,mechanisms")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from factlens.runner.pipeline import Workspace, prepare

    real = main_job.Stages.stage

    @contextlib.contextmanager
    def stage(self, name):
        with real(self, name):
            yield
        print(f"    after {name}: offloaded record resident again {mapped_record_gb():.3f} GB", flush=True)

    main_job.Stages.stage = stage
    ns = argparse.Namespace(model=args.model, localization=args.units.split(",")[0], seed=0,
                            forget_size=args.forget_size, suites=args.suites)
    cfg = main_job.run_config(ns).replace(out=tempfile.mkdtemp(prefix="factlens-bench-"))
    ws = Workspace()
    prepare(cfg, 0, workspace=ws)
    for loc in args.units.split(","):
        print(f"unit {loc}", flush=True)
        main_job.one_job(cfg, 0, loc, ws, main_job.Stages(None, prefix=f"{loc}."), list(cfg.suites))


if __name__ == "__main__":
    main()
