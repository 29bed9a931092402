"""Evaluation settings: one frozen, serializable :class:`EvalConfig` with a nested section per suite.

The settings every suite shares (``seed``, ``batch_size``, ``n_shots``, the general text
``text``) are fields of :class:`EvalConfig`; each suite's own settings are one frozen
config defined in (owned by) the suite's module and nested here under the suite's name:

============================  ==============================================================
``EvalConfig.<field>``        type (module)
============================  ==============================================================
``text``                      :class:`TextConfig` (here: read by ``side_effects``,
                              ``relearning`` and ``unrelated_finetune``)
``formats``                   :class:`~factlens.evaluation.formats.FormatsConfig`
``side_effects``              :class:`~factlens.evaluation.side_effects.SideEffectsConfig`
``relearning``                :class:`~factlens.evaluation.relearning.RelearningConfig`
``probes``                    :class:`~factlens.evaluation.probes.ProbesConfig`
``soft_prompts``              :class:`~factlens.evaluation.soft_prompts.SoftPromptsConfig`
``quantization``              :class:`~factlens.evaluation.quantization.QuantizationConfig`
``update_size``               :class:`~factlens.evaluation.update_size.UpdateSizeConfig`
``unrelated_finetune``        :class:`~factlens.evaluation.unrelated_finetune.UnrelatedFinetuneConfig`
``direction_ablation``        :class:`~factlens.evaluation.direction_ablation.DirectionAblationConfig`
============================  ==============================================================

(``standard`` and ``mechanisms`` have no settings of their own.) All of them are
:class:`~factlens.config.ConfigBase` configs: ``to_dict`` / ``from_dict`` round-trip the
nested tables, and an unknown key at any level is an error that lists the valid ones.

The flat names of older versions (``relearn_steps``, ``soft_prompt_len``, ``text_source``,
``mmlu_source``, ``probe_layers``...; see :data:`RENAMED`) are still read by
``EvalConfig.from_dict`` / ``override`` and by the runner's ``--eval`` options and run
configs, with a ``DeprecationWarning``: a run folder written by an older version resumes and
reports. Code passes the nested form: ``EvalConfig(relearning=RelearningConfig(steps=10))``
or ``EvalConfig(relearning={"steps": 10})``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from factlens.config import ConfigBase

# The suites' own settings live in the suite modules; these import EvalConfig only for type
# checking (and lazily where they build a default one), so importing them here is no cycle.
from factlens.evaluation.direction_ablation import DirectionAblationConfig
from factlens.evaluation.formats import FormatsConfig
from factlens.evaluation.probes import ProbesConfig
from factlens.evaluation.quantization import QuantizationConfig
from factlens.evaluation.relearning import RelearningConfig
from factlens.evaluation.side_effects import SideEffectsConfig
from factlens.evaluation.soft_prompts import SoftPromptsConfig
from factlens.evaluation.unrelated_finetune import UnrelatedFinetuneConfig
from factlens.evaluation.update_size import UpdateSizeConfig

__all__ = ["EvalConfig", "TextConfig", "RENAMED", "or_default"]

#: The flat ``EvalConfig`` keys of older versions -> where each lives now.
RENAMED: Mapping[str, str] = MappingProxyType({
    "formats": "formats.formats",
    "text_source": "text.source", "n_text_chunks": "text.n_chunks", "text_seq_len": "text.seq_len",
    "text_batch_size": "text.batch_size",
    "mmlu_source": "side_effects.mmlu_source", "n_mmlu": "side_effects.n_mmlu",
    "mmlu_n_shots": "side_effects.mmlu_n_shots",
    "relearn_steps": "relearning.steps", "relearn_rank": "relearning.rank", "relearn_lr": "relearning.lr",
    "relearn_batch_size": "relearning.batch_size",
    "soft_prompt_len": "soft_prompts.length", "soft_prompt_steps": "soft_prompts.steps",
    "soft_prompt_lr": "soft_prompts.lr", "soft_prompt_seeds": "soft_prompts.seeds",
    "soft_prompt_max_norm": "soft_prompts.max_norm", "soft_prompt_position": "soft_prompts.position",
    "probe_layers": "probes.layers", "probe_C": "probes.C",
})


@dataclass(frozen=True)
class TextConfig(ConfigBase):
    """General text of the evaluation (``EvalConfig.text``).

    Read by the ``side_effects`` suite (next-token accuracy / loss / KL), the ``relearning``
    attack (its SFT term) and the ``unrelated_finetune`` attack (its ``"text"`` data).

    Attributes:
        source: A local ``.txt`` file (e.g. ``"../shared/data/wikitext2/test.txt"``), a
            Hugging Face dataset name (``"name"`` or ``"name:config"``), or ``None`` for the
            built-in general text.
        n_chunks: Number of text chunks.
        seq_len: Tokens per chunk (BOS included).
        batch_size: Chunks per forward pass (the logits of one chunk at a time are
            materialized, so keep it small for 262k-token vocabularies).
    """

    source: str | None = None
    n_chunks: int = 16
    seq_len: int = 64
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.source is not None and not isinstance(self.source, str):
            object.__setattr__(self, "source", str(self.source))
        for name in ("n_chunks", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.seq_len < 2:
            raise ValueError(f"TextConfig.seq_len must be >= 2 (BOS + one token), got {self.seq_len}")


@dataclass(frozen=True)
class EvalConfig(ConfigBase):
    """Settings of :func:`factlens.evaluate` (see the module docstring for the sections).

    Attributes:
        seed: Seed of everything random (multiple-choice option order, text and MMLU
            sampling, relearning and soft-prompt initialisation).
        batch_size: Prompts per forward pass.
        n_shots: Solved in-context examples in multiple-choice prompts.
        text: General text (:class:`TextConfig`).
        formats: The ``formats`` suite (:class:`~factlens.evaluation.formats.FormatsConfig`).
        side_effects: The ``side_effects`` suite's MMLU
            (:class:`~factlens.evaluation.side_effects.SideEffectsConfig`).
        relearning: The relearning attack (:class:`~factlens.evaluation.relearning.RelearningConfig`).
        probes: The linear probes (:class:`~factlens.evaluation.probes.ProbesConfig`).
        soft_prompts: The soft-prompt attack (:class:`~factlens.evaluation.soft_prompts.SoftPromptsConfig`).
        quantization: :class:`~factlens.evaluation.quantization.QuantizationConfig`.
        update_size: :class:`~factlens.evaluation.update_size.UpdateSizeConfig`.
        unrelated_finetune: :class:`~factlens.evaluation.unrelated_finetune.UnrelatedFinetuneConfig`.
        direction_ablation: :class:`~factlens.evaluation.direction_ablation.DirectionAblationConfig`.

    Example:
        >>> cfg = EvalConfig(relearning=RelearningConfig(steps=10), text={"n_chunks": 4})
        >>> cfg.relearning.steps, cfg.text.n_chunks, cfg.relearning.rank
        (10, 4, 512)
        >>> EvalConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.override({"relearning.lr": 1e-3}).relearning
        RelearningConfig(steps=10, rank=512, lr=0.001, batch_size=8)
        >>> EvalConfig.from_dict({"relearning": {"stepz": 1}})
        Traceback (most recent call last):
        ...
        ValueError: unknown RelearningConfig fields ['stepz'] (in EvalConfig.relearning); valid fields: ['batch_size', 'lr', 'rank', 'steps']
    """

    _renamed = RENAMED

    seed: int = 0
    batch_size: int = 16
    n_shots: int = 2
    text: TextConfig = TextConfig()
    formats: FormatsConfig = FormatsConfig()
    side_effects: SideEffectsConfig = SideEffectsConfig()
    relearning: RelearningConfig = RelearningConfig()
    probes: ProbesConfig = ProbesConfig()
    soft_prompts: SoftPromptsConfig = SoftPromptsConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    update_size: UpdateSizeConfig = UpdateSizeConfig()
    unrelated_finetune: UnrelatedFinetuneConfig = UnrelatedFinetuneConfig()
    direction_ablation: DirectionAblationConfig = DirectionAblationConfig()

    def __post_init__(self) -> None:
        self._nest_tables()
        if int(self.batch_size) < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size!r}")
        if int(self.n_shots) < 0:
            raise ValueError(f"EvalConfig.n_shots must be >= 0, got {self.n_shots!r}")


def or_default(config: EvalConfig | None) -> EvalConfig:
    """``config``, or ``EvalConfig()`` for ``None`` (the default of every suite function)."""
    return EvalConfig() if config is None else config
