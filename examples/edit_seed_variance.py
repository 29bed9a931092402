"""Held-out maintenance of the Gemma 3 270M FLU edit over batch-sampling seeds (docs/editing.md).

Sports-Athlete-Editing with 16 known athletes (task seed 0, 32 held out), the FLU mask,
``EditConfig.fast(seed=k, **overrides)``; prints edit and maintain accuracy per seed and
the held-out athletes that flipped, with their probability among the sports before editing.
About 90 s per run at 20 steps on 2 CPU cores.

Run: ``python examples/edit_seed_variance.py --seeds 0 1 [--set steps=40 --set l_retain=2]``
"""

from __future__ import annotations

import argparse
import json

import factlens
from factlens.data import filter_known, sports_facts
from factlens.data.formats import format_prompts
from factlens.editing import EditConfig, edit
from factlens.prompt_scores import score_prompts
from factlens.tasks import sports_athlete_editing


def _kv(text: str) -> tuple[str, object]:
    k, _, v = text.partition("=")
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--set", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="EditConfig.fast override")
    args = ap.parse_args()
    model = factlens.load_model("gemma-3-270m")
    known = filter_known(model, sports_facts())
    task = sports_athlete_editing(known, n_forget=16, seed=0, n_maintain=32)
    mask, _ = factlens.localization_mask(model, known, "flu")
    overrides = dict(args.set)
    items = format_prompts(task.maintain)
    p_before = score_prompts(model, items, batch_size=32).p_answer_norm
    print(f"mask {mask.labels}, overrides {overrides}")
    print("| seed | edit acc | maintain acc | seconds | held-out facts lost (p among candidates before editing) |")
    print("|---:|---:|---:|---:|---|")
    for seed in args.seeds:
        res = edit(model, mask, task, config=EditConfig.fast(seed=seed, **overrides), show_progress=False)
        e = score_prompts(res.model, format_prompts(task.forget), batch_size=32).target_wins.mean()
        after = score_prompts(res.model, items, batch_size=32)
        flipped = ", ".join(f"{r.subject} ({p:.2f})" for r, p, ok in zip(task.maintain, p_before, after.answer_wins) if not ok)
        print(f"| {seed} | {e:.3f} | {after.accuracy():.3f} | {res.seconds:.0f} | {flipped} |", flush=True)
        del res


if __name__ == "__main__":
    main()
