"""Differentiable losses of the editor.

The editor minimizes ``L = l_forget * L_forget + l_retain * L_retain + l_sft * L_SFT``:

* ``L_forget`` for ``objective="inject"``: cross-entropy towards the edit target,
  ``-log p(target | prompt)``, multi-token targets teacher-forced and their token
  log-probabilities summed.
* ``L_forget`` for ``objective="unlearn"``: ``-log(1 - p(answer | prompt))`` (Mazeika et
  al.). **Sign convention**: this loss is ``>= 0``, equals 0 when ``p(answer) = 0`` and
  grows without bound as ``p(answer) -> 1``; *minimizing* it drives the probability of the
  true answer to 0 (it is not gradient ascent on the answer's cross-entropy). ``p`` of a
  multi-token answer is the product of its token probabilities. ``log(1 - p)`` is computed
  exactly and stably: per token ``log(1 - p_i) = logsumexp(other logits) - logsumexp(all
  logits)`` where ``p_i >= 1/2`` and ``log1p(-p_i)`` below, and ``1 - p_1 p_2 ... p_n = sum_i p_1 ... p_{i-1} (1 - p_i)`` is combined in log
  space, so the loss is finite with a useful gradient even when ``p`` rounds to 1.
* ``L_retain``: cross-entropy of the true answers of the retain facts.
* ``L_SFT``: next-token cross-entropy on general text, or ``KL(p_original || p_model)`` of
  the next-token distributions on general text, at a few positions per chunk.

The unlearning baselines of :mod:`factlens.editing.objectives` are built from the pure
functions at the end of this module (:func:`gradient_ascent_loss`, :func:`npo_loss`,
:func:`simnpo_loss`, :func:`activation_mse`), which take log-probabilities or activations,
not a model, so that each is checked against a hand computation.

All functions read logits only where they are needed (the answer positions, a few text
positions), never ``[batch, pos, d_vocab]``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from factlens.data.formats import FormattedPrompt
from factlens.prefix import common_prefix_len, residual_after_prefix
from factlens.tokens import _bos_id, _encode, _pad_id, answer_token_ids, unembed

__all__ = [
    "shared_prompt_tokens",
    "answer_logprob_grad",
    "answer_log1m_prob",
    "fact_losses",
    "forget_loss",
    "retain_loss",
    "sft_loss",
    "sft_positions",
    "reference_logprobs",
    "answer_logprobs_and_lengths",
    "answer_logprobs_and_rows",
    "answer_kl",
    "prompt_activations",
    "gradient_ascent_loss",
    "npo_loss",
    "simnpo_loss",
    "dpo_loss",
    "activation_mse",
]


def _unembed_rows(model, resid: Float[Tensor, "k d_model"]) -> Float[Tensor, "k d_vocab"]:
    return unembed(model, resid[:, None, :])[:, 0].float()


def _log1m_token(logits: Tensor, tok: Tensor, lp: Tensor, lse: Tensor) -> Tensor:
    """``log(1 - p)`` of each row's token, accurate at both ends (Maechler's ``log1mexp``).

    Where ``p >= 1/2``: ``logsumexp(other logits) - logsumexp(all logits)``, which stays finite
    when ``p`` rounds to 1. Where ``p < 1/2``: ``log1p(-p)``; the difference of two logsumexps that
    agree to float32 rounding was exactly 0 below ``p ~ 1e-7`` (the loss said "forgotten" while
    ``p`` could still fall by orders of magnitude). Each branch's input is clamped to its own
    range, so the branch not taken has a finite gradient (0 after ``where``)."""
    half = -math.log(2.0)
    small = torch.log1p(-torch.exp(lp.clamp(max=half)))
    others = logits.scatter(1, tok[:, None], float("-inf"))
    large = torch.logsumexp(others, dim=-1) - lse
    return torch.where(lp < half, small, large)


def _answer_logits(model, prompts: Sequence[str], answers: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
    """Logits at the positions that predict answer tokens: ``(logits [k, d_vocab] float, token [k], owner [k])``,
    ordered by prompt, then token.

    One forward pass over ``prompt + answer[:-1]`` (right-padded); only the positions that
    predict answer tokens are unembedded.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    bos = _bos_id(model)
    rows, owner, pos, toks = [], [], [], []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids = ([bos] if bos is not None else []) + _encode(model, p)[0]
        a_ids = answer_token_ids(model, a)
        if not ids:
            raise ValueError(f"prompt {i} ({p!r}) is empty and the model prepends no BOS")
        start = len(ids) - 1
        rows.append(ids + a_ids[:-1])
        for j, t in enumerate(a_ids):
            owner.append(i)
            pos.append(start + j)
            toks.append(t)
    device = model.cfg.device
    n = max(len(r) for r in rows)
    tokens = torch.full((len(rows), n), _pad_id(model), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    tokens = tokens.to(device)
    owner_t = torch.tensor(owner, dtype=torch.long, device=device)
    # the tokens every row starts with (e.g. a shared few-shot example) run once; exact up to float order
    resid, p = residual_after_prefix(model, tokens, first_read=min(pos),
                                     lengths=torch.tensor([len(r) for r in rows], device=device))
    picked = resid[owner_t, torch.tensor(pos, dtype=torch.long, device=device) - p]
    logits = _unembed_rows(model, picked)
    return logits, torch.tensor(toks, dtype=torch.long, device=logits.device), owner_t.to(logits.device)


def _answer_token_stats(model, prompts: Sequence[str], answers: Sequence[str], *, with_log1m: Sequence[bool] | None = None):
    """Per answer token: log p(token), optionally log(1 - p(token)), and the owning prompt
    (:func:`_answer_logits`'s one forward pass)."""
    logits, tok_t, owner_t = _answer_logits(model, prompts, answers)
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(1, tok_t[:, None])[:, 0] - lse
    log1m = None
    if with_log1m is not None and any(with_log1m):
        log1m = _log1m_token(logits, tok_t, lp, lse)
    return lp, log1m, owner_t


def _sum_by_owner(values: Tensor, owner: Tensor, n: int) -> Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, owner, values)


