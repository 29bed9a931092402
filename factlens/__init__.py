"""factlens: find where a language model stores a fact, then edit or unlearn it there.

Implements "Mechanistic Unlearning: Robust Knowledge Unlearning and Editing via Mechanistic
Localization" (Guo et al.) on TransformerLens ``HookedTransformer`` models.
"""

from __future__ import annotations

import importlib
from typing import Any

from factlens import data, tasks
from factlens.components import Component, Mask, ModelShape
from factlens.localization import localization_mask, localize
from factlens.models import load_model
from factlens.progress_bars import progress
from factlens.scores import ComponentScores

# The verbs (localize, edit, evaluate, compare, equivalence, plan_units, verdicts, confirm) are functions; their subpackages are
# named after the noun or the method (localization, editing, evaluation, comparison, tost, power_plan, verdict,
# preregistration), so importing a submodule
# never replaces a verb and ``import factlens.editing.result`` always works.
from factlens.comparison import compare
from factlens.compare_inputs import RunFolder
from factlens.tost import equivalence
from factlens.power_plan import plan_units
from factlens.verdict import verdicts
from factlens.preregistration import Preregistration, confirm
from factlens.editing import EditConfig, EditResult, edit
from factlens.editing.sweep import sweep
from factlens.evaluation import evaluate

__version__ = "0.1.0"

# editing / evaluation / runner entry points are imported lazily (they pull in more code)
_LAZY = {
    "testing": "factlens.testing",
}

__all__ = ["load_model", "localize", "localization_mask", "Component", "Mask", "ModelShape", "ComponentScores",
           "data", "tasks", "edit", "EditConfig", "EditResult", "sweep", "evaluate", "compare", "equivalence", "plan_units",
           "verdicts", "RunFolder", "Preregistration", "confirm",
           "progress", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        target = _LAZY[name]
        mod, _, attr = target.partition(":")
        m = importlib.import_module(mod)
        return getattr(m, attr) if attr else m
    raise AttributeError(f"module 'factlens' has no attribute {name!r}")
