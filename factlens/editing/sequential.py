"""Sequential editing: edit chunks of facts one after another (Sequential-CounterFact-Editing).

The paper edits 4 chunks of 16 facts with 25 optimizer steps each; every chunk is trained
on the model that already carries the previous chunks' edits, with the same retain set.
``method=`` edits the chunks with another edit method (ROME, MEMIT, AlphaEdit; AlphaEdit also
keeps the earlier chunks' keys mapped to their current outputs).

Every reference a training objective takes from "the original" is taken from the model the
chunk starts from, i.e. after the earlier chunks: NPO's reference log-probabilities, the
KL term to the original on general text, RMU's retain activations. Each chunk is therefore
anchored to the model it edits, as in sequential model editing generally (each edit is an
edit of the current model); the drift from the unedited model accumulated over chunks is not
penalized by training, and the runner's evaluation measures it against the true original.
"""

from __future__ import annotations

import copy
import numbers
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from factlens.components import Component, Mask
from factlens.data.records import FactDataset
from factlens.editing.config import EditConfig
from factlens.config import check_inplace
from factlens.editing.editor import _as_mask, check_model, edit
from factlens.editing.result import EditResult, plot_histories
from factlens.editing.training import with_gradients
from factlens.memory import check_folder
from factlens.progress_bars import progress, progress_bar
from factlens.tasks import PAPER_STEPS_PER_CHUNK

__all__ = ["edit_sequential", "SequentialEditResult"]

MaskSpec = Mask | Sequence[Mask] | Sequence[Component | str] | Callable[[FactDataset], Mask]


@dataclass(frozen=True)
class SequentialEditResult:
    """The edits of all chunks, in the order they were made.

    Attributes:
        model: The edited model (the caller's model with ``inplace=True``, else a copy).
        results: One :class:`EditResult` per edit (per chunk, or per group of facts sharing a
            mask with ``per_fact=True``), in order.
        chunks: The facts of each edit.
        seconds: Total wall-clock time.
    """

    model: Any = field(repr=False, compare=False)
    results: tuple[EditResult, ...]
    chunks: tuple[FactDataset, ...] = field(repr=False)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.results)

    @property
    def masks(self) -> list[Mask]:
        return [r.mask for r in self.results]

    @property
    def history(self) -> list[dict]:
        """All steps, each entry tagged with its ``edit`` index."""
        return [{"edit": k, **h} for k, r in enumerate(self.results) for h in r.history]

    @property
    def n_params_trained(self) -> int:
        """Distinct parameter entries the edits let change: an entry that several chunks trained
        (one mask for every chunk, as in the paper) counts once. (The sum over edits counted it
        once per chunk: four chunks with one mask gave four times the mask's size.) Each edit's
        own count is its result's ``n_params_trained``."""
        import torch

        union: dict[str, torch.Tensor] = {}
        whole: dict[str, int] = {}  # parameters some edit trained entirely: every entry, no mask built
        for r in self.results:
            for n, d in r.deltas.items():
                if n in whole:
                    continue
                if d.trains_all:
                    whole[n] = d.mask.numel()
                    union.pop(n, None)
                    continue
                m = d.mask.cpu()
                union[n] = (union[n] if n in union else torch.zeros(m.shape, dtype=torch.bool)) | m
        return int(sum(whole.values()) + sum(int(m.sum()) for m in union.values()))

    def delta_norm(self) -> float:
        """L2 norm of the total weight change (the model now vs. before the first edit)."""
        import torch

        if self.model is None:
            return 0.0
        params = dict(self.model.named_parameters())
        total = 0.0
        for n in sorted({n for r in self.results for n in r.deltas}):  # a set's order varies with PYTHONHASHSEED
            now = params[n].detach().double()
            before = now.clone()
            for r in reversed(self.results):  # the first edit touching an entry holds its original value
                d = r.deltas.get(n)
                if d is not None:
                    before[d.mask.to(before.device)] = d.old.to(before.device).double()
            total += float(torch.sum((now - before) ** 2))
        return total ** 0.5

    def offload(self, folder) -> int:
        """:meth:`EditResult.offload` of every edit; returns the bytes moved out of memory."""
        return sum(r.offload(folder) for r in self.results)

    def revert(self, model=None):
        """Undo every edit on ``model`` (default: :attr:`model`, else the model each edit was last
        applied to), the last one first; returns the reverted model.

        (Each edit was reverted on the model it was last applied to: after one chunk's edit was
        applied to another model, ``revert()`` reverted that one and left :attr:`model` edited.)
        """
        target = model if model is not None else self.model
        out = None
        for r in reversed(self.results):
            if target is not None and r.is_applied_to(target):
                out = r.revert(target)
            elif target is None and r.applied:
                out = r.revert()
        if out is None and self.results:  # as EditResult.revert: returning the model unchanged read as success
            raise RuntimeError("nothing to revert: none of the " + str(len(self.results)) + " edits is applied to " +
                               ("that model" if model is not None else "any model") +
                               " (with inplace=False the edits are on .model, a copy: revert() or revert(seq.model))")
        return out if out is not None else target

    def plot_history(self, title: str = "sequential edit"):
        """Plotly figure of the loss histories of all edits, one after another."""
        return plot_histories([r.history for r in self.results], title=title,
                              labels=[f"edit {k}" for k in range(len(self.results))])


