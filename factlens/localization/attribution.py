"""Attribution patching: a gradient (linear) estimate of activation patching.

Attribution patching (Nanda 2023, "Attribution patching: activation patching at
industrial scale") replaces the one-forward-pass-per-component loop of exact activation
patching by a first-order Taylor expansion. For a component ``c`` with activation ``a_c``
and a metric ``M`` read at the final position of each prompt,

    M(base with a_c := other) - M(base)  ~=  (a_c^other - a_c^base) . dM/da_c |_base

* **denoising** (default): base = corrupted run, other = clean run; the estimate is the
  denoising effect of restoring ``c``'s clean activation in the corrupted run, the quantity
  :func:`~factlens.localization.activation.activation_patching` measures exactly.
* **noising**: base = clean run, other = corrupted run; the score is the estimate of
  ``M(clean) - M(clean with c corrupted)`` (the sign of activation patching's noising score,
  so that larger means more important in both directions).

Heads are scored at ``hook_z`` (per head, dot product summed over positions and
``d_head``), MLPs at ``hook_mlp_out``; ``scores.resid`` gives the same estimate for the
residual stream (``hook_resid_pre`` of every layer) per position. Padding positions come
after each prompt's final token, so causally they have zero gradient and add nothing.

Cost per batch: one gradient-free forward of the "other" run, one forward of the base run
with gradients and one backward w.r.t. activations only (no parameter gradients: ~1
forward): **about 3 forward-equivalents**, versus ``1 + n_components`` forwards for exact
activation patching. With ``metric="logit_diff"`` only the two answer columns of the
unembedding are ever computed, which matters for large vocabularies (Gemma: 262k). Gradients are taken with
``torch.autograd.grad`` w.r.t. the activations only, so no parameter ``.grad`` is ever
written and no ``requires_grad`` flag is changed.

Integrated gradients (``ig_steps=m > 0``, as in EAP-IG, Hanna et al. 2024): the
gradients are averaged over ``m`` points on the straight line between the base and the
other **input embeddings** (the residual stream entering block 0, ``hook_resid_pre`` of
layer 0: token plus positional embedding), at the midpoints ``alpha = (k + 1/2) / m``;
each component's score is ``(a_c^other - a_c^base) . mean_k dM/da_c |_{x_k}`` with the
activations of the true base and other runs. For the input itself (``scores.resid`` at
layer 0) this is exactly integrated gradients, whose sum over positions converges to
``M(other) - M(base)`` (completeness). Cost: ``2 + 2 m`` forward-equivalents.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from factlens.components import ModelShape, attn_hook, mlp_hook, resid_hook, resolve_components
from factlens.data.records import as_records
from factlens.localization.patching import metric_from_residual, normalization_gap, resid_map
from factlens.localization.pairs import PatchingPairs, make_pairs
from factlens.progress_bars import progress_bar
from factlens.scores import ComponentScores
from factlens.tokens import iter_batches

__all__ = ["attribution_patching", "attribution_correlation"]

Direction = Literal["denoising", "noising"]


def _check_options(metric: str, direction: str, ig_steps: int, batch_size: int) -> None:
    if metric not in ("logit_diff", "prob"):
        raise ValueError(f"unknown metric {metric!r}; use 'logit_diff' or 'prob'")
    if direction not in ("denoising", "noising"):
        raise ValueError(f"unknown direction {direction!r}; use 'denoising' (patch clean into corrupted) "
                         "or 'noising' (patch corrupted into clean)")
    if not isinstance(ig_steps, int) or isinstance(ig_steps, bool) or ig_steps < 0:
        raise ValueError(f"ig_steps must be an integer >= 0 (0 = plain attribution patching), got {ig_steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:  # True ran as 1
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _hook_names(shape: ModelShape) -> tuple[list[str], list[str], list[str]]:
    z = [attn_hook(l, "z") for l in range(shape.n_layers)]
    mlp = [mlp_hook(l, "out") for l in range(shape.n_layers)] if not shape.attn_only else []
    resid = [resid_hook(l, "pre") for l in range(shape.n_layers)]
    return z, mlp, resid


def _final_metric(model, resid: Float[Tensor, "batch pos d_model"], pairs: PatchingPairs, metric: str) -> Float[Tensor, "batch"]:
    """Metric from the last block's residual at each prompt's final position.

    ``logit_diff`` computes only the two answer columns of the unembedding (no full-vocabulary
    logits in the forward pass, and no backward through the ``[d_model, d_vocab]`` matrix).
    """
    rows = torch.arange(resid.shape[0], device=resid.device)
    final = resid[rows, pairs.clean.last_pos.to(resid.device)]
    return metric_from_residual(model, final, pairs.clean_answer, pairs.corrupted_answer, metric)


def _cached_run(model, tokens: Tensor, names: list[str], pairs: PatchingPairs, metric: str):
    """Gradient-free forward: activations at ``names`` and the per-example metric."""
    store: dict[str, Tensor] = {}

    def save(act, hook):
        store[hook.name] = act.detach()

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, save) for n in names]):
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)
        m = _final_metric(model, resid, pairs, metric)
    return store, m


def _grad_run(model, x0: Float[Tensor, "batch pos d_model"], names: list[str], pairs: PatchingPairs, metric: str):
    """Forward from the input residual ``x0`` with gradients; returns activations, dM/d(activation), metric."""
    store: dict[str, Tensor] = {}

    def save(act, hook):
        store[hook.name] = act

    x = x0.detach().clone().requires_grad_(True)  # a fresh leaf: gradients flow whatever the params' flags
    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, save) for n in names]):
        resid = model(x, start_at_layer=0, stop_at_layer=model.cfg.n_layers)
        m = _final_metric(model, resid, pairs, metric)
        acts = [store[n] for n in names]
        grads = torch.autograd.grad(m.sum(), acts, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]
    return {n: a.detach() for n, a in zip(names, acts)}, dict(zip(names, grads)), m.detach()


def attribution_patching(
    model,
    dataset,
    *,
    metric: Literal["logit_diff", "prob"] = "logit_diff",
    direction: Direction = "denoising",
    ig_steps: int = 0,
    normalize: bool = False,
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    partners: Sequence | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> ComponentScores:
    """Score every head and MLP by attribution patching (optionally integrated gradients).

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks, parameters, ``.grad`` or
            ``requires_grad`` flags are modified).
        dataset: A :class:`~factlens.data.FactDataset` (or list of records).
        metric: ``"logit_diff"`` (clean answer minus corrupted answer logit) or ``"prob"``
            (probability of the clean answer), read at each prompt's final token.
        direction: ``"denoising"`` (estimate of restoring the clean activation in the
            corrupted run; gradient at the corrupted run) or ``"noising"`` (estimate of
            inserting the corrupted activation into the clean run; gradient at the clean run).
        ig_steps: ``0``: plain attribution patching. ``m > 0``: integrated gradients over
            ``m`` midpoints between the base and other input embeddings (see module docs).
        normalize: Divide by ``mean(clean metric) - mean(corrupted metric)`` (as
            ``activation_patching(normalize=True)``; 1 = the whole clean/corrupted gap).
        corrupted_prompts: Optional corrupted prompts (same token lengths); default: subject
            swaps from :func:`~factlens.localization.pairs.make_pairs`.
        corrupted_answers: The answers of ``corrupted_prompts``, one per fact (default: each
            record's ``target_new``); only with ``corrupted_prompts``.
        partners: More facts whose subjects may corrupt facts that have no aligned partner
            of the same relation in ``dataset`` (see :func:`~factlens.localization.pairs.make_pairs`).
        batch_size: Prompts per forward pass.
        seed: Seed of the choice of corrupting subjects.

    Returns:
        Scores (``method="attribution_patching"``) for every head and MLP (per layer, heads then
        the MLP): the mean over examples of the estimated patching effect in units of ``metric``,
        signed like :func:`~factlens.localization.activation.activation_patching` (larger = more
        important): denoising ``M(corrupted with c clean) - M(corrupted)``, noising
        ``M(clean) - M(clean with c corrupted)``. Filled in: ``per_example`` (the per-example
        estimates), ``clean_metric`` / ``corrupted_metric``, ``resid`` (a
        :class:`~factlens.scores.ResidMap`: the same estimate for ``hook_resid_pre`` of every layer
        and position, also averaged over ROME's token roles) and ``dropped_ids`` (facts left out:
        no subject swap of their relation keeps the tokens aligned). ``extra``: ``direction``,
        ``normalize``, ``ig_steps``, ``forward_equivalents`` (passes over the dataset, a
        backward counted as 2 forwards) and ``exact_forward_equivalents`` (exact activation
        patching without shared-prefix tricks: ``2 + n_components``).

    Multi-token answers: the metric uses the **first token** of each answer (clean and
    corrupted); :func:`~factlens.localization.pairs.make_pairs` raises when two candidate
    answers share it.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> pf = planted_fact_model(n_subjects=12)
        >>> s = attribution_patching(pf.model, pf.dataset)
        >>> set(s.top(2)) == {pf.lookup_mlp, pf.extraction_head}
        True
    """
    _check_options(metric, direction, ig_steps, batch_size)
    if model.cfg.positional_embedding_type == "shortformer":  # as activation patching and causal tracing
        raise ValueError("attribution_patching does not support shortformer positional embeddings: its gradient "
                         "pass starts from the input residual, and a shortformer adds the positions inside each "
                         "attention layer, which that pass never receives (the scores would be silently wrong)")
    # gradients are needed even when the caller runs under torch.inference_mode()
    with torch.inference_mode(False):
        return _attribution_patching(model, dataset, metric=metric, direction=direction, ig_steps=ig_steps,
                                     normalize=normalize, corrupted_prompts=corrupted_prompts,
                                     corrupted_answers=corrupted_answers, partners=partners, batch_size=batch_size,
                                     seed=seed)


def _attribution_patching(model, dataset, *, metric: str, direction: str, ig_steps: int, normalize: bool,
                          corrupted_prompts, corrupted_answers, partners, batch_size: int,
                          seed: int) -> ComponentScores:
    # facts without an aligned corrupting subject are left out: batch over the pairs, not the dataset
    pairs = make_pairs(model, dataset, corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                       partners=partners, seed=seed)
    n = len(pairs)
    shape = ModelShape.of(model)
    components = tuple(resolve_components(shape))  # canonical order: per layer, heads then the MLP
    z_names, mlp_names, resid_names = _hook_names(shape)
    names = z_names + mlp_names + resid_names
    L = shape.n_layers
    sign = 1.0 if direction == "denoising" else -1.0  # larger = more important, as activation_patching

    per_example = np.zeros((n, len(components)))
    resid_maps: list[np.ndarray] = []
    base_metric, other_metric = [], []
    batches = list(iter_batches(n, batch_size))
    steps = max(ig_steps, 1)
    bar = progress_bar(total=len(batches) * steps, desc="attribution patching")
    try:
        for sl in batches:
            sub = pairs.subset(range(sl.start, sl.stop))
            base_tok, other_tok = (sub.corrupted.tokens, sub.clean.tokens) if direction == "denoising" else \
                (sub.clean.tokens, sub.corrupted.tokens)
            other_acts, m_other = _cached_run(model, other_tok, names, sub, metric)
            if ig_steps == 0:
                with torch.no_grad():
                    x_base = model(base_tok, stop_at_layer=0)  # embedding only: the input residual
                base_acts, grads, m_base = _grad_run(model, x_base, names, sub, metric)
                bar.update(1)
            else:
                base_acts, m_base = _cached_run(model, base_tok, names, sub, metric)
                x_base, x_other = base_acts[resid_names[0]], other_acts[resid_names[0]]
                grads = {n: torch.zeros_like(a, dtype=torch.float64) for n, a in base_acts.items()}
                for k in range(ig_steps):
                    alpha = (k + 0.5) / ig_steps
                    _, g, _ = _grad_run(model, x_base + alpha * (x_other - x_base), names, sub, metric)
                    for name in names:
                        grads[name] += g[name].double() / ig_steps
                    bar.update(1)
            base_metric.append(m_base.double().cpu())
            other_metric.append(m_other.double().cpu())

            def attr(name: str) -> Tensor:  # signed (other - base) . grad, per position: [batch, pos, ...]
                return sign * (other_acts[name].double() - base_acts[name].double()) * grads[name].double()

            cols = []  # in the order of ``components``
            for l in range(L):
                cols.append(attr(z_names[l]).sum(dim=(1, 3)))  # [batch, head_index]
                if mlp_names:
                    cols.append(attr(mlp_names[l]).sum(dim=(1, 2))[:, None])
            per_example[sl] = torch.cat(cols, dim=1).cpu().numpy()
            res = torch.stack([attr(n).sum(-1) for n in resid_names], dim=1).cpu().numpy()  # [batch, layer, pos]
            for i in range(res.shape[0]):
                resid_maps.append(res[i, :, : int(sub.clean.lengths[i])])
    finally:
        bar.close()

    m_base = torch.cat(base_metric).numpy()
    m_other = torch.cat(other_metric).numpy()
    clean_m, corr_m = (m_other, m_base) if direction == "denoising" else (m_base, m_other)
    gap = normalization_gap(clean_m, corr_m) if normalize else None
    if gap is not None:
        per_example = per_example / gap
    passes = 3 if ig_steps == 0 else 2 + 2 * ig_steps
    extra = {
        "direction": direction,
        "normalize": normalize,
        "ig_steps": ig_steps,
        "ig_interpolation": "input_embeddings" if ig_steps else None,
        "forward_equivalents": passes,
        "exact_forward_equivalents": 2 + len(components),
    }
    return ComponentScores(components, per_example.mean(axis=0), "attribution_patching", metric, shape, extra,
                           per_example=per_example.T, example_ids=[r.id for r in pairs.records], clean_metric=clean_m,
                           corrupted_metric=corr_m, resid=resid_map(model, resid_maps, pairs.clean, scale=gap),
                           dropped_ids=pairs.dropped)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    return _pearson(rankdata(a), rankdata(b))


def attribution_correlation(
    model,
    dataset,
    *,
    exact: ComponentScores | None = None,
    metric: Literal["logit_diff", "prob"] = "logit_diff",
    direction: Direction = "denoising",
    ig_steps: int = 0,
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict:
    """Compare attribution patching with exact activation patching on the same pairs.

    Exact activation patching's denoising effect of a component is
    ``M(corrupted with c clean) - M(corrupted)``; attribution patching is its linear
    estimate. Both use the same metric, direction, seed and corrupted prompts.

    Args:
        model: The model.
        dataset: The facts.
        exact: Precomputed exact scores (default: computed with
            :func:`factlens.localization.activation.activation_patching`). Pearson and Spearman
            correlations are invariant to a positive rescaling of either score set, so a
            normalized exact metric gives the same correlations.
        metric, direction, ig_steps, corrupted_prompts, corrupted_answers, batch_size, seed:
            As in :func:`attribution_patching`.

    Returns:
        ``{"pearson", "spearman", "n_components", "attribution": {label: score},
        "exact": {label: score}, "top_overlap": {k: fraction}}`` (top-k overlaps for
        ``k`` in 1, 3, 10 by ``|score|``).
    """
    if iter(dataset) is dataset:  # a one-shot iterator: both methods read the facts
        dataset = as_records(dataset)
    attr = attribution_patching(model, dataset, metric=metric, direction=direction, ig_steps=ig_steps,
                                corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                                batch_size=batch_size, seed=seed)
    if exact is None:
        from factlens.localization.activation import activation_patching

        exact = activation_patching(model, dataset, metric=metric, direction=direction, normalize=False,
                                    corrupted_prompts=corrupted_prompts, corrupted_answers=corrupted_answers,
                                    batch_size=batch_size, seed=seed, include_resid=False)
    exact_d = exact.as_dict()
    labels = [c.label for c in attr.components if c.label in exact_d]
    if len(labels) < 2:
        raise ValueError("attribution and exact scores share fewer than 2 components; nothing to correlate")
    a = np.array([attr[l] for l in labels])
    e = np.array([exact_d[l] for l in labels])

    def top(vals: np.ndarray, k: int) -> set[str]:
        return {labels[i] for i in np.argsort(-np.abs(vals), kind="stable")[:k]}

    overlap = {k: len(top(a, k) & top(e, k)) / k for k in (1, 3, 10) if k <= len(labels)}
    return {
        "pearson": _pearson(a, e),
        "spearman": _spearman(a, e),
        "n_components": len(labels),
        "attribution": dict(zip(labels, a.tolist())),
        "exact": dict(zip(labels, e.tolist())),
        "top_overlap": overlap,
    }
