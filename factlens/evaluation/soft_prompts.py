"""The soft-prompt attack (paper appendix A.8).

``length`` continuous vectors (:class:`SoftPromptsConfig`, ``EvalConfig.soft_prompts``) are
**appended** to each prompt (after its last token) and optimized so that the model, reading
the answer at the last soft position, gives the **true** answer of half of the forget facts
(cross-entropy, Adam, ``steps`` steps, learning rate ``lr``). The attack's success is the
forget accuracy (true answer wins among the candidates) it reaches on the other, held-out
half, averaged over ``seeds`` independent initializations.

``SoftPromptsConfig(position="prepend")`` puts the vectors between BOS and the prompt
instead (prompt tuning): the answer is then read at the prompt's own last token, so a soft
prompt that has learned nothing leaves the model's answers as they were. Appended vectors
initialized from random tokens do not: before any training they already change the unedited
model's answers, so the appended attack mixes recovery with disruption (measured on Gemma 3
270M: docs/reproduction.md, "Where the soft prompt sits matters").

Mechanics: the prompt is followed by ``length`` placeholder tokens whose
embeddings (the output of ``hook_embed``, i.e. token embeddings exactly as they enter the
residual stream, Gemma's ``sqrt(d_model)`` scaling included) are replaced by the soft
vectors through a temporary hook. Positional information is the model's own (learned
positional embeddings are added after ``hook_embed``; rotary positions are applied in
attention), so the same code serves GPT-2-style and Gemma-style models. After each step
every soft vector is projected onto the ball of radius ``max_norm`` (default:
the mean norm of the token embeddings), so the attack stays within the scale of real tokens.

Speed: the prompt before appended vectors does not depend on them, so each prompt's keys and
values are computed once per training run and every step runs only the soft vectors and the
answer tokens (:func:`factlens.prefix.residual_after_row_prefixes`; equal to the plain forward
pass up to float summation order, measured in docs/performance.md).

The model is never changed: its parameters get no gradient (only the soft vectors are
differentiated, with :func:`torch.autograd.grad`) and the hook is removed on exit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from factlens.components import embed_hook
from factlens.config import ConfigBase, check_numbers
from factlens.data.formats import FormattedPrompt, format_prompts
from factlens.data.records import FactDataset
from factlens.editing.training import with_gradients
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached, config_key, facts_key, items_key
from factlens.evaluation.relearning import forget_scores, split_halves
from factlens.evaluation.result import Metric, SuiteResult
from factlens.evaluation.selectivity import Selectivity, mean_selectivity, selectivity_metrics, selectivity_of
from factlens.prefix import residual_after_prefix, residual_after_row_prefixes, row_prefix_reuse_supported
from factlens.progress_bars import progress_bar
from factlens.prompt_scores import ranking_values
from factlens.tokens import (_bos_id, _encode, _pad_id, answer_token_ids, iter_batches, scoring_logits, unembed,
                             unique_argmax)

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests SoftPromptsConfig)
    from factlens.evaluation.config import EvalConfig
    from factlens.prompt_scores import PromptScores

SOFT_PROMPT_POSITIONS = ("append", "prepend")

__all__ = ["SOFT_PROMPT_POSITIONS", "SoftPromptsConfig", "run_soft_prompts", "train_soft_prompt", "soft_prompt_scores",
           "mean_embedding_norm"]


@dataclass(frozen=True)
class SoftPromptsConfig(ConfigBase):
    """Settings of the soft-prompt attack (``EvalConfig.soft_prompts``).

    Attributes:
        length: Tokens of the adversarial soft prompt.
        steps: Optimization steps of each soft prompt.
        lr: Learning rate (Adam).
        seeds: Independent soft-prompt runs.
        batch_size: Facts per optimization step (before 2026-12-03 this was
            ``EvalConfig.batch_size``, documented as a forward-pass size although it changes
            the attack; run folders of then resume with that value).
        max_norm: Norm bound of each soft-prompt vector (``None``: the mean token-embedding norm).
        position: ``"append"`` (after the prompt; the answer is read at the last soft vector)
            or ``"prepend"`` (after BOS, before the prompt; the answer is read at the prompt's
            last token, as in prompt tuning).

    Example:
        >>> SoftPromptsConfig(steps=25, seeds=1).position
        'append'
    """

    length: int = 15
    steps: int = 50
    lr: float = 1e-2
    seeds: int = 3
    batch_size: int = 16
    max_norm: float | None = None
    position: str = "append"

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        for name in ("length", "seeds", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SoftPromptsConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:  # lr=0 never trains the prompt: the edit would look robust to an attack that did nothing
            raise ValueError(f"SoftPromptsConfig.lr must be > 0, got {self.lr!r}")
        if int(self.steps) < 0:
            raise ValueError(f"SoftPromptsConfig.steps must be >= 0, got {self.steps!r}")
        if self.max_norm is not None and not self.max_norm > 0:  # a bound of 0 leaves no soft prompt to train
            raise ValueError(f"SoftPromptsConfig.max_norm must be > 0 (or None: the mean token-embedding norm), "
                             f"got {self.max_norm!r}")
        if self.position not in SOFT_PROMPT_POSITIONS:
            raise ValueError(f"SoftPromptsConfig.position must be 'append' or 'prepend', got {self.position!r}")


def mean_embedding_norm(model, *, chunk: int = 8192) -> float:
    """Mean L2 norm of the token embeddings as they enter the residual stream (``hook_embed``).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> 0 < mean_embedding_norm(planted_fact_model().model) < 2
        True
    """
    total, n = 0.0, int(model.cfg.d_vocab)
    with torch.no_grad():
        for sl in iter_batches(n, chunk):
            ids = torch.arange(sl.start, sl.stop, device=model.cfg.device)[None]
            total += float(model.embed(ids)[0].float().norm(dim=-1).sum())
    return total / n


def _rows(model, prompts: Sequence[str], conts: Sequence[Sequence[int]], k: int, position: str = "append"):
    """Token rows with ``k`` placeholders, their start positions and the answer-reading positions.

    ``position="append"``: ``prompt + k placeholders + continuation[:-1]``; ``"prepend"``:
    ``BOS + k placeholders + prompt + continuation[:-1]``. The last entry of each triple is
    the position whose output predicts the first continuation token.
    """
    if position not in SOFT_PROMPT_POSITIONS:
        raise ValueError(f"soft-prompt position must be one of {SOFT_PROMPT_POSITIONS}, got {position!r}")
    bos = _bos_id(model)
    pad = _pad_id(model)
    head = [bos] if bos is not None else []
    rows, starts, lasts = [], [], []
    for p, c in zip(prompts, conts):
        ids = _encode(model, p)[0]
        if position == "append":
            starts.append(len(head) + len(ids))
            row = head + ids + [pad] * k
        else:
            starts.append(len(head))
            row = head + [pad] * k + ids
        lasts.append(len(row) - 1)
        rows.append(row + list(c[:-1]))
    n = max(len(r) for r in rows)
    toks = torch.full((len(rows), n), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        toks[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return toks.to(model.cfg.device), starts, lasts


def _soft_resid(model, toks: Tensor, starts: Sequence[int], soft: Tensor, lengths: Sequence[int] | None = None,
                *, store: dict | None = None) -> tuple[Float[Tensor, "batch pos d_model"], Tensor]:
    """Final residual stream with the soft vectors written over the placeholder embeddings.

    Returns ``(resid, offsets)``: ``resid[i, t]`` is row ``i``'s position ``offsets[i] + t``.
    Nothing before the first placeholder depends on the soft vectors, so those positions are
    not run with them: each row's prompt runs once into a key/value cache (kept in ``store``
    across the steps of one training run), and only the placeholders and what follows them run
    at each step (:func:`factlens.prefix.residual_after_row_prefixes`); where that is not
    available, the tokens every row shares run once
    (:func:`factlens.prefix.residual_after_prefix`). Both equal the plain forward pass up to
    float summation order.
    """
    k = soft.shape[0]
    dev = toks.device
    lens = torch.tensor(lengths, device=dev) if lengths is not None else None
    if min(starts) > 0 and row_prefix_reuse_supported(model):
        def write_soft():
            def hook(act, hook):
                return torch.cat([soft.to(act.dtype).expand(act.shape[0], k, -1), act[:, k:]], dim=1)
            return [(embed_hook(), hook)]

        return residual_after_row_prefixes(model, toks, cuts=starts, lengths=lens, hooks=write_soft, store=store)
    rows = torch.arange(len(starts), device=dev).repeat_interleave(k)
    cols = (torch.tensor(starts, device=dev)[:, None] + torch.arange(k, device=dev)).reshape(-1)
    which = torch.arange(k, device=dev).repeat(len(starts))

    def hooks(p: int):
        def hook(act, hook):
            return act.index_put((rows, cols - p), soft[which].to(act.dtype))
        return [(embed_hook(), hook)]

    resid, p = residual_after_prefix(model, toks, first_read=min(starts), lengths=lens, hooks=hooks)
    return resid, torch.full((len(starts),), p, dtype=torch.long)


def _soft_logprobs(model, soft: Tensor, prompts: Sequence[str], answers: Sequence[str],
                   position: str = "append", *, store: dict | None = None) -> Float[Tensor, "n"]:
    """Summed log-probability of each answer after the prompt with ``soft`` (differentiable in ``soft``)."""
    conts = [answer_token_ids(model, a) for a in answers]
    toks, starts, lasts = _rows(model, prompts, conts, soft.shape[0], position)
    resid, off = _soft_resid(model, toks, starts, soft, [last + len(c) for last, c in zip(lasts, conts)], store=store)
    owner, pos, tgt = [], [], []
    for i, (last, c) in enumerate(zip(lasts, conts)):
        p = int(off[i])
        owner += [i] * len(c)
        pos += list(range(last - p, last - p + len(c)))
        tgt += list(c)
    dev = resid.device
    owner_t = torch.tensor(owner, device=dev)
    # scoring (no gradients): float32 logits, no rounded ties; training: the model's own dtype, since autograd
    # would keep a float32 copy of all of W_U for the backward pass (671 MB at Gemma 3 270M's width)
    read = scoring_logits if not torch.is_grad_enabled() else unembed
    lp = F.log_softmax(read(model, resid[owner_t, torch.tensor(pos, device=dev)][:, None])[:, 0].float(), dim=-1)
    tok_lp = lp.gather(1, torch.tensor(tgt, device=dev)[:, None])[:, 0]
    return torch.zeros(len(prompts), device=dev).index_add(0, owner_t, tok_lp)


def soft_prompt_scores(model, soft: Tensor, items: Sequence[FormattedPrompt], *, batch_size: int = 16,
                       position: str = "append", candidate_score: str = "sum") -> dict[str, np.ndarray]:
    """Candidate scores of prompts with the soft prompt (``position``: ``"append"`` or ``"prepend"``;
    ``candidate_score``: :data:`factlens.prompt_scores.CANDIDATE_SCORES`).

    Returns:
        ``answer_wins``, ``target_wins`` (False where no target), ``p_answer`` (normalized
        over the candidates) and ``winner`` (index into the item's candidates of the one the
        model gives), one entry per item.
    """
    items = list(items)
    n = len(items)
    aw, tw, pa, win = np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan), np.zeros(n, int)
    flat = [(i, c) for i, it in enumerate(items) for c in it.candidates]
    lps = torch.empty(len(flat))
    ids = {c: answer_token_ids(model, c) for c in {c for _, c in flat}}
    with torch.no_grad():
        if all(len(t) == 1 for t in ids.values()):  # one forward per prompt, not per candidate
            j = 0
            for sl in iter_batches(n, batch_size):
                part = items[sl]
                toks, starts, lasts = _rows(model, [it.prompt for it in part], [[0]] * len(part), soft.shape[0], position)
                resid, off = _soft_resid(model, toks, starts, soft, [last + 1 for last in lasts])
                last = (torch.tensor(lasts) - off).to(resid.device)
                lp = F.log_softmax(scoring_logits(model, resid[torch.arange(len(part), device=resid.device), last][:, None])
                                   [:, 0].float(), dim=-1).cpu()
                for r, it in enumerate(part):
                    for c in it.candidates:
                        lps[j] = lp[r, ids[c][0]]
                        j += 1
        else:
            for sl in iter_batches(len(flat), batch_size):
                part = flat[sl]
                lps[sl] = _soft_logprobs(model, soft, [items[i].prompt for i, _ in part], [c for _, c in part],
                                         position).cpu()
    if not bool(torch.isfinite(lps).all()):  # argmax would pick a NaN candidate (often the true answer first)
        raise FloatingPointError("the model with the soft prompt gave non-finite log-probabilities: the soft prompt "
                                 "or the model diverged (lower the attack's learning rate or set max_norm); such "
                                 "prompts cannot be scored, and argmax would count them as recovered")
    j, lengths = 0, {c: len(t) for c, t in ids.items()}  # tokenized once above
    for i, it in enumerate(items):
        lp = lps[j : j + len(it.candidates)].double()
        j += len(it.candidates)
        best = win[i] = unique_argmax(ranking_values(model, it.candidates, lp, candidate_score,
                                                     lengths=lengths))  # -1: a tie
        ci = it.candidates.index(it.answer)
        aw[i] = best == ci
        pa[i] = float(torch.softmax(lp, 0)[ci])
        if it.target is not None and it.target in it.candidates:
            tw[i] = best == it.candidates.index(it.target)
    return {"answer_wins": aw, "target_wins": tw, "p_answer": pa, "winner": win}


@with_gradients  # also under a notebook's torch.inference_mode(): enable_grad alone does not leave it
def train_soft_prompt(model, facts: FactDataset, *, config: EvalConfig | None = None, seed: int = 0,
                      max_norm: float | None = None) -> tuple[Tensor, list[float]]:
    """Optimize a soft prompt that makes ``model`` give the true answers of ``facts``.

    Args:
        model: The attacked model (unchanged).
        facts: Training facts (their default prompts and true answers).
        config: ``soft_prompts`` (:class:`SoftPromptsConfig`: ``length``, ``steps``, ``lr``,
            ``position``, ``max_norm`` and ``batch_size``, the facts per step; ``None``:
            ``EvalConfig()``). ``EvalConfig.batch_size`` is not used here.
        seed: Seed of the initialization (embeddings of random tokens) and of the batches.
        max_norm: Norm bound of each soft vector (``None``: ``config.soft_prompts.max_norm``,
            else :func:`mean_embedding_norm`).

    Returns:
        The soft prompt ``[length, d_model]`` (float32, detached) and the loss per step.

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=2))
        >>> soft, losses = train_soft_prompt(p.model, p.task.forget, config=cfg)
        >>> tuple(soft.shape), len(losses)
        ((15, 96), 2)
    """
    from factlens.evaluation.config import or_default

    if len(facts) == 0:
        raise ValueError("train_soft_prompt needs at least one fact")
    config = or_default(config)
    sc = config.soft_prompts
    if max_norm is None:
        max_norm = sc.max_norm if sc.max_norm is not None else mean_embedding_norm(model)
    if not max_norm > 0:
        raise ValueError(f"the soft-prompt norm bound must be > 0, got {max_norm}")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.cfg.d_vocab, (sc.length,), generator=gen).to(model.cfg.device)
    with torch.no_grad():
        init = model.embed(ids[None])[0].float()
    soft = _project(init.clone(), max_norm).requires_grad_(True)
    opt = torch.optim.Adam([soft], lr=sc.lr)
    items = [(r.prompt, r.answer) for r in facts]
    bs = min(sc.batch_size, len(items))
    order: list[int] = []
    losses: list[float] = []
    store: dict = {}  # the prompts' keys and values, the same at every step (see _soft_resid)
    with torch.enable_grad():
        for _ in progress_bar(range(sc.steps), desc="soft prompt", leave=False):
            if len(order) < bs:
                order += torch.randperm(len(items), generator=gen).tolist()
            batch, order = [items[i] for i in order[:bs]], order[bs:]
            loss = -_soft_logprobs(model, soft, [p for p, _ in batch], [a for _, a in batch], sc.position,
                                   store=store).mean()
            (grad,) = torch.autograd.grad(loss, [soft])  # no gradient reaches the model's parameters
            soft.grad = grad
            opt.step()
            with torch.no_grad():
                soft.copy_(_project(soft, max_norm))
            losses.append(loss.item())
    return soft.detach(), losses


def _project(x: Tensor, max_norm: float) -> Tensor:
    norms = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x * (max_norm / norms).clamp(max=1.0)


def _attack(model, half_a: FactDataset, items_a, items_b, items_m, config: EvalConfig, max_norm: float):
    """Train one soft prompt per seed on half A; score halves A and B and the maintain facts
    (``"M"``, the controls of :mod:`~factlens.evaluation.selectivity`; absent without them) with it."""
    runs = []
    position = config.soft_prompts.position
    seeds = [config.seed + i for i in range(config.soft_prompts.seeds)]
    for s in progress_bar(seeds, desc="soft-prompt seeds", leave=False):
        soft, losses = train_soft_prompt(model, half_a, config=config, seed=s, max_norm=max_norm)
        run = {"seed": s, "losses": losses}
        for key, items in (("A", items_a), ("B", items_b), ("M", items_m)):
            if items:
                run[key] = soft_prompt_scores(model, soft, items, batch_size=config.batch_size, position=position,
                                              candidate_score=config.candidate_score)
        runs.append(run)
    return runs


def _selectivity(items_b, items_m, runs: list[dict], seed: int) -> Selectivity | None:
    """Each held-out fact's selective recovery and bias, averaged over the soft-prompt seeds
    (:func:`~factlens.evaluation.selectivity.selectivity_of`; ``None`` without controls)."""
    if not items_m:
        return None
    parts = []
    for r in runs:
        said = {0: {u.record_id: (u.candidates[int(w)] if w >= 0 else None) for u, w in zip(items_m, r["M"]["winner"])}}
        parts.append(selectivity_of(items_b, r["B"]["answer_wins"], [0] * len(items_b), said, items_m, seed=seed))
    return None if parts[0] is None else mean_selectivity(parts)


def _metric(name: str, items, per_fact: np.ndarray, baseline: float | None, *, higher_is_better: bool = False,
            at_chance: bool = False) -> Metric:
    """Per-fact values (aligned with ``items``, one prompt per fact) -> a metric with its 95 % interval.

    ``samples`` are keyed by ``record_id``; ``stderr`` and the interval are over facts (the
    spread over soft-prompt seeds is the suite's ``extra["seed_stderr"]``: it replaced the
    stderr before, 0.0 beside an interval of [0.21, 1.00] for one held-out fact);
    ``at_chance`` is the flag of :func:`_original_at_chance`.
    """
    return Metric.from_samples(name, {it.record_id: float(x) for it, x in zip(items, per_fact)}, baseline=baseline,
                               higher_is_better=higher_is_better, at_chance=at_chance)


def _original_at_chance(scores: PromptScores | None) -> bool:
    """Is the unedited model not clearly above chance on these prompts (without a soft prompt)?

    The rule of the relearning suite: its true-answer accuracy against the chance level of the
    prompts' candidates, ``n`` = the number of prompts
    (:func:`~factlens.evaluation.standard.not_above_chance`). A model that never knew the facts
    cannot show that an attack brings them back, so the metrics on these facts say nothing.
    ``False`` without the original (``scores is None``): no flag is computed.
    """
    from factlens.evaluation.standard import chance_of, not_above_chance

    if scores is None:
        return False
    acc = float(scores.answer_wins.mean()) if len(scores) else float("nan")
    return not_above_chance(acc, chance_of(scores.items), len(scores))


def _original_flags(orig_a: PromptScores | None, orig_b: PromptScores | None, orig_m: PromptScores | None
                    ) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each half's at-chance flag (:func:`_original_at_chance`), also raised when the unedited model's
    accuracy on the half is not above the answer-bias bar of its answers on the maintain facts
    (:func:`~factlens.evaluation.standard.chance_flags`), and which check decided."""
    from factlens.evaluation.standard import chance_flags, tally

    own = {"A": _original_at_chance(orig_a), "B": _original_at_chance(orig_b)}
    parts = {"A": orig_a, "B": orig_b, "maintain": orig_m}
    return chance_flags({k: tally(v) for k, v in parts.items() if v is not None and len(v)}, own,
                        others={"A": ["maintain"], "B": ["maintain"]})  # the halves' answers are alike


