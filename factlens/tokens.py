"""Tokenization, padding-safe batching and answer scoring.

All batches are **right-padded**: with causal attention a real token never attends to a
padding token that comes after it, so per-prompt results are identical to unpadded runs
(no attention mask or position offsets needed). The last real token of each prompt is
gathered explicitly (``PromptBatch.last_pos``), and only those positions are unembedded
(``final_logits``), which avoids materializing ``[batch, pos, d_vocab]`` logits for
262k-token vocabularies.

Answers are scored with their leading space (``" basketball"``). Multi-token answers are
scored by teacher forcing, summing the log-probabilities of their tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "unique_argmax",
    "PromptBatch",
    "tokenize_prompts",
    "encode_records",
    "answer_token_ids",
    "final_residual",
    "final_logits",
    "unembed",
    "scoring_logits",
    "answer_logprobs",
    "candidate_logprobs",
    "iter_batches",
]


@dataclass
class PromptBatch:
    """A right-padded batch of prompts.

    Attributes:
        tokens: ``[batch, pos]`` token ids, right-padded with the pad token.
        lengths: Number of real tokens per prompt (BOS included).
        subject_first: Position of the first subject token (``-1`` if no subject span).
        subject_last: Position of the last subject token (``-1`` if no subject span).
        prompts: The prompt strings.
    """

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    subject_first: Int[Tensor, "batch"]
    subject_last: Int[Tensor, "batch"]
    prompts: list[str] = field(default_factory=list)

    @property
    def last_pos(self) -> Int[Tensor, "batch"]:
        """Position of the last real token of each prompt (where the answer is predicted)."""
        return self.lengths - 1

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> "PromptBatch":
        return PromptBatch(self.tokens.to(device), self.lengths.to(device), self.subject_first.to(device),
                           self.subject_last.to(device), self.prompts)

    def subset(self, idx) -> "PromptBatch":
        idx = torch.as_tensor(idx, dtype=torch.long)
        n = int(self.lengths[idx].max()) if len(idx) else 0
        return PromptBatch(self.tokens[idx, :n], self.lengths[idx], self.subject_first[idx],
                           self.subject_last[idx], [self.prompts[i] for i in idx.tolist()])


def _tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("the model has no tokenizer; pass tokens directly or set model.tokenizer")
    return tok


def _bos_id(model) -> int | None:
    tok = _tokenizer(model)
    if not getattr(model.cfg, "default_prepend_bos", True):
        return None
    return tok.bos_token_id


def _pad_id(model) -> int:
    tok = _tokenizer(model)
    if tok.pad_token_id is not None:
        return tok.pad_token_id
    return tok.eos_token_id if tok.eos_token_id is not None else 0


def _encode(model, text: str, *, split_special_tokens: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text`` (no BOS); ``split_special_tokens``: a literal
    ``"<unk>"`` in the text is spelled with ordinary tokens, not read as the special token."""
    tok = _tokenizer(model)
    extra = {"split_special_tokens": True} if split_special_tokens else {}
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, **extra)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _span_positions(offsets: list[tuple[int, int]], span: tuple[int, int], text: str) -> tuple[int, int]:
    s, e = span
    hits = [i for i, (a, b) in enumerate(offsets) if a < e and b > s and b > a]
    if not hits:
        raise ValueError(f"subject span {span} ({text[s:e]!r}) matches no token of {text!r}")
    return hits[0], hits[-1]