def _log1m_from_tokens(lp: Tensor, log1m: Tensor, owner: Tensor, idx: Sequence[int]) -> Tensor:
    """``log(1 - prod_i p_i)`` per prompt in ``idx`` = logsumexp_i (sum_{j<i} log p_j + log(1 - p_i)),
    or ``log1p(-prod_i p_i)`` where the product is below 1/2."""
    out = []
    for i in idx:
        sel = (owner == i).nonzero()[:, 0]
        lpi, l1 = lp[sel], log1m[sel]
        prefix = torch.cat([lpi.new_zeros(1), torch.cumsum(lpi, 0)[:-1]])
        total = prefix[-1] + lpi[-1]  # log p(answer); below log(1/2), log1p(-p) (see _log1m_token)
        small = torch.log1p(-torch.exp(total.clamp(max=-math.log(2.0))))
        out.append(torch.where(total < -math.log(2.0), small, torch.logsumexp(prefix + l1, dim=0)))
    return torch.stack(out)


def answer_logprob_grad(model, prompts: Sequence[str], answers: Sequence[str]) -> Float[Tensor, "n"]:
    """Summed log-probability of each answer after its prompt, differentiable.

    Args:
        model: A ``HookedTransformer``.
        prompts: Prompt strings.
        answers: Answers without the leading space (it is added when tokenizing).

    Returns:
        ``[n]`` log-probabilities (float32) with a graph back to the parameters that require grad.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = p.dataset[0]
        >>> bool(answer_logprob_grad(p.model, [r.prompt], [r.answer]).exp() > 0.9)
        True
    """
    lp, _, owner = _answer_token_stats(model, prompts, answers)
    return _sum_by_owner(lp, owner, len(prompts))


