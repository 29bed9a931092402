"""Editing and unlearning by training only localized components.

``factlens.edit(model, mask, task, config=EditConfig(...))`` trains the parameter entries of
a component mask on the inject/unlearn objective with retain and general-text terms
(:mod:`factlens.editing.editor`, :mod:`factlens.editing.losses`) and returns a revertible,
saveable :class:`EditResult`. :func:`edit_sequential` edits chunks of facts one after
another. ``sweep`` and ``learn_weight_mask`` (hyper-parameter sweeps, learned weight masks)
are imported lazily from :mod:`factlens.editing.sweep` and :mod:`factlens.editing.weight_mask`.
"""

from __future__ import annotations

import importlib
from typing import Any

from factlens.editing.config import EditConfig
from factlens.editing.editor import edit, lr_factor
from factlens.editing.memory_editing import MaskNotSupported
from factlens.editing.losses import answer_log1m_prob, answer_logprob_grad, fact_losses, forget_loss, retain_loss, sft_loss
from factlens.editing.result import EditResult, ParamDelta
from factlens.editing.sequential import SequentialEditResult, edit_sequential

_LAZY = {
    "sweep": "factlens.editing.sweep:sweep",
    "learn_weight_mask": "factlens.editing.weight_mask:learn_weight_mask",
}

__all__ = ["edit", "EditConfig", "EditResult", "ParamDelta", "edit_sequential", "SequentialEditResult",
           "answer_logprob_grad", "answer_log1m_prob", "fact_losses", "forget_loss", "retain_loss", "sft_loss",
           "lr_factor", "MaskNotSupported", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, _, attr = _LAZY[name].partition(":")
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'factlens.editing' has no attribute {name!r}")

