"""Fine-tuning on data without the evaluated facts (Lucki et al. 2024; Deeb & Roger 2024).

Lucki et al. ("An adversarial perspective on machine unlearning") recovered most of what
RMU removed with a few fine-tuning steps on *unrelated* examples; Deeb & Roger found that
fine-tuning on facts the attacker already knows brings back most of the pre-unlearning
accuracy. An edit that only suppresses the facts (rather than removing them) is undone by
any update that disturbs the suppression, whatever the data.

The attack fine-tunes a copy of the model for ``steps`` steps on data that contains none of
the facts it is scored on (forget and maintain), one run per data source:

* ``"retain"``: the true answers of ``task.retain`` (facts the attacker knows; any retain
  fact whose id or subject is a forget or maintain fact's is dropped first);
* ``"text"``: next-token loss on general text (``EvalConfig.text``, the built-in text
  by default; passages that name a forget or maintain subject are dropped), read at
  :data:`TEXT_POSITIONS` (16) evenly spaced positions of each chunk, not at every token (62 of
  the default 64-token chunks could be; ``extra["budget"]["text_positions"]``). Until
  2026-12-04 only forget subjects were left out, so the data could teach the maintain facts
  back and hide damage there.

then measures forget / edit / maintain accuracy. The unedited model fine-tuned the same
way (same data, steps, seed) is the control: its accuracy drop flags an attack that damages
the model (:func:`~factlens.evaluation.attacks.attack_damage`).

``method="lora"`` trains LoRA adapters on every weight matrix of the blocks
(:func:`~factlens.evaluation.lora.add_lora`, as the relearning suite) on a structural copy
that shares the model's weights; ``method="full"`` trains every block parameter of a copy
whose block parameters are new tensors (one extra copy of those weights, plus AdamW
state). For a bf16 or fp16 model, AdamW steps float32 copies of those parameters and the copy
gets their rounded values, as the editor does
(:func:`~factlens.editing.training.half_precision_masters`; float32 models are stepped as
before, bitwise). Until 2026-12-06 AdamW stepped the half-precision weights: in fp16 its eps is
0 and the first step gave NaN weights; in bf16 every step's update smaller than half a rounding
step was dropped, so small updates never added up (planted model, lr 3e-5, 10 steps: the bf16
update was 0.68 of the float32 update's norm away from it, 0.10 with the float32 copies). The
caller's model is never changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from factlens.config import ConfigBase, check_numbers
from factlens.editing.training import half_precision_masters, optimized_tensors, with_gradients
from factlens.evaluation.attacks import (DAMAGE_TOLERANCE, TaskScores, attack_damage, attack_metrics, fact_rows,
                                       outcome_columns, score_task, before_columns, scores_before, suite_settings, task_key)
from factlens.evaluation.baseline_cache import BaselineCache, arrays_key, bound, cached, config_key, facts_key
from factlens.evaluation.result import Metric, SuiteResult
from factlens.progress_bars import progress_bar

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests UnrelatedFinetuneConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["UnrelatedFinetuneConfig", "DATA_SOURCES", "TEXT_POSITIONS", "finetune_data", "finetuned_copy", "run_unrelated_finetune"]

#: Data sources of the attack.
DATA_SOURCES: tuple[str, ...] = ("retain", "text")

#: Evenly spaced positions per text chunk at which the ``"text"`` run's next-token loss is read
#: (:func:`~factlens.editing.losses.sft_positions`; every position when a chunk has fewer).
TEXT_POSITIONS: int = 16


@dataclass(frozen=True)
class UnrelatedFinetuneConfig(ConfigBase):
    """Settings of the ``unrelated_finetune`` suite (``EvalConfig.unrelated_finetune``).

    Attributes:
        data: Data sources (:data:`DATA_SOURCES`), one fine-tuning run each.
        method: ``"lora"`` (adapters on the blocks' weight matrices) or ``"full"`` (every
            block parameter).
        steps: Optimizer steps (AdamW, no weight decay).
        lr: Learning rate. Not tuned on a real model; the relearning suite's measured value
            on Gemma 3 270M is 1e-4 (``EvalConfig.relearning.lr``); the planted test model
            needs ~1e-2 to move at all.
        rank: LoRA rank (capped at each matrix's rank).
        batch_size: Retain facts per step.
        text_batch_size: Text chunks per step of the ``"text"`` run (before 2026-12-03 this was
            ``EvalConfig.text.batch_size``, documented as a forward-pass size; run folders of
            then resume with that value).
        damage_tolerance: See :func:`~factlens.evaluation.attacks.attack_damage`.
        lora_forward: ``"factored"`` or ``"merged"``, as ``RelearningConfig.lora_forward``
            (the same fine-tuning up to float rounding; factored keeps no copy of the adapted
            weights per step).
    """

    data: tuple[str, ...] = DATA_SOURCES
    method: str = "lora"
    steps: int = 20
    lr: float = 1e-4
    rank: int = 64
    batch_size: int = 8
    text_batch_size: int = 4
    damage_tolerance: float = DAMAGE_TOLERANCE
    lora_forward: str = "factored"

    def __post_init__(self) -> None:
        from factlens.evaluation.lora import LORA_FORWARDS

        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        if self.lora_forward not in LORA_FORWARDS:
            raise ValueError(f"UnrelatedFinetuneConfig.lora_forward must be one of {list(LORA_FORWARDS)}, "
                             f"got {self.lora_forward!r}")
        v = self.data
        object.__setattr__(self, "data", (v,) if isinstance(v, str) else tuple(v))
        if not self.data or any(d not in DATA_SOURCES for d in self.data) or len(set(self.data)) < len(self.data):
            raise ValueError(f"UnrelatedFinetuneConfig.data must be a non-empty subset of {list(DATA_SOURCES)}, each "
                             f"named once (a repeat gives duplicate metric names), got {self.data}")
        if self.method not in ("lora", "full"):
            raise ValueError(f"UnrelatedFinetuneConfig.method must be 'lora' or 'full', got {self.method!r}")
        for name in ("steps", "rank", "batch_size", "text_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"UnrelatedFinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"UnrelatedFinetuneConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.damage_tolerance <= 1:
            raise ValueError(f"UnrelatedFinetuneConfig.damage_tolerance must be in [0, 1], got {self.damage_tolerance}")


def finetune_data(model, task, source: str, config: EvalConfig) -> tuple[Any, dict[str, Any]]:
    """The training data of one source, free of the facts the attack is scored on (forget and
    maintain: a passage or retain fact naming a maintain subject could teach it back and hide
    the damage the attack does there, as in the relearning suite), and a note on what was dropped.

    Returns ``(data, info)``: ``data`` is a ``FactDataset`` (``"retain"``) or a ``[n, seq_len]``
    token tensor (``"text"``); ``info`` counts the items kept and dropped.

    Raises:
        ValueError: Unknown source, or nothing is left to train on.
    """
    from factlens.data.text import load_texts, passages_without, token_chunks
    from factlens.evaluation.relearning import retain_not_about_scored

    subjects = {r.subject for r in (*task.forget, *task.maintain)}
    if source == "retain":
        data = retain_not_about_scored(task)
        info = {"n_train": len(data), "n_dropped": len(task.retain) - len(data)}
        if not len(data):
            raise ValueError("task.retain has no fact that is not a forget or maintain fact (or about their subjects): "
                             "nothing to fine-tune on; use UnrelatedFinetuneConfig(data=('text',))")
        return data, info
    if source == "text":
        text = config.text
        texts = load_texts(text.source, seed=config.seed)
        kept = passages_without(texts, sorted(subjects))
        if not kept:
            raise ValueError(f"every passage of the text {text.source or 'builtin'!r} names a subject of the evaluated "
                             f"(forget or maintain) facts, so nothing is left to fine-tune on; give other text "
                             "(--text-source) or fine-tune on the retain facts (UnrelatedFinetuneConfig(data=('retain',)))")
        chunks = token_chunks(model, kept, seq_len=text.seq_len, n_chunks=text.n_chunks)
        return chunks, {"n_train": int(chunks.shape[0]), "n_dropped_passages": len(texts) - len(kept),
                        "source": text.source or "builtin"}
    raise ValueError(f"unknown data source {source!r}; known: {list(DATA_SOURCES)}")


def _trainable_copy(model, method: str, rank: int, seed: int,
                    lora_forward: str = "factored") -> tuple[Any, list[nn.Parameter], Callable[[], None]]:
    from factlens.evaluation.lora import add_lora
    from factlens.evaluation.relearning import shared_copy

    work = shared_copy(model)
    work.eval()
    if method == "lora":
        lora = add_lora(work, rank=rank, seed=seed, forward=lora_forward)
        return work, lora.parameters(), lora.remove
    modules = dict(work.named_modules())
    trainable = []
    for name, p in list(work.named_parameters()):
        if name.split(".")[0] == "blocks":
            mod, _, attr = name.rpartition(".")
            q = nn.Parameter(p.detach().clone(), requires_grad=True)  # a new tensor: the model's weights stay untouched
            setattr(modules[mod], attr, q)
            trainable.append(q)
    return work, trainable, lambda: None


@with_gradients  # also under a notebook's torch.inference_mode(): enable_grad alone does not leave it
def finetuned_copy(model, data, *, settings: UnrelatedFinetuneConfig, config: EvalConfig):
    """Fine-tune a copy of ``model`` on ``data`` (a FactDataset: true answers; a token tensor: next tokens).

    Returns ``(copy, cleanup, history)``: evaluate the copy (inside
    ``torch.nn.utils.parametrize.cached()`` for speed with LoRA), then call ``cleanup()``.
    ``history`` is the loss per step. ``model`` is not changed. The text loss is read at
    :data:`TEXT_POSITIONS` positions per chunk. Half-precision (bf16/fp16) trained parameters are
    stepped as float32 masters whose rounded values the copy gets (float32 models: no masters,
    the same steps as without them).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> work, cleanup, hist = finetuned_copy(p.model, p.task.retain, settings=UnrelatedFinetuneConfig(steps=2),
        ...                                      config=EvalConfig())
        >>> len(hist), work is not p.model
        (2, True)
        >>> cleanup()
    """
    from factlens.editing.losses import answer_logprob_grad, sft_loss, sft_positions

    work, trainable, cleanup = _trainable_copy(model, settings.method, settings.rank, config.seed, settings.lora_forward)
    named = {str(i): p for i, p in enumerate(trainable)}
    master = half_precision_masters(named)  # bf16/fp16 block parameters of method="full"; empty for float32
    opt = torch.optim.AdamW(optimized_tensors(named, master), lr=settings.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    is_text = isinstance(data, torch.Tensor)
    n = int(data.shape[0]) if is_text else len(data)
    bs = min(settings.text_batch_size if is_text else settings.batch_size, n)
    positions = sft_positions(int(data.shape[1]), TEXT_POSITIONS, kl=False) if is_text else None
    order: list[int] = []
    history: list[float] = []
    try:
        with torch.enable_grad():
            for _ in progress_bar(range(settings.steps), desc="fine-tuning", leave=False):
                if len(order) < bs:
                    order += torch.randperm(n, generator=gen).tolist()
                idx, order = order[:bs], order[bs:]
                with parametrize.cached():
                    if is_text:
                        loss = sft_loss(work, data[torch.tensor(idx, device=data.device)], positions)
                    else:
                        recs = [data[i] for i in idx]
                        loss = -answer_logprob_grad(work, [r.prompt for r in recs], [r.answer for r in recs]).mean()
                    grads = torch.autograd.grad(loss, trainable)
                for (i, p), g in zip(named.items(), grads):
                    if i in master:
                        master[i].grad = g.float()
                    else:
                        p.grad = g
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for i, w in master.items():
                        named[i].copy_(w)  # rounded to the model's dtype; the master keeps what rounding drops
                history.append(float(loss.detach()))
    except BaseException:
        cleanup()
        raise
    for p in trainable:
        p.requires_grad_(False)
    return work, cleanup, history


def _text_positions(config: EvalConfig) -> int:
    """Positions per chunk at which the ``"text"`` run reads its next-token loss (at most
    :data:`TEXT_POSITIONS`; a chunk of ``seq_len`` tokens has ``seq_len - 2`` with a next token)."""
    from factlens.editing.losses import sft_positions

    return int(sft_positions(config.text.seq_len, TEXT_POSITIONS, kl=False).numel())


def _data_key(data) -> tuple | str:
    """A hashable key of the training data itself, for the cache key of the fine-tuned original.

    The data is not fixed by the task's forget and maintain facts (what
    :func:`~factlens.evaluation.attacks.task_key` covers): ``"retain"`` trains on the retain
    facts, so two tasks that differ only in ``retain`` train the original differently. A
    ``FactDataset`` is keyed by its facts (:func:`~factlens.evaluation.baseline_cache.facts_key`),
    a token tensor by a SHA-256 digest of its shape and token ids
    (:func:`~factlens.evaluation.baseline_cache.arrays_key`).
    """
    if isinstance(data, torch.Tensor):
        return arrays_key({"tokens": data.detach().to("cpu", torch.int64)})
    return facts_key(data)


def _attack(model, task, data, settings: UnrelatedFinetuneConfig, config: EvalConfig) -> tuple[TaskScores, list[float]]:
    work, cleanup, history = finetuned_copy(model, data, settings=settings, config=config)
    try:
        with parametrize.cached():
            return score_task(work, task, config), history
    finally:
        cleanup()
        del work


def run_unrelated_finetune(model, task, *, original=None, config: EvalConfig | None = None,
                           baselines: BaselineCache | None = None,
                           unrelated_finetune_config: UnrelatedFinetuneConfig | None = None) -> SuiteResult:
    """Fine-tune the edited model and the original on data without the evaluated facts; compare.

    Args:
        model: The evaluated (edited) model; not changed.
        task: The task (``retain`` is the fact data; forget and maintain facts are scored).
        original: The unedited model, fine-tuned the same way (baselines, damage flags).
        config: Evaluation settings (``seed``, ``batch_size``, text settings for ``"text"``).
        baselines: Cache of computations on ``original``. The fine-tuned original is keyed by
            the data it was trained on (the kept retain facts, or the text chunks) as well as
            the task and settings, so tasks that differ only in ``retain`` never share it.
        unrelated_finetune_config: The suite's settings (default: ``config.unrelated_finetune``).

    Returns:
        Per data source ``d``: ``finetune_<d>_forget_accuracy``, ``finetune_<d>_forget_recovery``
        (after minus before per fact), ``finetune_<d>_edit_accuracy``,
        ``finetune_<d>_maintain_accuracy``, each with the fine-tuned original as baseline.
        ``extra["data"][d]``: loss history, data counts, recovery and ``attack_damage``;
        ``extra["damaged"]`` lists flagged sources; ``extra["budget"]`` the attack budget
        (``text_positions``: positions per chunk the text loss reads, ``None`` without ``"text"``);
        ``extra["at_chance_bar"]`` per split which check set the at-chance flag
        (:meth:`~factlens.evaluation.attacks.TaskScores.chance_flags`). One per-fact row per
        forget and maintain fact.
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    t0 = time.perf_counter()
    from factlens.evaluation.config import or_default

    config = or_default(config)
    st = suite_settings(config, "unrelated_finetune", UnrelatedFinetuneConfig, unrelated_finetune_config)
    before, base_before = scores_before(model, task, config, original=original, baselines=baselines)
    metrics: list[Metric] = []
    columns = before_columns(before)
    per_data: dict[str, Any] = {}
    for source in st.data:
        data, info = finetune_data(model, task, source, config)
        t1 = time.perf_counter()
        attacked, history = _attack(model, task, data, st, config)
        seconds = time.perf_counter() - t1
        base = base_hist = None
        if original is not None:
            key = ("unrelated_finetune", source, config_key(st), config_key(config), task_key(task, config),
                   _data_key(data))
            base, base_hist = (attacked, history) if original is model else cached(
                baselines, key, lambda: _attack(original, task, data, st, config))
        pre = f"finetune_{source}"
        metrics += attack_metrics(pre, attacked, before, base_attacked=base, base_before=base_before)
        columns.update(outcome_columns(pre, attacked, base))
        per_data[source] = {
            **info, "history": history, "baseline_history": base_hist, "seconds": seconds,
            "recovery": attacked.accuracy("forget") - before.accuracy("forget"),
            "baseline_recovery": base.accuracy("forget") - base_before.accuracy("forget") if base else None,
            "attack_damage": attack_damage(base_before, base, tolerance=st.damage_tolerance),
        }
    extra: dict[str, Any] = {
        "settings": st.to_dict(), "data": per_data,
        "budget": {"method": st.method, "steps": st.steps, "lr": st.lr, "rank": st.rank if st.method == "lora" else None,
                   "batch_size": st.batch_size, "text_batch_size": st.text_batch_size, "lora_forward": st.lora_forward if st.method == "lora" else None,
                   "text_positions": _text_positions(config) if "text" in st.data else None},
        "damaged": [d for d, v in per_data.items() if v["attack_damage"].get("damaged")],
        "at_chance_bar": base_before.chance_flags()[1] if base_before is not None else None,
        "note": ("baselines: the unedited model fine-tuned the same way; recovery = forget accuracy after fine-tuning "
                 "minus before"),
    }
    if original is None:
        extra["baseline_note"] = "original=None: the fine-tuned original (control) was not evaluated"
    return SuiteResult("unrelated_finetune", tuple(metrics), tuple(fact_rows(task, columns)), extra,
                       time.perf_counter() - t0)
