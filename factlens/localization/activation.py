"""Exact activation patching of heads, MLPs and the residual stream.

:func:`activation_patching` gives the same numbers as TransformerLens's
``get_act_patch_attn_head_out_all_pos`` (heads, ``hook_z[:, :, h]`` at all positions),
``generic_activation_patch`` on ``"mlp_out"`` with a whole-activation patch setter and
``index_axis_names=("layer",)`` (MLPs, ``hook_mlp_out`` at **all positions at once**; not
``get_act_patch_mlp_out``, which patches one layer and position at a time) and
``get_act_patch_resid_pre`` (residual stream per layer x position), but computes them much
faster:

* **Batched patches.** All patches of one layer run in a single forward pass: the base
  activations are repeated once per patch along the batch axis and each copy gets a
  different patch (copy-major rows ``copy * n_pairs + pair``).
* **Start at the patched layer.** A patch at layer ``L`` cannot change layers ``< L``, so the
  patched run starts from the cached ``resid_pre`` of layer ``L``
  (``model(resid, start_at_layer=L, stop_at_layer=n_layers)``).
* **Shared prefix.** Clean and corrupted prompts agree up to the first token where they
  differ (the subject); every activation before that position is the same in the clean,
  corrupted and all patched runs. Its keys and values are computed once and passed to the
  patched runs as a frozen TransformerLens key-value cache, so patched runs only process the
  positions from the subject on (rotary offsets and the causal/sliding-window mask are
  handled by TransformerLens's cache path). Residual patches at earlier positions are exact
  no-ops and take the base run's metric.
* **Final position only.** Only the last real token of each prompt is read out. For
  ``"logit_diff"`` only the two answer columns of the unembedding are computed; ``"prob"``
  unembeds the gathered final positions in chunks.

Prompts are right-padded without an attention mask (see :mod:`factlens.tokens`); the
patched runs pass no mask either, which is what TransformerLens does for right-padded
tokens.

Conventions:

* ``direction="denoising"`` runs the corrupted prompt and patches in the clean activation;
  ``"noising"`` runs the clean prompt and patches in the corrupted activation.
* The metric (``"logit_diff"``: ``logit[clean answer] - logit[corrupted answer]`` at the last
  token, or ``"prob"`` of the clean answer) is computed per example, then averaged. The
  raw averaged metric of each patched run (what TransformerLens returns for a metric that
  averages over the batch) is ``scores.patched``; per-example raw values are
  ``scores.per_example`` (``[component, example]``), the baselines
  ``scores.clean_metric`` / ``scores.corrupted_metric``.
* The score of a component is its effect, signed so that larger means more important in
  both directions: denoising ``mean(patched) - mean(corrupted)``, noising
  ``mean(clean) - mean(patched)``. With ``normalize=True`` it is divided by
  ``mean(clean) - mean(corrupted)``: denoising gives TransformerLens's usual
  ``(patched - corrupted) / (clean - corrupted)`` (1 = full recovery), noising gives
  ``1 -`` that value (1 = the patch destroys the whole effect). Normalizing the means (not
  each example) keeps examples with a near-zero clean/corrupted gap from dominating.
* Residual-stream patching (``scores.resid``, a :class:`~factlens.scores.ResidMap` of
  ``[n_layers, n_pos]``) aligns prompts of different lengths **on their last token**: column
  ``j`` is the position ``resid.offsets[j]`` relative to the end (``-1`` = last token) and
  averages the examples long enough to have it. For prompts of equal length the columns are
  the absolute positions. ``resid.tokens`` labels the columns with the longest clean prompt's
  tokens, ``resid.patched`` holds the raw averaged metric.

Example:
    >>> from factlens.testing import planted_fact_model
    >>> p = planted_fact_model(n_subjects=12)
    >>> s = activation_patching(p.model, p.dataset)
    >>> s.method, set(s.top(2)) == {p.lookup_mlp, p.extraction_head}
    ('activation_patching', True)
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from factlens.components import Component, ModelShape, attn_hook, mlp_hook, resid_hook, resolve_components
from factlens.localization.pairs import PatchingMetric, PatchingPairs, make_pairs
from factlens.localization.patching import (metric_from_residual, normalization_gap, patches_per_pass, prefix_cache,
                                           repeated_cache, position_tokens)
from factlens.progress_bars import progress_bar
from factlens.scores import ComponentScores, ResidMap
from factlens.tokens import iter_batches

__all__ = ["activation_patching", "Direction"]

Direction = Literal["denoising", "noising"]


def _patched_layers(comps: list[Component], include_resid: bool, n_layers: int) -> list[int]:
    return sorted({c.layer for c in comps} | (set(range(n_layers)) if include_resid else set()))


class _Sources:
    """The cached activations one batch of pairs is patched from and into.

    Attributes:
        base_act / src_act: Hook name -> the base (patched) / source run's activations from
            ``p0`` on (``p0``: the first position where a pair's prompts differ; every state
            before it is the same in all runs and sits in the key-value cache ``kv``).
        m_base / m_src: The unpatched metrics of the two runs, ``[B]``.
    """

    def __init__(self, model, pairs: PatchingPairs, comps: list[Component], direction: str, metric: str,
                 layers: list[int], include_resid: bool):
        n_layers = model.cfg.n_layers
        base, src = (pairs.corrupted, pairs.clean) if direction == "denoising" else (pairs.clean, pairs.corrupted)
        tb, ts = base.tokens, src.tokens
        self.B, self.T = len(pairs), tb.shape[1]
        self.last = base.last_pos.to(tb.device)
        # first position where the two prompts differ; activations before it are shared
        differs = (tb != ts)
        first = torch.where(differs.any(1), differs.float().argmax(1), self.last)
        self.p0 = p0 = int(min(int(first.min()), int(self.last.min())))
        base_names = [resid_hook(L) for L in layers]
        src_names = ({attn_hook(c.layer, "z") for c in comps if c.kind == "head"}
                     | {mlp_hook(c.layer, "out") for c in comps if c.kind == "mlp"}
                     | ({resid_hook(L) for L in layers} if include_resid else set()))
        rb, cache_b = model.run_with_cache(tb, names_filter=lambda n: n in base_names, stop_at_layer=n_layers)
        rs, cache_s = model.run_with_cache(ts, names_filter=lambda n: n in src_names, stop_at_layer=n_layers)
        ar = torch.arange(self.B, device=rb.device)
        ca, cw = pairs.clean_answer, pairs.corrupted_answer
        self.m_base = metric_from_residual(model, rb[ar, self.last.to(rb.device)], ca, cw, metric)
        self.m_src = metric_from_residual(model, rs[ar, self.last.to(rs.device)], ca, cw, metric)
        self.base_act = {n: cache_b[n][:, p0:] for n in base_names}
        self.src_act = {n: cache_s[n][:, p0:] for n in src_names}
        del cache_b, cache_s, rb, rs
        self.kv = prefix_cache(model, tb, p0) if p0 > 0 else None


def _layer_patches(comps: list[Component], L: int, include_resid: bool, p0: int, T: int) -> list[tuple[str, int | None]]:
    """The patches of layer ``L``: ``("head", h)``, ``("mlp", None)`` and ``("resid", position)``."""
    copies: list[tuple[str, int | None]] = [("head", c.index) for c in comps if c.layer == L and c.kind == "head"]
    copies += [("mlp", None) for c in comps if c.layer == L and c.kind == "mlp"]
    if include_resid:
        copies += [("resid", p) for p in range(p0, T)]
    return copies


def _patch_hooks(L: int, chunk: list[tuple[str, int | None]], src: _Sources) -> list:
    """Hooks that write the source head / MLP outputs into their copies' rows (copy-major)."""
    B = src.B
    heads = [(i, h) for i, (kind, h) in enumerate(chunk) if kind == "head"]
    mlps = [i for i, (kind, _) in enumerate(chunk) if kind == "mlp"]
    hooks = []
    if heads:
        z_src = src.src_act[attn_hook(L, "z")]

        def z_hook(z, hook, heads=heads, z_src=z_src):
            for i, h in heads:
                z[i * B:(i + 1) * B, :, h] = z_src[:, :, h]
            return z

        hooks.append((attn_hook(L, "z"), z_hook))
    if mlps:
        m_src_act = src.src_act[mlp_hook(L, "out")]

        def mlp_out_hook(act, hook, mlps=mlps, m_src_act=m_src_act):
            for i in mlps:
                act[i * B:(i + 1) * B] = m_src_act
            return act

        hooks.append((mlp_hook(L, "out"), mlp_out_hook))
    return hooks


