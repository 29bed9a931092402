"""Causal tracing (ROME, Meng et al. 2022): restore clean states into a subject-noised run.

1. **Clean run**: activations of every head (``hook_z``), MLP (``hook_mlp_out``) and the
   residual stream (``hook_resid_pre``), and ``p_clean``, the probability of the first token
   of the true answer at the prompt's final token.
2. **Noised run**: Gaussian noise ``N(0, (noise_scale * sigma)^2)`` is added to the token
   embeddings of the subject (``hook_embed`` at ``PromptBatch.subject_first ..
   subject_last``), ``n_samples`` seeded samples per prompt, all in one batch (each prompt
   repeated ``n_samples`` times). ``p_noised`` is the answer probability there.
3. **Restored runs**: one clean state is written back into the noised run and the
   answer probability ``p_restored`` is read.

``sigma``: ROME uses the standard deviation of the embeddings of its known-facts dataset's
subject tokens; we use the standard deviation of **all entries of the token embedding matrix**
``W_E`` (the same for every dataset, ``extra["sigma"]``). The noise is added where the embedding is fed to
the residual stream (``hook_embed``, before positional embeddings): TransformerLens folds
Gemma's ``sqrt(d_model)`` embedding scale into ``W_E`` at conversion
(``state_dict["embed.W_E"] = embed_tokens.weight * sqrt(d_model)``) and ``hook_embed`` is
``W_E[tokens]``, so ``sigma`` is measured on the same scale as the noised tensor.

Component scores (``metric="prob"``): a component's score is ``p_restored`` when its clean
output (a head's ``hook_z`` slice, an MLP's ``hook_mlp_out``) is restored at **all**
positions (positions before the subject are identical in both runs), averaged over noise
samples and then over examples; ``extra["indirect_effect"]`` is the same minus
``p_noised``. Position-resolved traces (ROME's plots, each a :class:`~factlens.scores.ResidMap`
of ``[n_layers, n_positions]``), for ``include_resid=True``:

* ``scores.resid``: restoring ``hook_resid_pre`` of one
  layer at one position;
* ``scores.mlp_window``: restoring the MLP outputs of the layers
  ``range(max(0, l - window // 2), min(n_layers, l - (-window // 2)))`` (ROME's window;
  ``window=1`` is the single layer ``l``) at one position.

Prompts of different lengths are right-aligned on their last token, as in
:func:`~factlens.localization.activation.activation_patching` (``resid.offsets``,
``-1`` = last token; absolute positions when all lengths agree); ``resid.by_role`` averages
the traces over ROME's token roles (:data:`~factlens.localization.patching.ROLES`) instead
(:func:`~factlens.localization.patching.position_summary`).

Efficiency: each restored run starts at the restored layer from the cached noised residual
(``model(resid, start_at_layer=L)``); many restorations are stacked into one batch; states
before the batch's first subject token are the same in every run, so their keys and values
are computed once (a frozen TransformerLens key-value cache) and restored runs process only
the positions from the subject on (for the one-shot sports prompt about a third of the
tokens); only final positions are unembedded. Noise is drawn per example from a generator seeded with
``(seed, example index)``, so results do not depend on ``batch_size``.
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factlens.components import Component, ModelShape, attn_hook, embed_hook, mlp_hook, resid_hook, resolve_components
from factlens.data.records import as_records
from factlens.localization.patching import patches_per_pass, prefix_cache, repeated_cache, resid_map
from factlens.progress_bars import progress_bar
from factlens.scores import ComponentScores
from factlens.tokens import PromptBatch, answer_token_ids, encode_records, iter_batches, unembed

__all__ = ["causal_tracing", "embedding_std"]

Op = tuple[str, "int | None", "int | None"]  # (hook name, head index or None, position or None = all)


def embedding_std(model) -> float:
    """Standard deviation of all entries of ``model.embed.W_E`` (computed in float64 chunks)."""
    W = model.embed.W_E.detach()
    n, s, ss = 0, 0.0, 0.0
    for start in range(0, W.shape[0], 8192):
        chunk = W[start : start + 8192].double()
        n += chunk.numel()
        s += float(chunk.sum())
        ss += float((chunk * chunk).sum())
    mean = s / n
    return float(np.sqrt(max(ss / n - mean * mean, 0.0) * n / max(n - 1, 1)))


def _seed_for(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _TraceBatch:
    """Clean cache, noised cache and restored runs for one batch of prompts.

    Every state before ``p0`` (the batch's first subject position) is the same in the clean,
    noised and restored runs. Its keys and values are computed once (a frozen TransformerLens
    key-value cache) and restored runs process only the positions from ``p0`` on; cached
    activations are kept from ``p0`` on and positions below are stored shifted by ``-p0``.
    """

    def __init__(self, model, batch: PromptBatch, answers: Int[Tensor, "batch"], indices: Iterable[int], *,
                 n_samples: int, noise_std: float, seed: int):
        self.model = model
        self.n = n_samples
        self.L = model.cfg.n_layers
        B = len(batch)
        dev = batch.tokens.device
        self.B, self.R = B, B * n_samples
        self.p0 = p0 = int(batch.subject_first.min())
        self.T = batch.tokens.shape[1]
        self.row_ex = torch.arange(B, device=dev).repeat_interleave(n_samples)
        self.last_rows = batch.last_pos[self.row_ex]
        self.ans_rows = answers.to(dev)[self.row_ex]
        self.cost_rows = 0.0  # prompt-forwards spent (a full forward of one prompt = 1)

        shape = ModelShape.of(model)
        names = [resid_hook(l, "pre") for l in range(self.L)] + [attn_hook(l, "z") for l in range(self.L)]
        names += [mlp_hook(l, "out") for l in range(self.L)] if not shape.attn_only else []
        self.clean: dict[str, Tensor] = {}

        def save_clean(act, hook):
            self.clean[hook.name] = act[:, p0:].clone()

        with model.hooks(fwd_hooks=[(n, save_clean) for n in names]):
            resid = model(batch.tokens, stop_at_layer=self.L)
        self.p_clean = self._prob(resid, batch.last_pos, answers.to(dev))
        self.cost_rows += B

        # noise, one seeded generator per example (independent of batching)
        d = model.cfg.d_model
        noise = torch.zeros(self.R, self.T, d, dtype=torch.float32)
        for i, gi in enumerate(indices):
            sf, sl = int(batch.subject_first[i]), int(batch.subject_last[i])
            gen = torch.Generator().manual_seed(_seed_for(seed, gi))
            noise[i * n_samples:(i + 1) * n_samples, sf:sl + 1] = torch.randn(n_samples, sl - sf + 1, d, generator=gen)
        noise = noise * noise_std

        def add_noise(act, hook):
            return act + noise.to(device=act.device, dtype=act.dtype)

        self.noised: dict[str, Tensor] = {}

        def save_noised(act, hook):
            self.noised[hook.name] = act[:, p0:].clone()

        with model.hooks(fwd_hooks=[(embed_hook(), add_noise)] + [(resid_hook(l, "pre"), save_noised) for l in range(self.L)]):
            resid = model(batch.tokens[self.row_ex], stop_at_layer=self.L)
        self.p_noised = self._prob(resid, self.last_rows, self.ans_rows)
        self.cost_rows += self.R

        self.prefix = None
        if p0 > 0:
            self.prefix = prefix_cache(model, batch.tokens, p0)
            self.cost_rows += B * p0 / self.T

    def _prob(self, resid: Float[Tensor, "rows pos d_model"], last: Tensor, answers: Tensor) -> Float[Tensor, "rows"]:
        rows = torch.arange(resid.shape[0], device=resid.device)
        logits = unembed(self.model, resid[rows, last.to(resid.device)][:, None])[:, 0]
        return torch.softmax(logits.float(), dim=-1)[rows, answers.to(resid.device)]

    def restore(self, start: int, variants: Sequence[Sequence[Op]]) -> Float[Tensor, "variant batch"]:
        """Answer probability (mean over noise samples) for each variant of restored clean states.

        Op positions are absolute and must be ``>= p0`` (``None``: all positions).
        """
        R, p0 = self.R, self.p0
        S = self.T - p0
        per_call = patches_per_pass(R, S)
        out = []
        for v0 in range(0, len(variants), per_call):
            chunk = variants[v0:v0 + per_call]
            nv = len(chunk)
            ops: dict[str, list[tuple[int, int | None, int | None]]] = defaultdict(list)
            for v, variant in enumerate(chunk):
                for name, head, pos in variant:
                    if pos is not None and pos < p0:
                        raise ValueError(f"position {pos} is before the shared prefix end {p0}")
                    ops[name].append((v, head, None if pos is None else pos - p0))

            def hook(act, hook):
                a = act.reshape(nv, R, *act.shape[1:])
                src = self.clean[hook.name]
                for v, head, pos in ops[hook.name]:
                    ps = slice(None) if pos is None else slice(pos, pos + 1)
                    idx = (v, slice(None), ps) + (() if head is None else (head,))
                    s = src[:, ps] if head is None else src[:, ps, head]
                    a[idx] = s[self.row_ex].to(a.dtype)
                return a.reshape(act.shape)

            x = self.noised[resid_hook(start, "pre")].repeat(nv, 1, 1)
            kv = repeated_cache(self.prefix, self.row_ex.repeat(nv), start) if self.prefix is not None else None
            with self.model.hooks(fwd_hooks=[(n, hook) for n in ops]):
                resid = self.model(x, start_at_layer=start, stop_at_layer=self.L, past_kv_cache=kv)
            p = self._prob(resid, self.last_rows.repeat(nv) - p0, self.ans_rows.repeat(nv))
            out.append(p.reshape(nv, self.B, self.n).mean(-1))
            self.cost_rows += nv * R * (self.L - start) / self.L * S / self.T
        return torch.cat(out)


def _check_options(model, noise_scale: float, n_samples: int, window: int, batch_size: int) -> None:
    # bool is an int: n_samples=True ran 1 sample and then crashed in repeat_interleave; batch_size=True ran as 1
    if isinstance(noise_scale, bool) or not isinstance(noise_scale, numbers.Real) or not noise_scale > 0:
        raise ValueError(f"noise_scale must be a number > 0 (the noise std in units of the embeddings' std), "
                         f"got {noise_scale!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1 (number of MLP layers restored together), got {window!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if model.cfg.positional_embedding_type == "shortformer":
        raise ValueError("causal_tracing does not support shortformer positional embeddings")


def _encode(model, records: list) -> tuple[PromptBatch, Tensor]:
    """The records' encoded prompts (every one with its subject) and first answer tokens."""
    enc = encode_records(model, records)
    if bool((enc.subject_first < 0).any()):
        raise ValueError("causal tracing needs the subject position of every prompt")
    answers = torch.tensor([answer_token_ids(model, r.answer)[0] for r in records], device=enc.tokens.device)
    return enc, answers


def _restore_components(tb: _TraceBatch, layer: int, comps: list[Component]) -> np.ndarray:
    """Restored probability with each of ``comps`` (all of layer ``layer``) clean, ``[batch, comp]``."""
    variants = [[(attn_hook(layer, "z"), c.index, None)] if c.kind == "head" else [(mlp_hook(layer, "out"), None, None)]
                for c in comps]
    return tb.restore(layer, variants).T.double().cpu().numpy()


def _trace_positions(tb: _TraceBatch, batch: PromptBatch, noised_ex: Tensor, window: int | None,
                     bar) -> tuple[np.ndarray, np.ndarray | None]:
    """Restored probability per example x layer x position: the residual stream at one layer and
    position (``resid``), and a window of ``window`` MLPs around each layer (``mlp_window``;
    ``None`` with ``window=None``: an attention-only model has no MLPs).

    Positions before the batch's first subject token keep the noised probability (nothing
    differs there to restore).
    """
    L = tb.L
    P = batch.tokens.shape[1]
    lo = int(batch.subject_first.min())
    positions = list(range(lo, P))
    res = noised_ex[:, None, None].repeat(1, L, P).numpy()  # before the subject: nothing to restore
    win = res.copy()
    for layer in range(L):
        variants = [[(resid_hook(layer, "pre"), None, p)] for p in positions]
        res[:, layer, lo:] = tb.restore(layer, variants).T.double().cpu().numpy()
        bar.update(1)
    if window is None:
        return res, None
    for layer in range(L):
        layers = range(max(0, layer - window // 2), min(L, layer - (-window // 2)))
        variants = [[(mlp_hook(w, "out"), None, p) for w in layers] for p in positions]
        win[:, layer, lo:] = tb.restore(layers[0], variants).T.double().cpu().numpy()
        bar.update(1)
    return res, win


@dataclass
class _Traces:
    """What :func:`_trace` measured: restored probabilities ``[example, comp]``, the clean and
    noised probabilities, per-example layer x position maps and the prompt-forwards spent."""

    per_example: np.ndarray
    p_clean: np.ndarray
    p_noised: np.ndarray
    resid_maps: list[np.ndarray] = field(default_factory=list)
    window_maps: list[np.ndarray] = field(default_factory=list)
    cost: float = 0.0


def _trace(model, enc: PromptBatch, answers: Tensor, comps: list[Component], *, n_samples: int, noise_std: float,
           seed: int, window: int, batch_size: int, include_resid: bool) -> _Traces:
    """Run the noised and restored passes batch by batch (see :func:`causal_tracing`)."""
    n = len(enc)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for j, c in enumerate(comps):
        by_layer[c.layer].append(j)
    t = _Traces(np.zeros((n, len(comps))), np.zeros(n), np.zeros(n))
    batches = list(iter_batches(n, batch_size))
    mlps = not ModelShape.of(model).attn_only  # an attention-only model has a resid map but no MLP window
    steps_per_batch = len(by_layer) + ((1 + mlps) * model.cfg.n_layers if include_resid else 0)
    bar = progress_bar(total=len(batches) * steps_per_batch, desc="causal tracing")
    try:
        with torch.inference_mode():
            for sl in batches:
                idx = list(range(sl.start, sl.stop))
                batch = enc.subset(idx)
                tb = _TraceBatch(model, batch, answers[sl], idx, n_samples=n_samples, noise_std=noise_std, seed=seed)
                t.p_clean[sl] = tb.p_clean.double().cpu().numpy()
                noised_ex = tb.p_noised.reshape(tb.B, n_samples).mean(-1).double().cpu()
                t.p_noised[sl] = noised_ex.numpy()
                for layer, js in sorted(by_layer.items()):
                    t.per_example[sl, js] = _restore_components(tb, layer, [comps[j] for j in js])
                    bar.update(1)
                if include_resid:
                    res, win = _trace_positions(tb, batch, noised_ex, window if mlps else None, bar)
                    for i in range(tb.B):
                        length = int(batch.lengths[i])
                        t.resid_maps.append(res[i, :, :length])
                        if win is not None:
                            t.window_maps.append(win[i, :, :length])
                t.cost += tb.cost_rows
    finally:
        bar.close()
    return t


def causal_tracing(
    model,
    dataset,
    *,
    noise_scale: float = 3.0,
    n_samples: int = 10,
    window: int = 1,
    components: str | Sequence[Component | str] = "all",
    seed: int = 0,
    batch_size: int = 8,
    include_resid: bool = True,
) -> ComponentScores:
    """Score heads and MLPs by ROME's causal tracing (restored answer probability).

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks, no parameter changes).
        dataset: A :class:`~factlens.data.FactDataset` (or list of records); every prompt
            needs its subject (``FactRecord.subject_span``). Answers are scored by their
            first token.
        noise_scale: Noise std in units of ``sigma`` (:func:`embedding_std`); ROME uses 3.
        n_samples: Noise samples per prompt (run in one batch).
        window: Layers per MLP window of ``scores.mlp_window`` (ROME used 10 for GPT-2 XL).
        components: ``"all"``, ``"heads"``, ``"mlps"`` or a list of components / labels (see
            :func:`~factlens.components.resolve_components`).
        seed: Seed of the noise (with the example index; independent of ``batch_size``).
        batch_size: Prompts per batch (each is repeated ``n_samples`` times).
        include_resid: Also compute ``scores.resid`` and ``scores.mlp_window``
            (layer x position traces; the most expensive part). An attention-only model gets
            ``resid`` only (it has no MLPs to restore; ``mlp_window`` is ``None``).

    Returns:
        Scores (``method="causal_tracing"``, ``metric="prob"``) with ``per_example`` (restored
        probabilities), ``clean_metric`` / ``corrupted_metric`` (the clean and subject-noised
        answer probability per example; means ``clean_mean`` / ``corrupted_mean``) and, with
        ``include_resid``, the ``resid`` and ``mlp_window`` maps. ``extra``: ``indirect_effect``
        (score minus the noised probability, ``{label: value}``), ``sigma``, ``noise_std``,
        ``noise_scale``, ``n_samples``, ``window``, ``seed`` and ``forward_equivalents``
        (prompt-forwards per prompt: a restored run from layer ``L`` over ``S`` of ``T``
        positions counts ``(n_layers - L) / n_layers * S / T``).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> pf = planted_fact_model(n_subjects=12)
        >>> s = causal_tracing(pf.model, pf.dataset, noise_scale=5.0, n_samples=4, include_resid=False)
        >>> s.corrupted_mean < s.clean_mean, set(s.top(2)) == {pf.lookup_mlp, pf.extraction_head}
        (True, True)
    """
    _check_options(model, noise_scale, n_samples, window, batch_size)
    records = as_records(dataset)
    if not records:
        raise ValueError("the dataset is empty")
    shape = ModelShape.of(model)
    comps = resolve_components(shape, components)
    enc, answers = _encode(model, records)
    sigma = embedding_std(model)
    noise_std = noise_scale * sigma

    t = _trace(model, enc, answers, comps, n_samples=n_samples, noise_std=noise_std, seed=seed, window=window,
               batch_size=batch_size, include_resid=include_resid)
    values = t.per_example.mean(axis=0)
    extra: dict = {
        # keyed by label, so that restrict("mlp") (causal_tracing_mlps) cannot misalign it
        "indirect_effect": {c.label: float(v) for c, v in zip(comps, values - t.p_noised.mean())},
        "sigma": sigma,
        "noise_std": noise_std,
        "noise_scale": float(noise_scale),
        "n_samples": n_samples,
        "window": window,
        "seed": seed,
        "forward_equivalents": t.cost / len(records),
    }
    maps = {}
    if include_resid:
        maps = dict(resid=resid_map(model, t.resid_maps, enc))
        if t.window_maps:
            maps["mlp_window"] = resid_map(model, t.window_maps, enc)
    return ComponentScores(tuple(comps), values, "causal_tracing", "prob", shape, extra, per_example=t.per_example.T,
                           example_ids=[r.id for r in records], clean_metric=t.p_clean, corrupted_metric=t.p_noised,
                           **maps)
