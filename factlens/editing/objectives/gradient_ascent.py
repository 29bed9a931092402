"""Gradient ascent (GA) and gradient difference (GradDiff) unlearning.

GA maximizes the cross-entropy of the forget answers, i.e. minimizes their mean
log-probability (:func:`factlens.editing.losses.gradient_ascent_loss`); it has no retain term
and is unbounded below. GradDiff (gradient difference, the ``GradDiff`` baseline of TOFU,
Maini et al. 2024, and of open-unlearning) adds cross-entropy on the retain facts.

What the mean is over (:class:`GradientAscentConfig`, ``EditConfig.objectives["graddiff"]``):
``"fact"`` (default) averages each answer's log-probability, summed over its tokens, over the
facts: every fact weighs the same whatever its answer's length. ``"token"`` averages over the
micro-batch's answer tokens, as a Hugging Face model's loss does and so open-unlearning's
GradAscent and GradDiff: an answer of three tokens weighs three times one of one token, and
the loss is the per-token cross-entropy whatever the answers' lengths. With one-token answers
(the sports tasks on most tokenizers) the two are equal; on CounterFact they are not.

GradDiff's retain term (:class:`GradDiffConfig`): ``retain_loss="nll"`` (default) the retain
answers' cross-entropy; ``"kl"`` the KL from the original model's next-token distributions at
the retain answer positions (:class:`~factlens.editing.objectives.base.RetainKL`): gradient
ascent with a KL retain term is TOFU's "KL" baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from factlens.config import ConfigBase
from factlens.data.formats import FormattedPrompt
from factlens.editing.objectives.base import (REDUCTIONS, RetainKL, TrainingObjective, batch_logprobs,
                                             check_reduction, check_retain_loss, mean_logprob, prepare_retain_kl,
                                             retain_term)

__all__ = ["GradientAscentConfig", "GradDiffConfig", "GradientAscentObjective", "GradDiffObjective", "REDUCTIONS"]

@dataclass(frozen=True)
class GradientAscentConfig(ConfigBase):
    """Settings of ``objective="gradient_ascent"`` and ``"graddiff"`` (``EditConfig.objectives[name]``).

    Attributes:
        reduction: ``"fact"``: the mean over facts of each answer's (token-summed)
            log-probability; ``"token"``: the mean over answer tokens (open-unlearning's loss).

    Example:
        >>> GradientAscentConfig(reduction="token").reduction
        'token'
    """

    reduction: str = "fact"

    def __post_init__(self) -> None:
        check_reduction(self.reduction)


@dataclass(frozen=True)
class GradDiffConfig(GradientAscentConfig):
    """Settings of ``objective="graddiff"`` (``EditConfig.objectives["graddiff"]``).

    Attributes:
        reduction: As :class:`GradientAscentConfig` (both terms; the KL term's too).
        retain_loss: ``"nll"``: cross-entropy of the retain answers; ``"kl"``: ``KL(p_original
            || p_model)`` at the retain answer positions (open-unlearning's GradDiff with
            ``retain_loss_type: KL``).

    Example:
        >>> GradDiffConfig(retain_loss="kl").retain_loss
        'kl'
    """

    retain_loss: str = "nll"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_retain_loss(self.retain_loss, where="GradDiffConfig.retain_loss")


def _logprobs(model, forget_batch: Sequence[FormattedPrompt], retain_batch: Sequence[FormattedPrompt],
              reduction: str) -> tuple[Tensor, Tensor]:
    """Mean answer log-probability of the forget and of the retain batch (one forward pass);
    the retain mean is 0 without retain facts."""
    lp = batch_logprobs(model, forget_batch, retain_batch)
    return (mean_logprob(lp.forget, lp.forget_tokens, reduction),
            mean_logprob(lp.retain, lp.retain_tokens, reduction))


@dataclass(frozen=True)
class GradientAscentObjective(TrainingObjective):
    """``L_forget = mean(log p(answer))``; no retain term (its registry entry has ``uses_retain=False``)."""

    reduction: str = "fact"

    @classmethod
    def prepare(cls, model, forget_items, retain_items, *, mask, config,
                settings: GradientAscentConfig | None = None) -> "GradientAscentObjective":
        return cls(reduction=(settings or GradientAscentConfig()).reduction)

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        lf, _ = _logprobs(model, forget_batch, [], self.reduction)
        return lf, lf.new_zeros(())

    def describe(self) -> dict[str, str]:
        return {"reduction": self.reduction}


@dataclass(frozen=True)
class GradDiffObjective(GradientAscentObjective):
    """``L_forget = mean(log p(answer))`` on the forget facts, ``L_retain = -mean(log p(answer))`` on the
    retain facts, or with ``retain_kl`` the KL term of :class:`~factlens.editing.objectives.base.RetainKL`."""

    retain_kl: RetainKL | None = None
    retain_loss: str = "nll"

    @classmethod
    def prepare(cls, model, forget_items, retain_items, *, mask, config,
                settings: GradientAscentConfig | None = None) -> "GradDiffObjective":
        settings = settings or GradDiffConfig()
        retain_loss = getattr(settings, "retain_loss", "nll")
        return cls(reduction=settings.reduction, retain_loss=retain_loss,
                   retain_kl=prepare_retain_kl(model, retain_items, config, retain_loss, settings.reduction))

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        if self.retain_kl is None:
            lf, lr = _logprobs(model, forget_batch, retain_batch, self.reduction)
            return lf, -lr
        lp = batch_logprobs(model, forget_batch, retain_batch, retain_rows=True)
        return (mean_logprob(lp.forget, lp.forget_tokens, self.reduction),
                retain_term(lp, retain_batch, self.retain_kl, self.reduction))

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "retain_loss": self.retain_loss}
