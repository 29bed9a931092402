"""One optimizer step of masked fine-tuning, and the state it works on.

:func:`train_step` is the whole inner loop of :func:`factlens.editing.editor.finetune`:
``grad_accum`` micro-batches of ``l_forget * L_forget + l_retain * L_retain + l_sft * L_SFT``
(the first two from the objective, the last from :class:`~factlens.editing.sampling.GeneralText`),
then one masked update (:func:`masked_update`): gradients of unselected entries zeroed,
global-norm clipping, the optimizer step, and unselected entries of partially selected
tensors written back to their exact original values (so AdamW momentum and weight decay
cannot move them).

A loss or a trained parameter that is not finite stops training with a
:class:`FloatingPointError` naming the step, the learning rate and the loss terms (the
caller restores the model).
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from factlens.editing.config import EditConfig
from factlens.editing.objectives.base import TrainingObjective
from factlens.editing.sampling import BatchSampler, GeneralText

__all__ = ["with_gradients", "half_precision_masters", "optimized_tensors", "TrainState", "train_step", "masked_update", "drain_half_grads", "micro_batch_losses", "lr_factor", "make_optimizer",
           "check_optimizer", "trainable"]


def with_gradients(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with gradients on, also when the caller is under ``torch.no_grad()`` or
    ``torch.inference_mode()`` (a notebook's evaluation block): an edit's model copy, its
    trained parameters and their graph must be ordinary tensors (masked fine-tuning under
    ``no_grad`` trained nothing and reported success)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def lr_factor(config: EditConfig, t: int) -> float:
    """Learning-rate multiplier for optimizer step ``t`` (0-based): linear warm-up, then the schedule."""
    w = config.warmup_steps
    if t < w:
        return (t + 1) / w
    if config.schedule == "constant":
        return 1.0
    progress = (t - w) / max(1, config.steps - w)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def check_optimizer(config: EditConfig, device: torch.device) -> None:
    """Raise early when ``config.optimizer`` cannot run on ``device``."""
    if config.optimizer == "adamw":
        return
    if not torch.cuda.is_available() or device.type != "cuda":
        raise ValueError(f"optimizer='adamw8bit' needs bitsandbytes and a model on a CUDA GPU; this model is on {device}. "
                         "Use EditConfig(optimizer='adamw') on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError("optimizer='adamw8bit' needs bitsandbytes: pip install bitsandbytes (or use "
                          "EditConfig(optimizer='adamw'))") from e


def make_optimizer(params: list[torch.nn.Parameter], config: EditConfig) -> torch.optim.Optimizer:
    """AdamW (torch, or bitsandbytes' 8-bit AdamW) over ``params`` only."""
    check_optimizer(config, params[0].device)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)


@contextmanager
def trainable(model, names: Sequence[str]) -> Iterator[dict[str, torch.nn.Parameter]]:
    """Only ``names`` require grad inside the block; flags and ``.grad`` restored afterwards."""
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    grads = {n: p.grad for n, p in params.items()}
    try:
        for n, p in params.items():
            p.requires_grad_(n in names)
            p.grad = None
        yield params
    finally:
        for n, p in params.items():
            p.grad = grads[n]
            p.requires_grad_(flags[n])


@dataclass
class TrainState:
    """What one masked fine-tuning run trains and how.

    Attributes:
        model: The model being trained (the user's model with ``inplace=True``, else a copy).
        params: Name -> trained parameter (only the tensors the mask touches).
        originals: Name -> the parameter's values before training (exact restore, deltas,
            and the KL reference when it is not cached).
        unselected: Name -> entries the mask does *not* select, for partially selected tensors.
        optimizer: The optimizer over ``params``.
        objective: The prepared training objective.
        forget: Forget-prompt batches.
        retain: Retain-prompt batches (empty when the objective has no retain term).
        text: General-text batches of the SFT term (``None``: ``l_sft == 0``).
        config: The hyper-parameters.
        master: Name -> float32 copy of each trained half-precision (bf16/fp16) parameter: the
            optimizer steps these and the model's tensor gets their rounded values
            (:func:`half_precision_masters`). Empty for float32 models.
    """

    model: Any
    params: dict[str, torch.nn.Parameter]
    originals: dict[str, Tensor]
    unselected: dict[str, Tensor]
    optimizer: torch.optim.Optimizer
    objective: TrainingObjective
    forget: BatchSampler
    retain: BatchSampler
    text: GeneralText | None
    config: EditConfig
    master: dict[str, Tensor] = field(default_factory=dict)

    def restore(self) -> None:
        """Write the original values back into every trained parameter."""
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.originals[n])


def micro_batch_losses(state: TrainState) -> dict[str, Tensor]:
    """``loss_forget``, ``loss_retain`` (objective) and ``loss_sft`` (0 without general text) on the next batches.

    (:func:`train_step` draws the same batches in the same order but backpropagates the fact
    terms before computing the text term, to keep only one graph in memory.)"""
    lf, lr = state.objective.losses(state.model, state.forget.next(), state.retain.next())
    ls = state.text.loss(state.model, state.originals) if state.text is not None else lf.new_zeros(())
    return {"loss_forget": lf, "loss_retain": lr, "loss_sft": ls}


