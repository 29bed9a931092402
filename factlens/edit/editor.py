"""Gradient-masked editing: train only the entries of a component mask.

:func:`edit` fine-tunes the parameter entries selected by a :class:`~factlens.components.Mask`
(``mask.to_param_masks(model)``: per-head slices of ``W_Q/W_K/W_V/W_O`` and biases,
including the shared grouped-query K/V slices ``_W_K/_W_V``, and whole MLP layers
``W_in/W_gate/W_out/b_in/b_out``) on the objective

``L = l_forget * L_forget + l_retain * L_retain + l_sft * L_SFT``

(see :mod:`factlens.edit.losses`). Embeddings, unembedding, normalization weights and
``b_O`` belong to no component and are never trained.

Masking guarantees:

* Only parameters touched by the mask get ``requires_grad=True`` and enter the optimizer
  (gradients and optimizer state exist only for those tensors); every other parameter has
  ``requires_grad=False`` during the call. All flags (and any existing ``.grad``) are
  restored afterwards, also after an exception. No hooks are added.
* The *update* is masked, not only the gradient: gradients of unselected entries are
  zeroed before the step, and after every optimizer step unselected entries are restored
  exactly (``torch.where(mask, param, original)``), so neither AdamW momentum nor weight
  decay can move them. Every unselected entry is bitwise identical after editing.
* ``inplace=False`` (default) edits a ``copy.deepcopy`` of the model, which costs one extra
  model copy of memory; ``inplace=True`` edits the caller's model (if training raises, its
  trained parameters are restored to their original values before the error propagates).
* Besides the model, the editor keeps one copy of each *touched* parameter tensor (for the
  exact restore, the revertible delta and, with ``sft_source=None``, the KL reference: the
  original model is evaluated with ``torch.func.functional_call`` on those originals,
  without a full model copy).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from factlens.components import Component, Mask, ModelShape
from factlens.data.formats import format_prompts
from factlens.edit.config import EditConfig
from factlens.edit.losses import fact_losses, reference_logprobs, sft_loss, sft_positions
from factlens.edit.result import EditResult, ParamDelta

__all__ = ["edit", "finetune", "KL_CACHE_BYTES"]

#: Precompute the original model's KL-reference log-probs once when they fit in this many
#: bytes (the paper's 32 chunks x 16 positions x 262k vocabulary take 537 MB); otherwise
#: they are recomputed per micro-batch with ``functional_call`` (one extra no-grad forward).
KL_CACHE_BYTES = 640 * 2**20


def _as_mask(mask) -> Mask:
    if isinstance(mask, Mask):
        return mask
    if isinstance(mask, Component):
        return Mask(frozenset([mask]))
    try:
        comps = [Component.parse(c) if isinstance(c, str) else c for c in mask]
    except TypeError:
        raise TypeError(f"mask must be a factlens Mask (or components/labels), got {type(mask).__name__}") from None
    if not all(isinstance(c, Component) for c in comps):
        raise TypeError("mask must be a factlens Mask, a list of Components or of labels like 'L3.mlp'")
    return Mask(frozenset(comps))


def _check_task(task, objective: str | None) -> str:
    if not all(hasattr(task, a) for a in ("forget", "retain", "objective")):
        raise TypeError(f"edit() needs a factlens Task (e.g. factlens.tasks.sports_athlete_editing(dataset)), "
                        f"got {type(task).__name__}")
    objective = objective or task.objective
    if objective not in ("inject", "unlearn"):
        raise ValueError(f"objective must be 'inject' or 'unlearn', got {objective!r}")
    if len(task.forget) == 0:
        raise ValueError("the task has no forget facts to edit")
    if objective == "inject":
        missing = [r.id or r.subject for r in task.forget if r.target_new is None]
        if missing:
            raise ValueError(f"objective='inject' needs target_new on every forget fact; missing for {missing[:5]} "
                             "(use an editing task, or objective='unlearn')")
    return objective


def _sft_kind(config: EditConfig) -> str:
    if config.l_sft == 0:
        return "none"
    return "kl:builtin" if config.sft_source is None else f"text:{config.sft_source}"


def _check_optimizer(config: EditConfig, device: torch.device) -> None:
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


def _make_optimizer(params: list[torch.nn.Parameter], config: EditConfig) -> torch.optim.Optimizer:
    _check_optimizer(config, params[0].device)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)


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


class _Batches:
    """Endless seeded batches of indices: reshuffled passes over ``range(n)``; ``size=None``: everything."""

    def __init__(self, n: int, size: int | None, gen: torch.Generator):
        self.n, self.size, self.gen = n, size, gen
        self.queue: list[int] = []

    def next(self) -> list[int]:
        if self.n == 0:
            return []
        if self.size is None or self.size >= self.n:
            return list(range(self.n))
        while len(self.queue) < self.size:
            self.queue += torch.randperm(self.n, generator=self.gen).tolist()
        out, self.queue = self.queue[: self.size], self.queue[self.size:]
        return out


@dataclass
class _SFT:
    tokens: torch.Tensor
    positions: torch.Tensor
    kl: bool
    cache: torch.Tensor | None = None


def _prepare_sft(model, config: EditConfig) -> _SFT | None:
    from factlens.data.text import load_texts, token_chunks

    if config.l_sft == 0:
        return None
    tokens = token_chunks(model, load_texts(config.sft_source), seq_len=config.sft_seq_len, n_chunks=config.n_sft_chunks)
    kl = config.sft_source is None
    return _SFT(tokens, sft_positions(tokens.shape[1], config.sft_positions, kl=kl), kl)


@contextmanager
def _trainable(model, names: Sequence[str]) -> Iterator[dict[str, torch.nn.Parameter]]:
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


def edit(model, mask, task, *, method: str = "finetune", objective: str | None = None, config: EditConfig = EditConfig(),
         inplace: bool = False, show_progress: bool = True) -> EditResult:
    """Edit or unlearn the facts of ``task`` by changing only the components in ``mask``.

    ``method`` names an entry of :data:`factlens.edit.registry.EDIT_METHODS` (default
    ``"finetune"``: masked fine-tuning, see :func:`finetune` for the arguments); an
    :class:`~factlens.edit.registry.EditMethod` entry of your own is accepted too.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> edit(p.model, Mask([p.lookup_mlp]), p.task, method="nosuch")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown edit method 'nosuch'; known: [...]
    """
    from factlens.edit.registry import EDIT_METHODS
    from factlens.registry import load

    entry = EDIT_METHODS.get(method)
    if entry.name != "finetune":
        _check_task(task, objective)
        entry.check_objective(objective or task.objective)
    return load(entry.fn)(model, mask, task, objective=objective, config=config, inplace=inplace,
                           show_progress=show_progress)


def finetune(model, mask, task, *, objective: str | None = None, config: EditConfig = EditConfig(),
             inplace: bool = False, show_progress: bool = True) -> EditResult:
    """Edit or unlearn the facts of ``task`` by training only the components in ``mask``.

    Args:
        model: A ``HookedTransformer``.
        mask: The components to train (a :class:`~factlens.components.Mask`; a list of
            components or labels is accepted too).
        task: A :class:`~factlens.tasks.Task`: ``forget`` facts (with ``target_new`` for
            editing), ``retain`` facts for the retain loss.
        objective: ``"inject"`` (edit to ``target_new``) or ``"unlearn"``
            (``-log(1 - p(answer))``); default: ``task.objective``.
        config: Hyper-parameters (:class:`EditConfig`; ``EditConfig.fast()`` for CPU).
        inplace: Edit ``model`` itself. Default ``False``: edit a deep copy (one extra model
            copy of memory); the original stays untouched.
        show_progress: Show a tqdm bar over optimizer steps.

    Returns:
        The :class:`EditResult` (``.model`` is the edited model; ``.revert()`` undoes the edit).

    Raises:
        ValueError: Bad task/objective/config, or ``optimizer="adamw8bit"`` without CUDA.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EditConfig(lr=1e-2, steps=5, batch_size=None, grad_accum=1, n_sft_chunks=4)
        >>> res = edit(p.model, Mask([p.lookup_mlp]), p.task, config=cfg, show_progress=False)
        >>> res.history[-1]["loss_forget"] < res.history[0]["loss_forget"], res.model is p.model
        (True, False)
        >>> res.sft_kind, sorted(res.deltas)[0], res.n_params_trained == Mask([p.lookup_mlp]).n_params(p.model)
        ('kl:builtin', 'blocks.1.mlp.W_in', True)
        >>> res.revert() is res.model
        True
    """
    t0 = time.perf_counter()
    mask = _as_mask(mask)
    objective = _check_task(task, objective)
    if not isinstance(config, EditConfig):
        raise TypeError(f"config must be an EditConfig, got {type(config).__name__}")
    forget_items = format_prompts(task.forget, config.train_format)
    if not forget_items:
        raise ValueError(f"the forget facts have no prompts in train_format={config.train_format!r}")
    retain_items = format_prompts(task.retain, config.train_format) if config.l_retain > 0 and len(task.retain) else []
    first = next(iter(model.parameters()), None)
    _check_optimizer(config, first.device if first is not None else torch.device("cpu"))
    work = model if inplace else copy.deepcopy(model)
    shape = ModelShape.of(work)
    param_masks = mask.to_param_masks(work)
    common = dict(mask=mask, config=config, objective=objective, shape=shape,
                  model_name=str(getattr(work.cfg, "model_name", "")), task_name=getattr(task, "name", ""))
    if not param_masks:
        warnings.warn("the mask selects no parameters: nothing was edited (the result has a zero delta)", stacklevel=2)
        return EditResult(model=work, history=(), seconds=time.perf_counter() - t0, sft_kind=_sft_kind(config),
                          n_params_trained=0, deltas={}, meta={"empty_mask": True}, **common)
    names = sorted(param_masks)
    sft = _prepare_sft(work, config)
    gen = torch.Generator().manual_seed(config.seed)
    f_batches = _Batches(len(forget_items), config.batch_size, gen)
    r_batches = _Batches(len(retain_items), config.batch_size, gen)
    s_batches = _Batches(len(sft.tokens) if sft else 0, config.sft_batch_size or config.batch_size, gen)

    history: list[dict[str, Any]] = []
    with _trainable(work, names) as params:
        train = [params[n] for n in names]
        orig = {n: params[n].detach().clone() for n in names}
        inv = {n: ~m for n, m in param_masks.items() if not bool(m.all())}  # partially selected tensors
        try:
            opt = _make_optimizer(train, config)
            if sft is not None and sft.kl:
                size = sft.tokens.shape[0] * len(sft.positions) * work.cfg.d_vocab * 4
                if size <= KL_CACHE_BYTES:  # the model is still the original here
                    sft.cache = torch.cat([reference_logprobs(work, sft.tokens[i:i + 8], sft.positions)
                                           for i in range(0, sft.tokens.shape[0], 8)])
            t_train = time.perf_counter()
            bar = tqdm(range(config.steps), desc="editing", disable=not show_progress, leave=False)
            for step in bar:
                lr_now = config.lr * lr_factor(config, step)
                for g in opt.param_groups:
                    g["lr"] = lr_now
                sums = {"loss": 0.0, "loss_forget": 0.0, "loss_retain": 0.0, "loss_sft": 0.0}
                for _ in range(config.grad_accum):
                    fb = [forget_items[i] for i in f_batches.next()]
                    rb = [retain_items[i] for i in r_batches.next()]
                    lf, lr_ = fact_losses(work, fb, rb, objective)
                    ls = lf.new_zeros(())
                    if sft is not None:
                        idx = torch.tensor(s_batches.next(), dtype=torch.long)
                        toks = sft.tokens[idx.to(sft.tokens.device)]
                        ref = None
                        if sft.kl:
                            ref = sft.cache[idx.to(sft.cache.device)] if sft.cache is not None else \
                                reference_logprobs(work, toks, sft.positions, orig)
                        ls = sft_loss(work, toks, sft.positions, reference=ref)
                    loss = config.l_forget * lf + config.l_retain * lr_ + config.l_sft * ls
                    (loss / config.grad_accum).backward()
                    for k, v in (("loss", loss), ("loss_forget", lf), ("loss_retain", lr_), ("loss_sft", ls)):
                        sums[k] += float(v.detach()) / config.grad_accum
                with torch.no_grad():
                    for n, m in inv.items():
                        if params[n].grad is not None:
                            params[n].grad.masked_fill_(m, 0.0)
                    if config.clip_grad is not None:
                        torch.nn.utils.clip_grad_norm_(train, config.clip_grad)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    for n, m in inv.items():  # mask the update: unselected entries back to their exact values
                        params[n].copy_(torch.where(m, orig[n], params[n]))
                history.append({"step": step, **sums, "lr": lr_now})
                bar.set_postfix(loss=f"{sums['loss']:.3f}")
            t_end = time.perf_counter()
        except BaseException:
            with torch.no_grad():  # leave the model as it was (matters for inplace=True)
                for n in names:
                    params[n].copy_(orig[n])
            raise
        with torch.no_grad():  # fully selected tensors: the delta's old values are a view of the saved copy
            deltas = {n: ParamDelta(m, orig[n].reshape(-1) if n not in inv else orig[n][m], params[n].detach()[m].clone())
                      for n, m in param_masks.items()}
        del orig, opt
    n_trained = int(sum(int(m.sum()) for m in param_masks.values()))
    meta = {"n_forget_prompts": len(forget_items), "n_retain_prompts": len(retain_items),
            "n_sft_chunks": int(sft.tokens.shape[0]) if sft else 0, "kl_cached": bool(sft is not None and sft.cache is not None),
            "train_seconds": t_end - t_train, "seconds_per_step": (t_end - t_train) / max(1, config.steps),
            "inplace": inplace, "device": str(train[0].device)}
    return EditResult(model=work, history=tuple(history), seconds=time.perf_counter() - t0, sft_kind=_sft_kind(config),
                      n_params_trained=n_trained, deltas=deltas, meta=meta, **common)
