"""Edit methods and training objectives, as typed registries.

An edit method changes the parameters of a mask to edit or unlearn a task's facts:
``fn(model, mask, task, *, objective, config, inplace, show_progress) -> EditResult``, one
module per method, one :class:`EditMethod` entry in :data:`EDIT_METHODS`. Masked fine-tuning
(``"finetune"``, the paper's) trains on an :class:`Objective` from :data:`OBJECTIVES`; closed-form
editors (ROME, MEMIT) declare the objectives they support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from factlens.registry import Ref, Registry

__all__ = ["EditMethod", "Objective", "EDIT_METHODS", "OBJECTIVES"]


@dataclass(frozen=True)
class Objective:
    """A training objective of masked fine-tuning.

    Attributes:
        name: What users pass as ``objective=``.
        loss: The objective's implementation (see :mod:`factlens.edit.objectives`).
        needs_target_new: Every forget fact needs ``target_new`` (editing objectives).
        doc: One line (and the paper it comes from).
    """

    name: str
    loss: Ref
    needs_target_new: bool = False
    doc: str = ""


@dataclass(frozen=True)
class EditMethod:
    """A way of editing the parameters of a mask.

    Attributes:
        name: What users pass as ``method=``.
        fn: ``fn(model, mask, task, *, objective, config, inplace, show_progress) -> EditResult``.
        objectives: The objectives the method supports.
        doc: One line (and the paper it comes from).
    """

    name: str
    fn: Ref | Callable[..., Any]
    objectives: tuple[str, ...]
    doc: str = ""

    def check_objective(self, objective: str) -> None:
        if objective not in self.objectives:
            raise ValueError(f"edit method {self.name!r} does not support objective {objective!r}; "
                             f"it supports {list(self.objectives)}")


OBJECTIVES: Registry[Objective] = Registry("objective", (
    Objective("inject", Ref("factlens.edit.objectives", "InjectObjective"), needs_target_new=True,
              doc="cross-entropy towards target_new (the paper's editing loss)"),
    Objective("unlearn", Ref("factlens.edit.objectives", "UnlearnObjective"),
              doc="-log(1 - p(answer)) on the forget facts (the paper's unlearning loss)"),
))

EDIT_METHODS: Registry[EditMethod] = Registry("edit method", (
    EditMethod("finetune", Ref("factlens.edit.editor", "finetune"), OBJECTIVES.names(),
               doc="masked fine-tuning: gradient steps on the mask's parameter entries only (Guo et al.)"),
))