def answer_log1m_prob(model, prompts: Sequence[str], answers: Sequence[str]) -> Float[Tensor, "n"]:
    """``log(1 - p(answer | prompt))`` per prompt, computed stably (see the module docstring)."""
    lp, log1m, owner = _answer_token_stats(model, prompts, answers, with_log1m=[True] * len(prompts))
    return _log1m_from_tokens(lp, log1m, owner, range(len(prompts)))


def _target_of(it: FormattedPrompt, objective: str) -> str:
    if objective == "inject":
        if it.target is None:
            raise ValueError(f"fact {it.record_id!r} has no edit target (target_new); objective='inject' needs one "
                             "on every forget fact (or use objective='unlearn')")
        return it.target
    if objective == "unlearn":
        return it.answer
    raise ValueError(f"objective must be 'inject' or 'unlearn', got {objective!r}")


def fact_losses(model, forget_items: Sequence[FormattedPrompt], retain_items: Sequence[FormattedPrompt],
                objective: str) -> tuple[Tensor, Tensor]:
    """Mean forget loss and mean retain loss, computed in one forward pass.

    Either list may be empty (its loss is then a zero tensor).

    Returns:
        ``(L_forget, L_retain)``: ``L_forget`` is ``-log p(target)`` (inject) or
        ``-log(1 - p(answer))`` (unlearn), ``L_retain`` is ``-log p(answer)`` of retain facts.
    """
    forget_items, retain_items = list(forget_items), list(retain_items)
    nf = len(forget_items)
    prompts = [it.prompt for it in forget_items] + [it.prompt for it in retain_items]
    answers = [_target_of(it, objective) for it in forget_items] + [it.answer for it in retain_items]
    if not prompts:
        z = torch.zeros((), device=model.cfg.device)
        return z, z
    unlearn = objective == "unlearn"
    flags = [unlearn and i < nf for i in range(len(prompts))]
    lp, log1m, owner = _answer_token_stats(model, prompts, answers, with_log1m=flags if unlearn else None)
    seq_lp = _sum_by_owner(lp, owner, len(prompts))
    zero = lp.new_zeros(())
    if nf == 0:
        lf = zero
    elif unlearn:
        lf = -_log1m_from_tokens(lp, log1m, owner, range(nf)).mean()
    else:
        lf = -seq_lp[:nf].mean()
    lr = -seq_lp[nf:].mean() if retain_items else zero
    return lf, lr


def forget_loss(model, items: Sequence[FormattedPrompt], objective: str) -> Tensor:
    """``-log p(target)`` (``"inject"``) or ``-log(1 - p(answer))`` (``"unlearn"``), averaged over prompts."""
    if not items:
        raise ValueError("forget_loss needs at least one prompt")
    return fact_losses(model, items, [], objective)[0]


def retain_loss(model, items: Sequence[FormattedPrompt]) -> Tensor:
    """Cross-entropy ``-log p(answer)`` of the true answers, averaged over prompts."""
    if not items:
        raise ValueError("retain_loss needs at least one prompt")
    return fact_losses(model, [], items, "inject")[1]


def sft_positions(seq_len: int, n_positions: int | None, *, kl: bool) -> Int[Tensor, "k"]:
    """Evenly spaced positions at which the SFT loss reads the next-token distribution.

    Cross-entropy needs a next token, so its positions are ``1 .. seq_len - 2``; KL may use
    ``1 .. seq_len - 1`` (position 0, BOS, is skipped).
    """
    hi = seq_len - 1 if kl else seq_len - 2
    lo = min(1, hi)
    if n_positions is None or n_positions >= hi - lo + 1:
        return torch.arange(lo, hi + 1)
    return torch.linspace(lo, hi, n_positions).round().long().unique()


def _resid_at(model, tokens: Tensor, positions: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
    if params:
        resid = torch.func.functional_call(model, dict(params), (tokens,), {"stop_at_layer": model.cfg.n_layers})
    else:
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)
    return resid[:, positions.to(resid.device)]


