"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) and the automated per-fact
fact-lookup localization of Guo et al. (2024).

**Noising direction.** Every run starts from the *clean* prompt; a *sender* component's
output is replaced by its output on the *corrupted* prompt (another subject, see
:func:`~factlens.localization.pairs.make_pairs`), at every position, while every other head and
MLP is frozen to its clean output, so the corruption can only travel along the chosen path.
A score is the **drop** of the metric, ``metric(clean) - metric(path-patched)``: positive
when the path carries evidence for the clean answer (``logit_diff`` falls when it is
noised), negative when it works against it.

* ``receivers=None`` - the **direct effect** on the logits (path sender -> unembedding):
  the sender's change of output at the last position, ``corrupted - clean``, is added to
  the final residual stream at the last position and ``ln_final`` + unembedding are
  re-applied. For heads the change is the change of the layer's attention output when only
  that head's ``hook_z`` is corrupted (this includes ``b_O`` and any post-attention norm,
  e.g. Gemma's ``ln1_post``; the recomputation is checked against ``hook_attn_out``).
* ``receivers=[...]`` - the effect **through** the receivers only: (1) run the clean prompt
  with the sender corrupted, all other non-receiver heads (``hook_z``) and MLPs
  (``hook_mlp_out``) frozen to their clean values, and record the receivers' recomputed
  outputs; (2) run the clean prompt with only the receivers' outputs patched to those
  values and measure the metric. A sender that is itself a receiver, or that cannot reach
  any receiver (a later layer), scores exactly 0.

:func:`fact_lookup_mlps` is the paper's automated per-fact version: each MLP's effect
through the extraction components (:func:`extraction_components`: the heads/MLPs of the
later layers with the largest direct effects); per fact, MLPs above ``mean + n_std * std``
(across all MLP layers) are the fact's lookup MLPs, and facts with the same set are grouped.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from factlens.components import Component, ModelShape, attn_hook, attn_out_hook, mlp_hook, resolve_components
from factlens.localization.pairs import PatchingMetric, PatchingPairs, make_pairs
from factlens.localization.patching import metric_from_residual
from factlens.progress_bars import progress_bar
from factlens.scores import ComponentScores
from factlens.tokens import iter_batches

__all__ = ["path_patching", "fact_lookup_mlps", "extraction_components", "lookup_candidates", "check_n_std"]


# --- inputs ------------------------------------------------------------------------------


def _nonempty(items: Sequence[Component | str] | str, shape: ModelShape, what: str, hint: str) -> list[Component]:
    """Resolve a required component list (an empty one raises with ``hint``)."""
    if not isinstance(items, (str, Component)) and hasattr(items, "__len__") and len(items) == 0:
        raise ValueError(f"{what} is empty; {hint}")
    return resolve_components(shape, items, what=what)


def _reaches(sender: Component, receiver: Component) -> bool:
    """Whether ``sender``'s output is part of ``receiver``'s input."""
    if sender.layer < receiver.layer:
        return True
    return sender.layer == receiver.layer and sender.kind == "head" and receiver.kind == "mlp"


# --- caching -------------------------------------------------------------------------------


def _run_cached(model, tokens, last_pos, shape: ModelShape) -> dict[str, Any]:
    """Run ``tokens``; keep every ``hook_z``/``hook_mlp_out`` (all positions), the attention
    outputs and the final residual at ``last_pos``."""
    b = torch.arange(tokens.shape[0], device=tokens.device)
    z: dict[int, Tensor] = {}
    mlp: dict[int, Tensor] = {}
    attn_last: dict[int, Tensor] = {}

    def keep(store, layer, last_only=False):
        def hook(act, hook):
            store[layer] = act[b, last_pos].detach().clone() if last_only else act.detach().clone()
        return hook

    hooks = []
    for l in range(shape.n_layers):
        hooks.append((attn_hook(l, "z"), keep(z, l)))
        hooks.append((attn_out_hook(l), keep(attn_last, l, last_only=True)))
        if not shape.attn_only:
            hooks.append((mlp_hook(l, "out"), keep(mlp, l)))
    with model.hooks(fwd_hooks=hooks):
        resid = model(tokens, stop_at_layer=shape.n_layers)
    return {"z": z, "mlp": mlp, "attn_last": attn_last, "resid": resid[b, last_pos.to(resid.device)]}


