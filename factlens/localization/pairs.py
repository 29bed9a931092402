"""Clean / corrupted prompt pairs and patching metrics shared by the patching methods.

A corrupted prompt is the clean prompt with the subject replaced by **another subject of
the same relation** (the same template when records have no ``relation``) **with a different
answer**, whose swap keeps the tokens aligned: the corrupted prompt has the same token
length and the same subject positions as the clean one, so positions align and the logit
difference ``logit(clean answer) - logit(corrupted answer)`` is a meaningful metric.
Corrupting subjects come from the dataset itself, then (for facts that have no aligned
partner there) from an optional larger pool (``partners=``). A fact without any aligned
partner is left out of that localization with a warning, and counted in
:attr:`PatchingPairs.dropped` (the patching methods copy it into their scores as
``scores.dropped_ids`` / ``scores.n_dropped``): a subject swap that changes the token
length (a tokenizer merging across the subject boundary) never stops a run.
Users can instead pass their own corrupted prompts (same token length).

**Multi-token answers**: the patching metrics use the **first token** of each answer
(``clean_answer`` / ``corrupted_answer``). Two answers that share their first token cannot be
told apart by these metrics, so such facts are never paired, and :func:`make_pairs` raises
when two candidate answers of the data (``FactDataset.candidates`` or a record's
``candidates``), or a user-given corrupted answer and its clean answer, share their first token.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factlens.data.records import FactRecord, as_records
from factlens.tokens import PromptBatch, answer_token_ids, encode_records, tokenize_prompts

__all__ = ["PatchingPairs", "make_pairs", "patching_metric", "PatchingMetric"]

PatchingMetric = Literal["logit_diff", "prob"]

#: Tokenizations tried per fact to find an aligned corrupting subject beyond the first choice
#: (swaps into the fact's own template with a partner of the same template need none).
MAX_SWAP_TRIES = 64


@dataclass
class PatchingPairs:
    """Aligned clean and corrupted prompts.

    Attributes:
        clean: Clean prompts (right-padded; subject positions located).
        corrupted: Corrupted prompts, token-for-token aligned with ``clean`` (same lengths).
        clean_answer: First token of each clean answer.
        corrupted_answer: First token of the answer of the corrupting subject (differs from
            ``clean_answer``), or of the edit target when the user gave corrupted prompts.
        records: The clean records (the facts that were paired, in dataset order).
        dropped: Ids of the facts left out because no aligned corrupting subject exists.
    """

    clean: PromptBatch
    corrupted: PromptBatch
    clean_answer: Int[Tensor, "batch"]
    corrupted_answer: Int[Tensor, "batch"]
    records: list[FactRecord]
    dropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, idx) -> "PatchingPairs":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return PatchingPairs(self.clean.subset(idx), self.corrupted.subset(idx), self.clean_answer[idx.to(self.clean_answer.device)],
                             self.corrupted_answer[idx.to(self.clean_answer.device)], [self.records[i] for i in idx.tolist()],
                             list(self.dropped))


def make_pairs(
    model,
    dataset: Sequence[FactRecord],
    *,
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    partners: Sequence[FactRecord] | None = None,
    seed: int = 0,
    drop_unpaired: bool = True,
) -> PatchingPairs:
    """Build clean/corrupted pairs for patching.

    Each fact is corrupted with the subject of another fact of the same relation (records
    without a ``relation``: the same template) whose answer has a different first token
    and whose swap keeps the token length and the subject positions of the clean prompt.
    The first choice is a seeded random fact of the dataset whose subject has as many
    tokens; when its swap does not align (a tokenizer merging across the subject boundary),
    the other facts of the relation are tried, then ``partners``.

    Args:
        model: The model (its tokenizer decides token lengths).
        dataset: Clean facts.
        corrupted_prompts: Optional user-given corrupted prompts, one per fact, with the same
            token length as the clean prompt.
        corrupted_answers: Answers for the user-given corrupted prompts, one string per fact in
            the order of the facts (default: each record's ``target_new``).
        partners: More facts whose subjects may corrupt the dataset's facts when the
            dataset has no aligned partner of the same relation (e.g. every known fact
            when localizing a small forget set); they are never localized themselves.
        seed: Seed for choosing corrupting subjects.
        drop_unpaired: Facts without an aligned corrupting subject are left out with a
            warning naming them and listed in :attr:`PatchingPairs.dropped` (``False``: raise
            instead). At least one fact must remain.

    Raises:
        TypeError: When ``dataset`` (or ``partners``) is not a collection of facts.
        ValueError: When no fact can be paired (or, with ``drop_unpaired=False``, any fact
            cannot), user-given corrupted prompts differ in token length, ``corrupted_answers``
            come without ``corrupted_prompts`` or are not one answer string per fact (a string
            is refused), a fact has neither a corrupted answer nor ``target_new``, or two candidate
            answers (or a corrupted answer and its clean answer) share their first token.
    """
    records = as_records(dataset)
    if not records:
        raise ValueError("the dataset is empty")
    if corrupted_answers is not None and corrupted_prompts is None:
        raise ValueError("corrupted_answers= gives the answers of user-given corrupted prompts; pass them with "
                         "corrupted_prompts= (without it each fact is corrupted by another subject and scored "
                         "against that subject's own answer)")
    first_token = _first_tokens(model)
    _check_candidates(dataset, records, first_token)
    clean = encode_records(model, records)
    _warn_unknown_subjects(model, records, clean)
    clean_ans = [first_token(r.answer) for r in records]
    dev = clean.tokens.device
    if corrupted_prompts is not None:
        corr, corr_ans = _given_pairs(model, records, clean, clean_ans, corrupted_prompts, corrupted_answers, first_token)
        return PatchingPairs(clean, corr, torch.tensor(clean_ans, device=dev), torch.tensor(corr_ans, device=dev), records)
    extra = [] if partners is None else as_records(partners, what="partners")
    chooser = _PartnerChooser(model, records, clean, clean_ans, extra, first_token, seed)
    corr_records, corr_ans, keep, dropped = [], [], [], {}
    for i, r in enumerate(records):
        j = chooser.choose(i)
        if j is None:
            reason = chooser.why(i)
            if not drop_unpaired:
                raise ValueError(f"no corrupting subject for {r.subject!r} ({r.prompt!r}): {reason}; use a larger "
                                 "dataset, pass partners= or corrupted_prompts=, or drop_unpaired=True")
            dropped[r.id] = (r.subject, chooser.kind(i))
            continue
        keep.append(i)
        corr_records.append(r.with_subject(chooser.subject(j)))
        corr_ans.append(chooser.answer(j))
    if dropped:
        summary = _drop_summary(list(dropped.values()))
        if not keep:
            raise ValueError(f"no fact has a corrupting subject of the same relation with a different answer whose swap "
                             f"keeps the token alignment ({summary}); use a larger dataset, pass partners= (more facts of "
                             "these relations) or corrupted_prompts=")
        warnings.warn(f"patching: left out {len(dropped)} of {len(records)} fact(s) without a corrupting subject of the "
                      f"same relation and token length with a different answer ({summary})", UserWarning, stacklevel=2)
        records = [records[i] for i in keep]
        clean = clean.subset(keep)
        clean_ans = [clean_ans[i] for i in keep]
    corr = encode_records(model, corr_records)
    if not (torch.equal(corr.lengths, clean.lengths) and torch.equal(corr.subject_first, clean.subject_first)):
        raise RuntimeError("internal error: a chosen subject swap is not token-aligned")  # pragma: no cover
    return PatchingPairs(clean, corr, torch.tensor(clean_ans, device=dev), torch.tensor(corr_ans, device=dev), records,
                         list(dropped))


def _warn_unknown_subjects(model, records: list[FactRecord], clean: PromptBatch) -> None:
    """Warn when subjects encode only to the tokenizer's unknown token: their facts cannot be told
    apart by the model (a tokenizer without their words, e.g. another model's), so their patching
    scores and accuracies measure the prompt template, not the facts."""
    unk = getattr(getattr(model, "tokenizer", None), "unk_token_id", None)
    if unk is None:
        return
    lost = [r.subject for k, r in enumerate(records)
            if (span := clean.tokens[k, int(clean.subject_first[k]):int(clean.subject_last[k]) + 1]).numel()
            and bool((span == unk).all())]
    if lost:
        warnings.warn(f"{len(lost)} of {len(records)} subject(s) encode only to the unknown token {unk} with this "
                      f"model's tokenizer (e.g. {lost[:3]}): the model cannot tell these facts apart; check that the "
                      "dataset's text is in this model's vocabulary (the tokenizer of the model you loaded)",
                      UserWarning, stacklevel=3)


def _drop_summary(dropped: list[tuple[str, str]]) -> str:
    """``"3 without a partner of their relation, 2 whose every swap changes the token alignment: ['A', ...]"``."""
    kinds = {"partner": "without another subject of their relation with a different first answer token",
             "aligned": "whose every such subject swap changes the token length or subject positions (subjects of "
                        "another token count, or a tokenizer merging across the subject boundary)"}
    counts = [f"{sum(k == kind for _, k in dropped)} {text}" for kind, text in kinds.items()
              if any(k == kind for _, k in dropped)]
    return f"{', '.join(counts)}: {[subject for subject, _ in dropped[:10]]}"


def _first_tokens(model):
    """``answer -> first token id`` (memoized per call of make_pairs)."""
    memo: dict[str, int] = {}

    def first(answer: str) -> int:
        if answer not in memo:
            memo[answer] = answer_token_ids(model, answer)[0]
        return memo[answer]

    return first


def _check_candidates(dataset, records: list[FactRecord], first_token) -> None:
    """Raise when two candidate answers share their first token (the patching metrics could not tell them apart)."""
    sets = {tuple(getattr(dataset, "candidates", ()) or ())} | {r.candidates for r in records if r.candidates}
    for cands in sets:
        seen: dict[int, str] = {}
        for c in dict.fromkeys(cands):
            t = first_token(c)
            if t in seen:
                raise ValueError(f"candidate answers {seen[t]!r} and {c!r} share their first token (id {t}); patching "
                                 "metrics use the first token of each answer, so they cannot tell these apart - "
                                 "rename one answer or use answers whose first tokens differ")
            seen[t] = c


def _given_pairs(model, records, clean, clean_ans, corrupted_prompts, corrupted_answers, first_token):
    if isinstance(corrupted_prompts, str):
        raise TypeError("corrupted_prompts must be a list of prompts (one per fact), not a string")
    if len(corrupted_prompts) != len(records):
        raise ValueError(f"{len(records)} facts but {len(corrupted_prompts)} corrupted prompts")
    corr = tokenize_prompts(model, list(corrupted_prompts))
    answers = _given_answers(records, corrupted_answers)
    corr_ans = [first_token(a) for a in answers]
    same = [i for i in range(len(records)) if corr_ans[i] == clean_ans[i]]
    if same:
        i = same[0]
        raise ValueError(f"the corrupted answer {answers[i]!r} of fact {records[i].id!r} shares its first token with the "
                         f"clean answer {records[i].answer!r} ({len(same)} such fact(s)); patching metrics use the first "
                         "token of each answer, so the two cannot be told apart")
    bad = [i for i in range(len(records)) if int(corr.lengths[i]) != int(clean.lengths[i])]
    if bad:
        raise ValueError(f"corrupted prompts {bad[:5]} have a different token length than their clean prompts; "
                         "patching needs aligned positions")
    return PromptBatch(corr.tokens, corr.lengths, clean.subject_first, clean.subject_last, corr.prompts), corr_ans


def _given_answers(records: list[FactRecord], corrupted_answers) -> list[str]:
    """The answers of user-given corrupted prompts: ``corrupted_answers`` (one string per fact), else each
    record's ``target_new``.

    A string was read as one answer per character, and a list of another length was used as far as it
    went (extra answers ignored, too few an ``IndexError``): both are refused here.
    """
    n = len(records)
    if corrupted_answers is None:
        missing = [r.id for r in records if r.target_new is None]
        if missing:
            raise ValueError(f"{len(missing)} of {n} facts have no target_new (first: {missing[0]!r}), so the "
                             "answers of the user-given corrupted prompts are unknown; give corrupted_answers= "
                             "(one answer per fact: the answer its corrupted prompt should give) or records with "
                             "target_new")
        return [r.target_new for r in records]
    if isinstance(corrupted_answers, str):
        raise ValueError(f"corrupted_answers must be a list of answers (one per fact), not the string "
                         f"{corrupted_answers[:40]!r}; e.g. corrupted_answers=[{corrupted_answers[:40]!r}] * {n}")
    answers = list(corrupted_answers)
    if len(answers) != n:
        raise ValueError(f"{n} facts but {len(answers)} corrupted_answers; give one answer per fact (the answer of "
                         "its corrupted prompt), in the order of the facts")
    bad = [i for i, a in enumerate(answers) if not isinstance(a, str) or not a.strip()]
    if bad:
        raise ValueError(f"corrupted_answers[{bad[0]}] is {answers[bad[0]]!r}, not a non-empty answer string "
                         f"({len(bad)} such item(s))")
    return answers


def _group(r: FactRecord) -> tuple[str, str]:
    """Facts that may corrupt each other: the same relation (the same template without one)."""
    return ("relation", r.relation) if r.relation else ("template", r.template)


class _PartnerChooser:
    """Chooses, per fact, an aligned corrupting subject (pool index ``j``: the dataset's facts, then ``partners``).

    The first choice consumes the shared seeded RNG exactly as a plain "random same-length
    subject with a different answer" choice would, so data without alignment problems get the
    same pairs as before; further tries use a per-fact RNG.
    """

    def __init__(self, model, records, clean: PromptBatch, clean_ans, extra, first_token, seed: int) -> None:
        self.model, self.records, self.seed = model, records, seed
        n = len(records)
        known = {(r.subject, _group(r)) for r in records}
        extra = [p for p in extra if (p.subject, _group(p)) not in known]
        self.pool = records + extra
        self.ans = list(clean_ans) + [first_token(p.answer) for p in extra]
        self.span: dict[str, tuple[int, int, int, tuple[int, ...]]] = {}  # length, subject first/last, its tokens
        self._remember(records, clean)
        n_subj = (clean.subject_last - clean.subject_first + 1).tolist()
        if extra:
            enc = encode_records(model, extra)
            self._remember(extra, enc)
            n_subj += (enc.subject_last - enc.subject_first + 1).tolist()
        self.n_subj = n_subj
        self.n = n
        self.groups: dict[tuple[str, str], list[int]] = {}
        for j, r in enumerate(self.pool):
            self.groups.setdefault(_group(r), []).append(j)
        self.rng = random.Random(seed)
        self.reasons: dict[int, str] = {}

    def _remember(self, recs, enc: PromptBatch) -> None:
        for k, (r, l, f, e) in enumerate(zip(recs, enc.lengths.tolist(), enc.subject_first.tolist(),
                                             enc.subject_last.tolist())):
            self.span[r.prompt] = (l, f, e, tuple(enc.tokens[k, f:e + 1].tolist()))

    def subject(self, j: int) -> str:
        return self.pool[j].subject

    def answer(self, j: int) -> int:
        return self.ans[j]

    def why(self, i: int) -> str:
        return self.reasons.get(i, "no partner")

    def kind(self, i: int) -> str:
        """``"partner"`` (no candidate subject at all) or ``"aligned"`` (no swap keeps the alignment)."""
        return "aligned" if self.reasons.get(i, "").startswith("none of") else "partner"

    def _options(self, i: int) -> list[int]:
        r = self.records[i]
        return [j for j in self.groups[_group(r)] if self.ans[j] != self.ans[i] and self.pool[j].subject != r.subject]

    def _candidates(self, i: int, options: list[int]) -> Iterator[int]:
        own = [j for j in options if j < self.n]
        pref = [j for j in own if self.n_subj[j] == self.n_subj[i]]
        first = None
        if pref:  # the plain choice (shared RNG, as without alignment problems)
            first = self.rng.choice(pref)
            yield first
        rng = random.Random(self.seed * 1_000_003 + i)
        for tier in (pref, [j for j in own if j not in pref],
                     [j for j in options if j >= self.n and self.n_subj[j] == self.n_subj[i]],
                     [j for j in options if j >= self.n and self.n_subj[j] != self.n_subj[i]]):
            rest = [j for j in tier if j != first]
            rng.shuffle(rest)
            yield from rest

    def _aligned(self, i: int, j: int, budget: list[int]) -> bool:
        r = self.records[i]
        swapped = r.with_subject(self.pool[j].subject)
        key = swapped.prompt
        if key not in self.span:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            enc = tokenize_prompts(self.model, [key], subject_spans=[swapped.subject_span], device="cpu")
            self._remember([swapped], enc)
        # same positions, other subject tokens: two subjects that encode alike (e.g. both to <unk>, with a
        # tokenizer that lacks their words) made a corrupted prompt identical to the clean one, a pair
        # whose patching effect is zero by construction
        return self.span[key][:3] == self.span[r.prompt][:3] and self.span[key][3] != self.span[r.prompt][3]

    def choose(self, i: int) -> int | None:
        """Pool index of the corrupting subject of fact ``i`` (``None``: no aligned partner)."""
        options = self._options(i)
        if not options:
            self.reasons[i] = "no other subject of the same relation with a different first answer token"
            return None
        budget = [MAX_SWAP_TRIES + 1]
        for j in self._candidates(i, options):
            if self._aligned(i, j, budget):
                return j
        self.reasons[i] = (f"none of the {len(options)} subject(s) of the same relation with a different answer keeps the "
                           "same token length and subject positions when swapped in while changing the subject's "
                           "tokens (subjects of another token count, a tokenizer merging across the subject "
                           "boundary, or subjects that encode alike, e.g. to <unk> with another model's tokenizer)")
        return None


def patching_metric(logits: Float[Tensor, "batch d_vocab"], pairs: PatchingPairs, metric: PatchingMetric = "logit_diff") -> Float[Tensor, "batch"]:
    """Per-example metric from final-position logits.

    ``logit_diff``: ``logit[clean answer] - logit[corrupted answer]``; ``prob``: softmax
    probability of the clean answer.
    """
    b = torch.arange(logits.shape[0], device=logits.device)
    ca = pairs.clean_answer.to(logits.device)
    if metric == "logit_diff":
        return logits[b, ca] - logits[b, pairs.corrupted_answer.to(logits.device)]
    if metric == "prob":
        return torch.softmax(logits.float(), dim=-1)[b, ca]
    raise ValueError(f"unknown metric {metric!r}; use 'logit_diff' or 'prob'")