def _metrics(task, items_a, items_b, runs: list[dict], before: PromptScores, base_runs: list[dict] | None,
             orig_b: PromptScores | None, at_chance: dict[str, bool]) -> list[Metric]:
    """The suite's metrics (see :func:`run_soft_prompts`).

    ``orig_b`` holds the unedited model's scores of half B without a soft prompt (``None``
    without it): its accuracy is the baseline of the forget accuracy before the attack. Each
    half's at-chance flag (``at_chance``, :func:`_original_flags`) goes to every metric scored
    on that half (half B: forget, before and edit accuracy; half A: train accuracy).
    """
    ch_a, ch_b = at_chance["A"], at_chance["B"]
    metrics = [
        _metric("soft_prompt_forget_accuracy", items_b, _per_fact(runs, "B", "answer_wins"),
                _seed_mean(base_runs, "B", "answer_wins") if base_runs else None, at_chance=ch_b),
        _metric("soft_prompt_forget_accuracy_before", items_b, before.answer_wins.astype(float),
                float(orig_b.answer_wins.mean()) if orig_b is not None else None, at_chance=ch_b),
        _metric("soft_prompt_train_accuracy", items_a, _per_fact(runs, "A", "answer_wins"),
                _seed_mean(base_runs, "A", "answer_wins") if base_runs else None, at_chance=ch_a),
    ]
    has_t = np.array([it.target is not None for it in items_b])
    if task.objective == "inject" and has_t.any():
        pf = np.where(has_t, _per_fact(runs, "B", "target_wins"), np.nan)
        base = float(np.nanmean(np.where(has_t, _per_fact(base_runs, "B", "target_wins"), np.nan))) if base_runs else None
        metrics.append(_metric("soft_prompt_edit_accuracy", items_b, pf, base, higher_is_better=True, at_chance=ch_b))
    return metrics


