"""Gradient-masked editing: train only the entries of a component mask.

:func:`edit` fine-tunes the parameter entries selected by a :class:`~factlens.components.Mask`
(``mask.to_param_masks(model)``: per-head slices of ``W_Q/W_K/W_V/W_O`` and biases,
including the shared grouped-query K/V slices ``_W_K/_W_V``, and whole MLP layers
``W_in/W_gate/W_out/b_in/b_out``) on the objective

``L = l_forget * L_forget + l_retain * L_retain + l_sft * L_SFT``

where ``L_forget`` and ``L_retain`` come from the training objective (``objective=``, an entry
of :data:`factlens.editing.registry.OBJECTIVES`: the paper's ``inject``/``unlearn`` or the
unlearning baselines GA, GradDiff, NPO, SimNPO, RMU; see :mod:`factlens.editing.objectives`)
and ``L_SFT`` is the general-text term (:mod:`factlens.editing.sampling`). One optimizer step is
:func:`factlens.editing.training.train_step`. Embeddings, unembedding, normalization weights and
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
* A loss or parameter that becomes NaN/inf (e.g. a learning rate far too high) stops
  training with a ``FloatingPointError``; the model is restored as for any other error.
* Besides the model, the editor keeps one copy of each *touched* parameter tensor (for the
  exact restore, the revertible delta and, with ``sft_source=None``, the KL reference: the
  original model is evaluated with ``torch.func.functional_call`` on those originals,
  without a full model copy). ``offload=folder`` keeps the copies of wholly selected tensors
  in a file mapped from that folder instead (:func:`factlens.memory.kept_copies`).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from typing import Any

import torch

from factlens.components import Component, Mask, ModelShape
from factlens.config import check_inplace
from factlens.data.formats import format_prompts
from factlens.editing.config import EditConfig
from factlens.editing.registry import OBJECTIVES, Objective
from factlens.editing.result import EditResult, ParamDelta, flat_copy, full_mask
from factlens.editing.sampling import BatchSampler, GeneralText
from factlens.editing.training import (TrainState, check_optimizer, half_precision_masters, lr_factor, make_optimizer,
                                       optimized_tensors, train_step, trainable, with_gradients)
from factlens.memory import check_folder, checkpointed_blocks, kept_copies
from factlens.progress_bars import progress_bar, takes_show_progress
from factlens.registry import load

__all__ = ["edit", "finetune", "lr_factor"]


def _as_mask(mask) -> Mask:
    """``mask`` (a Mask, a Component, a label or a list of them) as a :class:`Mask`; scores are refused
    (iterated, they would select every scored component)."""
    from factlens.scores import ComponentScores

    if isinstance(mask, Mask):
        return mask
    if isinstance(mask, ComponentScores):
        raise TypeError("mask is a ComponentScores (a localization's scores), not a Mask: choose the components "
                        "to edit with scores.to_mask(param_budget=...) (or top_k=...), and pass that mask")
    if isinstance(mask, Component):
        return Mask(frozenset([mask]))
    if isinstance(mask, str):  # one label (iterated, it was parsed letter by letter: "cannot parse 'L'")
        return Mask(frozenset([Component.parse(mask)]))
    try:
        comps = [Component.parse(c) if isinstance(c, str) else c for c in mask]
    except TypeError:
        raise TypeError(f"mask must be a factlens Mask (or components/labels), got {type(mask).__name__}") from None
    if not all(isinstance(c, Component) for c in comps):
        raise TypeError("mask must be a factlens Mask, a list of Components or of labels like 'L3.mlp'")
    return Mask(frozenset(comps))


def check_model(model) -> None:
    """Raise ``TypeError`` unless ``model`` is a TransformerLens model (a ``torch.nn.Module`` with
    a ``HookedTransformerConfig``): a model name or another module failed deep inside."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a TransformerLens HookedTransformer, got {type(model).__name__}: "
                        f"{str(model)[:80]!r}; load one with factlens.load_model(...) or "
                        "HookedTransformer.from_pretrained(...)")
    ModelShape.of(model)  # a module without a TransformerLens config


