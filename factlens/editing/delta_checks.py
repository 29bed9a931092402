"""Consistency checks of an edit's deltas (:class:`~factlens.editing.result.ParamDelta`) against
their masks and the model: what :meth:`EditResult.load <factlens.editing.result.EditResult.load>`,
``apply`` and ``from_originals`` check before they write anything.

Split from :mod:`factlens.editing.result` to keep that module small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
from jaxtyping import Bool
from torch import Tensor

from factlens.components import Mask, ModelShape

if TYPE_CHECKING:
    from factlens.editing.result import ParamDelta


def _check_deltas(deltas: Mapping[str, "ParamDelta"], where: str) -> None:
    """Raise ``ValueError`` unless every delta is consistent with its mask (counts, dtypes, finite values)."""
    for name, d in deltas.items():
        if d.mask.dtype != torch.bool:
            raise ValueError(f"{where}: the mask of {name!r} has dtype {d.mask.dtype}, not bool")
        n = int(d.mask.sum())
        for what in ("old", "new"):
            t = getattr(d, what)
            if t.dim() != 1 or t.numel() != n:
                raise ValueError(f"{where}: {name!r} has {tuple(t.shape)} {what} values but its mask selects {n} "
                                 "entries; the saved edit is damaged")
            if not t.dtype.is_floating_point:
                raise ValueError(f"{where}: the {what} values of {name!r} have dtype {t.dtype}, not a float dtype")
        if not bool(torch.isfinite(d.new).all()):
            raise ValueError(f"{where}: the edited values of {name!r} contain NaN or inf; the edit diverged "
                             "(lower the learning rate) or the file is damaged")


def _original_regions(model, mask: Mask, originals: Mapping[str, Tensor],
                      params: Mapping[str, Tensor]) -> dict[str, Bool[Tensor, "..."]]:
    """The mask's entries of each parameter in :meth:`EditResult.from_originals`'s ``originals``
    that the mask selects only in part (a neuron's row of ``W_out``); whole ones are left out.

    Raises ``ValueError`` for an original of another shape than its parameter (a transposed
    copy has the right size: ``revert()`` failed with a bare ``IndexError``, the model left
    edited), for a parameter the mask does not select and for changed entries outside the mask
    (``apply()`` called such a result damaged). Masks are built only for these parameters, not
    the whole mask's (a byte per entry, 9 GB for a non-localized mask of Gemma-2-9B).
    """
    shape, which = ModelShape.of(model), mask.name or f"{len(mask)} component(s)"
    selected: dict[str, list[tuple]] = {}
    for comp in mask:
        for name, idx in comp.param_slices(shape).items():
            if name in originals:
                selected.setdefault(name, []).append(idx)
    out = {}
    for name, o in originals.items():
        p = params[name]
        if tuple(o.shape) != tuple(p.shape):
            raise ValueError(f"originals[{name!r}] has shape {tuple(o.shape)} but the parameter has shape "
                             f"{tuple(p.shape)}: pass a copy of the parameter as it was, e.g. p.detach().clone()")
        if name not in selected:
            raise ValueError(f"originals has {name!r}, a parameter the mask ({which}) does not select: an edit may "
                             "change only its mask's parameters (add the component with that parameter to the mask, "
                             "or leave the parameter unchanged)")
        region = torch.zeros(p.shape, dtype=torch.bool, device=o.device)
        for idx in selected[name]:
            region[idx] = True
        if bool(region.all()):
            continue
        if not torch.equal(o[~region], p.detach()[~region.to(p.device)].to(o.device, o.dtype)):
            raise ValueError(f"the edit changed entries of {name!r} outside its mask ({which}): an edit may change "
                             "only the entries its mask selects (compare originals[name] with the parameter)")
        out[name] = region
    return out
