"""Editing hyper-parameters."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

from factlens.config import ConfigBase, check_config_type, check_numbers

__all__ = ["EditConfig", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adamw", "adamw8bit")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class EditConfig(ConfigBase):
    """Hyper-parameters of :func:`factlens.editing.edit`.

    The defaults are the paper's (Guo et al.): 50 optimizer steps, batch size 4 with 16
    gradient-accumulation steps (64 examples of each loss per step), AdamW without weight
    decay, cosine learning-rate schedule, loss weights 1. :meth:`fast` is a CPU-friendly
    preset (bigger batches, no accumulation, higher learning rate, fewer steps).

    Attributes:
        lr: Peak learning rate.
        steps: Optimizer steps.
        batch_size: Forget and retain examples per micro-batch (each); ``None``: all of them.
        grad_accum: Micro-batches accumulated per optimizer step.
        l_forget: Weight of the inject/forget loss.
        l_retain: Weight of the retain loss (cross-entropy on ``task.retain``'s true answers).
        l_sft: Weight of the general-text loss (0 disables it).
        weight_decay: AdamW weight decay (the paper: 0).
        schedule: ``"cosine"`` (to 0 at ``steps``), ``"linear"`` (to 0) or ``"constant"``.
        warmup_steps: Linear warm-up steps before the schedule.
        clip_grad: Max global gradient norm of the trained entries (``None``: no clipping).
        optimizer: ``"adamw"`` (torch) or ``"adamw8bit"`` (bitsandbytes; CUDA only).
        sft_source: General text for the SFT loss: a local text file or a Hugging Face dataset
            name (next-token cross-entropy, ``sft_kind="text:<source>"``); ``None``: KL
            divergence to the frozen original model on the built-in general text
            (``sft_kind="kl:builtin"``).
        sft_seq_len: Tokens per general-text chunk (BOS included).
        n_sft_chunks: Number of general-text chunks to draw batches from.
        sft_batch_size: Chunks per micro-batch (``None``: ``batch_size``, capped at the number of chunks).
        sft_positions: Positions per chunk at which the SFT loss is evaluated (evenly spaced;
            ``None``: all). Keeps the ``[positions, d_vocab]`` logits small for large vocabularies.
        train_format: Prompt format of the forget/retain prompts (see :mod:`factlens.data.formats`).
        seed: Seed of batch sampling (and of RMU's random direction).
        npo_beta: ``beta`` of ``objective="npo"`` (Zhang et al. 2024). Default 0.1: the NPO
            paper's TOFU setting and open-unlearning's ``configs/trainer/NPO.yaml``.
        simnpo_beta: ``beta`` of ``objective="simnpo"`` (Fan et al. 2024). Default 2.5: the
            authors' TOFU config (OPTML-Group/Unlearn-Simple ``TOFU/config/forget.yaml``;
            open-unlearning's ``SimNPO.yaml`` uses 4.5).
        simnpo_gamma: Reward margin ``gamma`` of ``"simnpo"``. Default 0.0 (both configs above).
        rmu_layer: Layer whose residual stream ``objective="rmu"`` steers (Li et al. 2024);
            ``None``: the last layer of the mask.
        rmu_steering_coef: RMU's ``c``, the norm of the forget activations' target. Default
            20: the default of the reference code (centerforaisafety/wmdp ``rmu/unlearn.py``;
            the released Zephyr-7B model used 6.5). The right value depends on the model's
            activation norms at ``rmu_layer``: tune it, or set ``rmu_adaptive_scale``.
        rmu_adaptive_scale: Adaptive RMU's ``beta`` (Dang et al. 2025, "On effects of steering
            latent representation for large language model unlearning"): ``c = beta x`` the
            original model's mean activation norm at ``rmu_layer`` over the forget prompts'
            tokens, so the target scales with the model instead of being a fixed number
            (``rmu_steering_coef`` is then ignored). ``None`` (default): plain RMU. The
            authors' default is 5.
        rmu_alpha: Weight of RMU's retain activation loss (multiplied by ``l_retain``).
            Default 100: the reference code's default (1200 for the released Zephyr-7B model).
        checkpoint: Recompute each transformer block's activations in the backward pass
            instead of keeping them (:func:`factlens.memory.checkpointed_blocks`): the same
            gradients and edit (bitwise on CPU), a lower peak memory, about one more forward
            pass per step. Masked fine-tuning only. Off by default here: on Gemma 3 270M (FLU, 32
            facts) it lowered the edit's peak from 4.21 to 3.79 GB for 36 % more CPU time. The
            runner's CPU preset turns it on for real models: there the non-localized unit's edit
            set the main job's peak (5.07 -> 4.72 GB for 18 % more of its CPU time;
            docs/performance.md).
        methods: Settings of the edit methods that have their own config type
            (``EditMethod.config_type`` in :data:`~factlens.editing.registry.EDIT_METHODS`:
            ``"rome"`` -> :class:`~factlens.editing.rome.RomeConfig`, ``"memit"`` ->
            :class:`~factlens.editing.memit.MemitConfig`): method name -> a table of its fields.
            Fields left out take the method's defaults; :meth:`method_config` builds the typed
            config. In the runner: ``--edit methods.rome.v_num_grad_steps=10``. A table under
            the name of an edit method that is not registered (one of your own, passed to
            :func:`~factlens.edit` as an entry) is checked when ``edit`` runs that method.
        objectives: Settings of the training objectives that declare a config type
            (``Objective.config_type``; the built-in ones read the fields above, ``npo_beta``,
            ``rmu_layer``...): objective name -> a table of its fields, built by
            :meth:`objective_config` and passed to the objective's ``prepare`` as
            ``settings=``. In the runner: ``--edit objectives.<name>.<field>=...``.

    Example:
        >>> c = EditConfig(lr=1e-4).replace(steps=10)
        >>> (c.lr, c.steps, c.grad_accum), EditConfig.from_dict(c.to_dict()) == c
        ((0.0001, 10, 16), True)
    """

    lr: float = 1e-5
    steps: int = 50
    batch_size: int | None = 4
    grad_accum: int = 16
    l_forget: float = 1.0
    l_retain: float = 1.0
    l_sft: float = 1.0
    weight_decay: float = 0.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    clip_grad: float | None = 1.0
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    sft_source: str | None = None
    sft_seq_len: int = 64
    n_sft_chunks: int = 32
    sft_batch_size: int | None = None
    sft_positions: int | None = 16
    train_format: str = "default"
    seed: int = 0
    npo_beta: float = 0.1
    simnpo_beta: float = 2.5
    simnpo_gamma: float = 0.0
    rmu_layer: int | None = None
    rmu_steering_coef: float = 20.0
    rmu_adaptive_scale: float | None = None
    rmu_alpha: float = 100.0
    checkpoint: bool = False
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    objectives: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN passed every "< 0" check below
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        for name in ("batch_size", "sft_batch_size", "sft_positions"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        for name in ("l_forget", "l_retain", "l_sft", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0 or None, got {self.clip_grad}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.sft_seq_len < 2 or self.n_sft_chunks < 1:
            raise ValueError(f"sft_seq_len must be >= 2 and n_sft_chunks >= 1, got {self.sft_seq_len}, {self.n_sft_chunks}")
        for name in ("npo_beta", "simnpo_beta", "rmu_steering_coef"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not math.isfinite(self.simnpo_gamma):
            raise ValueError(f"simnpo_gamma must be finite, got {self.simnpo_gamma}")
        if not (self.rmu_alpha >= 0 and math.isfinite(self.rmu_alpha)):
            raise ValueError(f"rmu_alpha must be a finite number >= 0, got {self.rmu_alpha}")
        if self.rmu_adaptive_scale is not None and not (self.rmu_adaptive_scale > 0
                                                        and math.isfinite(self.rmu_adaptive_scale)):
            raise ValueError(f"rmu_adaptive_scale must be a finite number > 0 or None (plain RMU), "
                             f"got {self.rmu_adaptive_scale}")
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise ValueError(f"rmu_layer must be >= 0 or None (the mask's last layer), got {self.rmu_layer}")
        object.__setattr__(self, "methods", _ReadOnlyTable(self._tables("methods")))
        object.__setattr__(self, "objectives", _ReadOnlyTable(self._tables("objectives")))

    def _tables(self, field_name: str) -> dict[str, dict[str, Any]]:
        """``methods`` / ``objectives`` as read-only tables (a copy, lists as tuples, so that a
        saved config loads back equal and a frozen config cannot be changed in place); those of
        registered entries are checked by building their typed config (others when ``edit`` runs them)."""
        from factlens.editing.registry import EDIT_METHODS, OBJECTIVES

        given, registry = getattr(self, field_name), (EDIT_METHODS if field_name == "methods" else OBJECTIVES)
        if not isinstance(given, Mapping):
            raise TypeError(f"EditConfig.{field_name} must map {registry.kind} names to settings, got {given!r}")
        tables: dict[str, dict[str, Any]] = {}
        for name, value in given.items():
            if hasattr(value, "to_dict") and not isinstance(value, Mapping):
                value = value.to_dict()
            if not isinstance(value, Mapping):
                raise TypeError(f"EditConfig.{field_name}[{name!r}] must be a table of the {registry.kind}'s settings, "
                                f"got {type(value).__name__}: {value!r}")
            tables[str(name)] = _read_only({str(k): v for k, v in value.items()})
            if str(name) in registry:
                _typed(_settings_type(registry.get(str(name)), field_name), tables[str(name)],
                       f"EditConfig.{field_name}[{name!r}]")
        return tables

    def objective_config(self, objective):
        """The typed settings of training objective ``objective`` (a name or an ``Objective``
        entry): its config type's defaults, then its table in :attr:`objectives`.

        Raises:
            ValueError: The objective declares no settings of its own, or its table has an
                unknown field.
        """
        from factlens.editing.registry import OBJECTIVES

        entry = OBJECTIVES.get(objective)
        return _typed(_settings_type(entry, "objectives"), self.objectives.get(entry.name, {}),
                      f"EditConfig.objectives[{entry.name!r}]")

    def check_tables(self, method, objective) -> None:
        """Refuse tables of entries that are neither registered nor the ones ``edit`` runs (a
        misspelt name), and check the tables of the method and objective of your own it runs
        (``None``: every table must name a registered entry).

        Raises:
            ValueError: Such a table, or a field the entry's settings do not have.
        """
        from factlens.editing.registry import EDIT_METHODS, OBJECTIVES

        for field_name, registry, used in (("methods", EDIT_METHODS, method), ("objectives", OBJECTIVES, objective)):
            tables, name = getattr(self, field_name), getattr(used, "name", used)
            stray = sorted(n for n in tables if n not in registry and n != name)
            if stray:
                runs = f" nor the one this edit runs ({name!r})" if name is not None else ""
                raise ValueError(f"EditConfig.{field_name} has settings for {stray}, which is neither a registered "
                                 f"{registry.kind} {list(registry.names())}{runs}: a misspelt name?")
            if name in tables and name not in registry:  # an entry of your own: its table is checked now
                _typed(_settings_type(used, field_name), tables[name], f"EditConfig.{field_name}[{name!r}]")

    def method_config(self, method):
        """The typed settings of edit method ``method`` (a name or an ``EditMethod`` entry): its
        defaults, then ``sft_source`` (as the key-covariance text) and ``seed``, then its table
        in :attr:`methods` (under the method's name).

        Raises:
            ValueError: ``method`` is not registered or has no settings of its own (the message
                lists the methods that do), or its table has an unknown field.

        Example:
            >>> EditConfig(methods={"rome": {"v_num_grad_steps": 5}}).method_config("rome").v_num_grad_steps
            5
        """
        cls = _method_config_type(method)
        if hasattr(cls, "from_edit_config"):  # ROME's and MEMIT's also read sft_source and seed
            return cls.from_edit_config(self)
        name = getattr(method, "name", method)
        return _typed(cls, self.methods.get(name, {}), f"EditConfig.methods[{name!r}]")

    @classmethod
    def fast(cls, **overrides: Any) -> "EditConfig":
        """A CPU-friendly preset: 20 steps of 16 forget + 16 retain examples, no accumulation.

        Tuned on Gemma 3 270M (Sports-Athlete-Editing, 16 facts, 2 CPU cores) so that the edit
        completes within the 20 steps. How many held-out facts it keeps depends on the retain
        pool more than on any other setting: keep the pool large (every other known fact); a
        small pool or a higher ``lr`` loses more of them. The SFT term uses 4 chunks per step.
        Measurements (accuracy, time, seed variance, the settings tried): docs/editing.md,
        "The CPU preset on Gemma 3 270M".
        """
        base = dict(lr=1e-4, steps=20, batch_size=16, grad_accum=1, sft_batch_size=4, n_sft_chunks=16, sft_positions=16)
        base.update(overrides)
        return cls(**base)


def _typed(cls, table: Mapping[str, Any], where: str):
    """``cls`` built from ``table`` (a :class:`~factlens.config.ConfigBase`, or ROME's and MEMIT's
    settings with their own ``_from_table``); an unknown field is an error naming ``where``."""
    if hasattr(cls, "_from_table"):
        return cls._from_table(dict(table), where=where)
    return cls._build(cls.normalize(dict(table), where=where), where=where)


def _settings_type(entry, field_name: str):
    """The config type an edit method's or objective's entry declares; a clear error when none."""
    from factlens.registry import load

    if getattr(entry, "config_type", None) is None:
        own = ("EditConfig's own fields (npo_beta, rmu_layer...)" if field_name == "objectives"
               else "EditConfig's own fields")
        raise ValueError(f"{entry.name!r} takes its settings from {own}, not from EditConfig.{field_name}; give its "
                         "entry a config_type to have settings of its own")
    kind = "objective" if field_name == "objectives" else "edit method"
    return _settings_class(load(entry.config_type), where=f"{kind} {entry.name!r}")


def _method_config_type(method):
    """The config type that edit method ``method`` (a name in ``EDIT_METHODS`` or an
    :class:`~factlens.editing.registry.EditMethod`) declares; a clear error when it has none."""
    from factlens.editing.registry import EDIT_METHODS
    from factlens.registry import load

    with_settings = sorted(m.name for m in EDIT_METHODS if m.config_type is not None)
    if isinstance(method, str) and method not in EDIT_METHODS:
        raise ValueError(f"EditConfig.methods: unknown edit method {method!r}; methods with settings: {with_settings}")
    entry = EDIT_METHODS.get(method)
    name = entry.name
    if entry.config_type is None:
        raise ValueError(f"edit method {name!r} takes its settings from EditConfig's own fields, not from "
                         f"EditConfig.methods; methods with settings there: {with_settings}")
    return _settings_class(load(entry.config_type), where=f"edit method {name!r}")


def _settings_class(value: Any, *, where: str):
    """``value`` if it can be an edit method's or objective's ``config_type`` (a
    :class:`~factlens.config.ConfigBase` dataclass, or ROME's, MEMIT's and AlphaEdit's settings), else a
    ``TypeError`` naming ``where`` (the entry): a plain dataclass failed when its table was first
    built, inside the edit, with ``AttributeError: ... has no attribute '_build'``."""
    from factlens.editing.memory_editing import EditorConfigMixin

    if isinstance(value, type) and issubclass(value, EditorConfigMixin):
        return value
    return check_config_type(value, where=where)


class _ReadOnlyTable(dict):
    """A ``dict`` that refuses changes: the ``methods`` / ``objectives`` tables of a frozen
    :class:`EditConfig` (changed in place, they changed the settings an :class:`EditResult`
    records after the edit, without validation), and, named by ``where``, the option tables of
    ``EvalConfig`` and ``RunConfig`` (:func:`factlens.evaluation.config.read_only_table`). JSON
    and pickle see a plain ``dict``."""

    def __init__(self, values: Mapping[str, Any] = MappingProxyType({}), where: str | None = None) -> None:
        super().__init__(values)
        self._where = where

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        if self._where is None:
            raise TypeError("EditConfig's methods/objectives tables are read-only (the config is frozen); build a new "
                            "config instead, e.g. config.replace(methods={**config.methods, 'rome': {...}})")
        field_name = self._where.rpartition(".")[2]
        raise TypeError(f"{self._where} is read-only (the config is frozen); build a new config instead, e.g. "
                        f"config.replace({field_name}={{**config.{field_name}, ...}})")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return (type(self), (dict(self), self._where))


def _read_only(value: Any, where: str | None = None) -> Any:
    """A deep copy of ``value`` with every mapping as a :class:`_ReadOnlyTable` (naming ``where``
    when it refuses a change) and every list or tuple as a tuple (JSON gives lists back: both load
    as the same tuple)."""
    if isinstance(value, Mapping):
        return _ReadOnlyTable({k: _read_only(v, where) for k, v in value.items()}, where)
    if isinstance(value, (list, tuple)):
        return tuple(_read_only(v, where) for v in value)
    return copy.deepcopy(value)
