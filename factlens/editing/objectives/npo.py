"""Negative Preference Optimization (NPO) and its reference-free variant SimNPO.

* NPO (Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to
  Effective Unlearning"): ``-(2 / beta) logsigmoid(-beta (log p - log p_ref))`` on the forget
  answers, with ``p_ref`` the frozen original model. The original's log-probabilities of the
  forget answers are computed once in :meth:`NPOObjective.prepare` (one number per forget
  prompt), so no second model is kept. With a retain term this is the paper's "NPO+RT"
  (open-unlearning's ``NPO`` with NLL retain loss); ``l_retain=0`` gives plain NPO.
* SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference
  Optimization for LLM Unlearning"): ``-(2 / beta) logsigmoid(-beta log p / |y| - gamma)``,
  no reference model, the log-probability normalized by the answer's token count ``|y|``.

The loss functions themselves are :func:`factlens.editing.losses.npo_loss` and
:func:`factlens.editing.losses.simnpo_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import torch
from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import npo_loss, simnpo_loss
from factlens.editing.objectives.base import TrainingObjective, answer_logprobs, retain_cross_entropy

__all__ = ["NPOObjective", "SimNPOObjective"]

_REF_BATCH = 32  # prompts per no-grad forward when caching the reference


def _key(it: FormattedPrompt) -> tuple[str, str]:
    return it.prompt, it.answer


@dataclass(frozen=True)
class NPOObjective(TrainingObjective):
    """NPO on the forget answers against the original model; retain cross-entropy.

    Attributes:
        beta: ``EditConfig.npo_beta``.
        reference: ``(prompt, answer)`` -> the original model's ``log p(answer | prompt)``.
    """

    beta: float
    reference: Mapping[tuple[str, str], float]

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config) -> "NPOObjective":
        ref: dict[tuple[str, str], float] = {}
        items = list(dict.fromkeys(forget_items))
        with torch.no_grad():
            for i in range(0, len(items), _REF_BATCH):
                chunk = items[i:i + _REF_BATCH]
                logp, _, _ = answer_logprobs(model, chunk, [])
                ref.update({_key(it): float(v) for it, v in zip(chunk, logp.tolist())})
        return cls(beta=config.npo_beta, reference=MappingProxyType(ref))

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        logp_f, _, logp_r = answer_logprobs(model, forget_batch, retain_batch)
        try:
            ref = torch.tensor([self.reference[_key(it)] for it in forget_batch], dtype=logp_f.dtype,
                               device=logp_f.device)
        except KeyError as e:
            raise ValueError(f"NPO has no reference log-probability for forget prompt {e.args[0]!r}: build the "
                             "objective with prepare() on the same forget prompts") from None
        return npo_loss(logp_f, ref, self.beta), retain_cross_entropy(logp_r)


@dataclass(frozen=True)
class SimNPOObjective(TrainingObjective):
    """SimNPO on the forget answers (no reference model); retain cross-entropy.

    Attributes:
        beta: ``EditConfig.simnpo_beta``.
        gamma: ``EditConfig.simnpo_gamma`` (reward margin).
    """

    beta: float
    gamma: float

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config) -> "SimNPOObjective":
        return cls(beta=config.simnpo_beta, gamma=config.simnpo_gamma)

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        logp_f, n_tok, logp_r = answer_logprobs(model, forget_batch, retain_batch)
        return simnpo_loss(logp_f, n_tok, self.beta, self.gamma), retain_cross_entropy(logp_r)