def _patched_run(model, pairs: PatchingPairs, L: int, chunk: list[tuple[str, int | None]], src: _Sources,
                 metric: str) -> Tensor:
    """The metric of each patch in ``chunk`` (all in one forward pass from layer ``L``), ``[k, B]``."""
    B, p0, k = src.B, src.p0, len(chunk)
    x = src.base_act[resid_hook(L)].repeat(k, 1, 1)
    for i, (kind, p) in enumerate(chunk):
        if kind == "resid":
            x[i * B:(i + 1) * B, p - p0] = src.src_act[resid_hook(L)][:, p - p0]
    with model.hooks(fwd_hooks=_patch_hooks(L, chunk, src)):
        r = model(x, start_at_layer=L, stop_at_layer=model.cfg.n_layers,
                  past_kv_cache=repeated_cache(src.kv, torch.arange(B).repeat(k), L) if src.kv is not None else None)
    rows = torch.arange(k * B, device=r.device)
    last_s = src.last - p0  # last token, relative to the first processed position
    ca, cw = pairs.clean_answer, pairs.corrupted_answer
    vals = metric_from_residual(model, r[rows, last_s.repeat(k).to(r.device)], ca.repeat(k), cw.repeat(k), metric)
    return vals.view(k, B)


def _patch_batch(model, pairs: PatchingPairs, comps: list[Component], direction: str, metric: str,
                 include_resid: bool, bar) -> dict:
    """Patched metrics for one batch of pairs: ``comp`` -> [B], ``resid`` [n_layers, T] and baselines."""
    n_layers = model.cfg.n_layers
    layers = _patched_layers(comps, include_resid, n_layers)
    src = _Sources(model, pairs, comps, direction, metric, layers, include_resid)
    B, T, p0 = src.B, src.T, src.p0
    out: dict = {"base": src.m_base, "src": src.m_src, "comp": {}}
    resid = src.m_base[None, None, :].repeat(n_layers, T, 1) if include_resid else None  # [layer, pos, B]
    max_copies = patches_per_pass(B, T - p0)
    for L in layers:
        copies = _layer_patches(comps, L, include_resid, p0, T)
        for s in range(0, len(copies), max_copies):
            chunk = copies[s: s + max_copies]
            vals = _patched_run(model, pairs, L, chunk, src, metric)
            for i, (kind, idx) in enumerate(chunk):
                if kind == "resid":
                    resid[L, idx] = vals[i]
                else:
                    out["comp"][Component(kind, L, idx)] = vals[i]
        bar.update(1)
    out["resid"] = resid
    out["lengths"] = (pairs.corrupted if direction == "denoising" else pairs.clean).lengths
    return out