def reference_logprobs(model, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "k"],
                       originals: Mapping[str, Tensor] | None = None) -> Float[Tensor, "batch k d_vocab"]:
    """Next-token log-probabilities of the *original* model at ``positions`` (no gradient).

    Only the parameters in ``originals`` differ between the current and the original
    model, so the original is run as ``torch.func.functional_call(model, originals, ...)``
    without copying the model. ``originals=None``: the model itself is the original.
    """
    with torch.no_grad():
        resid = _resid_at(model, tokens, positions, originals)
        b, k, d = resid.shape
        return F.log_softmax(_unembed_rows(model, resid.reshape(b * k, d)), dim=-1).view(b, k, -1)


def sft_loss(model, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "k"], *,
             reference: Float[Tensor, "batch k d_vocab"] | None = None) -> Tensor:
    """General-text loss at ``positions`` of each chunk.

    Args:
        model: The model being edited.
        tokens: ``[batch, pos]`` text chunks (e.g. from :func:`factlens.data.text.token_chunks`).
        positions: Positions whose next-token distribution is scored (:func:`sft_positions`).
        reference: ``None``: next-token cross-entropy; else the original model's
            log-probabilities at ``positions`` (:func:`reference_logprobs`) and the loss is
            ``KL(p_original || p_model)`` averaged over chunks and positions.

    Returns:
        A scalar tensor.
    """
    positions = positions.to(tokens.device)
    resid = _resid_at(model, tokens, positions)
    b, k, d = resid.shape
    lp = F.log_softmax(_unembed_rows(model, resid.reshape(b * k, d)), dim=-1)
    if reference is None:
        if int(positions.max()) + 1 >= tokens.shape[1]:
            raise ValueError("cross-entropy positions need a next token; use sft_positions(..., kl=False)")
        nxt = tokens[:, positions + 1].reshape(-1).to(lp.device)
        return F.nll_loss(lp, nxt)
    ref = reference.reshape(b * k, -1).to(lp.device)
    return F.kl_div(lp, ref, log_target=True, reduction="batchmean")


# --- unlearning baselines (see factlens.editing.objectives) ----------------------------------


