"""MEMIT: mass-editing memory in a transformer (Meng et al. 2023).

MEMIT writes many facts at once and spreads the change over several MLP layers (the
mask's MLPs, e.g. the fact-lookup MLPs or the layers causal tracing picks):

1. **Targets** ``z_i``: for every fact, a vector ``delta_i`` added to the output of the
   *last* mask layer ``L`` at the subject's last token is optimized exactly as ROME's
   value (:func:`factlens.edit.rome.optimize_delta`: NLL of ``target_new`` over the bare
   and prefixed prompts, ``kl_factor`` KL on ``"{subject} is a"``, weight decay
   ``|delta| / |z|^2`` and the clamp ``|delta| <= clamp_norm_factor * |z|``, where ``z`` is
   the residual stream after layer ``L`` of the bare prompt); ``z_i = z + delta_i``. The
   reference adds ``delta`` to the residual after block ``L``; factlens adds it to block
   ``L``'s MLP output, which is the same thing (``resid_post = resid_mid + mlp_out``).
2. **Spreading**: for the mask's layers ``l_1 < ... < l_m`` in order, with the model
   edited so far: keys ``K`` (``[n, d_mlp]``, each averaged over the prefixes as in ROME)
   at layer ``l_j``, the residual ``R = (Z - Z_now) / (m - j + 1)`` (the targets minus the
   bare prompts' current residual after layer ``L``, split evenly over the layers left),
   and the update

   ``delta_W = (lambda C + K^T K)^-1 K^T R``  (TransformerLens layout, ``[d_mlp, d_model]``)

   with ``C`` the layer's key second moment on general text
   (:mod:`factlens.edit.covariance`, estimated on the *unedited* model, as the reference's
   precomputed statistics) and ``lambda = mom2_update_weight``. factlens evaluates it as
   ``C^-1 K^T (lambda I + K C^-1 K^T)^-1 R`` (the same matrix, push-through identity),
   which solves only an ``n x n`` system and stays exact at ``lambda = 0``: then one fact
   in one layer gives ROME's closed form (:func:`factlens.edit.rome.rome_closed_form`)
   exactly.

Defaults are the MEMIT paper's GPT-J settings (``v_num_grad_steps=25``, ``v_lr=0.5``,
``v_weight_decay=0.5``, ``clamp_norm_factor=0.75``, ``kl_factor=0.0625``,
``mom2_update_weight=15000``, five 10-word prefixes), with the covariance defaults of
:class:`~factlens.edit.rome.RomeConfig`. ``lambda`` trades edit strength against
preservation; its scale is relative to ``k^T C^-1 k``, which is about ``d_mlp`` for keys
of ordinary text (GPT-J: 16384), so models with smaller MLPs get weaker edits at the same
``lambda``.

Keys are averaged over the bare prompt and the prefixed prompts with equal weights (ROME's
average; MEMIT's code weights the bare prompt 1/2), so that MEMIT on one layer and ROME
use the same ``k*``. Only the mask layers' ``W_out`` change.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from factlens.components import param_name, resid_hook
from factlens.edit.config import EditConfig
from factlens.edit.covariance import KeyStatistics
from factlens.edit.result import EditResult
from factlens.edit.rome import (_check_value_fields, _ConfigMixin, _fact_texts, _stats, _subject_acts, _value_batch,
                                build_result, context_prefixes, covariance_meta, forget_records, mask_mlp_layers,
                                optimize_delta, split_config, subject_keys)

__all__ = ["MemitConfig", "memit", "memit_update", "memit_targets"]


@dataclass(frozen=True)
class MemitConfig(_ConfigMixin):
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
        text_source: General text for the key covariance (``None``: built-in).
        n_cov_tokens: Tokens for the key covariance of each layer.
        cov_seq_len: Tokens per covariance chunk.
        cov_ridge: Relative ridge ``cov_ridge * mean(diag C)`` added to ``C``.
        cache_covariance: Cache the covariance on disk.
        seed: Seed of the prefix choice.
    """

    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float | None = 0.75
    kl_factor: float = 0.0625
    stop_loss: float = 0.05
    kl_prompts: tuple[str, ...] = ("{} is a",)
    prefix_lengths: tuple[tuple[int, int], ...] = ((10, 5),)
    mom2_update_weight: float = 15000.0
    text_source: str | None = None
    n_cov_tokens: int = 10_000
    cov_seq_len: int = 128
    cov_ridge: float = 1e-3
    cache_covariance: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_value_fields(self)
        if self.mom2_update_weight < 0:
            raise ValueError(f"MemitConfig.mom2_update_weight must be >= 0, got {self.mom2_update_weight}")


