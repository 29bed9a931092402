"""The soft-prompt attack appended vs prepended, on Gemma 3 270M unedited and after a FLU edit.

Reproduces the table "Where the soft prompt sits matters" in docs/reproduction.md:
Sports-Athlete-Editing (16 known athletes, task seed 0), ``EditConfig.fast()`` on the MLPs
of layers 2-4, one soft-prompt seed, halves of 8 + 8 facts. About 6 minutes on 2 CPU cores.

Run: ``python examples/soft_prompt_position.py [--steps 0 25 50]``
"""

from __future__ import annotations

import argparse

import factlens
from factlens.components import Mask
from factlens.data import filter_known, sports_facts
from factlens.editing import EditConfig, edit
from factlens.evaluation.config import EvalConfig
from factlens.evaluation.soft_prompts import SoftPromptsConfig, run_soft_prompts
from factlens.tasks import sports_athlete_editing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50])
    args = ap.parse_args()
    model = factlens.load_model("gemma-3-270m")
    known = filter_known(model, sports_facts())
    task = sports_athlete_editing(known, n_forget=16, seed=0, n_maintain=32)
    edited = edit(model, Mask.from_labels(["L2.mlp", "L3.mlp", "L4.mlp"]), task, config=EditConfig.fast(),
                  show_progress=False).model
    print("| model | position | steps | held-out forget acc | train-half acc | held-out edit acc |")
    print("|---|---|---:|---:|---:|---:|")
    for name, m in (("unedited", model), ("FLU edit", edited)):
        for pos in ("append", "prepend"):
            for steps in args.steps:
                cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=steps, seeds=1, position=pos))
                r = run_soft_prompts(m, task, config=cfg)
                print(f"| {name} | {pos} | {steps} | {r['soft_prompt_forget_accuracy'].value:.3f} | "
                      f"{r['soft_prompt_train_accuracy'].value:.3f} | {r['soft_prompt_edit_accuracy'].value:.3f} |", flush=True)


if __name__ == "__main__":
    with factlens.progress(False):  # the tables only
        main()