def _group_per_fact(chunk: FactDataset, fn: Callable[[FactDataset], Mask]) -> list[tuple[Mask, FactDataset]]:
    groups: dict[frozenset, list] = {}
    masks: dict[frozenset, Mask] = {}
    for i, rec in enumerate(chunk):
        m = _as_mask(fn(chunk.subset([i])))
        groups.setdefault(m.components, []).append(rec)
        masks.setdefault(m.components, m)
    return [(masks[k], replace(chunk, records=tuple(v))) for k, v in groups.items()]


def _chunks(task, chunk_size: int | None) -> tuple[FactDataset, ...]:
    """``task.chunks``, else ``task.forget`` split in order into chunks of ``chunk_size``.

    The task's chunks must split its forget facts: each fact in exactly one chunk, none empty
    (facts edited twice or never were scored as edited), and ``chunk_size`` is refused beside
    them (it was ignored).
    """
    chunks = tuple(getattr(task, "chunks", ()) or ())
    if chunks:
        if chunk_size is not None:
            raise ValueError(f"chunk_size={chunk_size} with a task that has its own {len(chunks)} chunks: pass one or "
                             "the other (dataclasses.replace(task, chunks=()) to split task.forget by chunk_size)")
        ids = [r.id for c in chunks for r in c]
        forget = [r.id for r in task.forget]
        if any(len(c) == 0 for c in chunks) or sorted(map(str, ids)) != sorted(map(str, forget)):
            twice = sorted({str(i) for i in ids if ids.count(i) > 1})
            never = sorted({str(i) for i in forget} - {str(i) for i in ids})
            raise ValueError(f"the task's chunks must split its forget facts, each fact in one non-empty chunk "
                             f"(sizes {[len(c) for c in chunks]}; in two chunks: {twice[:5]}; in none: {never[:5]}; "
                             f"not forget facts: {sorted({str(i) for i in ids} - {str(i) for i in forget})[:5]})")
        return chunks
    if chunk_size is None:
        raise ValueError("the task has no chunks; use a sequential task (e.g. sequential_counterfact_editing) or "
                         "pass chunk_size= to split task.forget")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        # 2.5 failed deep in slicing ("'float' object cannot be interpreted as an integer"), True was read as 1
        raise ValueError(f"chunk_size must be an integer >= 1 (facts per chunk), got {chunk_size!r}")
    chunk_size = int(chunk_size)
    f = task.forget
    return tuple(f[i:i + chunk_size] for i in range(0, len(f), chunk_size))


def _per_chunk(masks) -> bool:
    """Whether ``masks`` is a list with one mask per chunk; a list of components or labels is one mask for
    every chunk, as :func:`~factlens.editing.edit` reads it."""
    if not isinstance(masks, (list, tuple)):
        return False
    single = [isinstance(m, (Component, str)) for m in masks]
    if masks and all(single):
        return False
    if any(single):
        raise TypeError("masks= mixes components or labels with masks: give one Mask (or one list of components) "
                        "for all chunks, or a list with one Mask per chunk")
    return True


def _check_masks(masks, localize_fn, per_fact: bool, n_chunks: int) -> None:
    """Raise unless exactly one of ``masks`` / ``localize_fn`` is given, in a form that fits."""
    if masks is None and localize_fn is None:
        raise ValueError("give masks= (a Mask, a list of masks or a callable) or localize_fn=")
    if masks is not None and localize_fn is not None:
        raise ValueError("give either masks= or localize_fn=, not both")
    if _per_chunk(masks):
        if len(masks) != n_chunks:
            raise ValueError(f"{len(masks)} masks for {n_chunks} chunks; give one mask per chunk")
        if per_fact:
            raise ValueError("per_fact=True needs a callable masks= or localize_fn=, not a list")
    elif masks is not None and not callable(masks) and per_fact:
        raise ValueError("per_fact=True needs a callable masks= or localize_fn=, not a single Mask")


def _jobs(work, chunk: FactDataset, k: int, masks, localize_fn, per_fact: bool) -> list[tuple[Mask, FactDataset]]:
    """The (mask, facts) edits of chunk ``k``: its mask (given, or localized now on ``work`` as edited
    so far), or one group of facts per distinct mask with ``per_fact``."""
    if localize_fn is not None:
        fn = lambda ds, _m=work: localize_fn(_m, ds)  # noqa: E731
    elif _per_chunk(masks):
        fn = None
    else:
        fn = masks if callable(masks) and not isinstance(masks, Mask) else None
    if per_fact:
        return _group_per_fact(chunk, fn)
    if fn is not None:
        return [(_as_mask(fn(chunk)), chunk)]
    return [(_as_mask(masks[k] if _per_chunk(masks) else masks), chunk)]