def _check_targets(task, entry: Objective) -> None:
    """Editing objectives need a ``target_new`` on every forget fact, other than its answer and among its candidates."""
    missing = [r.id or r.subject for r in task.forget if r.target_new is None]
    if missing:
        raise ValueError(f"objective={entry.name!r} needs target_new on every forget fact; missing for {missing[:5]} "
                         "(use an editing task, or objective='unlearn')")
    same = [r.id or r.subject for r in task.forget if r.target_new == r.answer]
    if same:
        raise ValueError(f"the edit target equals the true answer for forget facts {same[:5]}: nothing to edit; "
                         "give each fact a target_new other than its answer")
    foreign = [(r.id or r.subject, r.target_new) for r in task.forget
               if task.forget.candidates_for(r) and r.target_new not in task.forget.candidates_for(r)]
    if foreign:
        raise ValueError(f"edit targets {foreign[:5]} are not among the task's candidate answers "
                         f"{task.forget.candidates_for(task.forget[0])}: edit accuracy could not be measured; add the "
                         "target to the candidates (FactDataset.with_candidates) or choose a listed one")


def _check_task(task, objective) -> Objective:
    """The registry entry of the objective (``objective`` or ``task.objective``), after checking the task."""
    if not all(hasattr(task, a) for a in ("forget", "retain", "objective")):
        raise TypeError(f"edit() needs a factlens Task (e.g. factlens.tasks.sports_athlete_editing(dataset)), "
                        f"got {type(task).__name__}")
    entry = OBJECTIVES.get(objective or task.objective)
    if len(task.forget) == 0:
        raise ValueError("the task has no forget facts to edit")
    if entry.needs_target_new:
        _check_targets(task, entry)
    return entry


def _sft_kind(config: EditConfig) -> str:
    if config.l_sft == 0:
        return "none"
    return "kl:builtin" if config.sft_source is None else f"text:{config.sft_source}"


def _training_items(task, entry: Objective, config: EditConfig):
    forget_items = format_prompts(task.forget, config.train_format)
    if not forget_items:
        raise ValueError(f"the forget facts have no prompts in train_format={config.train_format!r}")
    return forget_items, _retain_items(task, entry, config)


def _retain_items(task, entry: Objective, config: EditConfig):
    """The retain prompts the edit trains on: none when the objective has no retain term or ``l_retain == 0``."""
    use_retain = entry.uses_retain and config.l_retain > 0 and len(task.retain) > 0
    return format_prompts(task.retain, config.train_format) if use_retain else []


def check_retain_kl_fits(model, task, *, objective: str | None = None, config: EditConfig) -> int:
    """Refuse up front an edit whose KL retain term (``retain_loss="kl"`` in the objective's
    settings) would keep more of the original's next-token rows than
    :data:`~factlens.editing.objectives.base.RETAIN_KL_CACHE_BYTES`: the runner calls this before
    localizing, so that the refusal :meth:`~factlens.editing.objectives.base.RetainKL.prepare`
    gives when the edit starts does not come after every localization of the run.

    Returns:
        The bytes the cache will take (0 when the edit keeps none: another retain loss, no retain
        term, ``l_retain == 0`` or no retain facts).

    Raises:
        ValueError: The cache would be too large (the numbers and what to change).
    """
    from factlens.editing.objectives.base import check_retain_kl_size

    entry = OBJECTIVES.get(objective or task.objective)
    settings = config.objective_config(entry) if entry.config_type is not None else None
    retain_items = _retain_items(task, entry, config) if getattr(settings, "retain_loss", "nll") == "kl" else []
    return check_retain_kl_size(model, retain_items) if retain_items else 0


