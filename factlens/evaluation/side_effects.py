"""The side-effects suite: did the edit damage the model beyond the edited facts?

Paper sections 3 and A.8: next-token accuracy and loss (mean cross-entropy) on general
text, the KL divergence ``KL(original || edited)`` of the next-token distributions on the
same text, and MMLU accuracy.

Text metrics are computed on ``config.text.n_chunks`` chunks of ``config.text.seq_len``
tokens (``factlens.data.text.token_chunks``), ``config.text.batch_size`` chunks per forward
pass; the logits of one chunk at a time are materialized and reduced at once (cross-entropy,
argmax, KL), so 262k-token vocabularies stay cheap. Every position predicts the next real
token (the BOS position predicts the first text token; no position predicts BOS or padding).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from factlens.config import ConfigBase, check_numbers
from factlens.data.mmlu import load_mmlu, mmlu_accuracy
from factlens.data.text import load_texts, token_chunks
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached
from factlens.evaluation.result import Metric, SuiteResult
from factlens.evaluation.standard import not_above_chance
from factlens.progress_bars import progress_bar
from factlens.tokens import _bos_id, _pad_id, iter_batches, scoring_logits

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests SideEffectsConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["run_side_effects", "text_chunks", "text_metrics", "SideEffectsConfig"]


@dataclass(frozen=True)
class SideEffectsConfig(ConfigBase):
    """Settings of the ``side_effects`` suite (``EvalConfig.side_effects``); its general text is
    ``EvalConfig.text`` (shared with the relearning and unrelated-fine-tuning attacks).

    Attributes:
        mmlu_source: A folder of MMLU CSVs (e.g. ``"../shared/data/mmlu/dev"``) or a
            datasets name (``"cais/mmlu:all"``, ``"tinyBenchmarks/tinyMMLU"``); ``None``
            skips MMLU (with a note in the result).
        n_mmlu: Number of MMLU questions (stratified over subjects; ``None``: all).
        mmlu_n_shots: Solved same-subject examples in each MMLU prompt, from the whole
            source (with the dev split at most 4: it has 5 questions per subject; the
            fewest and the most any prompt got are in ``extra["mmlu_shots_used"]`` as
            ``[min, max]``, not per prompt; fewer than asked for warns).
        held_out_text: With ``EvalConfig.text.source=None``, measure on the built-in passages
            nothing trains on (:func:`~factlens.data.text.load_texts` ``held_out=True``)
            instead of the built-in text the editor's KL term is trained to keep by default
            (with both at their defaults, every passage of the 16 chunks was among those of
            the editor's 32 training chunks on Gemma 3 270M, which understates the damage).
            Run folders written before 2026-12-05 resume with ``False``, as those versions
            measured.
    """

    mmlu_source: str | None = None
    n_mmlu: int | None = 57
    mmlu_n_shots: int = 0
    held_out_text: bool = True

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        if self.mmlu_source is not None and not isinstance(self.mmlu_source, str):
            object.__setattr__(self, "mmlu_source", str(self.mmlu_source))
        if self.n_mmlu is not None and self.n_mmlu < 1:
            raise ValueError(f"SideEffectsConfig.n_mmlu must be >= 1 or None (all questions), got {self.n_mmlu}")
        if int(self.mmlu_n_shots) < 0:
            raise ValueError(f"SideEffectsConfig.mmlu_n_shots must be >= 0, got {self.mmlu_n_shots!r}")


def text_chunks(model, config: EvalConfig) -> torch.Tensor:
    """The general-text chunks of ``config.text`` (seeded sample of passages, then cut); with
    the built-in text, its held-out passages (``SideEffectsConfig.held_out_text``)."""
    text = config.text
    n = text.n_chunks
    held_out = _held_out(config)
    texts = load_texts(text.source, n=max(4 * n, 32), seed=config.seed, held_out=held_out)
    try:
        chunks = token_chunks(model, texts, seq_len=text.seq_len, n_chunks=n)
    except ValueError:
        chunks = None
    if chunks is None or chunks.shape[0] < n:  # short passages: use all the text
        chunks = token_chunks(model, load_texts(text.source, held_out=held_out), seq_len=text.seq_len, n_chunks=n)
    if chunks.shape[0] < n:  # (extra["n_text_chunks"] records it too)
        what = "the built-in held-out text" if held_out else f"the text {text.source or 'built in'!r}"
        warnings.warn(f"{what} gives {chunks.shape[0]} chunks of {text.seq_len} tokens, fewer than text.n_chunks={n}: "
                      "the side effects are measured on those; give a longer text (eval text.source) for more",
                      stacklevel=2)
    return chunks


def _held_out(config: EvalConfig) -> bool:
    """The suite reads the built-in held-out passages (no text source, ``held_out_text``)."""
    return config.text.source is None and config.side_effects.held_out_text


def _real_targets(model, targets: torch.Tensor) -> torch.Tensor:
    """Mask of target positions that are real text: not the trailing padding, not BOS.

    Padding is the run of pad ids at the end of a chunk (chunks of
    :func:`~factlens.data.text.token_chunks` have none). A pad-id token inside the text is
    counted: without a pad token the pad id is EOS (or 0), which text can contain.
    """
    pad = targets == _pad_id(model)
    trailing = pad.flip(-1).int().cumprod(-1).flip(-1).bool()  # pad from here to the end
    mask = ~trailing
    bos = _bos_id(model)
    if bos is not None:
        mask &= targets != bos
    return mask


@torch.no_grad()
def text_metrics(model, chunks: torch.Tensor, *, original=None, batch_size: int = 4,
                 baselines: BaselineCache | None = None) -> list[dict[str, Any]]:
    """Per-chunk next-token accuracy, loss and (with ``original``) KL(original || model).

    Args:
        model: The evaluated model.
        chunks: ``[n, seq_len]`` token ids (from :func:`~factlens.data.text.token_chunks`).
        original: The unedited model for the KL (``original is model`` gives exactly 0).
        batch_size: Chunks per forward pass.
        baselines: Optional cache of the original's final residuals per batch.

    Returns:
        One dict per chunk: ``chunk``, ``n_tokens``, ``accuracy``, ``loss`` (mean CE, nats),
        ``kl`` (mean per token, nats; only with ``original``), and ``baseline_accuracy`` /
        ``baseline_loss`` (the original's).

    Raises:
        ValueError: ``chunks`` is not a 2-D tensor.
        FloatingPointError: Either model gives non-finite log-probabilities on a chunk.

    Example:
        >>> from factlens.testing import tiny_model
        >>> from factlens.data.text import load_texts, token_chunks
        >>> m = tiny_model()
        >>> rows = text_metrics(m, token_chunks(m, load_texts(None), seq_len=16, n_chunks=2), original=m)
        >>> len(rows), rows[0]["kl"], 0 <= rows[0]["accuracy"] <= 1
        (2, 0.0, True)
    """
    if not isinstance(chunks, torch.Tensor) or chunks.ndim != 2:
        shape = tuple(chunks.shape) if isinstance(chunks, torch.Tensor) else type(chunks).__name__
        raise ValueError(f"text_metrics wants chunks as a [n_chunks, seq_len] tensor of token ids, got {shape}: "
                         "give one chunk as chunks[None] (or build them with factlens.data.text.token_chunks)")
    rows: list[dict[str, Any]] = []
    n_layers = model.cfg.n_layers
    for sl in progress_bar(list(iter_batches(chunks.shape[0], batch_size)), desc="text", leave=False):
        toks = chunks[sl].to(model.cfg.device)
        resid = model(toks, stop_at_layer=n_layers)
        resid_o = None
        if original is not None and original is not model:
            t_o = toks.to(original.cfg.device)
            key = ("text_resid", tuple(t_o.shape), t_o.cpu().numpy().tobytes())
            resid_o = cached(baselines, key, lambda: original(t_o, stop_at_layer=original.cfg.n_layers))
        for j in range(toks.shape[0]):
            tgt = toks[j, 1:]
            real = _real_targets(model, tgt)
            lp = F.log_softmax(scoring_logits(model, resid[j, :-1]).float(), dim=-1)  # float32 in bf16
            ce = -lp.gather(1, tgt[:, None])[:, 0]
            if not bool(torch.isfinite(ce[real]).all()):  # a NaN logit makes its whole row NaN
                raise FloatingPointError(
                    f"the evaluated model gave non-finite log-probabilities on text chunk {sl.start + j}: its weights "
                    "or activations are not finite (a diverged edit or attack?). Such a chunk cannot be scored: "
                    "dropped from the loss and KL but counted as wrong in the accuracy, it made the three metrics "
                    "cover different chunks")
            acc = (lp.argmax(-1) == tgt).float()
            n = int(real.sum())
            row: dict[str, Any] = {"chunk": sl.start + j, "n_tokens": n,
                                   "accuracy": float(acc[real].mean()) if n else float("nan"),
                                   "loss": float(ce[real].mean()) if n else float("nan")}
            if original is not None:
                if resid_o is None:  # original is model
                    lpo = lp
                else:
                    lpo = F.log_softmax(scoring_logits(original, resid_o[j, :-1]).float(), dim=-1).to(lp.device)
                kl = _kl(lpo, lp)
                if bool(torch.isnan(kl[real]).any()):  # dropped from the metric without a word before
                    raise FloatingPointError(
                        f"the original model gave non-finite log-probabilities on text chunk {sl.start + j}: its "
                        "weights or activations are not finite, so KL(original || model) is undefined there")
                ceo = -lpo.gather(1, tgt[:, None])[:, 0]
                acco = (lpo.argmax(-1) == tgt).float()
                row.update(kl=float(kl[real].mean()) if n else float("nan"),
                           baseline_accuracy=float(acco[real].mean()) if n else float("nan"),
                           baseline_loss=float(ceo[real].mean()) if n else float("nan"))
                del lpo
            del lp, ce, acc
            rows.append(row)
    return rows


def _kl(lpo: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(original || model)`` from the two log-softmaxes (last dim: vocabulary).

    A token the original gives probability 0 (log-prob -inf: a masked or unused vocabulary
    entry) adds 0, by the convention ``0 * log(0 / q) = 0`` (``scipy.special.rel_entr(0, q)``);
    ``0 * (-inf - lp)`` made the whole position NaN before, and the KL metric vanished. KL >= 0:
    float32 rounding of two nearly equal distributions gives -1e-8-level values, clamped at 0.
    """
    terms = lpo.exp() * (lpo - lp)
    return terms.masked_fill_(torch.isneginf(lpo), 0.0).sum(-1).clamp_min(0.0)


def _token_metric(name: str, rows: list[dict[str, Any]], key: str, *, base_key: str | None, hib: bool,
                  baseline: float | None = None) -> Metric | None:
    rows = [r for r in rows if r["n_tokens"] and r.get(key) is not None and not math.isnan(r[key])]
    if not rows:
        return None
    w = np.array([r["n_tokens"] for r in rows], dtype=float)
    if base_key is not None and all(base_key in r for r in rows):
        baseline = float((w * np.array([r[base_key] for r in rows])).sum() / w.sum())
    # the unit of sampling is the chunk (tokens of one chunk are not independent): token-weighted
    # mean, standard error and bootstrap interval over chunks
    ids = [f"chunk:{r['chunk']}" for r in rows]
    return Metric.from_samples(name, {i: r[key] for i, r in zip(ids, rows)}, unit="tokens", baseline=baseline,
                               higher_is_better=hib, weights={i: r["n_tokens"] for i, r in zip(ids, rows)})


def _mmlu(model, original, config: EvalConfig, baselines: BaselineCache | None, extra: dict[str, Any]) -> Metric:
    """MMLU accuracy (baseline and at-chance flag from ``original``); its details go into ``extra``."""
    se = config.side_effects
    qs = load_mmlu(se.mmlu_source, n=se.n_mmlu, seed=config.seed)
    pool = load_mmlu(se.mmlu_source) if se.mmlu_n_shots else None
    kw = dict(n_shots=se.mmlu_n_shots, shots_pool=pool, batch_size=config.batch_size)
    res = mmlu_accuracy(model, qs, **kw)
    base = None
    if original is not None:
        key = ("mmlu", str(se.mmlu_source), se.n_mmlu, se.mmlu_n_shots, config.seed, config.batch_size)
        base = res if original is model else cached(baselines, key, lambda: mmlu_accuracy(original, qs, **kw))
    flag = not_above_chance(base.accuracy, res.chance, base.n) if base is not None else False
    m = Metric("mmlu_accuracy", res.accuracy, res.n, "questions", base.accuracy if base else None, flag)
    if res.n:  # Wilson interval over questions, per-question samples for paired comparisons
        m = Metric.from_samples("mmlu_accuracy", {f"question:{i}": float(c) for i, c in enumerate(res.correct)},
                                unit="questions", baseline=m.baseline, at_chance=flag)
    extra.update(mmlu_source=str(se.mmlu_source), mmlu_chance=res.chance, mmlu_n_shots=se.mmlu_n_shots,
                 mmlu_shots_used=[min(res.shots_used), max(res.shots_used)] if res.shots_used else None,
                 mmlu_truncated_prompts=res.truncated, mmlu_model_at_chance=res.at_chance,
                 mmlu_by_subject=res.by_subject())
    if base is None:
        extra["mmlu_note"] = f"original=None: no MMLU baseline or at-chance flag (chance is {res.chance:.3f})"
    qrows = []
    for i, q in enumerate(res.questions):
        said = int(res.predicted[i])
        r = {"subject": q.subject, "answer": q.answer_letter, "predicted": "ABCD"[said] if said >= 0 else "tie",
             "correct": bool(res.correct[i]), "p_correct": float(res.p_correct[i])}
        if base is not None:
            r.update(baseline_correct=bool(base.correct[i]), baseline_p_correct=float(base.p_correct[i]))
        qrows.append(r)
    extra["mmlu_questions"] = qrows
    return replace(m, stderr=res.stderr)


def run_side_effects(model, task=None, *, original=None, config: EvalConfig | None = None,
                     baselines: BaselineCache | None = None) -> SuiteResult:
    """Next-token accuracy / loss / KL on general text, and MMLU accuracy.

    Args:
        model: The evaluated model.
        task: The task (unused: side effects do not depend on the edited facts).
        original: The unedited model: baselines, the KL, and the MMLU at-chance flag
            (``None``: skipped, with notes in ``extra``).
        config: ``text`` (:class:`~factlens.evaluation.config.TextConfig`), ``side_effects``
            (:class:`SideEffectsConfig`; ``mmlu_source=None``: MMLU skipped with a note),
            ``batch_size``, ``seed`` (``None``: ``EvalConfig()``).

    Returns:
        Metrics ``next_token_accuracy``, ``next_token_loss``, ``kl_divergence`` (with
        ``original``), ``mmlu_accuracy`` (with ``mmlu_source``); raw data in
        ``extra["text_chunks"]`` and ``extra["mmlu_questions"]``.

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16})
        >>> r = run_side_effects(m, original=m, config=cfg)
        >>> r["kl_divergence"].value, r.extra["mmlu_note"][:9]
        (0.0, 'MMLU skip')
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default

    config = or_default(config)
    t0 = time.perf_counter()
    metrics: list[Metric] = []
    extra: dict[str, Any] = {"text_source": config.text.source or ("builtin (held out)" if _held_out(config) else "builtin")}

    chunks = text_chunks(model, config)
    rows = text_metrics(model, chunks, original=original, batch_size=config.text.batch_size, baselines=baselines)
    extra["text_chunks"] = rows
    extra["n_text_chunks"] = int(chunks.shape[0])
    for m in (_token_metric("next_token_accuracy", rows, "accuracy", base_key="baseline_accuracy", hib=True),
              _token_metric("next_token_loss", rows, "loss", base_key="baseline_loss", hib=False)):
        if m is not None:
            metrics.append(m)
    if original is not None:
        m = _token_metric("kl_divergence", rows, "kl", base_key=None, hib=False, baseline=0.0)
        if m is not None:
            metrics.append(m)
    else:
        extra["kl_note"] = "original=None: KL(original || model) and baselines skipped (pass original=...)"

    se = config.side_effects
    if se.mmlu_source is None:
        extra["mmlu_note"] = ("MMLU skipped: config.side_effects.mmlu_source is None (give a folder of MMLU CSVs or a "
                              "datasets name)")
    else:
        metrics.append(_mmlu(model, original, config, baselines, extra))
    return SuiteResult("side_effects", tuple(metrics), (), extra, time.perf_counter() - t0)
