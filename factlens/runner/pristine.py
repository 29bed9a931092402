"""The unedited model next to a model edited in place, without a second copy of its weights.

The runner edits one model in place per job, evaluates it against the unedited model and
reverts the edit. Keeping a pristine ``copy.deepcopy`` of the model for that doubles the
memory (1.8 GB more for Gemma 3 270M in float32, 36 GB for Gemma-2-9B). An
:class:`OriginalView` holds instead

* ``view``: a structural copy of the model (new module objects) whose parameters share the
  model's storage (:func:`~factlens.evaluation.relearning.shared_copy`): no weight is copied;
* during an evaluation, for the parameters the edit changed, the values before the edit,
  taken from the edit's own record (:attr:`EditResult.deltas`; a fully trained tensor's old
  values are already a whole tensor, so nothing is copied for it either);
* a digest per parameter of the unedited model (:func:`param_digests`, computed where the
  weights are), so that a change *outside* the edit's record (which the view could not show
  as it was) is detected, never evaluated silently: after the edit and after the revert every
  other parameter is checked against it.

Example:
    >>> import torch
    >>> from factlens.components import Mask
    >>> from factlens.editing import EditConfig, edit
    >>> from factlens.testing import planted_fact_model
    >>> p = planted_fact_model()
    >>> ov = OriginalView(p.model)
    >>> res = edit(p.model, Mask([p.lookup_mlp]), p.task, config=EditConfig(lr=1e-2, steps=2, batch_size=None,
    ...            n_sft_chunks=4), inplace=True)
    >>> ov.show(res)   # the view now shows the weights before the edit
    >>> before = ov.view.blocks[1].mlp.W_in
    >>> bool(torch.equal(before, p.model.blocks[1].mlp.W_in)), ov.changed()
    (False, ['blocks.1.mlp.W_in', 'blocks.1.mlp.W_out', 'blocks.1.mlp.b_in', 'blocks.1.mlp.b_out'])
    >>> _ = res.revert(); ov.reset(); ov.changed()
    []
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from factlens.digests import weight_digests

__all__ = ["OriginalView", "PristineCopy", "original_tensors", "param_digests", "check_restored", "restore_from",
           "check_pristine", "recorded_parameters"]


def param_digests(model) -> dict[str, bytes]:
    """A digest of each parameter (dtype, shape and every bit of its values), by name.

    :func:`factlens.digests.weight_digests`: on a GPU computed there, with no host copy of the
    weights (a host copy and a one-thread sha256 of every parameter of the Gemma-2-9B shape,
    20 GB, at every check); on the CPU the sha256 of each parameter, hashed in place.
    """
    return weight_digests({name: p.detach() for name, p in model.named_parameters()})


def original_tensors(result, model) -> dict[str, Tensor]:
    """The parameters an edit changed, as they were before it: ``{name: tensor}``.

    ``result`` is an :class:`~factlens.editing.EditResult` (its ``deltas``) or a sequential result
    (``results``, undone last to first). A fully trained tensor's entry is a view of the
    edit's saved old values (no copy); a partially trained one is a copy of the current
    tensor with the old values written back.
    """
    from factlens.editing.result import _original_tensors

    if hasattr(result, "deltas"):
        return _original_tensors(model, result.deltas)
    results = list(getattr(result, "results", ()))
    if not results:
        raise TypeError(f"cannot read the changed parameters of a {type(result).__name__} (no deltas, no results)")
    params = dict(model.named_parameters())
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for r in reversed(results):  # undo the last edit first, as revert() does
            for name, d in r.deltas.items():
                t = out.get(name)
                if t is None:
                    t = out[name] = params[name].detach().clone()
                t[d.mask.to(t.device)] = d.old.to(device=t.device, dtype=t.dtype)
    return out


class OriginalView:
    """The unedited state of ``model`` while it is edited in place (see the module docs).

    Attributes:
        model: The model that is edited in place.
        view: The unedited model to evaluate against (shares the model's storage).
    """

    def __init__(self, model) -> None:
        from factlens.evaluation.relearning import shared_copy

        self.model = model
        self.view = shared_copy(model).eval()
        self.digests = param_digests(model)
        self._shown: dict[str, Any] = {}

    def _slot(self, name: str) -> tuple[nn.Module, str]:
        mod_name, _, attr = name.rpartition(".")
        return self.view.get_submodule(mod_name) if mod_name else self.view, attr

    def changed(self, exclude=()) -> list[str]:
        """Names of the model's parameters whose bytes differ from the unedited model (sorted)."""
        now = param_digests(self.model)
        skip = set(exclude)
        return sorted(n for n, d in now.items() if n not in skip and d != self.digests.get(n))

    def show(self, result) -> None:
        """Make ``view`` show the values before ``result`` (an edit made in place on ``model``).

        Raises:
            RuntimeError: A parameter outside the edit's record changed too: the view cannot
                show it as it was (the model must be reloaded).
        """
        self.reset()
        originals = original_tensors(result, self.model)
        leaked = self.changed(exclude=originals)
        if leaked:
            raise RuntimeError(f"the edit changed parameters it did not record ({leaked[:5]}); the unedited values are "
                               "lost and the model must be reloaded. An edit method may change only its mask's "
                               "parameters and must record every tensor it changes in its result's deltas "
                               "(EditResult.from_originals with each one's original)")
        for name, t in originals.items():
            module, attr = self._slot(name)
            self._shown[name] = getattr(module, attr)
            setattr(module, attr, nn.Parameter(t, requires_grad=False))

    def reset(self) -> None:
        """Share every parameter with ``model`` again (after the edit is reverted)."""
        for name, p in self._shown.items():
            module, attr = self._slot(name)
            setattr(module, attr, p)
        self._shown.clear()



class PristineCopy:
    """The same interface as :class:`OriginalView` over a ``copy.deepcopy`` of the model (twice the
    memory; kept to check that both give the same results, ``Workspace(original="copy")``)."""

    def __init__(self, model) -> None:
        import copy

        self.model = model
        self.view = copy.deepcopy(model).eval()

    def changed(self, exclude=()) -> list[str]:
        """Names of the model's parameters that differ from the copy (sorted)."""
        ref = dict(self.view.named_parameters())
        skip = set(exclude)
        with torch.no_grad():
            return sorted(n for n, p in self.model.named_parameters() if n not in skip and not torch.equal(p, ref[n]))

    def show(self, result) -> None:
        """Nothing to do: the copy was never edited."""

    def reset(self) -> None:
        """Nothing to do."""


def check_restored(model, original) -> dict[str, Any]:
    """Compare every parameter of ``model`` with ``original``.

    Returns:
        ``{"exact": bool, "max_abs_diff": float, "n_changed": int}`` (``n_changed``:
        parameter tensors that are not bit-identical).
    """
    ref = dict(original.named_parameters())
    worst, changed = 0.0, 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            q = ref[name]
            if not torch.equal(p, q):
                changed += 1
                worst = max(worst, float((p - q).abs().max()))
    return {"exact": changed == 0, "max_abs_diff": worst, "n_changed": changed}


def restore_from(model, original) -> None:
    """Copy every parameter of ``original`` into ``model`` (a failed in-place edit must not leak into the next job)."""
    ref = dict(original.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(ref[name])


def check_pristine(prep, workspace, left: list[str] | None = None, *,
                    method: str, objective: str | None, recorded: Iterable[str] | None = None) -> None:
    """Raise (and drop the workspace's model, so the next job reloads it) if the model is not unedited.

    ``recorded``: the parameters the edit's result records (``None``: the edit raised, no result).
    A parameter that changed outside them is the edit method's defect (its unedited values are lost,
    so nothing can restore them): the message names the method, the objective and the parameters
    (it said only "the model could not be restored", which pointed at factlens's revert).
    """
    left = prep.pristine.changed() if left is None else left
    if not left:
        return
    if workspace is not None:
        workspace.clear()
    unit = f"edit method {method!r} (objective {objective!r})"
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    kept = set(recorded) if recorded is not None else None
    unrecorded = [] if kept is None else [n for n in left if n not in kept]
    if unrecorded:
        raise RuntimeError(
            f"{unit} changed parameter(s) that its EditResult does not record: {unrecorded[:5]}"
            f"{f' and {len(unrecorded) - 5} more' if len(unrecorded) > 5 else ''}; their unedited values are lost, "
            "so the model could not be restored. An edit method may change only its mask's parameters and must "
            "record every tensor it changes in its result's deltas (EditResult.from_originals(model, mask, "
            "originals, ...) with the original of each changed tensor); the workspace dropped the model, the next "
            "job reloads it")
    after = "after the edit" if recorded is not None else "after the failed edit"
    raise RuntimeError(f"the model could not be restored {after} by {unit} (parameters {left[:5]}{more} differ from "
                       "the unedited model); the workspace dropped it, the next job reloads it")


def recorded_parameters(res) -> set[str]:
    """The parameters an edit result records (a sequential result: those of every chunk's result)."""
    if hasattr(res, "deltas"):
        return set(res.deltas)
    return {name for r in getattr(res, "results", ()) for name in r.deltas}