@takes_show_progress
@with_gradients  # every method copies and trains; under the caller's no_grad() they trained nothing
def edit(model, mask, task, *, method: str = "finetune", objective: str | None = None, config: EditConfig = EditConfig(),
         inplace: bool = False, offload: str | os.PathLike | None = None, show_progress: bool | None = None,
         edited_before=None) -> EditResult:
    """Edit or unlearn the facts of ``task`` by changing only the components in ``mask``.

    ``method`` names an entry of :data:`factlens.editing.registry.EDIT_METHODS` (default
    ``"finetune"``: masked fine-tuning, see :func:`finetune` for the arguments); an
    :class:`~factlens.editing.registry.EditMethod` entry of your own is accepted too.
    ``show_progress`` draws (``True``) or hides (``False``) the progress bars of this call;
    ``None`` (default) follows :func:`factlens.progress`. ``offload``: a folder on disk where
    the method keeps its saved original values while it edits (see :func:`finetune`); passed
    to methods whose entry ``takes_offload`` (the built-in ones), ignored by the others.
    ``edited_before``: the facts earlier edits of a sequence wrote (:func:`edit_sequential`
    passes them), passed to methods whose entry ``takes_edited_before`` (AlphaEdit keeps their
    keys' outputs); the others edit the model as it is without them.

    The mask alone decides what is trained: a parameter the caller froze
    (``requires_grad=False``) is trained when the mask selects entries of it, and every flag
    is as before when the call returns. It runs with gradients on also inside the caller's
    ``torch.no_grad()`` or ``torch.inference_mode()``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> edit(p.model, Mask([p.lookup_mlp]), p.task, method="nosuch")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown edit method 'nosuch'; known: [...]
    """
    from factlens.editing.registry import EDIT_METHODS

    entry = EDIT_METHODS.get(method)
    check_model(model)
    check_inplace(inplace)
    check_folder(offload)
    if isinstance(config, EditConfig):  # a misspelt table name, or a bad field of your own method's / objective's
        config.check_tables(entry, objective or getattr(task, "objective", None))
    if entry.name != "finetune":
        # other methods declare the objectives they support by name, and get the name (an
        # Objective entry was compared with those names, and refused, before)
        # the task is checked whether or not the objective is spelled out (edit targets equal to
        # the answers, or outside the candidates, were accepted for ROME/MEMIT/AlphaEdit without it)
        checked = _check_task(task, objective)
        objective = checked.name if objective is not None else None
        entry.check_objective(objective or task.objective)
    extra = {"offload": offload} if offload is not None and entry.takes_offload else {}
    if edited_before is not None and len(edited_before) and entry.takes_edited_before:
        extra["edited_before"] = edited_before
    result = load(entry.fn)(model, mask, task, objective=objective, config=config, inplace=inplace, **extra)
    if not isinstance(result, EditResult):  # it would fail far from here (evaluate, revert, save)
        raise TypeError(f"edit method {entry.name!r} returned a {type(result).__name__}, not an EditResult: an "
                        "edit method returns factlens.editing.EditResult (see docs/extending.md)")
    return result


def _deltas(state: TrainState, param_masks: dict[str, torch.Tensor], out: dict[str, ParamDelta]) -> None:
    """Fill ``out`` with the revertible delta, one tensor at a time; consumes ``state.originals``.

    A fully selected tensor's old values are its saved copy (``reshape``: a view when that copy
    is row-major, else one row-major copy, after which the saved one is freed) and its new
    values one row-major copy; a partially selected tensor keeps the selected entries
    (indexing copies). ``param_masks`` holds whole tensors' masks as :func:`full_mask` views.
    A saved copy leaves ``state.originals`` only once its delta is in ``out``, so at every
    moment each tensor's old values are in one or the other (:func:`_restore` reads both)."""
    with torch.no_grad():
        for n, m in param_masks.items():
            original, p = state.originals[n], state.params[n].detach()
            if n in state.unselected:
                out[n] = ParamDelta(m, original[m], p[m])
            else:
                out[n] = ParamDelta(m, original.reshape(-1), flat_copy(p))
            del state.originals[n]


