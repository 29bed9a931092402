"""Training objectives of masked fine-tuning, one module per family.

An objective is a frozen dataclass built once from the *original* model before training
(:meth:`TrainingObjective.prepare`: NPO caches the original's log-probabilities of the
forget answers, RMU fixes its random direction and caches the original's retain
activations) whose :meth:`~TrainingObjective.losses` gives ``(L_forget, L_retain)`` for one
micro-batch. The editor adds the general-text term and weights the three with
``EditConfig.l_forget``, ``l_retain`` and ``l_sft``.

Each objective is registered once in :data:`factlens.editing.registry.OBJECTIVES`:

=====================  ==========================================  =============================
name                   ``L_forget``                                ``L_retain``
=====================  ==========================================  =============================
``inject``             ``-log p(target_new)``                      ``-log p(answer)``
``unlearn``            ``-log(1 - p(answer))`` (the paper's)       ``-log p(answer)``
``gradient_ascent``    ``log p(answer)``                           none
``graddiff``           ``log p(answer)``                           ``-log p(answer)`` or KL
``npo``                NPO against the frozen original             ``-log p(answer)`` or KL
``simnpo``             reference-free, length-normalized NPO       ``-log p(answer)`` or KL
``dpo``                DPO: an alternate answer over the true one  ``-log p(answer)`` or KL
``rmu``                MSE of activations to ``c * u``             ``alpha *`` MSE to the original
=====================  ==========================================  =============================

(``L_retain`` is always on ``task.retain``'s true answers or prompts; "or KL": ``retain_loss="kl"``,
:class:`~factlens.editing.objectives.base.RetainKL`.) See
docs/unlearning_objectives.md for what each optimizes, the papers' defaults and the cost.
"""

from __future__ import annotations

from factlens.editing.objectives.base import TrainingObjective
from factlens.editing.objectives.dpo import DPOObjective
from factlens.editing.objectives.gradient_ascent import GradDiffObjective, GradientAscentObjective
from factlens.editing.objectives.npo import NPOObjective, SimNPOObjective
from factlens.editing.objectives.paper import InjectObjective, UnlearnObjective
from factlens.editing.objectives.rmu import RMUObjective

__all__ = ["TrainingObjective", "InjectObjective", "UnlearnObjective", "GradientAscentObjective", "GradDiffObjective",
           "NPOObjective", "SimNPOObjective", "DPOObjective", "RMUObjective"]
