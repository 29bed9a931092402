"""Edit methods and training objectives, as typed registries.

An edit method changes the parameters of a mask to edit or unlearn a task's facts:
``fn(model, mask, task, *, objective, config, inplace) -> EditResult``, one
module per method, one :class:`EditMethod` entry in :data:`EDIT_METHODS`. Masked fine-tuning
(``"finetune"``, the paper's) trains on an :class:`Objective` from :data:`OBJECTIVES`; closed-form
editors (ROME, MEMIT, AlphaEdit) declare the objectives they support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from functools import partial

from factlens.plugins import plugin_entries
from factlens.registry import Ref, Registry

__all__ = ["EditMethod", "Objective", "EDIT_METHODS", "OBJECTIVES"]


@dataclass(frozen=True)
class Objective:
    """A training objective of masked fine-tuning.

    Attributes:
        name: What users pass as ``objective=``.
        loss: The objective's class, a :class:`~factlens.editing.objectives.TrainingObjective`
            (``prepare`` once from the original model, then ``losses`` per micro-batch).
        needs_target_new: Every forget fact needs ``target_new`` (editing objectives); the
            targets must differ from the true answers and be among the task's candidates.
        uses_retain: The objective has a retain term (weighted by ``EditConfig.l_retain``);
            ``False``: ``task.retain`` is not used (plain gradient ascent).
        doc: One line (and the paper it comes from).
        config_type: The objective's own settings (a frozen
            :class:`~factlens.config.ConfigBase`), set per run in ``EditConfig.objectives[name]``
            and passed to ``loss.prepare(..., settings=...)`` (GA's
            :class:`~factlens.editing.objectives.gradient_ascent.GradientAscentConfig`, GradDiff's
            :class:`~factlens.editing.objectives.gradient_ascent.GradDiffConfig`); ``None``:
            it reads :class:`~factlens.editing.config.EditConfig`'s own fields (``npo_beta``...).
    """

    name: str
    loss: Ref | Callable[..., Any]
    needs_target_new: bool = False
    uses_retain: bool = True
    doc: str = ""
    config_type: Ref | type | None = None

    def __post_init__(self) -> None:
        """Refuse a ``config_type`` that is no settings type (:func:`_check_config_type`)."""
        _check_config_type(self.config_type, where=f"objective {self.name!r}")


def _check_config_type(config_type: Any, *, where: str) -> None:
    """Refuse a ``config_type`` given directly that is no settings type (a plain dataclass, a dict):
    it failed only when its table was first built, inside the edit. A :class:`~factlens.registry.Ref`
    is checked when it is loaded (``EditConfig.method_config`` / ``objective_config``)."""
    if config_type is not None and not isinstance(config_type, Ref):
        from factlens.editing.config import _settings_class

        _settings_class(config_type, where=where)


@dataclass(frozen=True)
class EditMethod:
    """A way of editing the parameters of a mask.

    Attributes:
        name: What users pass as ``method=``.
        fn: ``fn(model, mask, task, *, objective, config, inplace) -> EditResult`` (progress
            bars through :func:`factlens.progress_bars.progress_bar`); with ``takes_offload``
            also ``offload=folder`` when the caller gives one.
        objectives: The names of the objectives the method supports, each a registered
            objective (checked when the entry is built); ``None``: every registered objective,
            those of installed packages too (masked fine-tuning trains on any of them).
        doc: One line (and the paper it comes from).
        takes_offload: ``fn`` takes ``offload=`` (a folder on disk where it keeps its saved
            original values in a mapped file, :func:`factlens.memory.kept_copies`); ``edit(...,
            offload=...)`` passes it only then (for other methods it only saves memory that
            they do not save).
        config_type: The method's own settings (a frozen :class:`~factlens.config.ConfigBase`,
            e.g. :class:`~factlens.editing.rome.RomeConfig`, which also has
            ``from_edit_config(EditConfig)`` to read ``sft_source`` and ``seed``), set per run in
            ``EditConfig.methods[name]`` and built by ``config.method_config(entry)``; ``None``:
            the method reads :class:`~factlens.editing.config.EditConfig`'s own fields (masked
            fine-tuning).
        takes_edited_before: ``fn`` also takes ``edited_before=``, the facts that earlier edits of
            a sequence wrote (:func:`factlens.editing.edit_sequential` passes the earlier chunks'), for
            methods that keep them unchanged (AlphaEdit); other methods edit the current model
            without them.
    """

    name: str
    fn: Ref | Callable[..., Any]
    objectives: tuple[str, ...] | None
    doc: str = ""
    config_type: Ref | type | None = None
    takes_offload: bool = False
    takes_edited_before: bool = False

    def __post_init__(self) -> None:
        """Refuse ``objectives`` that name no objective: a misspelt name (``("injct",)``) or a bare
        string were accepted, and the method then refused every objective it was meant to take; and a
        ``config_type`` that is no settings type."""
        _check_config_type(self.config_type, where=f"edit method {self.name!r}")
        if self.objectives is None:
            return
        if isinstance(self.objectives, str) or not all(isinstance(o, str) for o in self.objectives):
            names = (self.objectives,) if isinstance(self.objectives, str) else tuple(
                getattr(o, "name", o) for o in self.objectives)
            raise ValueError(f"edit method {self.name!r}: objectives is a tuple of objective names (or None for "
                             f"every one), got {self.objectives!r}; write objectives={names!r}")
        builtin = {e.name for e in OBJECTIVES.entries}  # read no plugin unless a name is not factlens's own
        if set(self.objectives) <= builtin:
            return
        unknown = [o for o in self.objectives if o not in OBJECTIVES.names()]
        if unknown:
            raise ValueError(f"edit method {self.name!r}: objectives {unknown} are no registered objective; known: "
                             f"{list(OBJECTIVES.names())} (an objective of your own is registered by an entry "
                             "point, see factlens.plugins)")

    def supported_objectives(self) -> tuple[str, ...]:
        """The names of the objectives the method supports (``objectives``, or every registered one)."""
        return OBJECTIVES.names() if self.objectives is None else self.objectives

    def check_objective(self, objective: "str | Objective") -> None:
        objective = getattr(objective, "name", objective)  # an Objective entry is checked by its name
        if self.objectives is None and objective not in self.supported_objectives():
            raise ValueError(f"objective {objective!r} is not registered: edit method {self.name!r} has "
                             "objectives=None, which means every registered objective "
                             f"{list(self.supported_objectives())}; register yours by an entry point (group "
                             "'factlens.objectives', see factlens.plugins; only method='finetune' also trains "
                             "on an unregistered Objective entry)")
        if objective not in self.supported_objectives():
            raise ValueError(f"edit method {self.name!r} does not support objective {objective!r}; "
                             f"it supports {list(self.supported_objectives())}")


_OBJ = "factlens.editing.objectives"

OBJECTIVES: Registry[Objective] = Registry("objective", (
    Objective("inject", Ref(f"{_OBJ}.paper", "InjectObjective"), needs_target_new=True,
              doc="cross-entropy towards target_new (the paper's editing loss)"),
    Objective("unlearn", Ref(f"{_OBJ}.paper", "UnlearnObjective"),
              doc="-log(1 - p(answer)) on the forget facts (the paper's unlearning loss)"),
    Objective("gradient_ascent", Ref(f"{_OBJ}.gradient_ascent", "GradientAscentObjective"), uses_retain=False,
              doc="gradient ascent on the forget answers' cross-entropy, no retain term",
              config_type=Ref(f"{_OBJ}.gradient_ascent", "GradientAscentConfig")),
    Objective("graddiff", Ref(f"{_OBJ}.gradient_ascent", "GradDiffObjective"),
              doc="gradient ascent on the forget facts + cross-entropy (or KL) on the retain facts (GradDiff)",
              config_type=Ref(f"{_OBJ}.gradient_ascent", "GradDiffConfig")),
    Objective("npo", Ref(f"{_OBJ}.npo", "NPOObjective"),
              doc="Negative Preference Optimization against the frozen original (Zhang et al. 2024)",
              config_type=Ref(f"{_OBJ}.npo", "NPOConfig")),
    Objective("simnpo", Ref(f"{_OBJ}.npo", "SimNPOObjective"),
              doc="reference-free, length-normalized NPO (Fan et al. 2024)",
              config_type=Ref(f"{_OBJ}.npo", "NPOConfig")),
    Objective("dpo", Ref(f"{_OBJ}.dpo", "DPOObjective"),
              doc="DPO preferring an alternate answer (\"I don't know\") to the true one (IdkDPO, TOFU)",
              config_type=Ref(f"{_OBJ}.dpo", "DPOConfig")),
    Objective("rmu", Ref(f"{_OBJ}.rmu", "RMUObjective"),
              doc="steer forget activations to a random direction at one layer, keep retain ones (Li et al. 2024)"),
), plugins=partial(plugin_entries, "objective", Objective))

EDIT_METHODS: Registry[EditMethod] = Registry("edit method", (
    EditMethod("finetune", Ref("factlens.editing.editor", "finetune"), None,
               doc="masked fine-tuning: gradient steps on the mask's parameter entries only (Guo et al.)", takes_offload=True),
    EditMethod("rome", Ref("factlens.editing.rome", "rome"), ("inject",),
               doc="rank-one edit of one MLP layer's W_out, one fact after another (Meng et al. 2022)",
               config_type=Ref("factlens.editing.rome", "RomeConfig"), takes_offload=True),
    EditMethod("memit", Ref("factlens.editing.memit", "memit"), ("inject",),
               doc="all facts at once, spread over the mask's MLP layers' W_out (Meng et al. 2023)",
               config_type=Ref("factlens.editing.memit", "MemitConfig"), takes_offload=True),
    EditMethod("alphaedit", Ref("factlens.editing.alphaedit", "alphaedit"), ("inject",),
               doc="MEMIT's update projected onto the null space of preserved keys; keeps earlier "
                   "edits in sequences (Fang et al. 2025)",
               config_type=Ref("factlens.editing.alphaedit", "AlphaEditConfig"), takes_offload=True,
               takes_edited_before=True),
), plugins=partial(plugin_entries, "edit method", EditMethod))