def answer_logprobs_and_lengths(model, prompts: Sequence[str], answers: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Summed log-probability of each answer (differentiable) and its number of tokens.

    Returns:
        ``(logp [n], n_tokens [n])``: ``logp`` as :func:`answer_logprob_grad` (one forward
        pass), ``n_tokens`` (float) the answer's token count ``|y|``.
    """
    lp, _, owner = _answer_token_stats(model, prompts, answers)
    n = len(prompts)
    return _sum_by_owner(lp, owner, n), _sum_by_owner(torch.ones_like(lp), owner, n)


def answer_logprobs_and_rows(model, prompts: Sequence[str], answers: Sequence[str], *, rows_from: int
                             ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`answer_logprobs_and_lengths` and, from the same forward pass, the next-token
    log-probability rows at the answer positions of ``prompts[rows_from:]``.

    Returns:
        ``(logp [n], n_tokens [n], rows [k, d_vocab])``: ``rows`` ordered by prompt, then answer
        token (``k`` = the answer tokens of those prompts), as a KL term needs them.
    """
    logits, tok, owner = _answer_logits(model, prompts, answers)
    rows = F.log_softmax(logits, dim=-1)
    lp = rows.gather(1, tok[:, None])[:, 0]
    n = len(prompts)
    return _sum_by_owner(lp, owner, n), _sum_by_owner(torch.ones_like(lp), owner, n), rows[owner >= rows_from]


def answer_kl(rows: Float[Tensor, "k d_vocab"], reference: Float[Tensor, "k d_vocab"], n_tokens: Tensor,
              reduction: str) -> Tensor:
    """``KL(p_reference || p)`` of next-token distributions given as log-probability rows, one
    row per answer token, rows ordered by fact then token with ``n_tokens[i]`` rows for fact ``i``.

    ``reduction="fact"``: each fact's KL summed over its answer tokens, averaged over the
    facts (the KL of the teacher-forced answer sequence, per fact); ``"token"``: averaged over
    all answer tokens. 0 without rows.

    Example:
        >>> ref = torch.log_softmax(torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]), dim=-1)
        >>> float(answer_kl(ref, ref, torch.tensor([2.0, 1.0]), "fact"))
        0.0
    """
    if reduction not in ("fact", "token"):  # objectives.base.check_reduction's rule (that module imports this one)
        raise ValueError(f"reduction must be one of ['fact', 'token'], got {reduction!r}")
    if not rows.numel():
        return rows.new_zeros(())
    per_token = F.kl_div(rows, reference.to(rows.device, rows.dtype), log_target=True, reduction="none").sum(-1)
    if reduction == "token":
        return per_token.mean()
    owner = torch.repeat_interleave(torch.arange(len(n_tokens), device=rows.device), n_tokens.long().to(rows.device))
    return _sum_by_owner(per_token, owner, len(n_tokens)).mean()


def shared_prompt_tokens(model, prompts: Sequence[str]) -> int:
    """Leading token positions (BOS included) on which every prompt agrees, less one for the
    shortest prompt's last token, which always stays.

    In a causal model the activations there are the same for every prompt (a few-shot example
    that every fact prompt starts with): an activation loss on them cannot tell forget from
    retain prompts. RMU leaves them out. With fewer than two distinct prompts nothing tells a
    shared prefix from the fact's own tokens (a one-fact chunk of sequential editing with no
    retain prompts), so only BOS is left out, as the reference steers every token: taken over
    one prompt, the common prefix was the whole prompt but its last token, and RMU steered
    that token alone (never the subject).

    Example:
        >>> from factlens.testing import tiny_model
        >>> shared_prompt_tokens(tiny_model(), ["the cat sat", "the cat ran"]) > 1
        True
    """
    if not prompts:
        return 0
    bos = _bos_id(model)
    distinct = list(dict.fromkeys(prompts))
    if len(distinct) < 2:
        return min(int(bos is not None), len(_encode(model, distinct[0])[0]) + int(bos is not None) - 1)
    rows = [torch.tensor(([bos] if bos is not None else []) + _encode(model, p)[0]) for p in distinct]
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return min(common_prefix_len(tokens, lengths), int(lengths.min()) - 1)


def prompt_activations(model, prompts: Sequence[str], layer: int) -> tuple[Float[Tensor, "n pos d_model"], Tensor]:
    """The residual stream after block ``layer`` at every prompt token (differentiable).

    The model runs only up to block ``layer`` (``stop_at_layer=layer + 1``), whose output is
    the activation at ``factlens.components.resid_hook(layer, "post")``; no hook is added.
    Prompts are right-padded behind a BOS token.

    Returns:
        ``(acts, valid)``: ``acts[i, t]`` is prompt ``i``'s activation at position ``t``;
        ``valid[i, t]`` is ``True`` on the prompt's own tokens (not BOS, not padding).
    """
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be in [0, {model.cfg.n_layers - 1}] for this model, got {layer}")
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    bos = _bos_id(model)
    rows = [([bos] if bos is not None else []) + _encode(model, p)[0] for p in prompts]
    start = 1 if bos is not None else 0
    n = max(len(r) for r in rows)
    tokens = torch.full((len(rows), n), _pad_id(model), dtype=torch.long)
    valid = torch.zeros((len(rows), n), dtype=torch.bool)
    for i, r in enumerate(rows):
        if len(r) <= start:
            raise ValueError(f"prompt {i} ({prompts[i]!r}) has no tokens")
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        valid[i, start: len(r)] = True
    acts = model(tokens.to(model.cfg.device), stop_at_layer=layer + 1)
    return acts, valid.to(acts.device)


def gradient_ascent_loss(logp: Float[Tensor, "n"]) -> Tensor:
    """Gradient ascent on the forget answers' cross-entropy: ``mean(log p(answer))``.

    Minimizing it *raises* the cross-entropy ``-log p``; it is unbounded below (it keeps
    pushing after ``p`` is already small), which is why GA is usually stopped early or paired
    with a retain term (GradDiff).

    Example:
        >>> float(gradient_ascent_loss(torch.tensor([-1.0, -3.0])))
        -2.0
    """
    return logp.mean()


def npo_loss(logp: Float[Tensor, "n"], logp_ref: Float[Tensor, "n"], beta: float) -> Tensor:
    """Negative Preference Optimization (Zhang et al. 2024), averaged over answers.

    ``-(2 / beta) * logsigmoid(-beta * (log p - log p_ref))`` with ``p_ref`` the frozen
    original model's probability. At ``p = p_ref`` it equals ``(2 / beta) log 2``; it falls
    to 0 as ``p / p_ref -> 0`` and, unlike gradient ascent, its gradient vanishes there. As
    ``beta -> 0`` it tends to gradient ascent (``log p - log p_ref`` plus the constant ``(2 / beta) log 2``).

    Example:
        >>> round(float(npo_loss(torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1)), 4)  # (2/0.1) log 2
        13.8629
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return (-(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref))).mean()


def simnpo_loss(logp: Float[Tensor, "n"], n_tokens: Float[Tensor, "n"], beta: float, gamma: float) -> Tensor:
    """SimNPO (Fan et al. 2024): reference-free NPO with length normalization, averaged over answers.

    ``-(2 / beta) * logsigmoid(-beta * log p / |y| - gamma)`` with ``|y|`` the answer's token
    count. (The authors' code writes it as ``logsigmoid(beta * (NLL / |y| - gamma'))``, i.e.
    ``gamma = beta * gamma'``; both are the same at the default ``gamma = 0``.)

    Example:
        >>> import math
        >>> v = float(simnpo_loss(torch.tensor([-4.0]), torch.tensor([2.0]), beta=2.5, gamma=0.0))
        >>> abs(v - (-(2 / 2.5) * math.log(1 / (1 + math.exp(-5.0))))) < 1e-6
        True
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return (-(2.0 / beta) * F.logsigmoid(-beta * logp / n_tokens - gamma)).mean()