def memit_update(stats: KeyStatistics, keys: Float[Tensor, "n d_mlp"], residuals: Float[Tensor, "n d_model"], *,
                 mom2_update_weight: float, ridge: float = 0.0) -> Float[Tensor, "d_mlp d_model"]:
    """MEMIT's change of one layer's ``W_out``: ``(lambda C + K^T K)^-1 K^T R`` (float64, CPU).

    Computed as ``C^-1 K^T (lambda I + K C^-1 K^T)^-1 R``. With ``lambda = 0`` the edited
    layer maps every key ``K[i]`` to its old output plus ``R[i]`` exactly.

    Raises:
        ValueError: ``lambda = 0`` and linearly dependent keys (e.g. one subject twice).

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
    ck = stats.solve(K.T, ridge)  # [d_mlp, n]
    gram = K @ ck
    a = gram + mom2_update_weight * torch.eye(K.shape[0], dtype=torch.float64)
    sol, info = torch.linalg.solve_ex(a, R)
    if int(info) != 0 or not torch.isfinite(sol).all():
        raise ValueError("the edited facts' keys are linearly dependent (the same subject twice?); MEMIT needs "
                         "mom2_update_weight > 0 for them")
    return ck @ sol


def memit_targets(model, layer: int, records, *, config: MemitConfig, prefixes, show_progress: bool = False
                  ) -> tuple[Tensor, list[dict[str, Any]]]:
    """``z_i`` for every fact: the residual after block ``layer`` (bare prompt) plus its optimized ``delta_i``.

    Returns ``([n, d_model] float64 CPU, history)``.
    """
    zs, history, offset = [], [], 0
    for i, r in enumerate(tqdm(records, desc="MEMIT targets", disable=not show_progress, leave=False)):
        batch = _value_batch(model, r, prefixes, config.kl_prompts)
        delta, z, hist = optimize_delta(model, layer, batch, config, norm_hook=resid_hook(layer, "post"), fact=i)
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


def memit(model, mask, task, *, objective: str | None = None, config: MemitConfig | EditConfig | None = None,
          inplace: bool = False, show_progress: bool = True) -> EditResult:
    """Write all of the task's new facts at once into the mask's MLP layers with MEMIT.

    Args:
        model: A ``HookedTransformer`` (never moved; no hooks are left on it).
        mask: One or more whole MLP layers (heads or neurons raise ``ValueError``).
        task: A :class:`~factlens.tasks.Task` whose ``forget`` facts all have ``target_new``.
        objective: ``None`` or ``"inject"``.
        config: A :class:`MemitConfig`; an :class:`EditConfig` (what ``factlens.edit``
            passes) means ``MemitConfig.from_edit_config(config)``.
        inplace: Edit ``model`` itself (restored if an error interrupts the edit); default: a deep copy.
        show_progress: tqdm bars.

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
        ValueError: MEMIT edits whole MLP layers (their W_out); the mask also has ['L2H1'] ...
    """
    t0 = time.perf_counter()
    cfg, edit_config = split_config(config, MemitConfig)
    layers = mask_mlp_layers(mask, model, method="MEMIT")
    records = forget_records(task, objective, method="MEMIT")
    work = model if inplace else copy.deepcopy(model)
    prefixes = context_prefixes(cfg.prefix_lengths, cfg.seed)
    stats = {l: _stats(work, l, cfg, show_progress) for l in layers}  # on the unedited model
    params = dict(work.named_parameters())
    names = {l: param_name(l, "mlp", "W_out") for l in layers}
    originals = {names[l]: params[names[l]].detach().clone() for l in layers}
    z_layer = layers[-1]
    per_layer = []
    try:
        targets, history = memit_targets(work, z_layer, records, config=cfg, prefixes=prefixes,
                                         show_progress=show_progress)
        for j, l in enumerate(tqdm(layers, desc="MEMIT layers", disable=not show_progress, leave=False)):
            keys = subject_keys(work, l, records, prefixes)
            resid = (targets - _current_z(work, z_layer, records)) / (len(layers) - j)
            upd = memit_update(stats[l], keys, resid, mom2_update_weight=cfg.mom2_update_weight, ridge=cfg.cov_ridge)
            W = params[names[l]]
            with torch.no_grad():
                W.add_(upd.to(device=W.device, dtype=W.dtype))
            per_layer.append({"layer": l, "residual_norm": float(resid.norm(dim=1).mean()) * (len(layers) - j),
                              "update_norm": float(upd.norm()), "covariance": covariance_meta(stats[l])})
    except BaseException:
        with torch.no_grad():
            for n, o in originals.items():
                params[n].copy_(o)
        raise
    final = float((targets - _current_z(work, z_layer, records)).norm(dim=1).mean())
    meta = {"method": "memit", "layers": per_layer, "z_layer": z_layer, "memit_config": cfg.to_dict(),
            "final_residual_norm": final, "n_facts": len(records), "n_prefixes": len(prefixes),
            "inplace": inplace, "device": str(next(iter(originals.values())).device)}
    return build_result(work, mask, edit_config, originals, task=task, t0=t0, history=history, meta=meta)

