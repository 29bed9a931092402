"""Scoring formatted prompts: probabilities and argmax-among-candidates accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from factlens.data.formats import FormattedPrompt
from factlens.progress_bars import progress_bar
from factlens.tokens import candidate_logprobs, iter_batches, unique_argmax

__all__ = ["PromptScores", "score_prompts", "CANDIDATE_SCORES", "ranking_values"]

#: How candidates are compared (:func:`ranking_values`): ``"sum"``, the log-probability of
#: the whole answer (the sum over its tokens); ``"token_mean"``, the mean log-probability per
#: answer token, as ROME's and MEMIT's CounterFact scores compare ``target_new`` with
#: ``target_true`` (their ``test_batch_prediction`` divides each summed NLL by the answer's
#: token count). The two rank one-token candidates (every sports fact) the same.
CANDIDATE_SCORES: tuple[str, ...] = ("sum", "token_mean")


def ranking_values(model, candidates: Sequence[str], logp: torch.Tensor, candidate_score: str, *,
                   lengths: dict[str, int] | None = None) -> torch.Tensor:
    """The values that rank ``candidates`` given their summed log-probabilities ``logp``:
    ``logp`` itself (``"sum"``) or ``logp`` divided by each candidate's token count
    (``"token_mean"``, :data:`CANDIDATE_SCORES`). ``lengths``: candidate -> token count, filled
    here as needed (pass one dict for many prompts, so that each candidate is tokenized once).

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> ranking_values(m, ["golf", "basketball player"], torch.tensor([-2.0, -3.0]), "token_mean").tolist()
        [-2.0, -1.5]
    """
    if candidate_score == "sum":
        return logp
    if candidate_score != "token_mean":
        raise ValueError(f"candidate_score must be one of {list(CANDIDATE_SCORES)}, got {candidate_score!r}")
    from factlens.tokens import answer_token_ids

    lengths = {} if lengths is None else lengths
    for c in candidates:
        if c not in lengths:
            lengths[c] = len(answer_token_ids(model, c))
    return logp / torch.tensor([lengths[c] for c in candidates], dtype=logp.dtype, device=logp.device)


@dataclass(frozen=True)
class PromptScores:
    """Per-prompt scores.

    Attributes:
        items: The scored prompts.
        logp_answer: Summed log-probability of the correct answer (over the full vocabulary).
        logp_target: Same for the edit target (NaN where there is none).
        answer_wins: The correct answer has the highest log-probability among the candidates.
        target_wins: The edit target has the highest log-probability among the candidates.
        p_answer_norm: Probability of the answer normalized over the candidates.
        p_target_norm: Same for the target (NaN where none).
        winner: Index into ``items[i].candidates`` of the candidate with the highest
            log-probability (what the model answers among the candidates; :meth:`predicted`);
            -1 where several share it (:func:`unique_argmax`: then no candidate wins).

    With ``candidate_score="token_mean"`` (:func:`score_prompts`) the wins and ``winner``
    compare the candidates' mean log-probabilities per token; the probabilities stay those of
    the whole answers (``logp_*`` summed over tokens, ``p_*_norm`` their softmax over the
    candidates): a softmax of per-token means is the probability of nothing.
    """

    items: tuple[FormattedPrompt, ...]
    logp_answer: np.ndarray
    logp_target: np.ndarray
    answer_wins: np.ndarray
    target_wins: np.ndarray
    p_answer_norm: np.ndarray
    p_target_norm: np.ndarray
    winner: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    @property
    def p_answer(self) -> np.ndarray:
        return np.exp(self.logp_answer)

    @property
    def p_target(self) -> np.ndarray:
        return np.exp(self.logp_target)

    def accuracy(self) -> float:
        return float(self.answer_wins.mean()) if len(self) else float("nan")

    def predicted(self) -> list[str | None]:
        """The winning candidate of each prompt (the model's answer among its candidates; ``None``
        where candidates tie at the top)."""
        return [it.candidates[int(w)] if w >= 0 else None for it, w in zip(self.items, self.winner)]

    def by_record(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            out.setdefault(it.record_id, []).append(i)
        return out


def score_prompts(model, items: Sequence[FormattedPrompt], *, batch_size: int = 16,
                  candidate_score: str = "sum") -> PromptScores:
    """Score prompts: log-probs of answer and target, and argmax accuracy among candidates.

    ``candidate_score`` (:data:`CANDIDATE_SCORES`): how the candidates are compared, by the
    whole answer's log-probability (``"sum"``) or per token (``"token_mean"``, ROME's
    CounterFact rule).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> from factlens.data.formats import format_prompts
        >>> p = planted_fact_model()
        >>> s = score_prompts(p.model, format_prompts(p.dataset))
        >>> s.accuracy()
        1.0
    """
    if candidate_score not in CANDIDATE_SCORES:
        raise ValueError(f"candidate_score must be one of {list(CANDIDATE_SCORES)}, got {candidate_score!r}")
    items = tuple(items)
    n = len(items)
    la, lt = np.full(n, np.nan), np.full(n, np.nan)
    aw, tw = np.zeros(n, bool), np.zeros(n, bool)
    pa, pt = np.full(n, np.nan), np.full(n, np.nan)
    win = np.zeros(n, np.int64)
    lengths: dict[str, int] = {}  # candidates' token counts (token_mean), each tokenized once
    chunks = list(iter_batches(n, max(batch_size, 1) * 4)) if n else []
    for sl in progress_bar(chunks, desc="scoring", leave=False):
        part = items[sl]
        lps = candidate_logprobs(model, [it.prompt for it in part], [it.candidates for it in part], batch_size=batch_size)
        for j, (it, lp) in enumerate(zip(part, lps)):
            i = sl.start + j
            lp = lp.double()
            if torch.isnan(lp).any():  # argmax would pick the first candidate (the true answer) and call it known
                bad = [x.record_id for x, v in zip(part, lps) if torch.isnan(v).any()]
                raise FloatingPointError(
                    f"the model gave NaN log-probabilities for prompt(s) of fact(s) {bad[:5]}: its weights or "
                    "activations are not finite (a diverged edit or attack? lower the learning rate or check "
                    "the model); such prompts cannot be scored, and scoring them as the first candidate would "
                    "count a broken model as knowing or forgetting the fact")
            ci = it.candidates.index(it.answer)
            la[i] = float(lp[ci])
            best = win[i] = unique_argmax(ranking_values(model, it.candidates, lp, candidate_score,
                                                         lengths=lengths))  # -1: a tie
            norm = torch.softmax(lp, 0)  # whole answers' probabilities, whatever ranks them
            aw[i] = best == ci
            pa[i] = float(norm[ci])
            if it.target is not None and it.target in it.candidates:
                ti = it.candidates.index(it.target)
                lt[i] = float(lp[ti])
                tw[i] = best == ti
                pt[i] = float(norm[ti])
    return PromptScores(items, la, lt, aw, tw, pa, pt, win)
