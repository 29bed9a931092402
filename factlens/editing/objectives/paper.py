"""The paper's objectives (Guo et al.): ``inject`` (edit to ``target_new``) and ``unlearn`` (``-log(1 - p)``).

Both compute forget and retain terms in one forward pass with
:func:`factlens.editing.losses.fact_losses` (see that module for the numerically stable
``log(1 - p)`` of multi-token answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import fact_losses
from factlens.editing.objectives.base import TrainingObjective

__all__ = ["InjectObjective", "UnlearnObjective"]


@dataclass(frozen=True)
class InjectObjective(TrainingObjective):
    """Cross-entropy towards each forget fact's ``target_new``; cross-entropy of the retain facts' answers."""

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        return fact_losses(model, forget_batch, retain_batch, "inject")


@dataclass(frozen=True)
class UnlearnObjective(TrainingObjective):
    """``-log(1 - p(answer))`` on the forget facts (Mazeika et al., as in the paper); retain cross-entropy.

    The loss is ``>= 0`` and 0 at ``p = 0``: minimizing it drives ``p(answer)`` to 0 and,
    unlike gradient ascent, stops pushing once the answer is unlikely.
    """

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        return fact_losses(model, forget_batch, retain_batch, "unlearn")