def _per_fact(runs: list[dict], half: str, key: str) -> np.ndarray:
    """Per-fact value of ``key`` on ``half`` (``"A"`` / ``"B"``), averaged over the seeds' runs."""
    return np.mean([r[half][key].astype(float) for r in runs], axis=0)


def _seed_mean(runs: list[dict], half: str, key: str) -> float:
    return float(np.mean(_per_fact(runs, half, key)))


def _seed_se(runs: list[dict], half: str, key: str) -> float | None:
    """Standard error of the accuracy over seeds (``None`` for one seed)."""
    accs = [float(r[half][key].mean()) for r in runs]
    return float(np.std(accs, ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else None


def _fact_rows(items_a, items_b, runs: list[dict], before: PromptScores, base_runs: list[dict] | None,
               sel: Selectivity | None = None) -> list[dict]:
    """One row per fact of both halves: wins and answer probability per seed, before / baseline
    rates, and (half B, with controls) the fact's control bias and selective recovery."""
    rows: list[dict[str, Any]] = []
    for half, items in (("A", items_a), ("B", items_b)):
        for i, it in enumerate(items):
            row = {"record_id": it.record_id, "half": half, "answer": it.answer, "target": it.target,
                   "answer_wins": [bool(r[half]["answer_wins"][i]) for r in runs],
                   "p_answer": [float(r[half]["p_answer"][i]) for r in runs],
                   "answer_win_rate": float(np.mean([r[half]["answer_wins"][i] for r in runs]))}
            if it.target is not None:
                row["target_wins"] = [bool(r[half]["target_wins"][i]) for r in runs]
            if half == "B":
                row["answer_wins_before"] = bool(before.answer_wins[i])
            if base_runs is not None:
                row["baseline_answer_win_rate"] = float(np.mean([r[half]["answer_wins"][i] for r in base_runs]))
            if half == "B" and sel is not None and it.record_id in sel.bias:
                row["control_bias"] = sel.bias[it.record_id]
                row["selective_recovery"] = sel.recovery[it.record_id]
            rows.append(row)
    return rows


def _attack_damage(items_b, before: PromptScores, base_runs: list[dict], items_m=(),
                   before_m: PromptScores | None = None) -> dict[str, Any]:
    """Does the attack itself cost the unedited model accuracy on half B and the maintain facts?
    (:func:`~factlens.evaluation.attacks.attack_damage` of its scores before and after, over both, as
    for the other attacks; the maintain facts were left out before, so a soft prompt that broke them
    went unflagged.)"""
    from factlens.evaluation.attacks import TaskScores, attack_damage

    ids, after_b = [it.record_id for it in items_b], _per_fact(base_runs, "B", "answer_wins")
    m_before = m_after = {}
    if items_m and before_m is not None:
        ids_m = [it.record_id for it in items_m]
        m_before = dict(zip(ids_m, map(float, before_m.answer_wins)))
        m_after = dict(zip(ids_m, map(float, _per_fact(base_runs, "M", "answer_wins"))))
    return attack_damage(TaskScores(dict(zip(ids, map(float, before.answer_wins))), {}, m_before),
                         TaskScores(dict(zip(ids, map(float, after_b))), {}, m_after))


def run_soft_prompts(model, task, *, original=None, config: EvalConfig | None = None,
                     baselines: BaselineCache | None = None) -> SuiteResult:
    """Soft-prompt attack: train on half A of the forget set, measure forget accuracy on half B.

    Args:
        model: The evaluated model (unchanged).
        task: The task (``task.forget`` is split with :func:`~factlens.evaluation.relearning.split_halves`).
        original: The unedited model; the same attack on it gives the ``baseline`` values.
        config: ``soft_prompts`` (:class:`SoftPromptsConfig`), ``seed``, ``batch_size`` (``None``:
            ``EvalConfig()``).

    Returns:
        Metrics ``soft_prompt_forget_accuracy`` (half B with the soft prompt, per fact averaged
        over seeds, lower is better), ``soft_prompt_forget_accuracy_before`` (half B without
        it), ``soft_prompt_train_accuracy`` (half A with it) and ``soft_prompt_edit_accuracy``
        (half B, edit target wins with the soft prompt; inject tasks, higher is better).
        ``soft_prompt_control_bias`` (per half-B fact, the share of its own control facts,
        maintain facts with another answer, that the soft prompt makes give the fact's answer)
        and ``soft_prompt_selective_recovery`` (the fact's win with the soft prompt minus that
        bias), both averaged over the seeds, with the unedited model under the same attack as
        baseline: a soft prompt that pushes every subject towards the forget answers raises the
        forget accuracy without recovering anything, and only the second number tells the two
        apart (:mod:`factlens.evaluation.selectivity`; absent when no half-B fact has a control;
        the controls dealt to each fact are in ``extra["selectivity"]``).
        ``at_chance`` flags the metrics of a half on which the unedited model, without a soft
        prompt, is not clearly above chance (half B: the forget, before and edit accuracies;
        half A: the train accuracy), or not above the answer-bias bar of its answers on the
        maintain facts (``extra["at_chance_bar"]`` says per half which check decided),
        as in the relearning suite; no flags without ``original``.
        Per-fact rows give each fact's wins per seed; ``extra["per_seed"]`` the accuracies and
        losses of each seed, ``extra["seed_stderr"]`` the standard error of the accuracies over
        the seeds (``None`` for one seed; the metrics' own ``stderr`` is over facts),
        ``extra["max_norm"]`` the norm bound, ``extra["attack_damage"]``
        whether the attack costs the unedited model accuracy on half B and the maintain facts
        together (:func:`~factlens.evaluation.attacks.attack_damage`; ``damaged`` flags it).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EvalConfig(soft_prompts=SoftPromptsConfig(steps=2, seeds=1))
        >>> r = run_soft_prompts(p.model, p.task, config=cfg)
        >>> r["soft_prompt_forget_accuracy_before"].value
        1.0
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default
    from factlens.evaluation.standard import scores_key

    config = or_default(config)
    sc = config.soft_prompts
    t0 = time.perf_counter()
    half_a, half_b = split_halves(task.forget, seed=config.seed)
    items_a = format_prompts(half_a, "default", seed=config.seed)
    items_b = format_prompts(half_b, "default", seed=config.seed)
    items_m = format_prompts(task.maintain, "default", seed=config.seed)
    norm = sc.max_norm if sc.max_norm is not None else mean_embedding_norm(model)
    runs = _attack(model, half_a, items_a, items_b, items_m, config, norm)
    before = forget_scores(model, half_b, config)
    base_runs = orig_a = orig_before = orig_m = None
    if original is not None:
        key = ("soft_prompts", facts_key(half_a), items_key(items_a), items_key(items_b), items_key(items_m),
               config_key(config), norm)
        base_runs = runs if original is model else cached(
            baselines, key, lambda: _attack(original, half_a, items_a, items_b, items_m, config, norm))
        # the original without a soft prompt, on each half: the baseline "before" and the at-chance flags
        orig_a = cached(baselines, scores_key(items_a, config),
                        lambda: forget_scores(original, half_a, config))
        orig_before = cached(baselines, scores_key(items_b, config),
                             lambda: forget_scores(original, half_b, config))
        orig_m = cached(baselines, scores_key(items_m, config),
                        lambda: forget_scores(original, task.maintain, config)) if items_m else None
    flags, chance_bar = _original_flags(orig_a, orig_before, orig_m)
    metrics = _metrics(task, items_a, items_b, runs, before, base_runs, orig_before, flags)
    sel = _selectivity(items_b, items_m, runs, config.seed)
    base_sel = _selectivity(items_b, items_m, base_runs, config.seed) if base_runs is not None else None
    if sel is not None:
        metrics += selectivity_metrics("soft_prompt", sel, base_sel, at_chance=flags["B"])
    rows = _fact_rows(items_a, items_b, runs, before, base_runs, sel)
    extra: dict[str, Any] = {
        "per_seed": [{"seed": r["seed"], "forget_accuracy": float(r["B"]["answer_wins"].mean()),
                      "train_accuracy": float(r["A"]["answer_wins"].mean()), "final_loss": r["losses"][-1] if r["losses"] else None,
                      "losses": r["losses"]} for r in runs],
        "seed_stderr": {"soft_prompt_forget_accuracy": _seed_se(runs, "B", "answer_wins"),
                        "soft_prompt_train_accuracy": _seed_se(runs, "A", "answer_wins")},
        "max_norm": norm, "soft_prompt_len": sc.length, "position": sc.position, "batch_size": sc.batch_size,
        "half_a": [r.id for r in half_a], "half_b": [r.id for r in half_b],
        "selectivity": ({"controls": {k: list(v) for k, v in sel.controls.items()}} if sel is not None else
                        {"note": "no held-out fact has a control (a maintain fact that could be given its answer)"}),
    }
    if base_runs is not None:
        extra["baseline_per_seed"] = [{"seed": r["seed"], "forget_accuracy": float(r["B"]["answer_wins"].mean())}
                                      for r in base_runs]
        extra["attack_damage"] = _attack_damage(items_b, orig_before, base_runs, items_m, orig_m)
        extra["at_chance_bar"] = chance_bar
    else:
        extra["baseline_note"] = "original=None: the attack was not run on the unedited model (no baselines)"
    return SuiteResult("soft_prompts", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)