def _attn_out(model, layer: int, z: Float[Tensor, "batch head_index d_head"]) -> Float[Tensor, "batch d_model"]:
    """The attention block output (what ``hook_attn_out`` sees) for per-head ``z`` at one position."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    block = model.blocks[layer]
    W_O = block.attn.W_O
    out = torch.einsum("bhd,hdm->bm", z.to(W_O.dtype), W_O) + block.attn.b_O
    if model.cfg.use_normalization_before_and_after:
        out = block.ln1_post(out[:, None])[:, 0]
    if model.cfg.original_architecture in POST_NORM_ARCHITECTURES:
        out = block.ln1(out[:, None])[:, 0]
    return out


def _metric(model, resid: Float[Tensor, "batch d_model"], pairs: PatchingPairs, metric: PatchingMetric) -> Tensor:
    """Metric from final residuals; ``logit_diff`` only unembeds the two answer columns."""
    return metric_from_residual(model, resid, pairs.clean_answer, pairs.corrupted_answer, metric)


def _check_recomputed(ref: Tensor, cached: Tensor, layer: int) -> None:
    # a few rounding steps of the model's dtype: bf16's step (2^-8 relative) is above 1e-3, so a
    # correct recomputation of a bf16 model failed here (an architecture mismatch is off by O(1))
    rtol = max(1e-3, 4 * torch.finfo(cached.dtype).eps) if cached.is_floating_point() else 1e-3
    tol = rtol * float(cached.abs().max()) + 1e-5
    if not torch.allclose(ref.float(), cached.float(), rtol=rtol, atol=tol):
        err = float((ref.float() - cached.float()).abs().max())
        raise NotImplementedError(
            f"path_patching cannot recompute the attention output of layer {layer} from hook_z for this "
            f"architecture (max error {err:.3g}); direct effects of heads are unsupported here - "
            "use receivers= or activation patching instead"
        )


# --- the two path-patching modes ---------------------------------------------------------------


def _direct_batch(model, pairs: PatchingPairs, senders, shape, metric, clean, corr) -> tuple[Tensor, Tensor]:
    last = pairs.clean.last_pos
    B = len(pairs)
    b = torch.arange(B, device=last.device)
    clean_metric = _metric(model, clean["resid"], pairs, metric)
    drops = torch.zeros(len(senders), B)
    refs: dict[int, Tensor] = {}
    for i, s in enumerate(senders):
        l = s.layer
        if s.kind == "mlp":
            delta = corr["mlp"][l][b, last] - clean["mlp"][l][b, last]
        else:
            zc = clean["z"][l][b, last]
            if l not in refs:
                refs[l] = _attn_out(model, l, zc)
                _check_recomputed(refs[l], clean["attn_last"][l], l)
            zm = zc.clone()
            zm[:, s.index] = corr["z"][l][b, last][:, s.index]
            delta = _attn_out(model, l, zm) - refs[l]
        patched = _metric(model, clean["resid"] + delta.to(clean["resid"].dtype), pairs, metric)
        drops[i] = (clean_metric - patched).float().cpu()
    return drops, clean_metric.float().cpu()


def _through_receivers(model, pairs: PatchingPairs, sender: Component, receivers: list[Component], shape, metric,
                       clean, corr) -> Tensor:
    """Metric after patching ``sender`` (clean -> corrupted) through ``receivers`` only."""
    reach = [r for r in receivers if _reaches(sender, r)]
    top = max(r.layer for r in reach)
    recv_heads = {(r.layer, r.index) for r in receivers if r.kind == "head"}
    recv_mlps = {r.layer for r in receivers if r.kind == "mlp"}
    new_z: dict[tuple[int, int], Tensor] = {}
    new_mlp: dict[int, Tensor] = {}

    def z_freeze(layer):
        def hook(z, hook):
            out = clean["z"][layer].clone()
            for (l, h) in recv_heads:
                if l == layer:
                    new_z[(l, h)] = z[:, :, h].clone()
                    out[:, :, h] = z[:, :, h]
            if sender.kind == "head" and sender.layer == layer:
                out[:, :, sender.index] = corr["z"][layer][:, :, sender.index]
            return out
        return hook

    def mlp_freeze(layer):
        def hook(act, hook):
            if sender.kind == "mlp" and sender.layer == layer:
                return corr["mlp"][layer].clone()
            if layer in recv_mlps:
                new_mlp[layer] = act.clone()
                return act
            return clean["mlp"][layer].clone()
        return hook

    hooks = []
    for l in range(sender.layer, top + 1):
        hooks.append((attn_hook(l, "z"), z_freeze(l)))
        if not shape.attn_only:
            hooks.append((mlp_hook(l, "out"), mlp_freeze(l)))
    with model.hooks(fwd_hooks=hooks):
        model(pairs.clean.tokens, stop_at_layer=top + 1)

    def z_patch(layer):
        def hook(z, hook):
            z = z.clone()
            for (l, h), v in new_z.items():
                if l == layer:
                    z[:, :, h] = v
            return z
        return hook

    def mlp_patch(layer):
        def hook(act, hook):
            return new_mlp[layer]
        return hook

    hooks = [(attn_hook(l, "z"), z_patch(l)) for l in sorted({l for l, _ in new_z})]
    hooks += [(mlp_hook(l, "out"), mlp_patch(l)) for l in sorted(new_mlp)]
    last = pairs.clean.last_pos
    with model.hooks(fwd_hooks=hooks):
        resid = model(pairs.clean.tokens, stop_at_layer=shape.n_layers)
    resid = resid[torch.arange(len(pairs), device=resid.device), last.to(resid.device)]
    return _metric(model, resid, pairs, metric)


def path_patching(
    model,
    dataset,
    *,
    receivers: Sequence[Component | str] | None = None,
    senders: Sequence[Component | str] | None = None,
    metric: PatchingMetric = "logit_diff",
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    partners: Sequence | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> ComponentScores:
    """Path-patching effect of every head and MLP (see the module docstring for the paths).

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks remain).
        dataset: Facts (a :class:`~factlens.data.FactDataset` or a list of records).
        receivers: ``None`` for direct effects on the logits; else the components the path
            must go through (e.g. the extraction heads), as Components or labels.
        senders: Components to score (default: every head and MLP; any spelling of
            :func:`~factlens.components.resolve_components`).
        metric: ``"logit_diff"`` (clean minus corrupted answer logit) or ``"prob"``.
        corrupted_prompts: Optional corrupted prompts (see
            :func:`~factlens.localization.pairs.make_pairs`).
        corrupted_answers: The answers of ``corrupted_prompts``, one per fact (default: each
            record's ``target_new``); only with ``corrupted_prompts``.
        partners: More facts whose subjects may corrupt facts that have no aligned partner
            of the same relation in ``dataset`` (see :func:`~factlens.localization.pairs.make_pairs`).
        batch_size: Facts per forward pass (results do not depend on it).
        seed: Seed for choosing corrupting subjects.

    Multi-token answers: the metric uses the **first token** of each answer (clean and
    corrupted); :func:`~factlens.localization.pairs.make_pairs` raises when two candidate answers
    share it.

    Returns:
        Scores (method ``"path_patching"``) = mean metric drop per sender; ``per_example``
        (``[component, example]``, dataset order) the per-fact drops with their ``example_ids``,
        ``clean_metric`` (per fact) and ``dropped_ids``: facts left out because no subject swap
        of their relation keeps the tokens aligned (they never stop the run). ``extra``:
        ``receivers`` (labels, or ``"logits"``) and ``direction = "noising"``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model(n_subjects=12)
        >>> direct = path_patching(p.model, p.dataset)
        >>> direct.restrict("head").top(1) == [p.extraction_head]
        True
        >>> via = path_patching(p.model, p.dataset, receivers=[p.extraction_head])
        >>> via.restrict("mlp").top(1) == [p.lookup_mlp]
        True
    """
    shape = ModelShape.of(model)
    recv = None if receivers is None else _nonempty(receivers, shape, "receivers",
                                                    "pass None for direct effects on the logits")
    send = resolve_components(shape, senders, what="senders")
    pairs = make_pairs(model, dataset, corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                       partners=partners, seed=seed)
    n = len(pairs)
    todo = list(range(len(send)))
    if recv is not None:
        todo = [i for i, s in enumerate(send) if s not in recv and any(_reaches(s, r) for r in recv)]
    drops = np.zeros((len(send), n))
    clean_metric = np.zeros(n)
    batches = list(iter_batches(n, batch_size))
    total = len(batches) * (1 if recv is None else max(1, len(todo)))
    with torch.no_grad(), progress_bar(total=total, desc="path patching") as bar:
        for sl in batches:
            sub = pairs.subset(range(sl.start, sl.stop))
            clean = _run_cached(model, sub.clean.tokens, sub.clean.last_pos, shape)
            corr = _run_cached(model, sub.corrupted.tokens, sub.corrupted.last_pos, shape)
            if recv is None:
                d, cm = _direct_batch(model, sub, send, shape, metric, clean, corr)
                drops[:, sl] = d.double().numpy()
                clean_metric[sl] = cm.double().numpy()
                bar.update(1)
                continue
            cm = _metric(model, clean["resid"], sub, metric).float().cpu()
            clean_metric[sl] = cm.double().numpy()
            for i in todo:
                m = _through_receivers(model, sub, send[i], recv, shape, metric, clean, corr).float().cpu()
                drops[i, sl] = (cm - m).double().numpy()
                bar.update(1)
            if not todo:
                bar.update(1)
    extra = {"receivers": "logits" if recv is None else [r.label for r in recv], "direction": "noising"}
    return ComponentScores(tuple(send), drops.mean(axis=1), "path_patching", metric, shape, extra, per_example=drops,
                           example_ids=[r.id for r in pairs.records], clean_metric=clean_metric,
                           dropped_ids=pairs.dropped)


# --- the automated per-fact version ------------------------------------------------------------


def extraction_components(scores: ComponentScores, k: int = 4, *, min_layer: int | None = None) -> list[Component]:
    """The extraction mechanism: the ``k`` heads/MLPs of the later layers with the largest
    positive direct effect.

    Args:
        scores: Direct effects (``path_patching(..., receivers=None)``).
        k: How many components to take (fewer if fewer have a positive effect).
        min_layer: First layer counted as "later" (default ``n_layers // 2``).

    Raises:
        ValueError: When no component of the later layers has a positive direct effect.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lo = scores.shape.n_layers // 2 if min_layer is None else min_layer
    cand = [(v, i) for i, (c, v) in enumerate(zip(scores.components, scores.values))
            if c.kind in ("head", "mlp") and c.layer >= lo and v > 0]
    if not cand:
        raise ValueError(f"no head or MLP at layer >= {lo} has a positive direct effect; lower min_layer= "
                         "or check that the model knows these facts")
    cand.sort(key=lambda t: (-t[0], t[1]))
    return [scores.components[i] for _, i in cand[:k]]


def check_n_std(n_std: float) -> None:
    """Refuse an ``n_std`` that is no outlier threshold (negative, NaN or not a number).

    ``mean + n_std * std`` with ``n_std < 0`` lies below the mean: MLPs with a below-average
    effect would count as a fact's lookup MLPs.
    """
    if isinstance(n_std, bool) or not isinstance(n_std, numbers.Real) or not n_std >= 0:
        raise ValueError(f"n_std must be a number >= 0 (a fact's lookup MLPs have an effect above mean + n_std * std "
                         f"of its MLP effects; a negative n_std selects below-average MLPs), got {n_std!r}")


def lookup_candidates(mlps: Sequence[Component], extraction: Sequence[Component]) -> list[Component]:
    """The MLPs that can have an effect through ``extraction``: not one of them and before one of them.

    Any other MLP scores exactly 0 in :func:`fact_lookup_mlps` and is never a lookup MLP.
    """
    return [m for m in mlps if m not in extraction and any(_reaches(m, r) for r in extraction)]


def fact_lookup_mlps(
    model,
    dataset,
    *,
    extraction: Sequence[Component | str],
    n_std: float = 2.0,
    metric: PatchingMetric = "logit_diff",
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    partners: Sequence | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-fact lookup MLPs: MLPs whose effect through ``extraction`` is an outlier.

    For each fact, every MLP's path-patching effect through the extraction components is
    computed; the fact's lookup MLPs are those with a positive effect above
    ``mean + n_std * std`` of that fact's effects across all MLP layers (population std;
    MLPs that cannot reach the extraction components count as 0). Note that with ``L`` MLP
    layers a single outlier has at most ``(L - 1) / sqrt(L)`` standard deviations, so tiny
    models need a smaller ``n_std``, but not a negative one (that is no outlier rule: it
    selects MLPs below the mean, and is refused). ``metric``, ``corrupted_prompts``,
    ``corrupted_answers``, ``partners``, ``batch_size`` and ``seed`` are as in :func:`path_patching`.

    Returns:
        ``{"per_fact": {record_id: [mlp labels]}, "groups": [{"mlps": [...], "facts": [ids]}],
        "effects": {record_id: {mlp label: effect}}, "extraction": [labels], "scores":
        ComponentScores, "n_dropped", "dropped_ids"}`` with groups sorted by size (largest
        first); facts without an aligned corrupting subject (``dropped_ids``, see
        :func:`~factlens.localization.pairs.make_pairs`; ``partners`` as there) have no entry.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model(n_subjects=12)
        >>> out = fact_lookup_mlps(p.model, p.dataset, extraction=[p.extraction_head], n_std=1.0)
        >>> out["groups"][0]["mlps"], len(out["groups"][0]["facts"])
        (['L1.mlp'], 12)
    """
    shape = ModelShape.of(model)
    if shape.attn_only:
        raise ValueError("the model is attention-only: it has no MLPs")
    check_n_std(n_std)
    ext = _nonempty(extraction, shape, "extraction", "use extraction_components(direct_effects, k) to find it")
    mlps = shape.all_mlps()
    scores = path_patching(model, dataset, receivers=ext, senders=mlps, metric=metric,
                           corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                           partners=partners, batch_size=batch_size, seed=seed)
    ids = scores.example_ids
    eff = scores.per_example  # [n_mlps, n_facts], senders = mlps
    mean, std = eff.mean(axis=0), eff.std(axis=0)
    per_fact: dict[str, list[str]] = {}
    effects: dict[str, dict[str, float]] = {}
    for j, rid in enumerate(ids):
        thr = mean[j] + n_std * std[j]
        sel = [c.label for i, c in enumerate(mlps) if eff[i, j] > 0 and eff[i, j] > thr and std[j] > 0]
        per_fact[rid] = sel
        effects[rid] = {c.label: float(eff[i, j]) for i, c in enumerate(mlps)}
    grouped: dict[tuple[str, ...], list[str]] = {}
    for rid, sel in per_fact.items():
        grouped.setdefault(tuple(sel), []).append(rid)
    groups = [{"mlps": list(k), "facts": v} for k, v in sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return {"per_fact": per_fact, "groups": groups, "effects": effects, "extraction": [c.label for c in ext],
            "n_std": n_std, "scores": scores, "n_dropped": scores.n_dropped, "dropped_ids": list(scores.dropped_ids)}
