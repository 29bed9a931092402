"""Learned weight masks: unlearn or edit by *ablating* individual weights (paper appendix A.4).

:func:`learn_weight_mask` learns, for every weight entry inside the localized components
(the ``True`` entries of ``mask.to_param_masks(model)``), whether to keep it or to set it
to zero. No weight is ever changed otherwise: the only thing learned is a per-entry logit
``s`` with keep probability ``sigmoid(s)``.

Relaxation (``WeightMaskConfig.relaxation``):

* ``"straight_through"`` (default): the forward pass uses the *hard* mask
  ``keep = 1[sigmoid(s) >= 0.5]`` (the model that :meth:`WeightMaskResult.apply` with the
  default threshold produces), the backward pass the gradient of ``sigmoid(s)``
  (straight-through estimator). No hard-concrete noise is used.
* ``"sigmoid"``: the forward pass uses the soft ``keep = sigmoid(s)`` (weights are scaled,
  not only zeroed, during training; discretize afterwards).

The masked model is run with :func:`torch.func.functional_call` on ``W * keep`` for the
masked parameters (and detached copies of all others), so the user's model, its
parameters, their ``requires_grad`` flags and ``.grad`` are never touched.

Loss: ``l_forget * forget/inject loss + l_retain * retain loss + l_sft * SFT loss +
l_reg * L_reg`` (the first three from :mod:`factlens.editing.losses`, objective from the task),
with ``L_reg = sum(1 - sigmoid(s)) / n_entries``: the expected *fraction* of the masked
entries that is ablated (in ``[0, 1]``, independent of the mask's size). A larger ``l_reg``
therefore ablates fewer weights. Only ``s`` is optimized (Adam).

Example:
    >>> from factlens.testing import planted_fact_model
    >>> from factlens.tasks import sports_unlearning
    >>> from factlens.components import Mask
    >>> pf = planted_fact_model()
    >>> task = sports_unlearning(pf.dataset)
    >>> res = learn_weight_mask(pf.model, Mask(frozenset({pf.lookup_mlp})), task,
    ...                         config=WeightMaskConfig(steps=20, lr=0.2, l_sft=0.0))
    >>> sum(res.counts_per_component().values()) == res.n_masked() > 0
    True
    >>> default_evaluate(task)(res.apply(pf.model))
    {'forget_acc': 0.0, 'maintain_acc': 1.0}
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import torch
from torch import Tensor

from factlens.components import Component, Mask, ModelShape
from factlens.config import ConfigBase, check_numbers
from factlens.editing.sampling import BatchSampler, GeneralText
from factlens.editing.training import with_gradients
from factlens.progress_bars import progress_bar
from factlens.strict_json import strict_dumps

__all__ = ["WeightMaskConfig", "WeightMaskResult", "learn_weight_mask", "default_evaluate"]

@dataclass(frozen=True)
class WeightMaskConfig(ConfigBase):
    """Settings of :func:`learn_weight_mask`.

    Attributes:
        lr: Adam learning rate of the mask logits.
        steps: Optimization steps.
        forget_batch_size: Forget prompts per step (``None``: all).
        retain_batch_size: Retain prompts per step (``None``: all).
        l_forget: Weight of the forget (unlearn) / inject loss.
        l_retain: Weight of the retain loss.
        l_sft: Weight of the SFT loss (``0`` skips it and its forward pass).
        l_reg: Weight of ``L_reg`` (expected fraction of ablated entries); larger keeps more.
        init: Initial logit of every entry (``3.0``: keep probability ``sigmoid(3) = 0.95``).
        relaxation: ``"straight_through"`` or ``"sigmoid"`` (see the module docstring).
        seed: Seed of the batch sampling.
        train_format: Prompt format of the training prompts (``factlens.data.formats``).
        sft_source: Text for the SFT loss (``None``: KL to the unmasked model on built-in text).
        sft_seq_len: Tokens per SFT chunk.
        n_sft_chunks: Number of general-text chunks to draw SFT batches from.
        sft_batch_size: SFT chunks per step.
        sft_positions: Positions per chunk at which the SFT loss is read (``None``: all).
    """

    lr: float = 0.1
    steps: int = 100
    forget_batch_size: int | None = 16
    retain_batch_size: int | None = 16
    l_forget: float = 1.0
    l_retain: float = 1.0
    l_sft: float = 1.0
    l_reg: float = 1.0
    init: float = 3.0
    relaxation: Literal["straight_through", "sigmoid"] = "straight_through"
    seed: int = 0
    train_format: str = "default"
    sft_source: str | None = None
    sft_seq_len: int = 64
    n_sft_chunks: int = 32
    sft_batch_size: int = 4
    sft_positions: int | None = 16

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.relaxation not in ("straight_through", "sigmoid"):
            raise ValueError(f"relaxation must be 'straight_through' or 'sigmoid', got {self.relaxation!r}")
        if self.steps < 0 or self.lr <= 0:
            raise ValueError(f"need steps >= 0 and lr > 0, got steps={self.steps}, lr={self.lr}")
        for name in ("l_forget", "l_retain", "l_sft", "l_reg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("forget_batch_size", "retain_batch_size", "sft_batch_size", "sft_positions"):
            v = getattr(self, name)  # 0 drew no facts: the forget loss was silently left out
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1{' or None' if name != 'sft_batch_size' else ''}, got {v}")
        if self.sft_seq_len < 2 or self.n_sft_chunks < 1:
            raise ValueError(f"sft_seq_len must be >= 2 and n_sft_chunks >= 1, got {self.sft_seq_len}, "
                             f"{self.n_sft_chunks}")



# --- helpers ---------------------------------------------------------------------------


class _Runner(torch.nn.Module):
    """Holds the model as a submodule so ``functional_call`` reparametrizes all of it."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def _region_of(components: Iterable[Component], shape: ModelShape, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """Boolean entries of ``components`` in the parameters named in ``like`` (shapes of ``like``; CPU)."""
    out: dict[str, Tensor] = {}
    for comp in components:
        for name, idx in comp.param_slices(shape).items():
            if name in like:
                out.setdefault(name, torch.zeros(like[name].shape, dtype=torch.bool))[idx] = True
    return out


# --- result ----------------------------------------------------------------------------

#: The keys of every weight-mask history step (the loss terms of nonzero weight come besides).
_HISTORY_ALWAYS = ("step", "loss", "loss_reg", "n_ablated")


@dataclass(frozen=True, eq=False)
class WeightMaskResult:
    """A learned weight mask.

    Attributes:
        logits: Parameter name -> mask logits ``s`` (CPU float32, the parameter's shape).
        region: Parameter name -> entries that may be ablated (the components' entries).
        mask: The component mask the weights were learned in.
        config: The settings used.
        shape: The model's shape.
        objective: ``"unlearn"`` or ``"inject"``.
        history: Per step: ``step, loss, loss_reg, n_ablated`` and the loss terms that were
            computed: ``loss_forget`` (when ``l_forget > 0``), ``loss_retain`` (when
            ``l_retain > 0`` and the task has retain facts), ``loss_sft`` (when ``l_sft > 0``);
            a term of weight zero is not computed and has no key. No ``lr`` (Adam's rate is
            constant, ``config.lr``). Each entry describes the mask the step's loss was computed
            with, before its update (``n_ablated``: hard count at threshold 0.5). The learned mask is the one
            after the last update, so :meth:`n_masked` can differ from the last entry by a few
            entries. :meth:`to_frame` gives it as a table.
        seconds: Training time.
        task_summary: ``task.summary()`` of the training task.
        task: The training task (not saved; ``None`` after :meth:`load`).
    """

    logits: dict[str, Tensor]
    region: dict[str, Tensor]
    mask: Mask
    config: WeightMaskConfig
    shape: ModelShape
    objective: str
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    task_summary: dict[str, Any] = field(default_factory=dict)
    task: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"WeightMaskResult(mask={self.mask.labels}, n_entries={self.n_entries}, "
                f"n_masked@0.5={self.n_masked()}, steps={self.config.steps})")

    @property
    def n_entries(self) -> int:
        """Number of entries that could be ablated."""
        return int(sum(int(r.sum()) for r in self.region.values()))

    def to_frame(self):
        """The training history as a pandas DataFrame, one row per step (as :meth:`EditResult.to_frame`).

        Columns are the keys of the history entries (see :attr:`history`: ``step, loss``, the
        loss terms of nonzero weight, ``loss_reg, n_ablated``). A result of ``steps=0`` gives an
        empty frame with the columns every step has, ``step, loss, loss_reg, n_ablated``.
        """
        import pandas as pd

        if not self.history:
            return pd.DataFrame(columns=list(_HISTORY_ALWAYS))
        return pd.DataFrame.from_records([dict(h) for h in self.history])

    def keep_probs(self) -> dict[str, Tensor]:
        """Keep probability ``sigmoid(s)`` per parameter (1 outside the region)."""
        return {n: torch.where(self.region[n], torch.sigmoid(s), torch.ones_like(s)) for n, s in self.logits.items()}

    def discretize(self, threshold: float | None = None, *, n_masked: int | None = None) -> dict[str, Tensor]:
        """Boolean ablation mask per parameter (``True``: set to zero).

        Args:
            threshold: Ablate the entries whose keep probability ``sigmoid(s)`` is below it
                (default ``0.5`` when ``n_masked`` is not given).
            n_masked: Instead, ablate exactly the ``n_masked`` entries with the lowest logits
                (ties broken by parameter name, then position).
        """
        if threshold is not None and n_masked is not None:
            raise ValueError("give either threshold or n_masked, not both")
        if n_masked is None:
            threshold = 0.5 if threshold is None else float(threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold is a keep probability in [0, 1], got {threshold}")
            return {n: self.region[n] & (torch.sigmoid(s) < threshold) for n, s in self.logits.items()}
        if isinstance(n_masked, bool) or not isinstance(n_masked, numbers.Integral):
            # 2.5 failed in slicing with a bare TypeError, True ablated one entry
            raise ValueError(f"n_masked must be an integer (a number of entries to ablate), got {n_masked!r}")
        n_masked, total = int(n_masked), self.n_entries
        if not 0 <= n_masked <= total:
            raise ValueError(f"n_masked must be in [0, {total}] (the number of maskable entries), got {n_masked}")
        names = sorted(self.logits)
        flat = torch.cat([self.logits[n].masked_fill(~self.region[n], math.inf).flatten() for n in names])
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[torch.argsort(flat, stable=True)[:n_masked]] = True
        parts = chosen.split([self.logits[n].numel() for n in names])
        return {n: c.view(self.logits[n].shape) for n, c in zip(names, parts)}

    def n_masked(self, threshold: float | None = None) -> int:
        """Number of ablated entries at ``threshold`` (default 0.5)."""
        return int(sum(int(m.sum()) for m in self.discretize(threshold).values()))

    def apply(self, model, *, threshold: float | None = None, n_masked: int | None = None, inplace: bool = False):
        """Zero the ablated weights of ``model`` (a deep copy unless ``inplace``) and return it."""
        ablate = self.discretize(threshold, n_masked=n_masked)
        self._check_model(model)
        target = model if inplace else copy.deepcopy(model)
        params = dict(target.named_parameters())
        with torch.no_grad():
            for n, m in ablate.items():
                params[n].masked_fill_(m.to(params[n].device), 0)
        return target

    def _check_model(self, model) -> None:
        shape = ModelShape.of(model)
        if shape != self.shape:
            raise ValueError(f"the mask was learned on a model of shape {self.shape}, not {shape}")
        params = dict(model.named_parameters())
        for n, s in self.logits.items():
            if n not in params or tuple(params[n].shape) != tuple(s.shape):
                raise ValueError(f"parameter {n!r} is missing or has another shape in this model")

    # -- counts --------------------------------------------------------------------------
    def counts_per_component(self, threshold: float | None = None, *, n_masked: int | None = None) -> dict[str, int]:
        """Ablated entries per component label (each entry counted once; they sum to the total).

        An entry shared by several components (a GQA head group's K/V slice, a neuron inside a
        whole-MLP component) is counted for the first of them in mask order.
        """
        ablate = self.discretize(threshold, n_masked=n_masked)
        claimed = {n: torch.zeros_like(m) for n, m in ablate.items()}
        out: dict[str, int] = {}
        for comp in self.mask:
            out[comp.label] = 0
            for n, r in _region_of([comp], self.shape, self.logits).items():
                new = r & ~claimed[n]
                out[comp.label] += int((ablate[n] & new).sum())
                claimed[n] |= new
        return out

    def counts_per_mechanism(self, threshold: float | None = None, mechanisms: dict[str, Mask] | None = None, *,
                             n_masked: int | None = None) -> dict[str, int]:
        """Ablated entries inside each mechanism's components (mechanisms may overlap).

        Args:
            threshold: As in :meth:`discretize`.
            mechanisms: Name -> component mask (e.g. ``{"FLU": ..., "extraction": ...}``).
            n_masked: As in :meth:`discretize`.
        """
        if not mechanisms:
            raise ValueError("pass mechanisms={name: Mask, ...} to count ablated weights per mechanism")
        ablate = self.discretize(threshold, n_masked=n_masked)
        return {name: int(sum(int((ablate[n] & r).sum()) for n, r in _region_of(mech, self.shape, self.logits).items()))
                for name, mech in mechanisms.items()}

    # -- threshold sweep -------------------------------------------------------------------
    def threshold_sweep(self, model, thresholds: Sequence[float], evaluate_fn: Callable[[Any], dict] | None = None, *,
                        task=None) -> list[dict[str, Any]]:
        """Evaluate the masked model at each threshold.

        One deep copy of ``model`` is made; for each threshold its masked parameters are reset
        to ``model``'s values and the ablated entries zeroed, then ``evaluate_fn(copy)`` is called.

        Args:
            model: The (unmasked) model the mask was learned on.
            thresholds: Keep-probability thresholds.
            evaluate_fn: ``model -> {metric: value}``; default :func:`default_evaluate` on
                ``task`` (or the training task) in the training format.
            task: Task for the default ``evaluate_fn``.

        Returns:
            One row per threshold: ``{"threshold", "n_masked", **metrics}``.
        """
        if evaluate_fn is None:
            task = task if task is not None else self.task
            if task is None:
                raise ValueError("pass evaluate_fn=... or task=... (a loaded result does not keep its task)")
            evaluate_fn = default_evaluate(task, fmt=self.config.train_format)
        self._check_model(model)
        work = copy.deepcopy(model)
        src, dst = dict(model.named_parameters()), dict(work.named_parameters())
        rows = []
        for t in progress_bar(list(thresholds), desc="thresholds"):
            ablate = self.discretize(t)
            with torch.no_grad():
                for n, m in ablate.items():
                    dst[n].copy_(src[n])
                    dst[n].masked_fill_(m.to(dst[n].device), 0)
            metrics = dict(evaluate_fn(work))
            rows.append({"threshold": float(t), "n_masked": int(sum(int(m.sum()) for m in ablate.values())), **metrics})
        return rows

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``path/mask_logits.safetensors`` (logits and regions) and ``path/meta.json``.

        Each file is written to a temporary file first. A weight mask saved in the folder before
        is replaced (a re-run notebook cell); a ``meta.json`` or ``mask_logits.safetensors`` of
        anything else is left alone and refused with a ``ValueError``, before either file is
        written (they were overwritten without a word). Other files in the folder are not touched.
        """
        from safetensors.torch import save_file

        from factlens.files import check_output, write_atomic

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file; WeightMaskResult.save writes a folder (meta.json and "
                             "mask_logits.safetensors): give a folder's path")
        check_output(path / "mask_logits.safetensors", what="weight mask's logits file", ours=_is_saved_logits)
        check_output(path / "meta.json", what="weight mask's meta.json", ours=_is_saved_meta)
        tensors = {f"logits/{n}": s.contiguous() for n, s in self.logits.items()}
        tensors.update({f"region/{n}": r.contiguous() for n, r in self.region.items()})
        meta = {"format_version": 1, "mask": self.mask.to_dict(), "config": self.config.to_dict(),
                "shape": self.shape.to_dict(), "objective": self.objective, "history": self.history,
                "seconds": self.seconds, "task_summary": self.task_summary}
        text = strict_dumps(meta, default=str)
        write_atomic(path / "mask_logits.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        write_atomic(path / "meta.json", lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "WeightMaskResult":
        """Read a result written by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"{path} holds no saved weight mask (meta.json missing)")
        meta = json.loads((path / "meta.json").read_text())
        t = load_file(str(path / "mask_logits.safetensors"))
        logits = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("logits/")}
        region = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("region/")}
        return cls(logits=logits, region=region, mask=Mask.from_dict(meta["mask"]),
                   config=WeightMaskConfig.from_dict(meta["config"]), shape=ModelShape.from_dict(meta["shape"]),
                   objective=meta["objective"], history=meta.get("history", []), seconds=meta.get("seconds", 0.0),
                   task_summary=meta.get("task_summary", {}))


def _is_saved_logits(head: str) -> bool:
    """Whether a file opens as :meth:`WeightMaskResult.save`'s safetensors file (after the header's
    8-byte length, a tensor named ``logits/...`` or ``region/...``)."""
    return '{"logits/' in head[:64] or '{"region/' in head[:64]


def _is_saved_meta(head: str) -> bool:
    """Whether a file opens as :meth:`WeightMaskResult.save`'s ``meta.json``."""
    return re.match(r'\{\s*"format_version": \d+,\s*"mask": ', head) is not None


# --- evaluation ----------------------------------------------------------------------------


def default_evaluate(task, *, fmt: str = "default", batch_size: int = 16) -> Callable[[Any], dict[str, float]]:
    """An ``evaluate_fn``: ``forget_acc``, ``edit_acc`` (inject tasks only), ``maintain_acc``.

    Argmax-among-candidates accuracies in prompt format ``fmt``, as in
    :func:`factlens.editing.sweep.score_edit`: the true answer wins on ``task.forget``, the
    edit target wins on ``task.forget``, the true answer wins on ``task.maintain``.
    """
    from factlens.editing.sweep import score_edit

    keys = ("forget_acc", "edit_acc", "maintain_acc") if task.objective == "inject" else ("forget_acc", "maintain_acc")

    def evaluate(model) -> dict[str, float]:
        s = score_edit(model, task, fmt=fmt, batch_size=batch_size)
        return {k: s[k] for k in keys}

    return evaluate


# --- training ------------------------------------------------------------------------------


def _loss_terms(model, cfg: WeightMaskConfig, objective: str, fb: list, rb: list, sft) -> dict[str, Tensor]:
    """The differentiable loss terms on ``model`` (called inside ``functional_call``)."""
    from factlens.editing.losses import fact_losses, sft_loss

    terms: dict[str, Tensor] = {}
    fb = fb if cfg.l_forget else []
    rb = rb if cfg.l_retain else []
    if fb or rb:
        lf, lr = fact_losses(model, fb, rb, objective)
        if fb:
            terms["forget"] = lf
        if rb:
            terms["retain"] = lr
    if sft is not None:
        tokens, positions, reference = sft
        terms["sft"] = sft_loss(model, tokens, positions, reference=reference)
    return terms


@with_gradients  # also under the caller's torch.no_grad() / inference_mode()
def learn_weight_mask(model, mask: Mask, task, *, config: WeightMaskConfig = WeightMaskConfig()) -> WeightMaskResult:
    """Learn which weights of ``mask``'s components to ablate to unlearn/edit ``task``.

    Args:
        model: A ``HookedTransformer`` (never modified).
        mask: The localized components; only their entries can be ablated.
        task: A :class:`factlens.tasks.Task`; its objective picks the forget loss.
        config: Settings: a :class:`WeightMaskConfig` (not fine-tuning's ``EditConfig``).

    Returns:
        The learned mask logits (discretize / apply / count / sweep them with its methods).

    Raises:
        TypeError: ``config`` is not a :class:`WeightMaskConfig`.
        ValueError: A task without forget facts or an empty mask.
    """
    from factlens.data.formats import format_prompts

    if not isinstance(config, WeightMaskConfig):  # an EditConfig or None failed later with an AttributeError
        raise TypeError(f"config must be a WeightMaskConfig, got {type(config).__name__}; leave it out for the "
                        "defaults (an EditConfig holds fine-tuning's settings, not a weight mask's)")
    if getattr(task, "objective", None) not in ("inject", "unlearn") or not len(task.forget):
        raise ValueError(f"task must be a factlens.tasks.Task with objective 'inject' or 'unlearn' and forget facts, "
                         f"got {task!r}")
    if not isinstance(mask, Mask) or len(mask) == 0:
        raise ValueError(f"mask must be a non-empty factlens.Mask, got {mask!r}")
    cfg = config
    t0 = time.perf_counter()
    shape = ModelShape.of(model)
    region = {n: r for n, r in sorted(mask.to_param_masks(model).items())}  # a fixed order: sums do not depend on hashing
    params = dict(model.named_parameters())
    fb_items = format_prompts(task.forget, cfg.train_format)
    rb_items = format_prompts(task.retain, cfg.train_format)
    if not fb_items:
        raise ValueError(f"the forget facts have no prompts in train_format={cfg.train_format!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    forget, retain = BatchSampler(fb_items, cfg.forget_batch_size, gen), BatchSampler(rb_items, cfg.retain_batch_size, gen)
    # general text: KL to the unmasked model (the user's model, never modified), or cross-entropy
    text = None if cfg.l_sft == 0 else GeneralText.prepare(
        model, source=cfg.sft_source, seq_len=cfg.sft_seq_len, n_chunks=cfg.n_sft_chunks, n_positions=cfg.sft_positions,
        batch_size=cfg.sft_batch_size, gen=gen)

    device = next(iter(params.values())).device
    logits = {n: torch.full(r.shape, float(cfg.init), dtype=torch.float32, device=device, requires_grad=True)
              for n, r in region.items()}
    n_entries = sum(int(r.sum()) for r in region.values())
    opt = torch.optim.Adam(list(logits.values()), lr=cfg.lr)
    base = {f"model.{n}": p.detach() for n, p in params.items()}
    runner = _Runner(model)
    history: list[dict[str, float]] = []
    for step in progress_bar(range(cfg.steps), desc="weight mask"):
        fb, rb = forget.next(), retain.next()
        sft = text.batch(model) if text is not None else None
        opt.zero_grad(set_to_none=True)
        eff = dict(base)
        reg = torch.zeros((), device=device)
        n_abl = 0
        for n, s in logits.items():
            soft = torch.sigmoid(s)
            # the hard mask of discretize()/apply() (ablated where sigmoid(s) < 0.5), exactly 0 or 1 in the
            # forward pass: (hard + soft) - soft rounded to 0.99999994 for a quarter of the kept entries
            hard = (soft >= 0.5).to(soft.dtype)
            keep = hard + (soft - soft.detach()) if cfg.relaxation == "straight_through" else soft
            n_abl += int((region[n] & (soft < 0.5)).sum())
            keep = torch.where(region[n], keep, torch.ones_like(keep))
            reg = reg + ((1 - soft) * region[n]).sum()
            W = params[n].detach()
            eff[f"model.{n}"] = W * keep.to(W.dtype)
        reg = reg / max(n_entries, 1)
        terms = torch.func.functional_call(runner, eff, (_loss_terms, cfg, task.objective, fb, rb, sft), strict=False)
        weights = {"forget": cfg.l_forget, "retain": cfg.l_retain, "sft": cfg.l_sft}
        loss = cfg.l_reg * reg + sum(weights[k] * v for k, v in terms.items())
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": float(loss.detach()), **{f"loss_{k}": float(v.detach()) for k, v in terms.items()},
                        "loss_reg": float(reg.detach()), "n_ablated": n_abl})
    out_logits = {n: s.detach().float().cpu() for n, s in logits.items()}
    out_region = {n: r.cpu() for n, r in region.items()}
    return WeightMaskResult(out_logits, out_region, mask, cfg, shape, task.objective, history,
                            time.perf_counter() - t0, task.summary(), task)
