"""Removable low-rank adapters (LoRA) on the weight matrices of a ``HookedTransformer``.

:func:`add_lora` wraps weight matrices with :mod:`torch.nn.utils.parametrize`: the module
then sees ``W + scale * (A @ B)`` (in TransformerLens orientation, ``x @ W``), with ``B``
zero-initialized so the adapter starts as an exact no-op. The original parameter tensor is
kept untouched (as ``parametrizations.<name>.original``) and :meth:`LoraHandle.remove`
puts it back, so the model's weights are restored **bitwise**. With ``forward="factored"``
the weights are not wrapped at all: hooks add ``scale * (x @ A) @ B`` to each product
(:mod:`factlens.evaluation.lora_factored`), which spares a copy of every adapted matrix per
training step.

Matrix view of the weights (the rank is capped at the smaller side of this matrix):

* ``W_Q``, ``W_K``, ``W_V`` (and the grouped ``_W_K``/``_W_V``) ``[head_index, d_model, d_head]``:
  the ``[d_model, n_heads * d_head]`` matrix of all heads side by side;
* ``W_O`` ``[head_index, d_head, d_model]``: the ``[n_heads * d_head, d_model]`` matrix;
* ``W_in``, ``W_gate`` ``[d_model, d_mlp]`` and ``W_out`` ``[d_mlp, d_model]``: as they are.

Example:
    >>> from factlens.testing import tiny_model
    >>> m = tiny_model()
    >>> before = {n: p.detach().clone() for n, p in m.named_parameters()}
    >>> h = add_lora(m, rank=4)
    >>> h.ranks["blocks.0.attn.W_Q"], h.n_params > 0
    (4, True)
    >>> h.remove()
    >>> all(torch.equal(before[n], p) for n, p in m.named_parameters())
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["LoraHandle", "add_lora", "DEFAULT_TARGETS", "LORA_FORWARDS", "reshape_delta"]

#: Short names of the weight matrices adapted by default (``W_K``/``W_V`` also match the
#: grouped-query ``_W_K``/``_W_V``).
DEFAULT_TARGETS: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out")

_HEAD_IN = ("W_Q", "W_K", "W_V")  # [head_index, d_model, d_head]
_HEAD_OUT = ("W_O",)  # [head_index, d_head, d_model]


def _short(name: str) -> str:
    return name.split(".")[-1].lstrip("_")


def _matrix_dims(short: str, shape: torch.Size) -> tuple[int, int]:
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 3 and short in _HEAD_IN:
        return int(shape[1]), int(shape[0] * shape[2])
    if len(shape) == 3 and short in _HEAD_OUT:
        return int(shape[0] * shape[1]), int(shape[2])
    raise ValueError(f"cannot view a {short} parameter of shape {tuple(shape)} as a matrix")


def reshape_delta(d: Tensor, short: str, shape: Sequence[int]) -> Tensor:
    """A ``[d_in, d_out]`` matrix-view update in the weight's own shape (see the module docstring)."""
    if len(shape) == 2:
        return d
    n, x, y = shape
    if short in _HEAD_IN:  # [d_model, n * d_head] -> [n, d_model, d_head]
        return d.reshape(x, n, y).permute(1, 0, 2)
    return d.reshape(n, x, y)  # [n * d_head, d_model] -> [n, d_head, d_model]


def _init_adapter(d_in: int, d_out: int, rank: int, *, generator: torch.Generator, device,
                  dtype: torch.dtype) -> tuple[nn.Parameter, nn.Parameter]:
    """``A`` kaiming-uniform(a=sqrt(5)) as in PEFT, ``B`` zero (the adapter starts as a no-op)."""
    bound = 1.0 / math.sqrt(d_in)
    a = (torch.rand(d_in, rank, generator=generator, dtype=torch.float32) * 2 - 1) * bound
    return nn.Parameter(a.to(device=device, dtype=dtype)), nn.Parameter(torch.zeros(rank, d_out, device=device, dtype=dtype))


