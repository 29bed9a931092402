"""ROME: rank-one model editing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

ROME treats an MLP's output matrix as a linear associative memory: the key ``k`` is the
MLP's hidden activation (TransformerLens ``blocks.L.mlp.hook_post``, the input of
``W_out``) at the subject's last token, the value is the MLP's output. One fact is written
into layer ``L`` in three steps:

1. **Key** ``k*``: the key at the subject's last token of the fact prompt, averaged over the
   bare prompt and prompts with short prefixes of general text (ROME generates them with
   the model; factlens cuts them, seeded, from the built-in general text, so that the edit
   is reproducible and needs no sampling: :func:`context_prefixes`; default ``(5, 10),
   (10, 10)``: ten 5-word and ten 10-word prefixes, ROME's lengths).
2. **Value** ``v*``: a vector ``delta`` is added to the MLP's output at the subject's last
   token of every prompt (the MLP module's output ``post @ W_out + b_out``, before the norm
   that Gemma 2/3 apply after the MLP: :func:`mlp_output_hook`) and optimized with Adam (lr 0.5, 20 steps) on
   ``-log p(target_new)`` (mean over prompts and target tokens, teacher-forced) plus
   ``kl_factor * KL(p_edited || p_original)`` of the next-token distribution at the
   subject's last token of the "essence" prompts ``"{subject} is a"`` plus
   ``v_weight_decay * |delta| / |o|^2`` (``o``: the MLP output of the bare prompt); after
   every step ``delta`` is projected into the ball of radius ``clamp_norm_factor * |o|``.
   The loop stops early when the loss falls below 0.05. Then ``v* = W_out^T k* + b_out +
   delta``: the averaged MLP output moved by ``delta``.
3. **Update**: with the second moment ``C = E[k k^T]`` of keys on general text
   (:mod:`factlens.editing.covariance`), ``W_out`` (``[d_mlp, d_model]`` in TransformerLens,
   ``out = post @ W_out + b_out``) becomes

   ``W_out + (C^-1 k*) (v* - W_out^T k* - b_out)^T / ((C^-1 k*)^T k*)``

   (:func:`rome_closed_form`): the minimum-change solution of ``W'^T k* + b_out = v*`` in
   the ``C``-weighted norm. The edited layer maps ``k*`` to ``v*`` exactly, and any key
   ``x`` with ``x^T C^-1 k* = 0`` to what it mapped to before.

Defaults are the ROME paper's GPT-2 XL hyper-parameters (``v_num_grad_steps=20``,
``v_lr=0.5``, ``v_weight_decay=0.5``, ``clamp_norm_factor=4``, ``kl_factor=0.0625``), except
the covariance: 10,000 tokens of the chosen general text instead of 100,000 Wikipedia
articles (samples of up to the context length each, thousands of times more tokens), with a small relative ridge (``cov_ridge=1e-3``) because a few thousand tokens
give a poorly conditioned estimate for ``d_mlp`` in the thousands. One documented
departure from the reference code: the update's denominator uses the averaged key ``k*``
(the paper's formula; the code uses the bare prompt's key). The residual written is
``delta``, as in the code (its ``target - cur_output`` equals ``delta``: both outputs are
the unedited layer's on the bare prompt).

Several facts are edited one after another (each on the model edited so far), all in the
same layer. The mask must contain exactly one MLP layer; only that layer's ``W_out`` changes.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from factlens.components import Mask, mlp_hook, param_name, resid_hook  # noqa: F401 (Mask: doctests)
from factlens.config import check_inplace
from factlens.editing.config import EditConfig
from factlens.editing.covariance import KeyStatistics, key_statistics  # noqa: F401 (key_statistics: doctests)
from factlens.editing.memory_editing import (MaskNotSupported, ValueEditConfig, add_update, build_result,
                                          covariance_meta, forget_records, layer_key_statistics, mask_mlp_layers,
                                          split_config, warn_rounding, with_gradients)
from factlens.editing.result import EditResult
from factlens.memory import check_folder, kept_copies
from factlens.progress_bars import progress_bar

__all__ = ["RomeConfig", "UPDATE_KEYS", "RankOneEdit", "rome", "rome_step", "rome_closed_form", "context_prefixes", "subject_keys"]


#: ``RomeConfig.update_key``: the paper's averaged key ``k*`` or the reference code's bare-prompt key.
UPDATE_KEYS = ("averaged", "bare")


@dataclass(frozen=True)
class RomeConfig(ValueEditConfig):
    """Hyper-parameters of :func:`rome` (defaults: ROME's GPT-2 XL settings, see the module docstring).

    Attributes:
        v_num_grad_steps: Adam steps of the value optimization (the last step only evaluates).
        v_lr: Adam learning rate of ``delta``.
        v_weight_decay: Weight of ``|delta| / |o|^2``.
        clamp_norm_factor: ``|delta| <= clamp_norm_factor * |o|`` after every step (``None``: no clamp).
        kl_factor: Weight of the KL term on the essence prompts.
        stop_loss: Stop the value optimization once the loss is below this.
        kl_prompts: Essence prompts, ``{}`` = the subject.
        prefix_lengths: ``(words, count)`` pairs of general-text prefixes (the bare prompt is always used too).
        text_source: General text for the key covariance (``None``: built-in; a ``.txt`` file;
            a Hugging Face dataset) -- the side-effects suite's ``text_source``.
        n_cov_tokens: Tokens for the key covariance.
        cov_seq_len: Tokens per covariance chunk.
        cov_ridge: Relative ridge ``cov_ridge * mean(diag C)`` added to ``C`` before solving.
        cache_covariance: Cache the covariance on disk (see :mod:`factlens.editing.covariance`).
        seed: Seed of the prefix choice.
        update_key: The key whose output the closed form sets: ``"averaged"`` (the paper's
            formula: ``k*``, the key averaged over the bare and the prefixed prompts, maps to
            ``k* W + b + delta``) or ``"bare"`` (the reference code's ``compute_v``: the bare
            prompt's key ``k0`` maps to its own output plus ``delta``; the direction ``C^-1 k*``
            is the same). With ``"averaged"`` the bare prompt's output moves by
            ``(k0 . C^-1 k*) / (k* . C^-1 k*)`` times ``delta``, a factor that is not bounded by 1:
            from -0.16 to 2.3 for subjects of the tiny test models (two reviews, 2026-12-04).

    Example:
        >>> RomeConfig(v_lr=0.1).replace(kl_prompts=["{} is a"]).kl_prompts
        ('{} is a',)
        >>> RomeConfig(kl_prompts=("no slot",))
        Traceback (most recent call last):
        ...
        ValueError: RomeConfig.kl_prompts need exactly one '{}' slot for the subject, got ['no slot']
    """

    method: ClassVar[str] = "rome"
    update_key: str = "averaged"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update_key not in UPDATE_KEYS:
            raise ValueError(f"RomeConfig.update_key must be one of {list(UPDATE_KEYS)} (the paper's averaged key or "
                             f"the reference code's bare-prompt key), got {self.update_key!r}")


# --- prompts --------------------------------------------------------------------------


def context_prefixes(prefix_lengths: Sequence[tuple[int, int]], seed: int = 0) -> tuple[str, ...]:
    """``""`` (the bare prompt) plus seeded word windows of the built-in general text.

    ``(words, count)``: ``count`` prefixes of ``words`` words each, cut at random places of
    random passages, trailing punctuation and braces removed; a prompt is ``prefix + ". " + prompt``.

    Example:
        >>> p = context_prefixes([(3, 2)], seed=0)
        >>> p[0], len(p), [len(x.split()) for x in p[1:]]
        ('', 3, [3, 3])
    """
    from factlens.data.text import load_texts

    rng = random.Random(seed)
    passages = [t.split() for t in load_texts(None)]
    out = [""]
    for words, count in prefix_lengths:
        for _ in range(count):
            ws = rng.choice(passages)
            start = rng.randrange(0, max(1, len(ws) - words + 1))
            text = " ".join(ws[start:start + words]).replace("{", " ").replace("}", " ")
            out.append(text.strip().rstrip(".,;:!?") or "The")
    return tuple(out)


def _prefixed(prefix: str, prompt: str, span: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    if not prefix:
        return prompt, span
    head = prefix + ". "
    return head + prompt, (span[0] + len(head), span[1] + len(head))


def _fact_texts(record, prefixes: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
    pairs = [_prefixed(p, record.prompt, record.subject_span) for p in prefixes]
    return [t for t, _ in pairs], [s for _, s in pairs]


def _subject_acts(model, hook: str, texts: Sequence[str], spans: Sequence[tuple[int, int]],
                  stop_at_layer: int) -> Float[Tensor, "n d"]:
    """Activation at ``hook`` at the subject's last token of each text (no gradient, float64, CPU)."""
    from factlens.tokens import tokenize_prompts

    batch = tokenize_prompts(model, list(texts), subject_spans=list(spans))
    got: list[Tensor] = []

    def grab(act, hook):
        rows = torch.arange(act.shape[0], device=act.device)
        got.append(act[rows, batch.subject_last.to(act.device)].detach())
        return act

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook, grab)]):
        model(batch.tokens, stop_at_layer=stop_at_layer)
    return got[0].to(device="cpu", dtype=torch.float64)


