"""Evaluation settings: one frozen, serializable dataclass shared by every suite."""

from __future__ import annotations

from dataclasses import dataclass

from factlens.config import ConfigBase

__all__ = ["EvalConfig"]

_TUPLE_FIELDS = ("formats", "probe_layers")


@dataclass(frozen=True)
class EvalConfig(ConfigBase):
    """Settings of :func:`factlens.evaluate`.

    Attributes:
        seed: Seed of everything random (multiple-choice option order, text and MMLU
            sampling, relearning and soft-prompt initialisation).
        batch_size: Prompts per forward pass.
        formats: Prompt formats of the ``formats`` suite (``None``: every format the task's
            facts have, except ``"default"`` which the ``standard`` suite covers).
        n_shots: Solved in-context examples in multiple-choice prompts.
        text_source: General text for the side-effect suite: a local ``.txt`` file (e.g.
            ``"../shared/data/wikitext2/test.txt"``), a Hugging Face dataset name
            (``"name"`` or ``"name:config"``), or ``None`` for the built-in general text.
        n_text_chunks: Number of text chunks for next-token accuracy / loss / KL.
        text_seq_len: Tokens per text chunk (BOS included).
        text_batch_size: Text chunks per forward pass (the logits of one chunk at a time are
            materialized, so keep it small for 262k-token vocabularies).
        mmlu_source: A folder of MMLU CSVs (e.g. ``"../shared/data/mmlu/dev"``) or a
            datasets name (``"cais/mmlu:all"``, ``"tinyBenchmarks/tinyMMLU"``); ``None``
            skips MMLU (with a note in the result).
        n_mmlu: Number of MMLU questions (stratified over subjects; ``None``: all).
        mmlu_n_shots: Solved same-subject examples in each MMLU prompt.
        relearn_steps: Optimizer steps of the relearning attack.
        relearn_rank: LoRA rank of the relearning attack.
        relearn_lr: Learning rate of the relearning attack. Measured on Gemma 3 270M (main
            job, 10 steps): 1e-4 brings the held-out half of a 16-athlete FLU edit from 0/8 back
            to 4/8 true answers. On the planted test model (weights of order 1-10) 1e-4 moves
            nothing in 20 steps; use ~1e-3 there.
        relearn_batch_size: Facts per relearning step.
        soft_prompt_len: Tokens of the adversarial soft prompt.
        soft_prompt_steps: Optimization steps of each soft prompt.
        soft_prompt_lr: Learning rate of the soft prompt.
        soft_prompt_seeds: Independent soft-prompt runs.
        soft_prompt_max_norm: Norm bound of each soft-prompt vector (``None``: the mean
            token-embedding norm).
        soft_prompt_position: ``"append"`` (after the prompt; the answer is read at the last
            soft vector) or ``"prepend"`` (after BOS, before the prompt; the answer is read
            at the prompt's last token, as in prompt tuning).
        probe_layers: Layers probed (``None``: all).
        probe_C: Inverse regularization strength of the logistic-regression probes.

    Example:
        >>> cfg = EvalConfig(n_text_chunks=4)
        >>> EvalConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.replace(formats=["mcq"]).formats
        ('mcq',)
    """

    seed: int = 0
    batch_size: int = 16
    formats: tuple[str, ...] | None = None
    n_shots: int = 2
    text_source: str | None = None
    n_text_chunks: int = 16
    text_seq_len: int = 64
    text_batch_size: int = 4
    mmlu_source: str | None = None
    n_mmlu: int | None = 57
    mmlu_n_shots: int = 0
    relearn_steps: int = 20
    relearn_rank: int = 512
    relearn_lr: float = 1e-4
    relearn_batch_size: int = 8
    soft_prompt_len: int = 15
    soft_prompt_steps: int = 50
    soft_prompt_lr: float = 1e-2
    soft_prompt_seeds: int = 3
    soft_prompt_max_norm: float | None = None
    soft_prompt_position: str = "append"
    probe_layers: tuple[int, ...] | None = None
    probe_C: float = 1.0

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                if isinstance(v, (str, int)):
                    v = (v,)
                object.__setattr__(self, name, tuple(v))
        if self.text_source is not None and not isinstance(self.text_source, str):
            object.__setattr__(self, "text_source", str(self.text_source))
        if self.mmlu_source is not None and not isinstance(self.mmlu_source, str):
            object.__setattr__(self, "mmlu_source", str(self.mmlu_source))
        positive = ("batch_size", "n_text_chunks", "text_seq_len", "text_batch_size", "relearn_batch_size",
                    "soft_prompt_len", "soft_prompt_seeds")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EvalConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("n_shots", "mmlu_n_shots", "relearn_steps", "soft_prompt_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"EvalConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.soft_prompt_position not in ("append", "prepend"):
            raise ValueError(f"EvalConfig.soft_prompt_position must be 'append' or 'prepend', got {self.soft_prompt_position!r}")
        if self.text_seq_len < 2:
            raise ValueError(f"EvalConfig.text_seq_len must be >= 2 (BOS + one token), got {self.text_seq_len}")
        if self.n_mmlu is not None and self.n_mmlu < 1:
            raise ValueError(f"EvalConfig.n_mmlu must be >= 1 or None (all questions), got {self.n_mmlu}")
        if self.formats is not None:
            from factlens.data.formats import FORMATS

            bad = [f for f in self.formats if f not in FORMATS]
            if bad:
                raise ValueError(f"EvalConfig.formats has unknown formats {bad}; known formats: {sorted(FORMATS)}")

