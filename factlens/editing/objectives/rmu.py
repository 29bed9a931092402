"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, "The WMDP Benchmark").

At one layer ``l`` (``EditConfig.rmu_layer``; default: the last layer of the mask), RMU
pushes the residual stream of the forget prompts towards a fixed random direction scaled by
``c`` (``rmu_steering_coef``) and keeps the residual stream of the retain prompts equal to
the original model's:

``L_forget = MSE(h_l(forget), c * u)``, ``L_retain = alpha * MSE(h_l(retain), h_l^orig(retain))``

with ``u`` a unit vector drawn once (as in the reference code: uniform in ``[0, 1)^d``, then
normalized; seeded by ``EditConfig.seed``) and ``alpha = rmu_alpha``. ``h_l`` is the
activation at ``factlens.components.resid_hook(l, "post")`` at every prompt token after BOS;
the forget term also leaves out the tokens that all training prompts share
(:func:`~factlens.editing.losses.shared_prompt_tokens`: the few-shot example that fact prompts
start with, 12 of about 18 tokens of the default sports prompt). Their activations are the
same for every prompt: steering them would pull against the retain term on the very same
numbers, and what it won there would change every prompt, held-out ones included. (The
references differ here too: the WMDP authors' RMU steers every token; open-unlearning's scores
the answer tokens only, ``labels != -100``; factlens scores the prompt tokens after the shared
ones, never answer tokens.) The retain term keeps
them at the original's. The MSE averages over tokens and dimensions per prompt, then over
prompts (:func:`factlens.editing.losses.activation_mse`). The model runs only up to block ``l``, so an
RMU micro-batch costs ``(l + 1) / n_layers`` of a full forward pass; the original's retain
activations are cached once in :meth:`RMUObjective.prepare` (``n_retain x tokens x d_model``
floats).

Adaptive RMU (Dang et al. 2025; ``EditConfig.rmu_adaptive_scale = beta``) sets
``c = beta * mean ||h_l^orig(forget)||``, the original model's mean activation norm over the
forget prompts' tokens (the shared ones left out as above): a fixed ``c`` that suits one
model's norms (20 for Zephyr-7B's layer
7) is far below another's (Gemma 3 270M's residual norms are about 2,800 at layer 4, where
``c = 20`` does not unlearn). The authors' code averages the norm over every position of the
first forget batch at step 0 (the original model; BOS and padding included); factlens
averages over the prompt tokens of every forget prompt (BOS and padding excluded, as in the
losses above), so ``c`` depends neither on the batch order nor on padding, and BOS's often
outsized norm does not set the scale.

Parameters above layer ``l`` get no gradient from these losses (only from the
general-text term, if ``l_sft > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.editing.losses import activation_mse, prompt_activations, shared_prompt_tokens
from factlens.editing.objectives.base import TrainingObjective

__all__ = ["RMUObjective", "rmu_layer", "mean_activation_norm"]

_CACHE_BATCH = 32  # prompts per no-grad forward when caching the original's retain activations


def rmu_layer(mask, config, n_layers: int) -> int:
    """The layer RMU steers: ``config.rmu_layer``, else the last layer of ``mask``'s components.

    Raises:
        ValueError: The layer is outside the model, or below every component of ``mask`` (then
            no masked parameter can change the activations the loss reads: nothing would train).
    """
    layer = config.rmu_layer
    if layer is None:
        layers = [c.layer for c in mask]
        if not layers:
            raise ValueError("RMU needs a layer: the mask is empty, so set EditConfig(rmu_layer=...)")
        layer = max(layers)
    if not 0 <= layer < n_layers:
        raise ValueError(f"rmu_layer={layer} is outside this model's layers 0..{n_layers - 1}")
    first = min((c.layer for c in mask), default=layer)
    if first > layer:  # the loss reads resid_post at `layer`: no masked component could change it
        raise ValueError(f"rmu_layer={layer} is below every layer of the mask (the first is {first}): RMU's loss "
                         f"reads the residual stream after layer {layer}, which no masked component can change, so "
                         f"nothing would be trained; set EditConfig(rmu_layer=...) to a layer >= {first}, or None "
                         "(the mask's last layer)")
    return layer


def mean_activation_norm(model, prompts: Sequence[str], layer: int, *, skip: int = 0) -> float:
    """Mean L2 norm of ``resid_post`` at ``layer`` over the prompts' tokens (BOS, padding and
    the first ``skip`` positions excluded).

    Every token counts once (a prompt with more tokens weighs more), computed without gradient.
    """
    prompts = list(dict.fromkeys(prompts))
    if not prompts:
        raise ValueError("adaptive RMU needs forget prompts to measure the activation norm")
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(prompts), _CACHE_BATCH):
            acts, valid = prompt_activations(model, prompts[i:i + _CACHE_BATCH], layer)
            valid[:, :skip] = False
            norms = acts.float().norm(dim=-1)[valid]
            total += float(norms.sum())
            count += int(norms.numel())
    return total / count


