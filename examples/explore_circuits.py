# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring fact circuits with factlens
#
# Where does a model store "X plays the sport of Y"? This notebook localizes the facts with
# several methods, compares what they find, turns the scores into masks, edits the facts at
# the localized components and evaluates the edit.
#
# It runs on the **planted model** by default: a hand-built 4-layer transformer whose fact
# circuit is known exactly (MLP 1 looks the sport up at the subject, head 2.1 moves it to the
# last token), so you can check every method against the truth in seconds. Set the
# environment variable `FACTLENS_EXAMPLE_MODEL=gemma-3-270m` to explore Gemma 3 270M instead.
#
# This file is the jupytext twin of `explore_circuits.ipynb`; it also runs as a plain script
# (`python examples/explore_circuits.py`), where the figures are built but not shown.

# %%
import os
import sys

import factlens
from factlens.data import filter_known, format_accuracy, sports_facts
from factlens.tasks import sports_athlete_editing

MODEL = os.environ.get("FACTLENS_EXAMPLE_MODEL", "planted")
SHOW = "ipykernel" in sys.modules  # show figures in a notebook; a plain script skips them

if MODEL == "planted":
    from factlens.testing import planted_fact_model

    planted = planted_fact_model()
    model, facts = planted.model, planted.dataset
    truth = {planted.lookup_mlp, planted.extraction_head}
    print("ground truth:", sorted(c.label for c in truth))
else:
    model = factlens.load_model(MODEL)
    # the athletes the model knows, a seeded subsample to keep the exploration quick
    facts = filter_known(model, sports_facts())
    facts = facts.split(min(48, len(facts)), seed=0)[0]
    truth = None
shape = factlens.ModelShape.of(model)
print(f"{MODEL}: {shape.n_layers} layers x {shape.n_heads} heads, d_model={shape.d_model}; {len(facts)} facts")
print(facts[0].prompt, "->", facts[0].answer)

# %% [markdown]
# ## 1. Which prompt formats does the model know?
#
# Robustness can only be measured in formats the unedited model answers above chance.

# %%
print(format_accuracy(model, facts).to_markdown())

# %% [markdown]
# ## 2. Localize
#
# Each method scores every attention head and MLP. The heatmaps show layers x (heads + MLP);
# blue = the component carries the answer (positive score), red = it works against it (plotly's
# RdBu centred at 0, as in TransformerLens demos). Causal tracing scores the restored probability (a
# probability, >= 0, not its change: restoring a component can also lower it): every cell of its map
# is blue; compare cells with each other.

# %%
fast = MODEL == "planted"
methods = {
    "attribution_patching": {},
    "activation_patching": {},
    "causal_tracing": {"n_samples": 4 if fast else 3, "include_resid": fast},
}
scores = {}
for name, options in methods.items():
    scores[name] = factlens.localize(model, facts, method=name, show_progress=False, **options)
    print(f"{name:>22}: top-4", [c.label for c in scores[name].top(4)])

# %%
figures = [s.plot() for s in scores.values()]
if SHOW:
    for fig in figures:
        fig.show()

# %% [markdown]
# Attribution patching is a first-order estimate of activation patching; where the two
# disagree, the model is far from linear.

# %%
import numpy as np

ap, act = scores["attribution_patching"], scores["activation_patching"]
common = [c for c in ap.components if c in set(act.components)]
r = np.corrcoef([ap[c] for c in common], [act[c] for c in common])[0, 1]
print(f"correlation attribution vs activation patching: {r:.3f}")

# %% [markdown]
# ## 3. Probing: where is the sport looked up?
#
# A linear probe on the residual stream at the subject token: the layers where its accuracy
# rises are where the fact is looked up (the FLU localization edits their MLPs).

# %%
probe = factlens.localize(model, facts, method="probing", show_progress=False)
print("probe accuracy at the subject, per layer:",
      [round(a, 2) for a in probe.extra["probe_accuracy"]["subject_last"]])
if SHOW:
    probe.plot().show()

# %% [markdown]
# ## 4. Masks at an equal parameter budget
#
# The paper compares localizations at the FLU mask's size. `localization_mask` builds the
# named localizations; `to_mask(param_budget=...)` does it for any scores.

# %%
flu_mask, flu_scores = factlens.localization_mask(model, facts, "flu", show_progress=False)
budget = flu_mask.n_params(model)
masks = {"flu": flu_mask}
for name, s in scores.items():
    masks[name] = s.to_mask(param_budget=budget, name=name)
masks["random"], _ = factlens.localization_mask(model, facts, "random", param_budget=budget, seed=0)
for name, m in masks.items():
    print(f"{name:>22}: {m.n_params(model):>9,} params  {m.labels}")
if truth is not None:
    print("FLU finds the lookup MLP:", planted.lookup_mlp in flu_mask)

# %% [markdown]
# ## 5. Edit the facts at the localized components
#
# Sports-Athlete-Editing: 8 athletes are taught a different sport, training only the masked
# parameters (the original model is left untouched: `inplace=False`).

# %%
task = sports_athlete_editing(facts, n_forget=8, seed=0)
config = factlens.EditConfig.fast(lr=1e-2, n_sft_chunks=8) if MODEL == "planted" else factlens.EditConfig.fast()
result = factlens.edit(model, masks["flu"], task, config=config, show_progress=False)
print(f"edited {result.n_changed:,} parameters in {result.seconds:.1f}s; final loss {result.history[-1]['loss']:.3f}")
if SHOW:
    result.plot_history().show()

# %% [markdown]
# ## 6. Evaluate the edit
#
# Forget / edit / maintain accuracy in the trained format, robustness in the other formats
# and side effects on general text, each with the unedited model's value as baseline.

# %%
evaluation = factlens.evaluate(result.model, task, original=model, suites=["standard", "formats", "side_effects"],
                               show_progress=False)
table = evaluation.to_frame()[["suite", "name", "value", "baseline", "n", "at_chance"]]
print(table.to_string(index=False))

# %%
print("forget accuracy (true answer still wins):", round(evaluation.metric("forget_accuracy").value, 3))
print("edit accuracy (new answer wins):         ", round(evaluation.metric("edit_accuracy").value, 3))
print("maintain accuracy (other facts intact):  ", round(evaluation.metric("maintain_accuracy").value, 3))

# %% [markdown]
# ## Next steps
#
# * `factlens run planted --model planted` compares all localizations on this model and
#   writes an HTML report; `factlens run sports-athlete-editing` does it on Gemma 3 270M.
# * `factlens.localize(..., method="path_patching", receivers=[...])` measures effects
#   through given heads, e.g. the extraction head found above.