def tokenize_prompts(
    model,
    prompts: Sequence[str],
    *,
    subject_spans: Sequence[tuple[int, int] | None] | None = None,
    device: torch.device | str | None = None,
) -> PromptBatch:
    """Tokenize and right-pad prompts; locate subject tokens exactly from character offsets.

    Args:
        model: A ``HookedTransformer`` with a (fast) tokenizer.
        prompts: Prompt strings (no trailing space).
        subject_spans: Optional character span ``[start, end)`` of the subject in each prompt.
        device: Device of the returned tensors (default: the model's device).

    Returns:
        The batch; BOS is prepended when ``model.cfg.default_prepend_bos``.

    Raises:
        ValueError: No prompts, or a prompt with no tokens on a model that prepends no BOS.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    device = device or model.cfg.device
    bos = _bos_id(model)
    rows, firsts, lasts = [], [], []
    for i, p in enumerate(prompts):
        ids, offs = _encode(model, p)
        if not ids and bos is None:  # length 0: its "last token" would be read at position -1 (the padding)
            raise ValueError(f"prompt {i} ({p!r}) has no tokens and the model prepends no BOS "
                             "(model.cfg.default_prepend_bos is False, or the tokenizer has no BOS token), so "
                             "there is no position to predict from; remove the empty prompt or give it some text")
        shift = 0
        if bos is not None:
            ids = [bos] + ids
            shift = 1
        span = subject_spans[i] if subject_spans is not None else None
        if span is not None:
            f, l = _span_positions(offs, span, p)
            firsts.append(f + shift)
            lasts.append(l + shift)
        else:
            firsts.append(-1)
            lasts.append(-1)
        rows.append(ids)
    n = max(len(r) for r in rows)
    pad = _pad_id(model)
    tokens = torch.full((len(rows), n), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return PromptBatch(tokens.to(device), lengths.to(device), torch.tensor(firsts, device=device),
                       torch.tensor(lasts, device=device), list(prompts))


def encode_records(model, records, *, device=None) -> PromptBatch:
    """Tokenize fact records (their ``prompt``), locating each subject."""
    records = list(records)
    return tokenize_prompts(model, [r.prompt for r in records], subject_spans=[r.subject_span for r in records],
                            device=device)


def answer_token_ids(model, answer: str) -> list[int]:
    """Token ids of an answer as it follows a prompt (with the leading space, no BOS).

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> len(answer_token_ids(m, "basketball"))
        1
    """
    if not answer or answer != answer.strip():
        raise ValueError(f"answers are given without surrounding whitespace, got {answer!r}")
    ids, _ = _encode(model, " " + answer)
    if not ids:
        raise ValueError(f"answer {answer!r} tokenizes to nothing")
    return ids


def iter_batches(n: int, batch_size: int):
    """Index slices ``[start, stop)`` covering ``range(n)`` in chunks of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))


def length_batches(lengths: Sequence[int], batch_size: int, *, spread: float = 1.25) -> list[list[int]]:
    """Indices of prompts grouped into batches of similar length, shortest first.

    Right-padded batches cost as much as their longest row times their size. Sorted by
    length, a batch closes at ``batch_size`` rows or when the next prompt is longer than
    ``spread`` times the batch's shortest, so a few long prompts (MMLU's reading passages run
    to ~470 tokens where most questions have ~60-120) no longer pad a whole batch to their
    length: on the 57 MMLU dev questions with Gemma 3's tokenizer, 6,672 positions instead
    of 9,673 in batches of 16 sorted by characters (6,122 without padding). Each row's result
    does not depend on its batch (up to float summation order).

    Example:
        >>> length_batches([60, 470, 62, 61, 120], 16)
        [[0, 3, 2], [4], [1]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not spread >= 1:
        raise ValueError(f"spread must be >= 1, got {spread}")
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: (lengths[k], k)):
        if not out or len(out[-1]) >= batch_size or lengths[i] > spread * lengths[out[-1][0]]:
            out.append([])
        out[-1].append(i)
    return out


def final_residual(model, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "batch"]) -> Float[Tensor, "batch d_model"]:
    """Residual stream after the last block at ``positions`` (before the final norm).

    The tokens all rows start with are run once (:func:`factlens.prefix.residual_after_prefix`;
    equal to the plain forward pass up to float summation order).
    """
    from factlens.prefix import residual_after_prefix

    positions = positions.to(tokens.device)
    resid, p = residual_after_prefix(model, tokens, first_read=int(positions.min()) if len(positions) else 0,
                                     lengths=positions + 1)
    return resid[torch.arange(tokens.shape[0], device=resid.device), (positions - p).to(resid.device)]


def unembed(model, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Final norm + unembedding (+ logit soft-capping), as ``HookedTransformer.forward``.

    TransformerLens 3.x's ``Unembed.forward`` computes ``F.linear(x, W_U.T.contiguous(), b_U)``,
    which copies the whole ``[d_model, d_vocab]`` matrix on every call (671 MB for Gemma's
    262k vocabulary, ~0.5 s on a CPU core, whatever the number of rows). For TransformerLens's
    own ``Unembed`` this computes ``x @ W_U + b_U`` instead, through the same ``hook_in`` /
    ``hook_out`` hook points (equal up to float summation order); any other unembedding
    module is called as is.
    """
    return _unembed_with(model, resid, _unembed_linear)