@dataclass(frozen=True)
class RMUObjective(TrainingObjective):
    """RMU's forget and retain activation losses at one layer.

    Attributes:
        layer: The layer whose ``resid_post`` is steered.
        control: ``c * u``, the forget activations' target (``[d_model]``).
        alpha: Weight of the retain term inside ``L_retain`` (``EditConfig.rmu_alpha``).
        retain_reference: Retain prompt -> the original's activations at its tokens (``[n_tokens, d_model]``).
        forget_norm: Adaptive RMU: the original's mean activation norm over the forget
            prompts' tokens (``c = rmu_adaptive_scale * forget_norm``); ``None`` for plain RMU.
        skip: Leading positions (BOS included) every training prompt shares: the forget term
            and the adaptive norm leave them out, the retain term keeps them at the original.
    """

    layer: int
    control: Tensor
    alpha: float
    retain_reference: Mapping[str, Tensor]
    forget_norm: float | None = None
    skip: int = 1

    @classmethod
    def prepare(cls, model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt], *,
                mask, config) -> "RMUObjective":
        layer = rmu_layer(mask, config, model.cfg.n_layers)
        gen = torch.Generator().manual_seed(config.seed)
        u = torch.rand(model.cfg.d_model, generator=gen)
        forget_norm = None
        coef = config.rmu_steering_coef
        skip = shared_prompt_tokens(model, [it.prompt for it in (*forget_items, *retain_items)])
        if config.rmu_adaptive_scale is not None:
            forget_norm = mean_activation_norm(model, [it.prompt for it in forget_items], layer, skip=skip)
            coef = config.rmu_adaptive_scale * forget_norm
        control = (u / u.norm() * coef).to(model.cfg.device)
        ref: dict[str, Tensor] = {}
        prompts = list(dict.fromkeys(it.prompt for it in retain_items))
        with torch.no_grad():
            for i in range(0, len(prompts), _CACHE_BATCH):
                chunk = prompts[i:i + _CACHE_BATCH]
                acts, valid = prompt_activations(model, chunk, layer)
                ref.update({p: acts[j][valid[j]].clone() for j, p in enumerate(chunk)})
        return cls(layer=layer, control=control, alpha=config.rmu_alpha, retain_reference=MappingProxyType(ref),
                   forget_norm=forget_norm, skip=skip)

    def describe(self) -> dict[str, Any]:
        out = {"rmu_layer": self.layer, "rmu_control_norm": float(self.control.norm()), "rmu_shared_tokens": self.skip}
        if self.forget_norm is not None:
            out["rmu_forget_norm"] = self.forget_norm
        return out

    def losses(self, model, forget_batch: Sequence[FormattedPrompt],
               retain_batch: Sequence[FormattedPrompt]) -> tuple[Tensor, Tensor]:
        nf = len(forget_batch)
        acts, valid = prompt_activations(model, [it.prompt for it in forget_batch] + [it.prompt for it in retain_batch],
                                         self.layer)
        forget_valid = valid[:nf].clone()
        forget_valid[:, :self.skip] = False  # the shared positions: kept by the retain term, never steered
        loss_forget = activation_mse(acts[:nf], self.control.to(acts.dtype), forget_valid)
        if not retain_batch:
            return loss_forget, acts.new_zeros(())
        acts_r, valid_r = acts[nf:], valid[nf:]
        target = torch.zeros_like(acts_r)
        for j, it in enumerate(retain_batch):
            try:
                target[j][valid_r[j]] = self.retain_reference[it.prompt].to(acts.dtype)
            except KeyError:
                raise ValueError(f"RMU has no original activations for retain prompt {it.prompt!r}: build the "
                                 "objective with prepare() on the same retain prompts") from None
        return loss_forget, self.alpha * activation_mse(acts_r, target.detach(), valid_r)
