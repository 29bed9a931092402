"""Removable low-rank adapters (LoRA) on the weight matrices of a ``HookedTransformer``.

:func:`add_lora` wraps weight matrices with :mod:`torch.nn.utils.parametrize`: the module
then sees ``W + scale * (A @ B)`` (in TransformerLens orientation, ``x @ W``), with ``B``
zero-initialized so the adapter starts as an exact no-op. The original parameter tensor is
kept untouched (as ``parametrizations.<name>.original``) and :meth:`LoraHandle.remove`
puts it back, so the model's weights are restored **bitwise**.

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
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["LoraHandle", "add_lora", "DEFAULT_TARGETS"]

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


class _LoraDelta(nn.Module):
    """Parametrization ``W -> W + scale * reshape(A @ B)`` (``B`` starts at zero)."""

    def __init__(self, short: str, shape: torch.Size, rank: int, scale: float, *, generator: torch.Generator,
                 device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.short, self.shape, self.scale = short, tuple(shape), float(scale)
        d_in, d_out = _matrix_dims(short, shape)
        bound = 1.0 / math.sqrt(d_in)  # kaiming-uniform(a=sqrt(5)) as in PEFT
        a = (torch.rand(d_in, rank, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(rank, d_out, device=device, dtype=dtype))

    def delta(self) -> Tensor:
        d = (self.A @ self.B) * self.scale
        if len(self.shape) == 2:
            return d
        n, x, y = self.shape
        if self.short in _HEAD_IN:  # [d_model, n * d_head] -> [n, d_model, d_head]
            return d.reshape(x, n, y).permute(1, 0, 2)
        return d.reshape(n, x, y)  # [n * d_head, d_model] -> [n, d_head, d_model]

    def forward(self, W: Tensor) -> Tensor:
        return W + self.delta().to(W.dtype)


@dataclass
class LoraHandle:
    """The adapters added by :func:`add_lora`.

    Attributes:
        model: The adapted model.
        ranks: Parameter name -> rank used (``min(rank, d_in, d_out)`` of its matrix view).
        scale: ``alpha / rank`` factor applied to every ``A @ B``.
        removed: True after :meth:`remove`.
    """

    model: nn.Module
    ranks: dict[str, int]
    scale: float
    _sites: list[tuple[nn.Module, str, str]] = field(default_factory=list, repr=False)
    removed: bool = False

    def _deltas(self) -> Iterator[tuple[str, _LoraDelta]]:
        for module, attr, full in self._sites:
            yield full, module.parametrizations[attr][0]

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter parameters (``A`` and ``B`` of every site)."""
        if self.removed:
            raise RuntimeError("the LoRA adapters were removed")
        return [p for _, d in self._deltas() for p in (d.A, d.B)]

    @property
    def n_params(self) -> int:
        """Number of adapter parameters."""
        return sum(p.numel() for p in self.parameters())

    def materialize(self) -> None:
        """Build every adapted weight ``W + scale * A @ B`` now.

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
            return float(math.sqrt(sum(float(d.delta().float().pow(2).sum()) for _, d in self._deltas())))

    def remove(self) -> None:
        """Remove every adapter and restore the original parameters (bitwise; idempotent)."""
        if self.removed:
            return
        for module, attr, _ in self._sites:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        self.removed = True


def _targets_of(model: nn.Module, targets: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    wanted = set(targets)
    out = [n for n in names if n in wanted or (_short(n) in wanted and n.split(".")[0] == "blocks")]
    if not out:
        raise ValueError(f"no parameter matches LoRA targets {list(targets)}; use short names like {DEFAULT_TARGETS} "
                         f"or full parameter names such as {names[:3]}")
    return out


def add_lora(model: nn.Module, *, rank: int, targets: Sequence[str] = DEFAULT_TARGETS, alpha: float | None = None,
             seed: int = 0, dtype: torch.dtype = torch.float32) -> LoraHandle:
    """Add LoRA adapters to ``model``'s weight matrices (in place, removable).

    The weights themselves are never written: the adapters are parametrizations that add
    ``scale * A @ B`` on the fly. Train :meth:`LoraHandle.parameters`; call
    :meth:`LoraHandle.remove` to get the untouched model back. While adapters are
    attached, ``model.named_parameters()`` lists the originals as
    ``...parametrizations.<name>.original`` plus the adapters.

    Args:
        model: A ``HookedTransformer`` (or any module with TransformerLens-shaped weights).
        rank: Requested rank; each matrix gets ``min(rank, d_in, d_out)``.
        targets: Short names (``"W_Q"``, ``"W_in"``, ...; matched in every block, ``"W_K"``
            also matches ``_W_K``) or full parameter names.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank`` (default ``alpha =
            rank``: scale 1).
        seed: Seed of the random ``A`` initialization.
        dtype: Dtype of the adapter parameters (float32 by default, also for bf16 models).

    Returns:
        The handle (adapter parameters, ranks, ``remove()``).

    Raises:
        ValueError: ``rank < 1`` or no parameter matches ``targets``.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    scale = 1.0 if alpha is None else float(alpha) / rank
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    handle = LoraHandle(model, {}, scale)
    try:
        for full in _targets_of(model, targets):
            mod_name, _, attr = full.rpartition(".")
            module = modules[mod_name]
            p = getattr(module, attr)
            short = _short(full)
            r = min(rank, *_matrix_dims(short, p.shape))
            delta = _LoraDelta(short, p.shape, r, scale, generator=gen, device=p.device, dtype=dtype)
            parametrize.register_parametrization(module, attr, delta, unsafe=True)  # shape and dtype are kept
            handle._sites.append((module, attr, full))
            handle.ranks[full] = r
    except BaseException:
        handle.remove()
        raise
    return handle
