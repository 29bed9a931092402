"""Negative Preference Optimization (NPO) and its reference-free variant SimNPO.

* NPO (Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to
  Effective Unlearning"): ``-(2 / beta) logsigmoid(-beta (log p - log p_ref))`` on the forget
  answers, with ``p_ref`` the frozen original model. The original's log-probabilities of the
  forget answers are computed once in :meth:`NPOObjective.prepare` (one number per forget
  prompt), so no second model is kept. With a retain term this is the paper's "NPO+RT";
  ``l_retain=0`` gives plain NPO.
* SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference
  Optimization for LLM Unlearning"): ``-(2 / beta) logsigmoid(-beta log p / |y| - gamma)``,
  no reference model, the log-probability normalized by the answer's token count ``|y|``.

The retain term of both is the retain cross-entropy, a mean over the retain facts of each
answer's token-summed ``-log p`` by default (:class:`NPOConfig`, ``EditConfig.objectives["npo"]``
/ ``["simnpo"]``: ``retain_reduction="fact"``). open-unlearning's ``NPO`` and ``SimNPO`` take
Hugging Face's NLL for it, a mean over the retain answer tokens: ``retain_reduction="token"``.
The two are equal with one-token answers (the sports tasks); with longer ones (CounterFact) the
default's retain term is about ``|y|`` times larger. The forget terms already match
open-unlearning's (NPO: the token-summed log-probability; SimNPO: divided by ``|y|``).
``retain_loss="kl"`` replaces the cross-entropy by the KL from the original model's next-token
distributions at the retain answer positions (:class:`~factlens.editing.objectives.base.RetainKL`,
reduced as ``retain_reduction`` says): the NPO paper's "NPO-KL", open-unlearning's
``retain_loss_type: KL``.

The loss functions themselves are :func:`factlens.editing.losses.npo_loss` and
:func:`factlens.editing.losses.simnpo_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import torch
from torch import Tensor

from factlens.config import ConfigBase
from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import npo_loss, simnpo_loss
from factlens.editing.objectives.base import (RetainKL, TrainingObjective, batch_logprobs, check_reduction,
                                             check_retain_loss, prepare_retain_kl, retain_term)

__all__ = ["NPOConfig", "NPOObjective", "SimNPOObjective"]

_REF_BATCH = 32  # prompts per no-grad forward when caching the reference


def _key(it: FormattedPrompt) -> tuple[str, str]:
    return it.prompt, it.answer


@dataclass(frozen=True)
class NPOConfig(ConfigBase):
    """Settings of ``objective="npo"`` and ``"simnpo"`` (``EditConfig.objectives[name]``; their
    ``beta`` / ``gamma`` stay ``EditConfig.npo_beta`` / ``simnpo_beta`` / ``simnpo_gamma``).

    Attributes:
        retain_reduction: ``"fact"``: the retain cross-entropy averages each answer's
            token-summed ``-log p`` over the retain facts; ``"token"``: over the retain answer
            tokens (open-unlearning's NLL retain loss). Equal for one-token answers. The KL
            term is reduced the same way.
        retain_loss: ``"nll"``: cross-entropy of the retain answers; ``"kl"``: ``KL(p_original
            || p_model)`` at the retain answer positions (NPO-KL).

    Example:
        >>> NPOConfig(retain_reduction="token").retain_reduction
        'token'
    """

    retain_reduction: str = "fact"
    retain_loss: str = "nll"

    def __post_init__(self) -> None:
        check_reduction(self.retain_reduction, where="NPOConfig.retain_reduction")
        check_retain_loss(self.retain_loss, where="NPOConfig.retain_loss")


@dataclass(frozen=True)
class NPOObjective(TrainingObjective):
    """NPO on the forget answers against the original model; retain cross-entropy.

    Attributes:
        beta: ``EditConfig.npo_beta``.
        reference: ``(prompt, answer)`` -> the original model's ``log p(answer | prompt)``.
        retain_reduction: :attr:`NPOConfig.retain_reduction`.
    """

    beta: float
    reference: Mapping[tuple[str, str], float]
    retain_reduction: str = "fact"
    retain_kl: RetainKL | None = None
    retain_loss: str = "nll"

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config, settings: NPOConfig | None = None) -> "NPOObjective":
        ref: dict[tuple[str, str], float] = {}
        items = list(dict.fromkeys(forget_items))
        with torch.no_grad():
            for i in range(0, len(items), _REF_BATCH):
                chunk = items[i:i + _REF_BATCH]
                logp = batch_logprobs(model, chunk, []).forget
                ref.update({_key(it): float(v) for it, v in zip(chunk, logp.tolist())})
        settings = settings or NPOConfig()
        return cls(beta=config.npo_beta, reference=MappingProxyType(ref), retain_reduction=settings.retain_reduction,
                   retain_kl=prepare_retain_kl(model, retain_items, config, settings.retain_loss,
                                                       settings.retain_reduction), retain_loss=settings.retain_loss)

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        lp = batch_logprobs(model, forget_batch, retain_batch, retain_rows=self.retain_kl is not None)
        try:
            ref = torch.tensor([self.reference[_key(it)] for it in forget_batch], dtype=lp.forget.dtype,
                               device=lp.forget.device)
        except KeyError as e:
            raise ValueError(f"NPO has no reference log-probability for forget prompt {e.args[0]!r}: build the "
                             "objective with prepare() on the same forget prompts") from None
        return npo_loss(lp.forget, ref, self.beta), retain_term(lp, retain_batch, self.retain_kl,
                                                                 self.retain_reduction)

    def describe(self) -> dict[str, str]:
        return {"retain_reduction": self.retain_reduction, "retain_loss": self.retain_loss}


@dataclass(frozen=True)
class SimNPOObjective(TrainingObjective):
    """SimNPO on the forget answers (no reference model); retain cross-entropy.

    Attributes:
        beta: ``EditConfig.simnpo_beta``.
        gamma: ``EditConfig.simnpo_gamma`` (reward margin).
        retain_reduction: :attr:`NPOConfig.retain_reduction`.
    """

    beta: float
    gamma: float
    retain_reduction: str = "fact"
    retain_kl: RetainKL | None = None
    retain_loss: str = "nll"

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config, settings: NPOConfig | None = None) -> "SimNPOObjective":
        settings = settings or NPOConfig()
        return cls(beta=config.simnpo_beta, gamma=config.simnpo_gamma, retain_reduction=settings.retain_reduction,
                   retain_kl=prepare_retain_kl(model, retain_items, config, settings.retain_loss,
                                                       settings.retain_reduction), retain_loss=settings.retain_loss)

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        lp = batch_logprobs(model, forget_batch, retain_batch, retain_rows=self.retain_kl is not None)
        return (simnpo_loss(lp.forget, lp.forget_tokens, self.beta, self.gamma),
                retain_term(lp, retain_batch, self.retain_kl, self.retain_reduction))

    def describe(self) -> dict[str, str]:
        return {"retain_reduction": self.retain_reduction, "retain_loss": self.retain_loss}