class _LoraDelta(nn.Module):
    """Parametrization ``W -> W + scale * reshape(A @ B)`` (``B`` starts at zero)."""

    def __init__(self, short: str, shape: torch.Size, rank: int, scale: float, *, generator: torch.Generator,
                 device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.short, self.shape, self.scale = short, tuple(shape), float(scale)
        self.A, self.B = _init_adapter(*_matrix_dims(short, shape), rank, generator=generator, device=device, dtype=dtype)

    def delta(self) -> Tensor:
        return reshape_delta((self.A @ self.B) * self.scale, self.short, self.shape)

    def forward(self, W: Tensor) -> Tensor:
        return W + self.delta().to(W.dtype)


@dataclass
class LoraHandle:
    """The adapters added by :func:`add_lora`.

    Attributes:
        model: The adapted model.
        ranks: Parameter name -> rank used (``min(rank, d_in, d_out)`` of its matrix view).
        scale: ``alpha / rank`` factor applied to every ``A @ B``.
        forward: ``"merged"`` (parametrizations: the model sees ``W + scale * A @ B``) or
            ``"factored"`` (hooks add ``scale * (x @ A) @ B``: :mod:`factlens.evaluation.lora_factored`).
        removed: True after :meth:`remove`.
    """

    model: nn.Module
    ranks: dict[str, int]
    scale: float
    forward: str = "merged"
    _sites: list[tuple[nn.Module, str, str]] = field(default_factory=list, repr=False)
    _factored: list[Any] = field(default_factory=list, repr=False)
    _orders: list[tuple[nn.Module, tuple[str, ...]]] = field(default_factory=list, repr=False)
    removed: bool = False

    def _adapters(self) -> Iterator[Any]:
        """Every adapter (``_LoraDelta`` or ``FactoredSite``: both have ``A``, ``B`` and ``delta()``), in target order."""
        for module, attr, _ in self._sites:
            yield module.parametrizations[attr][0]
        yield from self._factored

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter parameters (``A`` and ``B`` of every site)."""
        if self.removed:
            raise RuntimeError("the LoRA adapters were removed")
        return [p for d in self._adapters() for p in (d.A, d.B)]

    @property
    def n_params(self) -> int:
        """Number of adapter parameters."""
        return sum(p.numel() for p in self.parameters())

    def materialize(self) -> None:
        """Build every adapted weight ``W + scale * A @ B`` now (merged form; factored: nothing to build).

        Inside ``torch.nn.utils.parametrize.cached()`` the weights are then computed once, here,
        instead of at their first use inside the forward pass; gradient checkpointing
        (:func:`factlens.memory.checkpointed_blocks`) needs that, since its recomputation
        would find them cached and save fewer tensors than the first pass did.
        """
        for module, attr, _ in self._sites:
            getattr(module, attr)

    def delta_norm(self) -> float:
        """Frobenius norm of all weight changes ``scale * A @ B`` together."""
        with torch.no_grad():
            return float(math.sqrt(sum(float(d.delta().float().pow(2).sum()) for d in self._adapters())))

    def remove(self) -> None:
        """Remove every adapter and restore the original parameters (bitwise; idempotent)."""
        if self.removed:
            return
        for module, attr, _ in self._sites:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        for module, order in self._orders:  # removal re-registers a weight last: put each back in its place
            params = module._parameters
            ordered = {k: params[k] for k in order if k in params} | {k: v for k, v in params.items() if k not in order}
            params.clear()
            params.update(ordered)
        for site in self._factored:
            site.remove()
        self.removed = True


def _targets_of(model: nn.Module, targets: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    wanted = set(targets)
    out = [n for n in names if n in wanted or (_short(n) in wanted and n.split(".")[0] == "blocks")]
    if not out:
        raise ValueError(f"no parameter matches LoRA targets {list(targets)}; use short names like {DEFAULT_TARGETS} "
                         f"or full parameter names such as {names[:3]}")
    return out


def _check_rank_alpha(rank: Any, alpha: Any) -> None:
    """Raise a clear error for a rank that is not an integer >= 1 or an ``alpha`` that is not > 0
    (a float rank failed deep inside ``torch.rand``; ``alpha=0`` gave adapters that never change
    the model, a negative one the opposite of the trained update)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"LoRA rank must be an integer >= 1, got {rank!r} ({type(rank).__name__}); e.g. rank=8")
    if rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank}")
    if alpha is not None and not (isinstance(alpha, (int, float, np.number)) and not isinstance(alpha, bool)
                                  and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a finite number > 0 (the update is scaled by alpha / rank), got "
                         f"{alpha!r}; leave alpha=None for scale 1")


