"""AlphaEdit: null-space constrained knowledge editing (Fang et al., ICLR 2025).

AlphaEdit is MEMIT (:mod:`factlens.editing.memit`: the same targets ``z_i`` at the last
mask layer, the same spreading of the residual over the mask's MLP layers, the same keys)
with another rule for each layer's change of ``W_out``:

1. **Null space of preserved knowledge.** ``C = E[k k^T]``, the second moment of the layer's
   keys on general text (:mod:`factlens.editing.covariance`, the statistics ROME and MEMIT use),
   stands for the keys whose outputs must not move. Its eigenvectors with eigenvalue below
   ``nullspace_threshold`` span ``U`` (``[d_mlp, r]``), and ``P = U U^T`` projects onto them:
   a change ``delta_W = P X`` leaves ``k^T W_out`` of every key in the span of the other
   eigenvectors exactly as it was.
2. **The projected least squares.** With ``K`` the edited facts' keys (``[n, d_mlp]``), ``R``
   their residuals (mapped through a post-MLP norm as in MEMIT), ``K_p`` the keys of facts
   that earlier edits of a sequence wrote (``edited_before``; none for a single edit) and
   ``l2`` a ridge, the reference solves ``(P (K^T K + K_p^T K_p) + l2 I) delta_W = P K^T R``
   (a ``d_mlp x d_mlp`` system). factlens evaluates the same matrix as
   ``P A^T (A P A^T + l2 I)^-1 [R; 0]`` with ``A = [K; K_p]`` (push-through identity; only an
   ``(n + n_p)``-square system, never ``P`` itself): the new facts' keys are mapped towards
   ``R`` and the earlier facts' keys towards no change, inside the null space only.

Unlike MEMIT there is no ``mom2_update_weight``: ``C`` does not weigh against the new keys, it
removes the directions the update may use. ``l2`` is on the scale of ``|P k|^2`` of the keys
(sums over facts, not means), as in the reference; the reference's settings for GPT-J and
Llama-3-8B are ``nullspace_threshold = 2e-2`` and ``l2 = 10`` (the defaults here, with
MEMIT's GPT-J target settings). The threshold is absolute, on the eigenvalues of ``C``: keys of
another scale keep another share of ``C``'s directions (``meta["layers"][i]["nullspace_dim"]``
and ``["nullspace_energy"]``, the share of ``trace(C)`` the update can touch, say how much).
``C`` is estimated on 10,000 tokens by default (the reference: 100,000 Wikipedia samples),
so directions that text of this size never visits count as null space although a larger
sample would not leave them empty.

**Sequential editing** (:func:`factlens.editing.edit_sequential` with ``method="alphaedit"``, the
setting AlphaEdit was made for): the facts of the earlier chunks come in as ``edited_before``
and their keys are taken on the model as it is when the chunk starts. The reference adds each
batch's ``K K^T`` to a running sum right after the batch's edit and never recomputes it; here
the earlier facts' keys are read on the current model, which is what the constraint protects
(with the same mask for every chunk the two are the same at its lowest layer: only edits of
layers below change a layer's keys). Likewise ``C`` of every mask layer above the lowest is
estimated again on the edited model at each chunk (its cache is keyed on the weights below),
where the reference estimates it once on the unedited model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from factlens.editing.config import EditConfig
from factlens.editing.covariance import KeyStatistics
from factlens.editing.memory_editing import ValueEditConfig, check_value_fields, with_gradients
from factlens.editing.memit import spread_edit
from factlens.editing.result import EditResult
from factlens.editing.rome import subject_keys

__all__ = ["AlphaEditConfig", "alphaedit", "alphaedit_update", "null_space_basis", "without_key"]


@dataclass(frozen=True)
class AlphaEditConfig(ValueEditConfig):
    """Hyper-parameters of :func:`alphaedit` (defaults: the reference's GPT-J settings; its Llama-3-8B
    file differs in ``v_lr=0.1``).

    Attributes:
        nullspace_threshold: Eigenvalues of the key second moment ``C`` below this (absolute)
            mark the directions the update may use (``> 0``).
        l2: Ridge of the projected least squares, on the scale of summed squared keys (``> 0``;
            it also keeps the system solvable when two facts share a subject).
        norm_weight_floor: As :class:`~factlens.editing.memit.MemitConfig`'s (post-MLP norms).
        protect_bos: Take the BOS key's direction out of the null space (:func:`without_key`),
            so that the update leaves the MLP output at BOS as it was. ``C`` leaves position 0
            out (:mod:`~factlens.editing.covariance`), where the reference's statistics keep every
            token; so the BOS key, which is the same in every prompt and which later tokens
            attend to (an attention sink), lay 77-97 % in the null space at Gemma 3 270M's layers
            3-5, and an 8-fact edit of MLPs 2-4 changed the MLP output at BOS by 23 % at layer 3
            (5.6-6.6 % at 2 and 4; ``benchmarks/alphaedit_bos.py``, docs/methods/alphaedit.md).
            ``False``: as before 2026-12-05 (session 42).

    The target and covariance fields are :class:`~factlens.editing.memit.MemitConfig`'s
    (``v_num_grad_steps=25``, ``clamp_norm_factor=0.75``, five 10-word prefixes), except
    ``cov_ridge``, which AlphaEdit does not use: the null space is read from ``C``'s own
    eigenvalues, and ``l2`` regularizes the solve.
    """

    method: ClassVar[str] = "alphaedit"
    label: ClassVar[str] = "AlphaEdit"  # in messages and progress bars
    v_num_grad_steps: int = 25
    clamp_norm_factor: float | None = 0.75
    prefix_lengths: tuple[tuple[int, int], ...] = ((10, 5),)
    norm_weight_floor: float = 0.01
    nullspace_threshold: float = 2e-2
    l2: float = 10.0
    protect_bos: bool = True

    def __post_init__(self) -> None:
        check_value_fields(self)
        if not self.nullspace_threshold > 0:
            raise ValueError(f"AlphaEditConfig.nullspace_threshold must be > 0 (an eigenvalue of the key second "
                             f"moment), got {self.nullspace_threshold}")
        if not self.l2 > 0:
            raise ValueError(f"AlphaEditConfig.l2 must be > 0, got {self.l2}")
        if not (0 <= self.norm_weight_floor < 1):
            raise ValueError(f"AlphaEditConfig.norm_weight_floor must be in [0, 1), got {self.norm_weight_floor}")


def null_space_basis(stats: KeyStatistics, threshold: float, *, device: str | torch.device = "cpu"
                     ) -> tuple[Float[Tensor, "d_mlp r"], dict[str, Any]]:
    """Orthonormal eigenvectors of ``C`` with eigenvalue below ``threshold`` (float64, CPU), and
    ``{"nullspace_dim", "d_mlp", "nullspace_energy", "eigenvalue_range"}``.

    ``device``: where the eigendecomposition runs (float64 there; :func:`alphaedit` passes the
    device of the model's layer, so a model on a GPU does its ``O(d_mlp^3)`` work there, once per
    mask layer and edit).

    Raises:
        ValueError: No eigenvalue is below ``threshold`` (the update could change nothing).

    Example:
        >>> st = KeyStatistics(torch.diag(torch.tensor([5.0, 1.0, 1e-3], dtype=torch.float64)), 100, 0)
        >>> U, info = null_space_basis(st, 2e-2)
        >>> U.shape, info["nullspace_dim"]
        (torch.Size([3, 1]), 1)
    """
    C = stats.mom2.to(device, torch.float64)
    evals, evecs = torch.linalg.eigh((C + C.T) / 2)
    evals, evecs = evals.cpu(), evecs.cpu()
    keep = evals < threshold
    lo, hi = float(evals[0]), float(evals[-1])
    if not bool(keep.any()):
        raise ValueError(f"no eigenvalue of layer {stats.layer}'s key second moment is below nullspace_threshold="
                         f"{threshold:g} (they range over [{lo:.3g}, {hi:.3g}]): AlphaEdit's update would be zero. "
                         "Raise AlphaEditConfig.nullspace_threshold (--edit methods.alphaedit.nullspace_threshold=...)")
    total = float(evals.clamp_min(0).sum())
    energy = float(evals[keep].clamp_min(0).sum()) / total if total > 0 else 0.0
    return evecs[:, keep], {"nullspace_dim": int(keep.sum()), "d_mlp": int(C.shape[0]), "nullspace_energy": energy,
                            "eigenvalue_range": [lo, hi]}


def without_key(basis: Float[Tensor, "d_mlp r"], key: Float[Tensor, "d_mlp"]
                ) -> tuple[Float[Tensor, "d_mlp r1"], float]:
    """The part of ``span(basis)`` orthogonal to ``key`` (``r - 1`` orthonormal columns, or ``basis``
    itself when ``key`` has no component in it), and the share of ``key``'s norm that lay in the span.

    Every update ``basis' @ X`` then maps ``key`` to no change (``key @ basis' = 0``) and stays in the
    span (the null space): ``key``'s projection ``v`` onto the span is taken out of it by a Householder
    reflection of the span's coordinates that sends ``e_1`` to ``v``'s direction (``O(d r)``, no SVD).

    Example:
        >>> U = torch.eye(3, dtype=torch.float64)[:, 1:]  # the span of the last two axes
        >>> k = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # half of it (in norm squared) in the span
        >>> V, share = without_key(U, k)
        >>> V.shape, round(share, 3), float((k @ V).abs().max())
        (torch.Size([3, 1]), 0.707, 0.0)
    """
    U = basis.to(torch.float64)
    k = key.to(U.device, torch.float64)
    w = U.T @ k  # [r]: the key in the span's coordinates
    knorm, wnorm = float(k.norm()), float(w.norm())
    share = wnorm / knorm if knorm > 0 else 0.0
    if wnorm <= 1e-12 * max(knorm, 1e-300):  # the key has no part in the span: nothing to take out
        return U, share
    if U.shape[1] < 2:  # the span is the key's direction alone
        return U[:, :0], share
    w = w / wnorm
    u = w.clone()
    u[0] -= 1.0
    un = float(u.norm())
    if un < 1e-12:  # w is e_1: the first column is the key's direction
        return U[:, 1:], share
    u = u / un
    # H = I - 2 u u^T maps e_1 to w; its other columns are an orthonormal basis of w's complement
    return U[:, 1:] - 2.0 * (U @ u)[:, None] * u[None, 1:], share


def bos_key(model, layer: int) -> Tensor | None:
    """The key (input of ``W_out``) of MLP ``layer`` at a BOS token in position 0, the same in every
    prompt of a causal model; ``None`` when the model prepends no BOS."""
    from factlens.components import mlp_hook
    from factlens.tokens import _bos_id

    bos = _bos_id(model)
    if bos is None:
        return None
    name, out = mlp_hook(layer, "post"), []
    with torch.no_grad():
        model.run_with_hooks(torch.tensor([[bos]], device=model.cfg.device), stop_at_layer=layer + 1,
                             fwd_hooks=[(name, lambda act, hook: out.append(act[0, 0].detach()))])
    return out[0]


def alphaedit_update(basis: Float[Tensor, "d_mlp r"], keys: Float[Tensor, "n d_mlp"],
                     values: Float[Tensor, "n d_model"], *, l2: float,
                     previous_keys: Float[Tensor, "p d_mlp"] | None = None) -> Float[Tensor, "d_mlp d_model"]:
    """AlphaEdit's change of one layer's ``W_out`` (TransformerLens layout; float64, CPU).

    ``P A^T (A P A^T + l2 I)^-1 [R; 0]`` with ``P = basis basis^T`` and ``A = [keys; previous_keys]``:
    the reference's ``(P (K^T K + K_p^T K_p) + l2 I)^-1 P K^T R``, solved in the space of the keys.

    Example:
        >>> U = torch.eye(4, dtype=torch.float64)[:, 2:]  # the update may use the last two dimensions
        >>> K = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
        >>> dW = alphaedit_update(U, K, torch.ones(1, 3, dtype=torch.float64), l2=1e-6)
        >>> bool(dW[:2].abs().max() == 0), round(float((K @ dW)[0, 0]), 4)
        (True, 1.0)
    """
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    U = basis.to("cpu", torch.float64)
    K = keys.detach().to("cpu", torch.float64)
    R = values.detach().to("cpu", torch.float64)
    if K.shape[0] != R.shape[0]:
        raise ValueError(f"{K.shape[0]} keys but {R.shape[0]} values")
    if previous_keys is not None and previous_keys.shape[0]:
        Kp = previous_keys.detach().to("cpu", torch.float64)
        A = torch.cat([K, Kp])
        b = torch.cat([R, R.new_zeros(Kp.shape[0], R.shape[1])])
    else:
        A, b = K, R
    AU = A @ U  # [n + p, r]: the keys' components the update can reach
    S = AU @ AU.T + l2 * torch.eye(A.shape[0], dtype=torch.float64)
    return U @ (AU.T @ torch.linalg.solve(S, b))


def _update_factory(edited_before):
    """The per-layer rule of :func:`alphaedit` (for :func:`~factlens.editing.memit.spread_edit`)."""

    def make(model, layers, stats, cfg: AlphaEditConfig, prefixes):
        bases, extra = {}, {}
        earlier = list(edited_before) if edited_before is not None else []
        previous = {}
        for l in layers:
            device = model.blocks[l].mlp.W_out.device
            bases[l], extra[l] = null_space_basis(stats[l], cfg.nullspace_threshold, device=device)
            k0 = bos_key(model, l) if cfg.protect_bos else None
            if k0 is not None:  # the BOS key, left out of C, is no direction the update may use
                bases[l], extra[l]["bos_key_in_nullspace"] = without_key(bases[l], k0.cpu())
                extra[l]["nullspace_dim"] = int(bases[l].shape[1])
                if not bases[l].shape[1]:
                    raise ValueError(f"layer {l}'s null space at nullspace_threshold={cfg.nullspace_threshold:g} has one "
                                     "direction, and it carries the BOS key: AlphaEdit's update would be zero. Raise "
                                     "AlphaEditConfig.nullspace_threshold (--edit methods.alphaedit.nullspace_threshold=...)")
            # the earlier facts' keys on the model as the chunk finds it (before this edit's first layer)
            previous[l] = subject_keys(model, l, earlier, prefixes) if earlier else None
            extra[l]["n_previous_keys"] = len(earlier)

        def update(layer: int, keys: Tensor, values: Tensor) -> Tensor:
            return alphaedit_update(bases[layer], keys, values, l2=cfg.l2, previous_keys=previous[layer])

        return update, extra

    return make


@with_gradients
def alphaedit(model, mask, task, *, objective: str | None = None, config: AlphaEditConfig | EditConfig | None = None,
              inplace: bool = False, offload: str | os.PathLike | None = None, edited_before=None) -> EditResult:
    """Write all of the task's new facts at once into the mask's MLP layers with AlphaEdit.

    Args:
        model: A ``HookedTransformer`` (never moved; no hooks are left on it).
        mask: One or more whole MLP layers (heads or neurons raise ``MaskNotSupported``).
        task: A :class:`~factlens.tasks.Task` whose ``forget`` facts all have ``target_new``.
        objective: ``None`` or ``"inject"``.
        config: An :class:`AlphaEditConfig`; an :class:`EditConfig` (what ``factlens.edit``
            passes) means ``AlphaEditConfig.from_edit_config(config)``.
        inplace: Edit ``model`` itself (restored if an error interrupts the edit); default: a deep copy.
        offload: A folder on disk for the saved original ``W_out`` tensors; ``None``: in memory.
        edited_before: Facts that earlier edits wrote (a :class:`~factlens.data.FactDataset` or
            records; :func:`factlens.editing.edit_sequential` passes the earlier chunks): their keys are
            kept mapped to their current outputs. ``None``: none.

    Returns:
        An :class:`EditResult` with the mask layers' ``W_out`` as deltas; ``meta["layers"]``
        adds ``nullspace_dim``, ``nullspace_energy``, ``eigenvalue_range``,
        ``n_previous_keys`` and (``protect_bos``) ``bos_key_in_nullspace`` (the share of the
        BOS key's norm in the null space before it was taken out) per layer to MEMIT's
        diagnostics.

    Example:
        >>> from factlens.components import Mask
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> alphaedit(p.model, Mask.from_labels(["L1.mlp", "L2H1"]), p.task)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        factlens.editing.memory_editing.MaskNotSupported: AlphaEdit edits whole MLP layers (their W_out); ...
    """
    return spread_edit(model, mask, task, objective=objective, config=config, cls=AlphaEditConfig, inplace=inplace, offload=offload, make_update=_update_factory(edited_before))