def _restore(state: TrainState, deltas: dict[str, ParamDelta]) -> None:
    """Write every trained parameter's values before training back: from ``state.originals``, or
    from its delta's old values once :func:`_deltas` has moved them into the record (the
    unselected entries of a partially selected tensor are at their original values after
    every step)."""
    with torch.no_grad():
        for n, p in state.params.items():
            if n in state.originals:
                p.copy_(state.originals[n])
            elif n in deltas:
                d = deltas[n]
                p[d.mask.to(p.device)] = d.old.to(device=p.device, dtype=p.dtype)


def _train(state: TrainState, work, config: EditConfig) -> list[dict[str, Any]]:
    """The optimizer steps of one edit; their history."""
    history: list[dict[str, Any]] = []
    bar = progress_bar(range(config.steps), desc="editing", leave=False)
    with checkpointed_blocks(work, config.checkpoint):
        for step in bar:
            history.append(train_step(state, step))
            # refresh=False: a redraw per step ignored the bar's interval (one log-file line per step)
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)
    return history


def _originals(params: dict[str, torch.nn.Parameter], unselected: dict[str, torch.Tensor],
               folder: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """Each trained tensor's values before training; those trained whole in a file in ``folder``
    when given (a partially selected tensor's originals are read at every step, so they stay)."""
    kept = kept_copies({n: p for n, p in params.items() if n in unselected})
    kept.update(kept_copies({n: p for n, p in params.items() if n not in unselected}, folder))
    return {n: kept[n] for n in params}


@with_gradients  # also under the caller's torch.no_grad() / inference_mode(): it trained nothing there
def finetune(model, mask, task, *, objective: str | None = None, config: EditConfig = EditConfig(),
             inplace: bool = False, offload: str | os.PathLike | None = None) -> EditResult:
    """Edit or unlearn the facts of ``task`` by training only the components in ``mask``.

    Args:
        model: A ``HookedTransformer``.
        mask: The components to train (a :class:`~factlens.components.Mask`; a list of
            components or labels is accepted too).
        task: A :class:`~factlens.tasks.Task`: ``forget`` facts (with ``target_new`` for
            editing), ``retain`` facts for the retain loss.
        objective: A name in :data:`factlens.editing.registry.OBJECTIVES`: ``"inject"`` (edit to
            ``target_new``), ``"unlearn"`` (``-log(1 - p(answer))``), ``"gradient_ascent"``,
            ``"graddiff"``, ``"npo"``, ``"simnpo"``, ``"dpo"``, ``"rmu"``; default: ``task.objective``.
        config: Hyper-parameters (:class:`EditConfig`; ``EditConfig.fast()`` for CPU).
        inplace: Edit ``model`` itself. Default ``False``: edit a deep copy (one extra model
            copy of memory); the original stays untouched.
        offload: A folder on disk (the run folder, say). The original values of the tensors
            the mask selects whole are then kept in a file mapped from there
            (:func:`factlens.memory.kept_copies`) instead of in memory, for the whole edit:
            training reads them only to restore after a failure and, with an uncached KL
            reference, to run the original model; they become the record's old values.
            Bitwise the same edit; 0.4 GB less memory for the non-localized edit of
            Gemma 3 270M. ``None`` (default): in memory.

    Returns:
        The :class:`EditResult` (``.model`` is the edited model; ``.revert()`` undoes the edit).

    Raises:
        ValueError: Bad task/objective/config (e.g. edit targets equal to the answers or not
            among the candidates), or ``optimizer="adamw8bit"`` without CUDA.
        FloatingPointError: The loss or the weights became NaN/inf (the model is restored).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EditConfig(lr=1e-2, steps=5, batch_size=None, grad_accum=1, n_sft_chunks=4)
        >>> res = edit(p.model, Mask([p.lookup_mlp]), p.task, config=cfg)
        >>> res.history[-1]["loss_forget"] < res.history[0]["loss_forget"], res.model is p.model
        (True, False)
        >>> res.sft_kind, sorted(res.deltas)[0], res.n_params_trained == Mask([p.lookup_mlp]).n_params(p.model)
        ('kl:builtin', 'blocks.1.mlp.W_in', True)
        >>> res.revert() is res.model
        True
    """
    t0 = time.perf_counter()
    check_inplace(inplace)
    check_folder(offload)
    mask, entry = _as_mask(mask), _check_task(task, objective)
    if not isinstance(config, EditConfig):
        raise TypeError(f"config must be an EditConfig, got {type(config).__name__}")
    forget_items, retain_items = _training_items(task, entry, config)
    first = next(iter(model.parameters()), None)
    check_optimizer(config, first.device if first is not None else torch.device("cpu"))
    work = model if inplace else copy.deepcopy(model)
    # whole tensors' masks as one-byte views: 0.1 GB less for the whole edit of a non-localized mask on Gemma 3 270M
    param_masks = {n: full_mask(m.shape, m.device) if bool(m.all()) else m for n, m in mask.to_param_masks(work).items()}
    common = dict(mask=mask, config=config, objective=entry.name, shape=ModelShape.of(work),
                  model_name=str(getattr(work.cfg, "model_name", "")), task_name=getattr(task, "name", ""))
    if not param_masks:
        warnings.warn("the mask selects no parameters: nothing was edited (the result has a zero delta)", stacklevel=2)
        return EditResult(model=work, history=(), seconds=time.perf_counter() - t0, sft_kind=_sft_kind(config),
                          n_params_trained=0, deltas={}, meta={"empty_mask": True}, **common)
    gen = torch.Generator().manual_seed(config.seed)
    text = None if config.l_sft == 0 else GeneralText.prepare(
        work, source=config.sft_source, seq_len=config.sft_seq_len, n_chunks=config.n_sft_chunks,
        n_positions=config.sft_positions, batch_size=config.sft_batch_size or config.batch_size, gen=gen)
    settings = {"settings": config.objective_config(entry)} if entry.config_type is not None else {}
    prepared = load(entry.loss).prepare(work, forget_items, retain_items, mask=mask, config=config, **settings)
    names = sorted(param_masks)
    state, deltas = None, {}
    try:  # up to the finished record: an interrupt while it is built (hashing, seconds on a large model) restores too
        with trainable(work, names) as all_params:
            params = {n: all_params[n] for n in names}
            unselected = {n: ~m for n, m in param_masks.items() if not bool(m.all())}  # partially selected tensors
            master = half_precision_masters(params)
            state = TrainState(work, params, _originals(params, unselected, offload), unselected,
                               make_optimizer(optimized_tensors(params, master), config), prepared,
                               BatchSampler(forget_items, config.batch_size, gen),
                               BatchSampler(retain_items, config.batch_size, gen), text, config, master)
            t_train = time.perf_counter()
            history = _train(state, work, config)
            t_end = time.perf_counter()
            state.optimizer.state.clear()  # AdamW's moments (twice the trained size), not beside the record's copies
            _deltas(state, param_masks, deltas)
        meta = {"n_forget_prompts": len(forget_items), "n_retain_prompts": len(retain_items),
                "n_sft_chunks": int(text.tokens.shape[0]) if text else 0,
                "kl_cached": bool(text is not None and text.cache is not None),
                "train_seconds": t_end - t_train, "seconds_per_step": (t_end - t_train) / max(1, config.steps),
                "inplace": inplace, "device": str(params[names[0]].device), **prepared.describe()}
        return EditResult(model=work, history=tuple(history), seconds=time.perf_counter() - t0,
                          sft_kind=_sft_kind(config), deltas=deltas, meta=meta,
                          n_params_trained=int(sum(int(m.sum()) for m in param_masks.values())), **common)
    except BaseException:
        if state is not None:
            _restore(state, deltas)  # leave the model as it was (matters for inplace=True)
        raise
