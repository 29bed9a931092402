"""Benchmark: MMLU scoring in batches of similar token length against the earlier batches.

``factlens.data.mmlu.mmlu_accuracy`` used to sort the prompts by characters and cut them
into batches of ``batch_size``; a few long reading passages then padded a whole batch to
their length. It now groups prompts by token length (:func:`factlens.tokens.length_batches`).
This scores the same questions both ways, alternately and ``--repeats`` times each, in one
process on one loaded model, and compares every question's prediction and probability::

    OMP_NUM_THREADS=1 python benchmarks/mmlu_batches.py --mmlu ../shared/data/mmlu/dev [--repeats 3] [--json out.json]

Results: docs/performance.md (MMLU batches).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import numpy as np
import torch

from _output import emit  # benchmarks/_output.py (the script's folder is on sys.path)


@contextmanager
def earlier_batches():
    """``mmlu_accuracy`` with the batches it used before: sorted by characters, ``batch_size`` each."""
    import factlens.data.mmlu as mmlu

    real_tokens = mmlu._encode

    def by_characters(lengths, batch_size, **_):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    real = mmlu.length_batches
    mmlu.length_batches = by_characters
    mmlu._encode = lambda model, p: (list(p), None)  # "lengths" = characters, as the earlier sort
    try:
        yield
    finally:
        mmlu.length_batches, mmlu._encode = real, real_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--mmlu", required=True, help="folder of MMLU CSVs, e.g. ../shared/data/mmlu/dev")
    ap.add_argument("--n", type=int, default=57, help="questions (the main job's default: 57)")
    ap.add_argument("--batch-size", type=int, default=16, help="the runner's evaluation batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import factlens
    from factlens.data.mmlu import load_mmlu, mmlu_accuracy

    model = factlens.load_model(args.model)
    qs = load_mmlu(args.mmlu, n=args.n, seed=0)
    times: dict[str, list[float]] = {"earlier": [], "length": []}
    results = {}
    for _ in range(args.repeats):
        for name in ("earlier", "length"):
            t = time.process_time()
            if name == "earlier":
                with earlier_batches():
                    results[name] = mmlu_accuracy(model, qs, batch_size=args.batch_size)
            else:
                results[name] = mmlu_accuracy(model, qs, batch_size=args.batch_size)
            times[name].append(time.process_time() - t)
    a, b = results["earlier"], results["length"]
    out = {
        "n_questions": len(qs), "batch_size": args.batch_size, "repeats": args.repeats,
        "cpu_s": {k: v for k, v in times.items()},
        "median_cpu_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio_median": statistics.median(times["length"]) / statistics.median(times["earlier"]),
        "same_predictions": bool(np.array_equal(a.predicted, b.predicted)),
        "max_abs_p_correct_diff": float(np.max(np.abs(a.p_correct - b.p_correct))),
        "accuracy": [a.accuracy, b.accuracy],
    }
    emit(out, args.json)


if __name__ == "__main__":
    main()