#: How the adapted weights are computed (see :class:`LoraHandle`).
LORA_FORWARDS: tuple[str, ...] = ("merged", "factored")


def add_lora(model: nn.Module, *, rank: int, targets: Sequence[str] = DEFAULT_TARGETS, alpha: float | None = None,
             seed: int = 0, dtype: torch.dtype = torch.float32, forward: str = "merged") -> LoraHandle:
    """Add LoRA adapters to ``model``'s weight matrices (in place, removable).

    The weights themselves are never written: the adapters add ``scale * A @ B`` on the fly.
    Train :meth:`LoraHandle.parameters`; call :meth:`LoraHandle.remove` to get the untouched
    model back.

    Args:
        model: A ``HookedTransformer`` (or any module with TransformerLens-shaped weights).
        rank: Requested rank, an integer >= 1; each matrix gets ``min(rank, d_in, d_out)``.
        targets: Short names (``"W_Q"``, ``"W_in"``, ...; matched in every block, ``"W_K"``
            also matches ``_W_K``) or full parameter names; one name may be given as a string.
        alpha: LoRA ``alpha`` (> 0); the update is scaled by ``alpha / rank`` with the requested
            ``rank``, also for a matrix that caps it (the convention of ``peft``'s
            ``lora_alpha / r``, so one ``alpha`` means the same scale on every matrix); default
            ``alpha = rank``: scale 1.
        seed: Seed of the random ``A`` initialization (the same adapters in both forms).
        dtype: Dtype of the adapter parameters (float32 by default, also for bf16 models).
        forward: ``"merged"``: parametrizations, the model sees ``W + scale * A @ B`` (while
            attached, ``model.named_parameters()`` lists the originals as
            ``...parametrizations.<name>.original`` plus the adapters); works for any module.
            ``"factored"``: the weights stay as they are and hooks add ``scale * (x @ A) @ B`` to
            each product (:mod:`factlens.evaluation.lora_factored`): no copy of the adapted
            matrices per step; the same function up to float rounding; TransformerLens
            attention and MLP blocks only.

    Returns:
        The handle (adapter parameters, ranks, ``remove()``).

    Raises:
        TypeError: ``rank`` is not an integer.
        ValueError: ``rank < 1``, ``alpha <= 0``, an unknown ``forward``, no parameter matches
            ``targets``, or (factored) a target the hooks cannot reach.
    """
    _check_rank_alpha(rank, alpha)
    rank = int(rank)
    if isinstance(targets, str):  # one name: "W_Q" is not the targets "W", "_", "Q"
        targets = (targets,)
    if forward not in LORA_FORWARDS:
        raise ValueError(f"unknown LoRA forward {forward!r}; use one of {list(LORA_FORWARDS)}")
    from factlens.evaluation.lora_factored import FactoredSite, attach_factored

    scale = 1.0 if alpha is None else float(alpha) / rank
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    handle = LoraHandle(model, {}, scale, forward)
    try:
        for full in _targets_of(model, targets):
            mod_name, _, attr = full.rpartition(".")
            module = modules[mod_name]
            p = getattr(module, attr)
            short = _short(full)
            r = min(rank, *_matrix_dims(short, p.shape))
            if forward == "factored":
                a, b = _init_adapter(*_matrix_dims(short, p.shape), r, generator=gen, device=p.device, dtype=dtype)
                handle._factored.append(FactoredSite(full, short, a, b, scale, tuple(p.shape)))
            else:
                delta = _LoraDelta(short, p.shape, r, scale, generator=gen, device=p.device, dtype=dtype)
                if all(m is not module for m, _ in handle._orders):
                    handle._orders.append((module, tuple(module._parameters)))
                parametrize.register_parametrization(module, attr, delta, unsafe=True)  # shape and dtype are kept
                handle._sites.append((module, attr, full))
            handle.ranks[full] = r
        if handle._factored:
            attach_factored(model, handle._factored)
    except BaseException:
        handle.remove()
        raise
    return handle
