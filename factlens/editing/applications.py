"""Where an :class:`~factlens.editing.result.EditResult` is applied now, and whether a model still
holds its values: the bookkeeping behind ``apply`` and ``revert``.

Split from :mod:`factlens.editing.result` to keep that module small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from factlens.editing.result import ParamDelta


class _Applications:
    """Where an :class:`EditResult` is applied now: ``(model, {param: previous values})`` per
    ``apply`` not yet reverted, most recent last.

    The result's data (deltas, history, config) is frozen; whether it is applied is state of
    the models it was written into, which changes with every ``apply``/``revert``. That state
    lives in this small private object, which the result owns (it is not compared, printed or
    saved), instead of a mutable list among the frozen fields.
    """

    __slots__ = ("_stack",)

    def __init__(self) -> None:
        self._stack: list[tuple[Any, dict[str, Tensor]]] = []

    def push(self, model, previous: dict[str, Tensor]) -> None:
        self._stack.append((model, previous))

    def pop(self, model=None, *, remove: bool = True) -> tuple[Any, dict[str, Tensor]] | None:
        """Remove (unless ``remove=False``) and return the latest application to ``model`` (any model if
        ``None``); ``None`` if there is none."""
        for i in range(len(self._stack) - 1, -1, -1):
            if model is None or self._stack[i][0] is model:
                return self._stack.pop(i) if remove else self._stack[i]
        return None

    def replace(self, old: Tensor, new: Tensor) -> None:
        """Where a saved previous value is the tensor ``old`` itself, use ``new`` (equal values) instead."""
        for _, previous in self._stack:
            for n, t in previous.items():
                if t is old:
                    previous[n] = new

    def __len__(self) -> int:
        return len(self._stack)

    def holds(self, model) -> bool:
        """Whether the edit is applied to ``model`` (the object itself)."""
        return any(m is model for m, _ in self._stack)

    def __repr__(self) -> str:
        return f"_Applications({len(self._stack)} applied)"


def _holds_new(p: Tensor, d: ParamDelta) -> bool:
    """Whether parameter ``p``'s entries under ``d.mask`` are still ``d.new`` (bitwise, in ``p``'s dtype)."""
    with torch.no_grad():
        return torch.equal(p.detach()[d.mask.to(p.device)], d.new.to(device=p.device, dtype=p.dtype))