def half_precision_masters(params: dict[str, torch.nn.Parameter]) -> dict[str, Tensor]:
    """Float32 copies of the bf16/fp16 tensors among ``params``, for the optimizer to step.

    AdamW in the model's own half precision loses the edit: a bf16 weight of size 1e-2 has a
    rounding step of about 4e-5, so an update of lr 1e-5 rounds away (a bf16 tiny model kept
    179 of 4,192 updated entries where float32 kept all), and in fp16 AdamW's eps of 1e-8
    is 0, so the first step divides by zero. Mixed-precision training's usual remedy: the
    optimizer and its moments work on float32 copies; the model gets their rounded values.
    """
    return {n: p.detach().float().clone() for n, p in params.items() if p.dtype in (torch.float16, torch.bfloat16)}


def optimized_tensors(state_params: dict[str, torch.nn.Parameter], master: dict[str, Tensor]) -> list[Tensor]:
    """What the optimizer steps: each trained parameter, or its float32 master copy."""
    return [master.get(n, p) for n, p in state_params.items()]


def drain_half_grads(state: TrainState) -> None:
    """Add each half-precision parameter's ``.grad`` into its float32 master's and clear it.

    Called after every backward pass: left in the parameter, the gradients of the
    ``2 * grad_accum`` passes of a step would be summed in bf16 (8 significant bits; the stepped
    gradient of a bf16 tiny model was off by 4e-3 of its norm at ``grad_accum=16``). The cost is
    a float32 gradient per trained half-precision tensor during the passes instead of at the step.
    """
    with torch.no_grad():
        for n, w in state.master.items():
            g = state.params[n].grad
            if g is not None:
                w.grad = g.float() if w.grad is None else w.grad.add_(g)
                state.params[n].grad = None


def masked_update(state: TrainState) -> None:
    """Zero unselected gradients, clip, step (float32 masters of half-precision tensors), and
    restore unselected entries exactly."""
    params, cfg = state.params, state.config
    drain_half_grads(state)  # whatever a caller's backward passes left in the parameters
    with torch.no_grad():
        for n, m in state.unselected.items():
            g = state.master[n].grad if n in state.master else params[n].grad
            if g is not None:
                g.masked_fill_(m, 0.0)
        stepped = optimized_tensors(params, state.master)
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(stepped, cfg.clip_grad)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        for n, w in state.master.items():
            params[n].copy_(w)  # rounded to the model's dtype; the master keeps what rounding drops
        for n, m in state.unselected.items():
            params[n].copy_(torch.where(m, state.originals[n], params[n]))


def _diverged(step: int, lr: float, config: EditConfig, what: str) -> FloatingPointError:
    return FloatingPointError(
        f"editing diverged at optimizer step {step} (learning rate {lr:.3g}): {what}. The model's trained "
        f"parameters were restored to their original values. Lower EditConfig.lr (now {config.lr:g}), keep "
        f"clip_grad set (now {config.clip_grad}), or lower the loss weights")


def train_step(state: TrainState, step: int) -> dict[str, float]:
    """One optimizer step (``grad_accum`` micro-batches, then :func:`masked_update`).

    Returns:
        The history row ``{"step", "loss", "loss_forget", "loss_retain", "loss_sft", "lr"}``
        (losses averaged over the micro-batches).

    Raises:
        FloatingPointError: A loss term or a trained parameter is NaN or infinite.
    """
    cfg = state.config
    lr_now = cfg.lr * lr_factor(cfg, step)
    for g in state.optimizer.param_groups:
        g["lr"] = lr_now
    sums = dict.fromkeys(("loss", "loss_forget", "loss_retain", "loss_sft"), 0.0)
    for _ in range(cfg.grad_accum):
        # Two backward passes, fact terms first: the fact prompts' graph is freed before the general
        # text runs, so the two never sit in memory together. The gradient is the same sum (up
        # to float summation order) and the batches are drawn in the same order as before.
        lf, lr = state.objective.losses(state.model, state.forget.next(), state.retain.next())
        fact = cfg.l_forget * lf + cfg.l_retain * lr
        values = {"loss_forget": float(lf.detach()), "loss_retain": float(lr.detach())}
        if not all(math.isfinite(v) for v in values.values()):
            raise _diverged(step, lr_now, cfg, f"the loss is not finite ({values})")
        if fact.requires_grad:
            (fact / cfg.grad_accum).backward()
            drain_half_grads(state)
        ls = state.text.loss(state.model, state.originals) if state.text is not None else lf.new_zeros(())
        values["loss_sft"] = float(ls.detach())
        values["loss"] = float(fact.detach() + cfg.l_sft * ls.detach())
        if not all(math.isfinite(v) for v in values.values()):
            raise _diverged(step, lr_now, cfg, f"the loss is not finite ({values})")
        if ls.requires_grad:
            (cfg.l_sft * ls / cfg.grad_accum).backward()
            drain_half_grads(state)
        for k, v in values.items():
            sums[k] += v / cfg.grad_accum
    masked_update(state)
    bad = [n for n, p in state.params.items() if not bool(torch.isfinite(p).all())]
    if bad:
        raise _diverged(step, lr_now, cfg, f"parameters {bad[:3]} are no longer finite after the update")
    return {"step": step, **sums, "lr": lr_now}