def subject_keys(model, layer: int, records, prefixes: Sequence[str]) -> Float[Tensor, "n d_mlp"]:
    """``k*`` of each record: the key of MLP ``layer`` at the subject's last token, averaged over ``prefixes``."""
    out = []
    for r in records:
        texts, spans = _fact_texts(r, prefixes)
        out.append(_subject_acts(model, mlp_hook(layer, "post"), texts, spans, layer + 1).mean(0))
    return torch.stack(out)


@dataclass(frozen=True)
class _ValueBatch:
    tokens: Tensor  # [rows, pos]
    lookup: Tensor  # [rows] subject's last token
    nll_rows: Tensor
    nll_pos: Tensor
    nll_tok: Tensor
    kl_rows: Tensor


def _value_batch(model, record, prefixes: Sequence[str], kl_prompts: Sequence[str]) -> _ValueBatch:
    """Rewriting prompts (prefix + prompt + target[:-1], teacher-forced) and essence prompts, right-padded."""
    from factlens.tokens import _pad_id, answer_token_ids, tokenize_prompts

    target = answer_token_ids(model, record.target_new)
    texts, spans = _fact_texts(record, prefixes)
    for k in kl_prompts:
        s = k.index("{}")
        texts.append(k.replace("{}", record.subject, 1))
        spans.append((s, s + len(record.subject)))
    batch = tokenize_prompts(model, texts, subject_spans=spans, device="cpu")
    n_rw = len(prefixes)
    rows, nr, npos, ntok = [], [], [], []
    for i in range(len(texts)):
        ids = batch.tokens[i, : int(batch.lengths[i])].tolist()
        if i < n_rw:
            for j, t in enumerate(target):
                nr.append(i)
                npos.append(len(ids) - 1 + j)
                ntok.append(t)
            ids = ids + target[:-1]
        rows.append(ids)
    tokens = torch.full((len(rows), max(map(len, rows))), _pad_id(model), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    dev = model.cfg.device
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=dev)  # noqa: E731
    return _ValueBatch(tokens.to(dev), batch.subject_last.to(dev), as_t(nr), as_t(npos), as_t(ntok),
                       torch.arange(n_rw, len(texts), device=dev))


