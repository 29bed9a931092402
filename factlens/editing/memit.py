"""MEMIT: mass-editing memory in a transformer (Meng et al. 2023).

MEMIT writes many facts at once and spreads the change over several MLP layers (the
mask's MLPs, e.g. the fact-lookup MLPs or the layers causal tracing picks):

1. **Targets** ``z_i``: for every fact, a vector ``delta_i`` added to the output of the
   *last* mask layer ``L`` at the subject's last token is optimized exactly as ROME's
   value (:func:`factlens.editing.rome.optimize_delta`: NLL of ``target_new`` over the bare
   and prefixed prompts, ``kl_factor`` KL on ``"{subject} is a"``, weight decay
   ``|delta| / |z|^2`` and the clamp ``|delta| <= clamp_norm_factor * |z|``, where ``z`` is
   the residual stream after layer ``L`` of the bare prompt, where ``delta`` is added as in
   the reference); ``z_i = z + delta_i``.
2. **Spreading**: for the mask's layers ``l_1 < ... < l_m`` in order, with the model
   edited so far: keys ``K`` (``[n, d_mlp]``, each averaged over the prefixes as in ROME)
   at layer ``l_j``, the residual ``R = (Z - Z_now) / (m - j + 1)`` (the targets minus the
   bare prompts' current residual after layer ``L``, split evenly over the layers left),
   and the update

   ``delta_W = (lambda C + K^T K)^-1 K^T R``  (TransformerLens layout, ``[d_mlp, d_model]``)

   with ``C`` the layer's key second moment on general text
   (:mod:`factlens.editing.covariance`, estimated on the *unedited* model, as the reference's
   precomputed statistics) and ``lambda = mom2_update_weight``. factlens evaluates it as
   ``C^-1 K^T (lambda I + K C^-1 K^T)^-1 R`` (the same matrix, push-through identity),
   which solves only an ``n x n`` system and stays exact at ``lambda = 0``: then one fact
   in one layer gives ROME's closed form (:func:`factlens.editing.rome.rome_closed_form`)
   exactly.

Defaults are the MEMIT paper's GPT-J settings (``v_num_grad_steps=25``, ``v_lr=0.5``,
``v_weight_decay=0.5``, ``clamp_norm_factor=0.75``, ``kl_factor=0.0625``,
``mom2_update_weight=15000``, five 10-word prefixes), with the covariance defaults of
:class:`~factlens.editing.rome.RomeConfig`. ``lambda`` trades edit strength against
preservation; its scale is relative to ``k^T C^-1 k``, which is about ``d_mlp`` for keys
of ordinary text (GPT-J: 16384), so models with smaller MLPs get weaker edits at the same
``lambda``.

**Norms after the MLP** (Gemma 2/3's ``ln2_post``): the reference writes the residual
``R`` straight into ``W_out``'s output, which is only right when the MLP output is added to
the residual as is (GPT-J). factlens maps ``R`` through the norm linearized at each fact's
current MLP output (:func:`residual_to_mlp_output`), which closes much more of the gap
than writing ``R`` unmapped (measured on a Gemma-3-shaped random model: docs/methods/memit.md).
One direction of ``R`` cannot be written through an RMS norm to first order (the norm is
blind to the scale of the current output), so one layer never closes the gap;
``meta["final_residual_norm"]`` reports what is left.

Keys are averaged over the bare prompt and the prefixed prompts with equal weights (ROME's
average; MEMIT's code weights the bare prompt 1/2), so that MEMIT on one layer and ROME
use the same ``k*``. Only the mask layers' ``W_out`` change.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from factlens.components import param_name, resid_hook
from factlens.config import check_inplace
from factlens.editing.config import EditConfig
from factlens.editing.covariance import KeyStatistics
from factlens.editing.result import EditResult
from factlens.editing.memory_editing import (ValueEditConfig, add_update, build_result, check_value_fields,
                                          covariance_meta, forget_records, layer_key_statistics, mask_mlp_layers,
                                          split_config, warn_rounding, with_gradients)
from factlens.editing.rome import (_fact_texts, _subject_acts, _value_batch, context_prefixes, mlp_output_hook,
                                optimize_delta, subject_keys)
from factlens.memory import check_folder, kept_copies
from factlens.progress_bars import progress_bar

__all__ = ["MemitConfig", "memit", "memit_apply", "memit_update", "memit_targets", "post_mlp_norm", "residual_to_mlp_output",
           "spread_edit", "unwritable_share"]


@dataclass(frozen=True)
class MemitConfig(ValueEditConfig):
    """Hyper-parameters of :func:`memit` (defaults: MEMIT's GPT-J settings, see the module docstring).

    Attributes:
        v_num_grad_steps: Adam steps of each target optimization (the last step only evaluates).
        v_lr: Adam learning rate.
        v_weight_decay: Weight of ``|delta| / |z|^2``.
        clamp_norm_factor: ``|delta| <= clamp_norm_factor * |z|`` (``None``: no clamp).
        kl_factor: Weight of the KL term on the essence prompts.
        stop_loss: Stop a target optimization once its loss is below this.
        kl_prompts: Essence prompts, ``{}`` = the subject.
        prefix_lengths: ``(words, count)`` pairs of general-text prefixes (plus the bare prompt).
        mom2_update_weight: ``lambda``, the weight of the covariance against the new keys (>= 0).
        norm_weight_floor: Models with a norm after the MLP (Gemma 2/3): residual dimensions
            whose norm weight ``|w|`` is below this fraction of its median are not written
            (as zero weights are not). Gemma 3 270M's ``ln2_post`` at layer 4 has 7 weights
            between 0 and 0.01 (median 5.7): writing through them blew the update up and left
            a larger gap at the targets (16 athletes at the FLU's MLPs 2-4: mean update norm 25
            against 2.4, gap 824 against 272; benchmarks/memit_sweep.py, docs/methods/memit.md).
            ``0``: write every non-zero dimension
            (factlens before 2026-11-30). No effect on models without such a norm.
        text_source: General text for the key covariance (``None``: built-in).
        n_cov_tokens: Tokens for the key covariance of each layer.
        cov_seq_len: Tokens per covariance chunk.
        cov_ridge: Relative ridge ``cov_ridge * mean(diag C)`` added to ``C``.
        cache_covariance: Cache the covariance on disk.
        seed: Seed of the prefix choice.
    """

    method: ClassVar[str] = "memit"
    label: ClassVar[str] = "MEMIT"  # in messages and progress bars
    v_num_grad_steps: int = 25
    clamp_norm_factor: float | None = 0.75
    prefix_lengths: tuple[tuple[int, int], ...] = ((10, 5),)
    mom2_update_weight: float = 15000.0
    norm_weight_floor: float = 0.01

    def __post_init__(self) -> None:
        check_value_fields(self)
        if self.mom2_update_weight < 0:
            raise ValueError(f"MemitConfig.mom2_update_weight must be >= 0, got {self.mom2_update_weight}")
        if not (0 <= self.norm_weight_floor < 1):
            raise ValueError(f"MemitConfig.norm_weight_floor must be in [0, 1) (a fraction of the norm weight's "
                             f"median; 0 = write every non-zero dimension), got {self.norm_weight_floor}")


def memit_update(stats: KeyStatistics, keys: Float[Tensor, "n d_mlp"], residuals: Float[Tensor, "n d_model"], *,
                 mom2_update_weight: float, ridge: float = 0.0) -> Float[Tensor, "d_mlp d_model"]:
    """MEMIT's change of one layer's ``W_out``: ``(lambda C + K^T K)^-1 K^T R`` (float64, CPU).

    Computed as ``C^-1 K^T (lambda I + K C^-1 K^T)^-1 R``. With ``lambda = 0`` the edited
    layer maps every key ``K[i]`` to its old output plus ``R[i]`` exactly.

    Raises:
        ValueError: ``lambda = 0`` and linearly dependent keys (e.g. one subject twice).
        FloatingPointError: A key or a residual is NaN or infinite (a diverged target
            optimization; this was reported as linearly dependent keys before).

    Example:
        >>> st = KeyStatistics(torch.eye(5, dtype=torch.float64), 100, 0)
        >>> K, R = torch.randn(2, 5), torch.randn(2, 3)
        >>> torch.allclose(K.double() @ memit_update(st, K, R, mom2_update_weight=0.0), R.double())
        True
    """
    K = keys.detach().to("cpu", torch.float64)
    R = residuals.detach().to("cpu", torch.float64)
    if K.shape[0] != R.shape[0]:
        raise ValueError(f"{K.shape[0]} keys but {R.shape[0]} residuals")
    for what, x, cause in (("keys", K, "the model's activations overflowed in its dtype"),
                           ("residuals (targets minus current outputs)", R, "the target optimization diverged")):
        rows = (~torch.isfinite(x)).any(dim=1).nonzero().flatten().tolist()
        if rows:  # not "linearly dependent keys": no mom2_update_weight helps here
            raise FloatingPointError(
                f"the {what} at layer {stats.layer} are not finite (NaN or infinite) for facts {rows[:10]} (rows of "
                f"the edit): {cause}. Nothing was written; lower v_lr, or edit a float32 copy of the model "
                "(model.float())")
    ck = stats.solve(K.T, ridge)  # [d_mlp, n]
    gram = K @ ck
    a = gram + mom2_update_weight * torch.eye(K.shape[0], dtype=torch.float64)
    sol, info = torch.linalg.solve_ex(a, R)
    if int(info) != 0 or not torch.isfinite(sol).all():
        raise ValueError("the edited facts' keys are linearly dependent (the same subject twice?); MEMIT needs "
                         "mom2_update_weight > 0 for them")
    return ck @ sol


def memit_targets(model, layer: int, records, *, config: MemitConfig, prefixes
                  ) -> tuple[Tensor, list[dict[str, Any]]]:
    """``z_i`` for every fact: the residual after block ``layer`` (bare prompt) plus its optimized ``delta_i``.

    Returns ``([n, d_model] float64 CPU, history)``.
    """
    zs, history, offset = [], [], 0
    for i, r in enumerate(progress_bar(records, desc=f"{getattr(config, 'label', 'MEMIT')} targets", leave=False)):
        batch = _value_batch(model, r, prefixes, config.kl_prompts)
        delta, z, hist = optimize_delta(model, layer, batch, config, where="resid_post", fact=i,
                                        fact_id=r.id or r.subject)
        zs.append((z + delta).to("cpu", torch.float64))
        history += [{**h, "step": offset + h["step"], "layer": layer} for h in hist]
        offset += len(hist)
    return torch.stack(zs), history


def _current_z(model, layer: int, records) -> Tensor:
    texts, spans = [], []
    for r in records:
        t, s = _fact_texts(r, [""])
        texts += t
        spans += s
    return _subject_acts(model, resid_hook(layer, "post"), texts, spans, layer + 1)


def post_mlp_norm(model, layer: int):
    """The norm block ``layer`` applies to its MLP output before the residual add, or ``None``.

    Gemma 2/3 (``use_normalization_before_and_after``): ``ln2_post``; post-norm decoders
    (OLMo 2/3): ``ln2``. Only RMS norms are supported (``ValueError`` otherwise).
    """
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    block = model.blocks[layer]
    if getattr(model.cfg, "use_normalization_before_and_after", False):
        norm = block.ln2_post
    elif getattr(model.cfg, "original_architecture", None) in POST_NORM_ARCHITECTURES:
        norm = block.ln2
    else:
        return None
    if isinstance(norm, torch.nn.Identity):
        return None
    if not type(norm).__name__.startswith("RMSNorm"):
        raise ValueError(f"block {layer} normalizes its MLP output with {type(norm).__name__}; MEMIT here supports "
                         "no norm or an RMS norm after the MLP")
    return norm


def residual_to_mlp_output(model, layer: int, records, residuals: Tensor, *, weight_floor: float = 0.0) -> Tensor:
    """Map residual-stream changes to changes of MLP ``layer``'s raw output (``W_out``'s value space).

    Without a norm after the MLP this is the identity. With an RMS norm ``N(r) = w * r / s(r)``
    (Gemma 2/3's ``ln2_post``) the change is linearized at each fact's current raw output
    ``r`` (bare prompt): to first order ``N(r + dr) - N(r) = w * P_r(dr) / s(r)``, ``P_r``
    removing the component along ``r`` (the norm is blind to the scale of ``r``). What it can
    write is every change orthogonal to ``q = r / w``, so the least-squares answer writes
    ``R' = R - (R . q^) q^`` exactly: ``dr = s(r) * R' / w`` (already orthogonal to ``r``).
    (Before, the map took ``dr = s(r) * P_r(R / w)``, which leaves a first-order gap larger by
    the factor ``|w * r^| |r^ / w| >= 1``, equal only where ``w`` is uniform.) MEMIT's reference
    has no such step (GPT-J has no post-MLP norm). Dimensions whose norm weight is zero cannot
    be written at all; they get no change (:func:`unwritable_share` measures how much of ``R``
    lies there).

    ``weight_floor``: dimensions whose ``|w|`` is below ``weight_floor`` times the layer's
    median ``|w|`` count as unwritable too. Writing ``R`` there takes a raw change ``R / w``
    hundreds of times larger than elsewhere, which moves ``s(r)`` and with it every other
    dimension: far outside the linearization (see ``MemitConfig.norm_weight_floor``).
    """
    norm = post_mlp_norm(model, layer)
    if norm is None:
        return residuals
    got: list[Tensor] = []
    texts, spans = [], []
    for r in records:
        t, sp = _fact_texts(r, [""])
        texts += t
        spans += sp
    from factlens.tokens import tokenize_prompts

    batch = tokenize_prompts(model, texts, subject_spans=spans)

    def grab(out):
        got.append(out[torch.arange(out.shape[0], device=out.device), batch.subject_last.to(out.device)].detach())
        return out

    with torch.no_grad(), mlp_output_hook(model, layer, grab):
        model(batch.tokens, stop_at_layer=layer + 1)
    raw = got[0].to("cpu", torch.float64)
    w = norm.w.detach().to("cpu", torch.float64) if hasattr(norm, "w") else torch.ones(raw.shape[1], dtype=torch.float64)
    # A zero norm weight (Gemma 3 270M's ln2_post has some, as loaded by TransformerLens) blocks its
    # dimension: no change of the MLP output reaches the residual stream there. The least-squares
    # answer writes the reachable dimensions and leaves those at 0 (their share: unwritable_share).
    w = torch.where(_unwritable(w, weight_floor), torch.full_like(w, math.inf), w)
    s = (raw.pow(2).mean(-1, keepdim=True) + float(norm.eps)).sqrt()
    q = raw / w  # the direction (in the residual) the linearized norm cannot write
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    R = residuals.to(torch.float64)
    return s * (R - (R * q).sum(-1, keepdim=True) * q) / w


def _unwritable(w: Tensor, weight_floor: float) -> Tensor:
    """Dimensions of a post-MLP norm weight that MEMIT does not write: zero, or below
    ``weight_floor`` times the median ``|w|``."""
    a = w.abs()
    return (a < 1e-12) | (a < weight_floor * float(a.median()))


def unwritable_share(model, layer: int, residuals: Tensor, *, weight_floor: float = 0.0) -> float:
    """Share of ``|R|^2`` in the residual dimensions that block ``layer``'s post-MLP norm zeroes
    (its weight is 0 there, or below ``weight_floor`` times its median, see
    :func:`residual_to_mlp_output`), which MEMIT does not write; 0 without such a norm."""
    norm = post_mlp_norm(model, layer)
    if norm is None or not hasattr(norm, "w"):
        return 0.0
    dead = _unwritable(norm.w.detach().to("cpu", torch.float64), weight_floor)
    sq = residuals.to("cpu", torch.float64).pow(2)
    total = float(sq.sum())
    return float(sq[:, dead].sum()) / total if total > 0 else 0.0


def memit_apply(model, layers: Sequence[int], records, targets: Tensor, *, stats: Mapping[int, KeyStatistics],
                config: MemitConfig, prefixes: Sequence[str],
                update: Callable[[int, Tensor, Tensor], Tensor] | None = None) -> list[dict[str, Any]]:
    """Spread the residual ``targets - z`` over ``layers`` (in order), editing their ``W_out`` in place.

    MEMIT's layer loop: at layer ``j`` of ``L`` the remaining residual at the last layer is
    divided by ``L - j`` and written through :func:`memit_update` with that layer's keys, which
    are read on the model as edited so far. Split from :func:`memit` so that the update can be
    re-applied with another ``mom2_update_weight`` or covariance without re-optimizing the
    targets (``benchmarks/memit_sweep.py``). ``update(layer, keys, values)``: another rule for
    the change of ``W_out`` from the keys and the values to write (AlphaEdit's projected one,
    :mod:`factlens.editing.alphaedit`); default: :func:`memit_update`. Returns per-layer
    diagnostics; the caller restores the weights if it needs to.
    """
    params = dict(model.named_parameters())
    z_layer = layers[-1]
    per_layer = []
    for j, l in enumerate(progress_bar(layers, desc=f"{getattr(config, 'label', 'MEMIT')} layers", leave=False)):
        keys = subject_keys(model, l, records, prefixes)
        resid = (targets - _current_z(model, z_layer, records)) / (len(layers) - j)
        values = residual_to_mlp_output(model, l, records, resid, weight_floor=config.norm_weight_floor)
        upd = (memit_update(stats[l], keys, values, mom2_update_weight=config.mom2_update_weight, ridge=config.cov_ridge)
               if update is None else update(l, keys, values))
        W = params[param_name(l, "mlp", "W_out")]
        lost = add_update(W, upd, what=f"{getattr(config, 'label', 'MEMIT')}'s update of layer {l}'s W_out")
        per_layer.append({"layer": l, "residual_norm": float(resid.norm(dim=1).mean()) * (len(layers) - j),
                          "update_norm": float(upd.norm()), "update_lost": lost, "covariance": covariance_meta(stats[l]),
                          "unwritable_share": unwritable_share(model, l, resid, weight_floor=config.norm_weight_floor)})
    return per_layer


@with_gradients
def memit(model, mask, task, *, objective: str | None = None, config: MemitConfig | EditConfig | None = None,
          inplace: bool = False, offload: str | os.PathLike | None = None) -> EditResult:
    """Write all of the task's new facts at once into the mask's MLP layers with MEMIT.

    Args:
        model: A ``HookedTransformer`` (never moved; no hooks are left on it).
        mask: One or more whole MLP layers (heads or neurons raise ``ValueError``).
        task: A :class:`~factlens.tasks.Task` whose ``forget`` facts all have ``target_new``.
        objective: ``None`` or ``"inject"``.
        config: A :class:`MemitConfig`; an :class:`EditConfig` (what ``factlens.edit``
            passes) means ``MemitConfig.from_edit_config(config)``.
        inplace: Edit ``model`` itself (restored if an error interrupts the edit); default: a deep copy.
        offload: A folder on disk for the saved original ``W_out`` tensors (a mapped file,
            :func:`factlens.memory.kept_copies`); ``None``: in memory.

    Returns:
        An :class:`EditResult` with the mask layers' ``W_out`` as deltas; ``history`` holds the
        target optimizations; ``meta["layers"]`` the residual and update norms per layer.

    Example:
        >>> from factlens.components import Mask
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> memit(p.model, Mask.from_labels(["L1.mlp", "L2H1"]), p.task)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        factlens.editing.memory_editing.MaskNotSupported: MEMIT edits whole MLP layers (their W_out); the mask also has ['L2H1'] ...
    """
    return spread_edit(model, mask, task, objective=objective, config=config, cls=MemitConfig, inplace=inplace,
                       offload=offload)


#: ``make_update(model, layers, stats, config, prefixes) -> (update, per-layer meta)``: the rule of
#: :func:`memit_apply`'s ``update`` for a method that changes MEMIT's (AlphaEdit), built once the
#: key statistics are there, and what it adds to each layer's diagnostics.
UpdateFactory = Callable[..., tuple[Callable[[int, Tensor, Tensor], Tensor], dict[int, dict[str, Any]]]]


def spread_edit(model, mask, task, *, objective: str | None, config, cls: type, inplace: bool,
                offload: str | os.PathLike | None, make_update: UpdateFactory | None = None) -> EditResult:
    """MEMIT's procedure (targets at the last mask layer, then spread over the mask's layers), with
    ``cls`` as its settings and ``make_update`` (default: MEMIT's update) as the rule per layer;
    the mask layers' ``W_out`` are restored if anything fails."""
    t0 = time.perf_counter()
    check_inplace(inplace)
    check_folder(offload)
    cfg, edit_config = split_config(config, cls)
    layers = mask_mlp_layers(mask, model, method=cls.label)
    records = forget_records(task, objective, method=cls.label)
    work = model if inplace else copy.deepcopy(model)
    prefixes = context_prefixes(cfg.prefix_lengths, cfg.seed)
    params = dict(work.named_parameters())
    names = {l: param_name(l, "mlp", "W_out") for l in layers}
    originals = kept_copies({names[l]: params[names[l]] for l in layers}, offload)
    z_layer = layers[-1]
    try:
        # the targets first: they refuse a last layer that cannot carry the value (MaskNotSupported)
        # before the key statistics of every layer are computed (minutes each on a real model)
        targets, history = memit_targets(work, z_layer, records, config=cfg, prefixes=prefixes)
        stats = {l: layer_key_statistics(work, l, cfg) for l in layers}  # the model is still unedited
        update, extra = (None, {}) if make_update is None else make_update(work, layers, stats, cfg, prefixes)
        per_layer = memit_apply(work, layers, records, targets, stats=stats, config=cfg, prefixes=prefixes,
                                update=update)
        # inside the guard: a warning raised as an error (-W error) restores the weights like any failure
        warn_rounding({d["layer"]: d["update_lost"] for d in per_layer}, method=cls.label,
                      dtype=next(iter(originals.values())).dtype, where="layer")
        final = float((targets - _current_z(work, z_layer, records)).norm(dim=1).mean())
        meta = {"method": cls.method, "layers": [{**d, **extra.get(d["layer"], {})} for d in per_layer],
                "z_layer": z_layer, f"{cls.method}_config": cfg.to_dict(),
                "final_residual_norm": final, "n_facts": len(records), "n_prefixes": len(prefixes),
                "inplace": inplace, "device": str(next(iter(originals.values())).device)}
        # so is an interrupt while the record is built (its fingerprint hashes the weights: seconds on a large model)
        return build_result(work, mask, edit_config, originals, task=task, t0=t0, history=history, meta=meta)
    except BaseException:
        with torch.no_grad():
            for n, o in originals.items():
                params[n].copy_(o)
        raise