def _unembed_with(model, resid: Tensor, linear) -> Tensor:
    """Final norm, then ``linear(model.unembed, x)``, then the logit soft cap."""
    from transformer_lens.utilities import apply_softcap  # type: ignore

    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    return apply_softcap(linear(model.unembed, resid), model.cfg.output_logits_soft_cap)


def _unembed_linear(u, x: Tensor) -> Tensor:
    from transformer_lens.components import Unembed  # type: ignore

    if type(u).forward is not Unembed.forward:
        return u(x)
    x = u.hook_in(x)
    return u.hook_out(torch.matmul(x, u.W_U) + u.b_U)


def final_logits(model, batch: PromptBatch) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last real token of each prompt, unembedding only those positions.

    For a model in bfloat16 or float16 the unembedding of these few rows runs in float32
    (:func:`scoring_logits`): in bfloat16 logits of 16 to 32 are rounded to steps of 0.125, so
    candidates that differ less tie, and the scores built on these logits (answer wins,
    probabilities, MMLU) lost that difference (Gemma 3 270M in bfloat16 tied at the top on 52 of
    600 athletes).
    """
    return scoring_logits(model, final_residual(model, batch.tokens, batch.last_pos)[:, None, :])[:, 0]


def scoring_logits(model, resid: Tensor) -> Tensor:
    """:func:`unembed` for scoring: in float32 for a bfloat16 or float16 ``resid`` (the final
    norm stays the model's own), else as it is."""
    if resid.dtype not in (torch.bfloat16, torch.float16):
        return unembed(model, resid)
    return _unembed_with(model, resid, _unembed_linear_float32).float()


def _unembed_linear_float32(u, x: Tensor, *, chunk: int = 32768) -> Tensor:
    """:func:`_unembed_linear` with the product in float32: ``W_U`` is read ``chunk`` columns at a
    time, so the extra memory is one float32 slice of it (84 MB for Gemma 3 270M, 470 MB at
    Gemma-2-9B's width), never a float32 copy of the whole."""
    from transformer_lens.components import Unembed  # type: ignore

    if type(u).forward is not Unembed.forward:  # another unembedding: as it computes
        return u(x)
    x = u.hook_in(x).float()
    W, b = u.W_U, u.b_U
    return u.hook_out(torch.cat([x @ W[:, i:i + chunk].float() + b[i:i + chunk].float()
                                 for i in range(0, W.shape[1], chunk)], -1))


def _logprob_sequences(model, prompts: Sequence[str], answers: Sequence[str], batch_size: int) -> Tensor:
    out = []
    for sl in iter_batches(len(prompts), batch_size):
        ps, ans = list(prompts[sl]), list(answers[sl])
        batch = tokenize_prompts(model, ps)
        a_ids = [answer_token_ids(model, a) for a in ans]
        if all(len(a) == 1 for a in a_ids):
            lp = F.log_softmax(final_logits(model, batch).float(), dim=-1)
            idx = torch.tensor([a[0] for a in a_ids], device=lp.device)
            out.append(lp.gather(1, idx[:, None])[:, 0])
            continue
        pad = _pad_id(model)
        rows = []
        for i, a in enumerate(a_ids):
            L = int(batch.lengths[i])
            rows.append(batch.tokens[i, :L].tolist() + a)
        n = max(len(r) for r in rows)
        toks = torch.full((len(rows), n), pad, dtype=torch.long, device=batch.tokens.device)
        for i, r in enumerate(rows):
            toks[i, : len(r)] = torch.tensor(r)
        from factlens.prefix import residual_after_prefix

        resid, p = residual_after_prefix(model, toks, first_read=int(batch.lengths.min()) - 1,
                                         lengths=torch.tensor([len(r) for r in rows], device=toks.device))
        scores = []
        for i, a in enumerate(a_ids):
            L = int(batch.lengths[i])
            pos = torch.arange(L - 1 - p, L - 1 - p + len(a), device=resid.device)
            lp = F.log_softmax(scoring_logits(model, resid[i, pos]).float(), dim=-1)
            scores.append(lp[torch.arange(len(a)), torch.tensor(a, device=lp.device)].sum())
        out.append(torch.stack(scores))
    return torch.cat(out)


def answer_logprobs(model, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16) -> Float[Tensor, "n"]:
    """Summed log-probability of each answer after its prompt (no gradient).

    Multi-token answers are teacher-forced; single-token batches take one forward pass with
    only the final positions unembedded.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    with torch.no_grad():
        return _logprob_sequences(model, prompts, answers, batch_size)


def candidate_logprobs(
    model, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *, batch_size: int = 16
) -> list[Float[Tensor, "n_candidates"]]:
    """Log-probability of every candidate answer for every prompt.

    Returns one tensor per prompt, aligned with ``candidates[i]``.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    flat_p, flat_a, owner = [], [], []
    for i, (p, cs) in enumerate(zip(prompts, candidates)):
        if not cs:
            raise ValueError(f"prompt {i} has no candidate answers")
        for c in cs:
            flat_p.append(p)
            flat_a.append(c)
            owner.append(i)
    # single-token candidates: one forward per prompt, not per candidate
    single = all(len(answer_token_ids(model, a)) == 1 for a in set(flat_a))
    if single:
        outs: list[Tensor] = []
        with torch.no_grad():
            for sl in iter_batches(len(prompts), batch_size):
                lp = F.log_softmax(final_logits(model, tokenize_prompts(model, list(prompts[sl]))).float(), -1)
                for j, i in enumerate(range(sl.start, sl.stop)):
                    ids = torch.tensor([answer_token_ids(model, c)[0] for c in candidates[i]], device=lp.device)
                    outs.append(lp[j, ids].cpu())
        return outs
    lp = answer_logprobs(model, flat_p, flat_a, batch_size=batch_size).cpu()
    res: list[list[Tensor]] = [[] for _ in prompts]
    for v, i in zip(lp, owner):
        res[i].append(v)
    return [torch.stack(r) for r in res]


def unique_argmax(scores) -> int:
    """The index of the largest score, or -1 when several share it.

    A tie at the top is no answer: ``argmax`` gave it to the first candidate, which is the true
    answer (CounterFact, the multiple-choice "A", sports' "basketball") or another fixed one, so
    a model that cannot tell the candidates apart was scored as knowing the fact (in bfloat16,
    Gemma 3 270M tied at the top on 52 of 600 athletes, 23 of them "won" by the true answer).

    Example:
        >>> import torch
        >>> unique_argmax(torch.tensor([0.1, 0.7, 0.2])), unique_argmax(torch.tensor([0.7, 0.7, 0.2]))
        (1, -1)
    """
    best = int(torch.argmax(scores))
    return best if int((scores == scores[best]).sum()) == 1 else -1