@with_gradients  # its model copy too must be an ordinary tensor under the caller's inference_mode()
def edit_sequential(
    model,
    masks: MaskSpec | None,
    task,
    *,
    config: EditConfig = EditConfig(steps=PAPER_STEPS_PER_CHUNK),
    inplace: bool = False,
    localize_fn: Callable[[Any, FactDataset], Mask] | None = None,
    per_fact: bool = False,
    objective: str | None = None,
    chunk_size: int | None = None,
    offload: str | os.PathLike | None = None,
    method: str = "finetune",
) -> SequentialEditResult:
    """Edit ``task.chunks`` one after another, each on the model carrying the previous edits.

    Args:
        model: A ``HookedTransformer``.
        masks: One :class:`Mask` (or a list of components or labels, as ``edit`` takes) for all
            chunks; a list with one :class:`Mask` per chunk; or a
            callable ``chunk_dataset -> Mask`` (a separate localization per chunk). ``None``
            requires ``localize_fn``.
        task: A task with ``chunks`` (e.g. ``sequential_counterfact_editing``); without
            chunks, ``chunk_size`` splits ``task.forget`` in order.
        config: Hyper-parameters of each chunk's edit (the paper: 25 steps per chunk).
        inplace: Edit ``model`` itself (default: a deep copy, one extra model copy of memory).
        localize_fn: ``(current_model, chunk_dataset) -> Mask``: like a callable ``masks`` but
            also given the model as edited so far (localize on the edited model).
        per_fact: Localize each fact separately (``masks``/``localize_fn`` must be callable);
            facts of a chunk that get the same mask are edited together in one batch.
        objective: A registered objective's name (``factlens.editing.registry.OBJECTIVES``: ``"inject"``,
            ``"unlearn"``, ``"npo"``...; default: ``task.objective``).
        chunk_size: Split ``task.forget`` into chunks of this size when the task has none.
        offload: A folder on disk: each chunk's edit keeps its saved original values there
            (``edit(..., offload=...)``) and its record is moved there once the chunk is done
            (:meth:`EditResult.offload`), so the records of earlier chunks do not add up in
            memory; ``None`` (default): in memory.
        method: The edit method of every chunk (an entry of
            :data:`~factlens.editing.registry.EDIT_METHODS`; default masked fine-tuning, the
            paper's). Methods whose entry ``takes_edited_before`` (AlphaEdit) get the facts of
            the earlier chunks as ``edited_before``; ROME and MEMIT edit each chunk on the model
            as it is.

    Returns:
        A :class:`SequentialEditResult`; ``.revert()`` undoes all edits in reverse order.

    Example:
        >>> from dataclasses import replace
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> t = replace(p.task, chunks=(p.task.forget[:4], p.task.forget[4:]))
        >>> cfg = EditConfig(lr=1e-2, steps=2, batch_size=None, grad_accum=1, l_sft=0)
        >>> res = edit_sequential(p.model, Mask([p.lookup_mlp]), t, config=cfg)
        >>> len(res), res.model is p.model
        (2, False)
    """
    t0 = time.perf_counter()
    check_model(model)
    check_inplace(inplace)
    check_folder(offload)
    chunks = _chunks(task, chunk_size)
    if not chunks:  # edit() refuses such a task; this returned an empty result as if it had edited
        raise ValueError("the task has no forget facts to edit")
    _check_masks(masks, localize_fn, per_fact, len(chunks))
    from factlens.editing.registry import EDIT_METHODS

    wants_before = EDIT_METHODS.get(method).takes_edited_before  # (an unknown name is refused here, before any copy)
    work = model if inplace else copy.deepcopy(model)
    results: list[EditResult] = []
    edited: list[FactDataset] = []
    before: FactDataset | None = None  # the facts edited so far, for methods that keep them
    try:
        for k, chunk in enumerate(progress_bar(chunks, desc="chunks", leave=False)):
            for mask, facts in _jobs(work, chunk, k, masks, localize_fn, per_fact):
                sub = replace(task, forget=facts, chunks=())
                with progress(False):  # one bar: over the chunks
                    results.append(edit(work, mask, sub, method=method, objective=objective, config=config,
                                        inplace=True, offload=offload, edited_before=before))
                if offload is not None:
                    results[-1].offload(offload)
                edited.append(facts)
                if wants_before:
                    before = facts if before is None else before.concat(facts)
        return SequentialEditResult(model=work, results=tuple(results), chunks=tuple(edited),
                                    seconds=time.perf_counter() - t0)
    except BaseException:  # the chunk being edited is restored by its edit (finetune: until it returns)
        if inplace:  # leave the caller's model as it was before the first edit
            for r in reversed(results):
                r.revert(work)
        raise