def dpo_loss(logp_lose: Float[Tensor, "n"], logp_win: Float[Tensor, "n"], ref_lose: Float[Tensor, "n"],
             ref_win: Float[Tensor, "n"], beta: float) -> Tensor:
    """Direct Preference Optimization (Rafailov et al. 2023) towards an alternate answer, averaged over prompts.

    ``-(2 / beta) * logsigmoid(beta * ((log p_win - log p_ref_win) - (log p_lose - log p_ref_lose)))``:
    the answer to forget is the dispreferred one, the alternate (e.g. "I don't know") the
    preferred one, both against the frozen original. The ``2 / beta`` scale is open-unlearning's
    (IdkDPO); at the original it equals ``(2 / beta) log 2``, as NPO's. Without the preferred term
    it is :func:`npo_loss`.

    Example:
        >>> z = torch.tensor([-2.0])
        >>> round(float(dpo_loss(z, z - 1, z, z - 1, beta=0.1)), 4)  # (2/0.1) log 2
        13.8629
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return (-(2.0 / beta) * F.logsigmoid(beta * margin)).mean()


def activation_mse(acts: Float[Tensor, "n pos d"], target: Tensor, valid: Tensor) -> Tensor:
    """Mean squared error of activations to a target, over each prompt's valid tokens.

    Per prompt: the mean over its valid positions and the ``d`` dimensions of
    ``(acts - target)^2``; then the mean over prompts (so long and short prompts count
    equally). ``target`` broadcasts against ``acts`` (a ``[d]`` vector for RMU's forget term,
    the original activations for its retain term).

    Example:
        >>> a = torch.tensor([[[1.0, 3.0], [9.0, 9.0]]])
        >>> float(activation_mse(a, torch.zeros(2), torch.tensor([[True, False]])))  # (1 + 9) / 2
        5.0
    """
    sq = (acts - target).pow(2) * valid[..., None].to(acts.dtype)
    per_prompt = sq.sum(dim=(1, 2)) / (valid.sum(dim=1).to(acts.dtype) * acts.shape[-1])
    return per_prompt.mean()
