"""DPO towards an alternate answer ("IdkDPO"): unlearning by preferring a refusal.

Direct Preference Optimization (Rafailov et al. 2023) used for unlearning as in TOFU (Maini
et al. 2024) and open-unlearning's ``DPO`` trainer: on every forget prompt the true answer is
the dispreferred completion and an alternate answer (by default ``"I don't know"``) the
preferred one, both against the frozen original model
(:func:`factlens.editing.losses.dpo_loss`). With a retain term (cross-entropy, or KL with
``retain_loss="kl"``) as NPO's.

Why it belongs in a comparison of localizations: it teaches the model to say something else,
not to lose the fact. The candidate-ranking scores of factlens (which sport is most likely
among the sports) can keep the fact while the free-text answer is a refusal; the attacks
(relearning, soft prompts, direction ablation, lenses) and the other prompt formats tell
whether the fact is still there.

Settings: :class:`DPOConfig` (``EditConfig.objectives["dpo"]``, ``--edit objectives.dpo.beta=...``).
The original's log-probabilities of both completions are computed once in
:meth:`DPOObjective.prepare` (two numbers per forget prompt), so no second model is kept.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import torch
from torch import Tensor

from factlens.config import ConfigBase
from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import answer_logprobs_and_lengths, answer_logprobs_and_rows, dpo_loss
from factlens.editing.objectives.base import (BatchLogprobs, RetainKL, TrainingObjective, check_reduction,
                                             check_retain_loss, prepare_retain_kl, retain_term)

__all__ = ["DPOConfig", "DPOObjective"]

_REF_BATCH = 32  # prompts per no-grad forward when caching the reference


@dataclass(frozen=True)
class DPOConfig(ConfigBase):
    """Settings of ``objective="dpo"`` (``EditConfig.objectives["dpo"]``).

    Attributes:
        alternate: The preferred answer on every forget prompt (open-unlearning's IdkDPO draws
            one of a list of refusals per question; factlens takes one, so that the run is
            reproducible without a data file). Written without surrounding whitespace, as every
            answer; it is scored after the prompt as any answer is (the space before it added
            as for the true answers).
        beta: DPO's inverse temperature; 0.1 as factlens's ``npo_beta`` and the DPO paper's
            common setting (open-unlearning's ``DPO`` class defaults to 1.0).
        retain_reduction: The retain term's mean, as :class:`~factlens.editing.objectives.npo.NPOConfig`.
        retain_loss: ``"nll"`` (cross-entropy) or ``"kl"`` (:class:`~factlens.editing.objectives.base.RetainKL`).

    Example:
        >>> DPOConfig(alternate="I'm not sure", beta=0.5).beta
        0.5
    """

    alternate: str = "I don't know"
    beta: float = 0.1
    retain_reduction: str = "fact"
    retain_loss: str = "nll"

    def __post_init__(self) -> None:
        if not isinstance(self.alternate, str) or not self.alternate.strip():
            raise ValueError(f"DPOConfig.alternate must be a non-empty answer string, got {self.alternate!r}")
        if self.alternate != self.alternate.strip():  # the editor refused it per unit, without naming the setting
            raise ValueError(f"DPOConfig.alternate is written without surrounding whitespace, as every answer (the "
                             f"space before it is added when it is scored); got {self.alternate!r}, use "
                             f"{self.alternate.strip()!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not (
                math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"DPOConfig.beta must be a finite number > 0, got {self.beta!r}")
        check_reduction(self.retain_reduction, where="DPOConfig.retain_reduction")
        check_retain_loss(self.retain_loss, where="DPOConfig.retain_loss")


def _warn_unknown_tokens(model, alternate: str) -> None:
    """Warn when the alternate holds the tokenizer's unknown token: every unknown word is then the same
    token, so DPO would prefer "<unk> <unk>" whatever the words were (a word-level test tokenizer
    turned "I don't know" into four of them)."""
    from factlens.tokens import answer_token_ids

    unk = getattr(getattr(model, "tokenizer", None), "unk_token_id", None)
    if unk is not None and unk in answer_token_ids(model, alternate):
        warnings.warn(f"DPOConfig.alternate {alternate!r} has words this tokenizer does not know (its unknown "
                      "token): DPO prefers that token, not the words; choose an alternate the tokenizer spells",
                      UserWarning, stacklevel=4)


def _key(it: FormattedPrompt) -> tuple[str, str]:
    return it.prompt, it.answer


@dataclass(frozen=True)
class DPOObjective(TrainingObjective):
    """DPO on the forget prompts (true answer dispreferred, :attr:`alternate` preferred); retain term as NPO's.

    Attributes:
        beta: :attr:`DPOConfig.beta`.
        alternate: :attr:`DPOConfig.alternate`.
        reference: ``(prompt, answer)`` -> the original's ``(log p(answer), log p(alternate))``.
        retain_reduction: :attr:`DPOConfig.retain_reduction`.
        retain_kl: The prepared KL retain term (``retain_loss="kl"`` with a retain term), else ``None``.
        retain_loss: :attr:`DPOConfig.retain_loss`, as asked (recorded in the edit's ``meta``).
    """

    beta: float
    alternate: str
    reference: Mapping[tuple[str, str], tuple[float, float]]
    retain_reduction: str = "fact"
    retain_kl: RetainKL | None = None
    retain_loss: str = "nll"

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config, settings: DPOConfig | None = None) -> "DPOObjective":
        settings = settings or DPOConfig()
        items = list(dict.fromkeys(forget_items))
        same = [it.answer for it in items if it.answer.strip() == settings.alternate.strip()]
        if same:
            raise ValueError(f"DPOConfig.alternate {settings.alternate!r} is the answer to forget of {len(same)} forget "
                             "prompt(s): DPO would prefer and disprefer the same completion; choose another alternate")
        _warn_unknown_tokens(model, settings.alternate)
        ref: dict[tuple[str, str], tuple[float, float]] = {}
        with torch.no_grad():
            for i in range(0, len(items), _REF_BATCH):
                chunk = items[i:i + _REF_BATCH]
                prompts = [it.prompt for it in chunk]
                logp, _ = answer_logprobs_and_lengths(model, prompts * 2,
                                                      [it.answer for it in chunk] + [settings.alternate] * len(chunk))
                lose, win = logp[:len(chunk)].tolist(), logp[len(chunk):].tolist()
                ref.update({_key(it): (float(a), float(b)) for it, a, b in zip(chunk, lose, win)})
        return cls(beta=float(settings.beta), alternate=settings.alternate, reference=MappingProxyType(ref),
                   retain_reduction=settings.retain_reduction,
                   retain_kl=prepare_retain_kl(model, retain_items, config, settings.retain_loss,
                                               settings.retain_reduction), retain_loss=settings.retain_loss)

    def _logprobs(self, model, forget_batch: Sequence[FormattedPrompt],
                  retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, BatchLogprobs]:
        """``log p(alternate)`` of each forget prompt and the :class:`BatchLogprobs` of both batches, one forward pass."""
        nf = len(forget_batch)
        items = list(forget_batch) + list(retain_batch)
        prompts = [it.prompt for it in items] + [it.prompt for it in forget_batch]
        answers = [it.answer for it in items] + [self.alternate] * nf
        rows = None
        if self.retain_kl is not None and retain_batch:
            logp, n_tok, rows_all = answer_logprobs_and_rows(model, prompts, answers, rows_from=nf)
            rows = rows_all[:int(n_tok[nf:len(items)].sum())]  # the retain answers' rows, before the alternates'
        else:
            logp, n_tok = answer_logprobs_and_lengths(model, prompts, answers)
        n = len(items)
        return logp[n:], BatchLogprobs(logp[:nf], n_tok[:nf], logp[nf:n], n_tok[nf:n], rows)

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        win, lp = self._logprobs(model, forget_batch, retain_batch)
        try:
            ref = torch.tensor([self.reference[_key(it)] for it in forget_batch], dtype=win.dtype, device=win.device)
        except KeyError as e:
            raise ValueError(f"DPO has no reference log-probability for forget prompt {e.args[0]!r}: build the "
                             "objective with prepare() on the same forget prompts") from None
        forget = dpo_loss(lp.forget, win, ref[:, 0], ref[:, 1], self.beta)
        return forget, retain_term(lp, retain_batch, self.retain_kl, self.retain_reduction)

    def describe(self) -> dict[str, str | float]:
        return {"alternate": self.alternate, "dpo_beta": self.beta, "retain_reduction": self.retain_reduction,
                "retain_loss": self.retain_loss}