def _check_options(model, direction: str, metric: str, batch_size: int) -> None:
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising', got {direction!r}")
    if metric not in ("logit_diff", "prob"):
        raise ValueError(f"unknown metric {metric!r}; use 'logit_diff' or 'prob'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:  # True ran as 1
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if model.cfg.positional_embedding_type == "shortformer":
        raise ValueError("activation_patching does not support shortformer positional embeddings")


def _effect(patched, clean, corr, direction: str, normalize: bool):
    """A patch's effect, larger = more important: denoising ``patched - corr``, noising
    ``clean - patched``; over ``clean - corr`` when normalizing."""
    eff = patched - corr if direction == "denoising" else clean - patched
    return eff / (clean - corr) if normalize else eff


class _ResidSum:
    """Residual-patch metrics summed over batches, prompts aligned on their last token (column
    ``T - 1``), with the clean / corrupted metrics of the prompts that reach each column."""

    def __init__(self, n_layers: int, T: int):
        self.T = T
        self.sum = np.zeros((n_layers, T))
        self.cnt = np.zeros(T)
        self.clean = np.zeros(T)
        self.corr = np.zeros(T)

    def add(self, res: dict, direction: str) -> None:
        """Add one batch's ``_patch_batch`` result."""
        clean_m, corr_m = (res["src"], res["base"]) if direction == "denoising" else (res["base"], res["src"])
        r = res["resid"].cpu().double().numpy()  # [layer, pos, B]
        T = self.T
        for b, length in enumerate(res["lengths"].tolist()):
            cols = slice(T - length, T)  # right-aligned: last token -> last column
            self.sum[:, cols] += r[:, :length, b]
            self.cnt[cols] += 1
            self.clean[cols] += float(clean_m[b])
            self.corr[cols] += float(corr_m[b])

    def to_map(self, model, pairs: PatchingPairs, direction: str, normalize: bool) -> ResidMap:
        """The mean patched metric and effect per layer x position."""
        cnt = np.maximum(self.cnt, 1)
        rp = self.sum / cnt
        with np.errstate(divide="ignore", invalid="ignore"):
            rs = _effect(rp, self.clean / cnt, self.corr / cnt, direction, normalize)
        return ResidMap(rs, offsets=range(-self.T, 0), counts=self.cnt.astype(int),
                        tokens=position_tokens(model, pairs.clean), patched=rp)


def _patch_all(model, pairs: PatchingPairs, comps: list[Component], direction: str, metric: str,
               include_resid: bool, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, _ResidSum]:
    """Every patch on every batch of pairs: the base and source runs' metrics ``[example]``, the
    patched metrics ``[comp, example]`` and the summed residual-stream patches."""
    n = len(pairs)
    n_layers = model.cfg.n_layers
    n_steps_per = len(_patched_layers(comps, include_resid, n_layers))
    per_comp: dict[Component, list[Tensor]] = {c: [] for c in comps}
    base_all, src_all = [], []
    resid_sum = _ResidSum(n_layers, int(pairs.clean.lengths.max()))
    with torch.inference_mode(), progress_bar(total=n_steps_per * math.ceil(n / batch_size),
                                              desc="activation patching", unit="layer") as bar:
        for sl in iter_batches(n, batch_size):
            res = _patch_batch(model, pairs.subset(range(sl.start, sl.stop)), comps, direction, metric,
                               include_resid, bar)
            base_all.append(res["base"].cpu())
            src_all.append(res["src"].cpu())
            for c in comps:
                per_comp[c].append(res["comp"][c].cpu())
            if include_resid:
                resid_sum.add(res, direction)
    per_example = np.stack([torch.cat(per_comp[c]).double().numpy() for c in comps])  # [comp, example]
    return torch.cat(base_all).double().numpy(), torch.cat(src_all).double().numpy(), per_example, resid_sum


def activation_patching(
    model,
    dataset,
    *,
    components: str | Sequence[Component | str] | None = "all",
    direction: Direction = "denoising",
    metric: PatchingMetric = "logit_diff",
    normalize: bool = True,
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    partners: Sequence | None = None,
    batch_size: int = 32,
    seed: int = 0,
    include_resid: bool = True,
) -> ComponentScores:
    """Score heads and MLPs by exact activation patching (see the module docstring).

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks remain, parameters untouched).
        dataset: Clean facts (a :class:`~factlens.data.FactDataset` or a list of records).
        components: ``"all"`` heads and MLPs, ``"heads"``, ``"mlps"`` or a sequence of head/MLP
            components or labels (see :func:`~factlens.components.resolve_components`).
        direction: ``"denoising"`` (corrupted run, clean patch) or ``"noising"`` (clean run,
            corrupted patch).
        metric: ``"logit_diff"`` or ``"prob"`` (of the clean answer) at the last token.
        normalize: Divide effects by ``mean(clean) - mean(corrupted)``.
        corrupted_prompts: Own corrupted prompts (same token lengths); default: another
            subject of the dataset with a different answer (:func:`make_pairs`).
        corrupted_answers: Answers of the own corrupted prompts (default ``target_new``).
        partners: More facts whose subjects may corrupt facts that have no aligned partner
            of the same relation in ``dataset`` (see :func:`make_pairs`).
        batch_size: Clean/corrupted pairs per batch (patched passes stack several patches
            per pair; results do not depend on it).
        seed: Seed for choosing corrupting subjects.
        include_resid: Also patch ``resid_pre`` per layer x position (``scores.resid``).

    Multi-token answers: the metric uses the **first token** of each answer (clean and
    corrupted); :func:`make_pairs` raises when two candidate answers share it.

    Returns:
        :class:`~factlens.scores.ComponentScores` with ``method="activation_patching"``, its
        baselines, per-example and patched values filled in; ``scores.dropped_ids`` names the
        facts left out because no subject swap of their relation keeps the tokens aligned.
        ``extra``: ``direction``, ``normalize``, ``prompts``, ``corrupted_prompts``.

    Raises:
        ValueError: Unknown ``direction``/``metric``/components, bad ``batch_size``, no
            valid pairs, or (with ``normalize=True``) equal clean and corrupted metrics.
    """
    _check_options(model, direction, metric, batch_size)
    comps = resolve_components(ModelShape.of(model), components)
    pairs = make_pairs(model, dataset, corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                       partners=partners, seed=seed)
    base_m, src_m, per_example, resid_sum = _patch_all(model, pairs, comps, direction, metric, include_resid,
                                                       batch_size)
    clean_m, corr_m = (src_m, base_m) if direction == "denoising" else (base_m, src_m)
    if normalize:
        normalization_gap(clean_m, corr_m)  # raises when normalized scores are undefined
    patched = per_example.mean(1)
    values = _effect(patched, clean_m.mean(), corr_m.mean(), direction, normalize)
    extra = {
        "direction": direction,
        "normalize": normalize,
        "prompts": [r.prompt for r in pairs.records],
        "corrupted_prompts": list(pairs.corrupted.prompts),
    }
    resid = resid_sum.to_map(model, pairs, direction, normalize) if include_resid else None
    return ComponentScores(tuple(comps), values, "activation_patching", metric, ModelShape.of(model), extra,
                           per_example=per_example, example_ids=[r.id for r in pairs.records], clean_metric=clean_m,
                           corrupted_metric=corr_m, patched=patched, resid=resid, dropped_ids=pairs.dropped)