@contextmanager
def _frozen(model) -> Iterator[None]:
    """No parameter requires grad inside the block (no ``.grad`` is written); flags restored after."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


def _logprobs_at(model, resid: Tensor, rows: Tensor, pos: Tensor) -> Tensor:
    from factlens.tokens import unembed

    return F.log_softmax(unembed(model, resid[rows, pos][:, None, :])[:, 0].float(), dim=-1)


@contextmanager
def mlp_output_hook(model, layer: int, fn) -> Iterator[None]:
    """Run ``fn(output) -> output`` on block ``layer``'s MLP module output inside the block.

    That output is ``post @ W_out + b_out``, *before* any norm applied after the MLP (Gemma
    2/3's ``ln2_post``), i.e. the value space of ``W_out``; TransformerLens has no hook point
    there (``hook_mlp_out`` is after that norm). A torch forward hook, removed on exit.
    """
    handle = model.blocks[layer].mlp.register_forward_hook(lambda module, args, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _delta_hooks(model, layer: int, where: str, fn) -> Iterator[None]:
    if where == "mlp":
        with mlp_output_hook(model, layer, fn):
            yield
    elif where == "resid_post":
        with model.hooks(fwd_hooks=[(resid_hook(layer, "post"), lambda act, hook: fn(act))]):
            yield
    else:
        raise ValueError(f"where must be 'mlp' or 'resid_post', got {where!r}")


def _diverged(cfg: Any, *, where: str, fact: int, fact_id: str | None, step: int, dtype: torch.dtype,
              what: str) -> FloatingPointError:
    """The error of a value optimization whose loss or ``delta`` is NaN/inf (the wording of
    :func:`factlens.editing.training.train_step`'s), naming the fact, the step, ``v_lr`` and the dtype."""
    method = getattr(cfg, "label", "ROME" if where == "mlp" else "MEMIT")
    name = f"fact {fact}" + (f" ({fact_id!r})" if fact_id else "")
    key = f"--edit methods.{getattr(cfg, 'method', 'rome')}.v_lr=..."
    return FloatingPointError(
        f"{method}'s value optimization diverged at step {step} for {name} (v_lr {cfg.v_lr:g}, model dtype {dtype}): "
        f"{what}. Nothing of it was written into W_out (an in-place edit is restored). Lower "
        f"{type(cfg).__name__}.v_lr ({key}), or edit a float32 copy of the model (model.float()): half precision "
        "overflows first")


@with_gradients  # also under the caller's torch.no_grad() or inference_mode(): delta and its graph need them
def optimize_delta(model, layer: int, batch: _ValueBatch, cfg: Any, *, where: str = "mlp",
                   fact: int = 0, fact_id: str | None = None) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """Optimize the vector added at the subject's last token after ``layer`` (ROME's ``compute_v``).

    ``where="mlp"`` (ROME) adds it to the MLP module's output (``W_out``'s value space, before
    any post-MLP norm), ``where="resid_post"`` (MEMIT) to the residual stream after the
    block. The bare prompt's unedited value ``o`` there scales the weight decay and the clamp.
    ``fact`` / ``fact_id``: the fact's index and id, for the history and the messages.

    Returns:
        ``(delta, o, history)``: float32 ``[d_model]`` on the model's device.

    Raises:
        FloatingPointError: The loss or ``delta`` is NaN or infinite (a NaN loss is never below
            ``stop_loss``, and a NaN ``delta`` passed the clamp, so it was written into ``W_out``).
    """
    last = model.cfg.n_layers - 1
    if layer >= last and not bool((batch.nll_pos == batch.lookup[batch.nll_rows]).any()):
        method = "ROME" if where == "mlp" else "MEMIT"
        raise MaskNotSupported(
            f"{method} writes the new value at the subject's last token after layer {layer}, the model's last block: "
            "no attention layer after it carries that position to the prediction, so the edit could not change the "
            f"answer (it would write optimizer noise into W_out). Use a mask whose {'' if where == 'mlp' else 'last '}"
            f"MLP layer is below {last}")
    dev = batch.tokens.device
    delta = torch.zeros(model.cfg.d_model, device=dev, dtype=torch.float32, requires_grad=True)
    rows = torch.arange(batch.tokens.shape[0], device=dev)
    state: dict[str, Tensor] = {}

    def add(act):
        if "o" not in state:  # first forward, delta = 0: the unedited value
            state["o"] = act[0, batch.lookup[0]].detach().float().clone()
        return act.index_put((rows, batch.lookup), delta.to(act.dtype).expand(len(rows), -1), accumulate=True)

    def diverged(step: int, what: str) -> FloatingPointError:
        return _diverged(cfg, where=where, fact=fact, fact_id=fact_id, step=step,
                         dtype=model.blocks[layer].mlp.W_out.dtype, what=what)

    opt = torch.optim.Adam([delta], lr=cfg.v_lr)
    kl_init, history = None, []
    with _frozen(model), _delta_hooks(model, layer, where, add):
        for it in range(cfg.v_num_grad_steps):
            opt.zero_grad()
            resid = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
            lp = _logprobs_at(model, resid, batch.nll_rows, batch.nll_pos)
            nll = -lp.gather(1, batch.nll_tok[:, None]).mean()
            kl_lp = _logprobs_at(model, resid, batch.kl_rows, batch.lookup[batch.kl_rows])
            if kl_init is None:
                kl_init = kl_lp.detach()
            kl = cfg.kl_factor * F.kl_div(kl_init, kl_lp, log_target=True, reduction="batchmean")
            o_norm = state["o"].norm().clamp_min(1e-12)
            wd = cfg.v_weight_decay * delta.norm() / o_norm ** 2
            loss = nll + kl + wd
            vals = {k: float(v.detach()) for k, v in (("loss", loss), ("loss_forget", nll), ("loss_sft", kl),
                                                      ("weight_decay", wd))}
            history.append({"step": it, "fact": fact, **vals, "loss_retain": 0.0, "lr": cfg.v_lr,
                            "p_target": float(torch.exp(-nll.detach()))})
            if not all(math.isfinite(v) for v in vals.values()):
                raise diverged(it, f"the loss is not finite ({vals})")
            if vals["loss"] < cfg.stop_loss or it == cfg.v_num_grad_steps - 1:
                break
            loss.backward()
            opt.step()
            if cfg.clamp_norm_factor is not None:
                with torch.no_grad():
                    max_norm = cfg.clamp_norm_factor * o_norm
                    if delta.norm() > max_norm:
                        delta.mul_(max_norm / delta.norm())
    if not (bool(torch.isfinite(delta).all()) and bool(torch.isfinite(state["o"]).all())):
        raise diverged(len(history) - 1, "the optimized vector or the unedited value it is added to is not finite")
    return delta.detach(), state["o"], history


# --- the closed form ------------------------------------------------------------------


def rome_closed_form(weight: Float[Tensor, "d_mlp d_model"], key: Float[Tensor, "d_mlp"],
                     value: Float[Tensor, "d_model"], c_inv_key: Float[Tensor, "d_mlp"], bias: Float[Tensor, "d_model"] | None = None
                     ) -> Float[Tensor, "d_mlp d_model"]:
    """ROME's rank-one change of ``W_out`` (TransformerLens layout, ``out = key @ W_out + bias``).

    ``delta_W = (C^-1 k) (v - W^T k - b)^T / ((C^-1 k)^T k)``, computed in float64 on the CPU.
    Afterwards ``key @ (W + delta_W) + b = value``, and keys ``x`` with ``x . C^-1 k = 0`` map as before.

    Example:
        >>> W, k, v = torch.randn(6, 3), torch.randn(6), torch.randn(3)
        >>> dW = rome_closed_form(W, k, v, k)  # C = I
        >>> torch.allclose(k.double() @ (W.double() + dW), v.double())
        True
    """
    W = weight.detach().to("cpu", torch.float64)
    k = key.detach().to("cpu", torch.float64)
    u = c_inv_key.detach().to("cpu", torch.float64)
    out = k @ W + (bias.detach().to("cpu", torch.float64) if bias is not None else 0.0)
    resid = value.detach().to("cpu", torch.float64) - out
    denom = float(u @ k)
    if abs(denom) < 1e-30:
        raise ValueError("the key is C^-1-orthogonal to itself (zero key?): ROME cannot write a value for it")
    return torch.outer(u, resid) / denom


@dataclass(frozen=True)
class RankOneEdit:
    """One ROME edit of one fact (all tensors float64 on the CPU).

    Attributes:
        layer: The edited MLP layer.
        key: The key the closed form maps (``[d_mlp]``): ``k*``, or the bare prompt's key with
            ``RomeConfig.update_key="bare"``.
        value: ``v*`` (``[d_model]``), the MLP output the edited layer gives ``key``.
        c_inv_key: ``C^-1 k*`` (with the configured ridge).
        update: The change of ``W_out`` (``[d_mlp, d_model]``).
        history: The value optimization's steps.
    """

    layer: int
    key: Tensor
    value: Tensor
    c_inv_key: Tensor
    update: Tensor
    history: tuple[dict[str, Any], ...]

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"steps": len(self.history), "loss": last.get("loss"), "p_target": last.get("p_target"),
                "key_norm": float(self.key.norm()), "update_norm": float(self.update.norm())}


def rome_step(model, layer: int, record, *, config: RomeConfig, stats: KeyStatistics, prefixes: Sequence[str],
              fact: int = 0) -> RankOneEdit:
    """Compute (not apply) the ROME edit of one fact in MLP ``layer`` of ``model``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model(n_subjects=12)
        >>> st = key_statistics(p.model, 1, n_tokens=300, cache=False)
        >>> pre = context_prefixes([(4, 2)])
        >>> e = rome_step(p.model, 1, p.task.forget[0], config=RomeConfig(), stats=st, prefixes=pre)
        >>> W, b = p.model.blocks[1].mlp.W_out.double(), p.model.blocks[1].mlp.b_out.double()
        >>> torch.allclose(e.key @ (W + e.update) + b, e.value)
        True
    """
    texts, spans = _fact_texts(record, prefixes)
    acts = _subject_acts(model, mlp_hook(layer, "post"), texts, spans, layer + 1)
    averaged = acts.mean(0)
    batch = _value_batch(model, record, prefixes, config.kl_prompts)
    delta, _, history = optimize_delta(model, layer, batch, config, where="mlp", fact=fact,
                                       fact_id=record.id or record.subject)
    mlp = model.blocks[layer].mlp
    W, b = mlp.W_out.detach().to("cpu", torch.float64), mlp.b_out.detach().to("cpu", torch.float64)
    u = stats.solve(averaged, config.cov_ridge)  # the direction: C^-1 k* either way
    key = averaged
    if config.update_key == "bare":
        if not prefixes or prefixes[0] != "":
            raise ValueError("RomeConfig.update_key='bare' maps the bare prompt's key, which is the first of the "
                             f"prefixes when it is '' (as context_prefixes gives them); got {list(prefixes[:2])}")
        key = acts[0]
    value = key @ W + b + delta.to("cpu", torch.float64)
    return RankOneEdit(layer, key, value, u, rome_closed_form(W, key, value, u, b), tuple(history))


@with_gradients
def rome(model, mask, task, *, objective: str | None = None, config: RomeConfig | EditConfig | None = None,
         inplace: bool = False, offload: str | os.PathLike | None = None) -> EditResult:
    """Write the task's new facts into the mask's single MLP layer with ROME, one fact after another.

    Args:
        model: A ``HookedTransformer`` (never moved to another device; no hooks are left on it).
        mask: Exactly one MLP layer (a :class:`~factlens.components.Mask`, components or labels).
        task: A :class:`~factlens.tasks.Task` whose ``forget`` facts all have ``target_new``.
        objective: ``None`` or ``"inject"`` (ROME only writes facts).
        config: A :class:`RomeConfig`; an :class:`EditConfig` (what ``factlens.edit`` passes)
            means ``RomeConfig.from_edit_config(config)``: defaults with its ``sft_source``
            as covariance text and its ``seed``.
        inplace: Edit ``model`` itself (restored if an error interrupts the edit); default:
            a deep copy.
        offload: A folder on disk for the saved original ``W_out`` (a mapped file,
            :func:`factlens.memory.kept_copies`); ``None``: in memory.

    Returns:
        An :class:`EditResult`: ``deltas`` holds the layer's ``W_out``; ``history`` the value
        optimization steps of every fact (``loss_forget`` = NLL of the target, ``loss_sft``
        = KL term); ``meta["facts"]`` per-fact summaries, ``meta["covariance"]`` the key
        statistics used, ``meta["rome_config"]`` the hyper-parameters.

    Raises:
        MaskNotSupported: (a ``ValueError``) A mask with heads, neurons, no MLP or several MLP layers.
        ValueError: An objective
            other than ``"inject"``; facts without ``target_new``.
        FloatingPointError: A value optimization or an update turned NaN/inf (too high a
            ``v_lr``, half precision); nothing of it is written (an in-place edit is restored).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> rome(p.model, Mask.from_labels(["L1.mlp", "L2.mlp"]), p.task)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        factlens.editing.memory_editing.MaskNotSupported: ROME edits exactly one MLP layer; the mask has MLPs at layers [1, 2]...
    """
    t0 = time.perf_counter()
    check_inplace(inplace)
    check_folder(offload)
    cfg, edit_config = split_config(config, RomeConfig)
    layers = mask_mlp_layers(mask, model, method="ROME")
    if len(layers) != 1:
        raise MaskNotSupported(f"ROME edits exactly one MLP layer; the mask has MLPs at layers {layers}. Use method='memit' "
                         "to spread the edit over several layers, or a mask with one MLP")
    layer = layers[0]
    records = forget_records(task, objective, method="ROME")
    work = model if inplace else copy.deepcopy(model)
    stats = layer_key_statistics(work, layer, cfg)
    prefixes = context_prefixes(cfg.prefix_lengths, cfg.seed)
    name = param_name(layer, "mlp", "W_out")
    W = dict(work.named_parameters())[name]
    original = kept_copies({name: W}, offload)[name]
    history, facts, offset = [], [], 0
    try:
        for i, r in enumerate(progress_bar(records, desc="ROME", leave=False)):
            e = rome_step(work, layer, r, config=cfg, stats=stats, prefixes=prefixes, fact=i)
            lost = add_update(W, e.update, what=f"ROME's update of {name} for fact {i} ({r.id or r.subject!r})")
            history += [{**h, "step": offset + h["step"]} for h in e.history]
            offset += len(e.history)
            facts.append({"id": r.id, **e.summary(), "update_lost": lost})
        # inside the guard: a warning raised as an error (-W error) restores the weights like any failure
        warn_rounding({f["id"]: f["update_lost"] for f in facts}, method="ROME", dtype=W.dtype, where="fact")
        meta = {"method": "rome", "layer": layer, "rome_config": cfg.to_dict(), "facts": facts,
                "covariance": covariance_meta(stats), "n_prefixes": len(prefixes), "inplace": inplace,
                "device": str(W.device)}
        # so is an interrupt while the record is built (its fingerprint hashes the weights: seconds on a large model)
        return build_result(work, mask, edit_config, {name: original}, task=task, t0=t0, history=history, meta=meta)
    except BaseException:
        with torch.no_grad():
            W.copy_(original)
        raise
