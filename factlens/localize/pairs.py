"""Clean / corrupted prompt pairs and patching metrics shared by the patching methods.

A corrupted prompt is the clean prompt with the subject replaced by **another subject of
the dataset with the same number of tokens and a different answer**, so that positions
align and the logit difference ``logit(clean answer) - logit(corrupted answer)`` is a
meaningful metric. Users can instead pass their own corrupted prompts (same token length).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factlens.data.records import FactRecord
from factlens.tokens import PromptBatch, answer_token_ids, encode_records, tokenize_prompts

__all__ = ["PatchingPairs", "make_pairs", "patching_metric", "Metric"]

Metric = Literal["logit_diff", "prob"]


@dataclass
class PatchingPairs:
    """Aligned clean and corrupted prompts.

    Attributes:
        clean: Clean prompts (right-padded; subject positions located).
        corrupted: Corrupted prompts, token-for-token aligned with ``clean`` (same lengths).
        clean_answer: First token of each clean answer.
        corrupted_answer: First token of the answer of the corrupting subject (differs from
            ``clean_answer``), or of the edit target when the user gave corrupted prompts.
        records: The clean records.
    """

    clean: PromptBatch
    corrupted: PromptBatch
    clean_answer: Int[Tensor, "batch"]
    corrupted_answer: Int[Tensor, "batch"]
    records: list[FactRecord]

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, idx) -> "PatchingPairs":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return PatchingPairs(self.clean.subset(idx), self.corrupted.subset(idx), self.clean_answer[idx.to(self.clean_answer.device)],
                             self.corrupted_answer[idx.to(self.clean_answer.device)], [self.records[i] for i in idx.tolist()])


def make_pairs(
    model,
    dataset: Sequence[FactRecord],
    *,
    corrupted_prompts: Sequence[str] | None = None,
    corrupted_answers: Sequence[str] | None = None,
    seed: int = 0,
    drop_unpaired: bool = True,
) -> PatchingPairs:
    """Build clean/corrupted pairs for patching.

    Args:
        model: The model (its tokenizer decides token lengths).
        dataset: Clean facts.
        corrupted_prompts: Optional user-given corrupted prompts, one per fact, with the same
            token length as the clean prompt.
        corrupted_answers: Answers for the user-given corrupted prompts (default: each
            record's ``target_new``).
        seed: Seed for choosing corrupting subjects.
        drop_unpaired: Facts for which no same-length subject with a different answer
            exists are left out with a warning naming them (``False``: raise instead). At
            least one fact must remain.

    Raises:
        ValueError: When no same-length subject with a different answer exists for a fact,
            or user-given corrupted prompts differ in token length.
    """
    records = list(dataset)
    if not records:
        raise ValueError("the dataset is empty")
    clean = encode_records(model, records)
    clean_ans = [answer_token_ids(model, r.answer)[0] for r in records]
    if corrupted_prompts is not None:
        if len(corrupted_prompts) != len(records):
            raise ValueError(f"{len(records)} facts but {len(corrupted_prompts)} corrupted prompts")
        corr = tokenize_prompts(model, list(corrupted_prompts))
        answers = list(corrupted_answers) if corrupted_answers is not None else [r.target_new for r in records]
        if any(a is None for a in answers):
            raise ValueError("give corrupted_answers= (or records with target_new) for user-given corrupted prompts")
        corr_ans = [answer_token_ids(model, a)[0] for a in answers]
        bad = [i for i in range(len(records)) if int(corr.lengths[i]) != int(clean.lengths[i])]
        if bad:
            raise ValueError(f"corrupted prompts {bad[:5]} have a different token length than their clean prompts; "
                             "patching needs aligned positions")
        corr = PromptBatch(corr.tokens, corr.lengths, clean.subject_first, clean.subject_last, corr.prompts)
    else:
        # group candidate subjects by (subject token count, template) so positions align
        n_subj = (clean.subject_last - clean.subject_first + 1).tolist()
        rng = random.Random(seed)
        pool: dict[int, list[int]] = {}
        for i, n in enumerate(n_subj):
            pool.setdefault(n, []).append(i)
        corr_records, corr_ans, keep, dropped = [], [], [], []
        for i, r in enumerate(records):
            options = [j for j in pool[n_subj[i]] if clean_ans[j] != clean_ans[i]]
            if not options:
                if drop_unpaired:
                    dropped.append(r.subject)
                    continue
                raise ValueError(
                    f"no subject with the same token length ({n_subj[i]}) and a different answer for {r.subject!r}; "
                    "use a larger dataset, pass corrupted_prompts=, or drop_unpaired=True"
                )
            j = rng.choice(options)
            keep.append(i)
            corr_records.append(r.with_subject(records[j].subject))
            corr_ans.append(clean_ans[j])
        if dropped:
            if not keep:
                raise ValueError("no fact has a same-length subject with a different answer to corrupt it with; "
                                 "use a larger dataset or pass corrupted_prompts=")
            warnings.warn(f"patching: left out {len(dropped)} fact(s) without a same-token-length corrupting subject "
                          f"with a different answer: {dropped[:10]}", stacklevel=2)
            records = [records[i] for i in keep]
            clean = clean.subset(keep)
            clean_ans = [clean_ans[i] for i in keep]
        corr = encode_records(model, corr_records)
        bad = [i for i in range(len(records)) if int(corr.lengths[i]) != int(clean.lengths[i])]
        if bad:
            raise ValueError(f"subject swap changed the token length of prompts {bad[:5]} (tokenizer merges across the "
                             "subject boundary); pass corrupted_prompts= for these facts")
    dev = clean.tokens.device
    return PatchingPairs(clean, corr, torch.tensor(clean_ans, device=dev), torch.tensor(corr_ans, device=dev), records)


def patching_metric(logits: Float[Tensor, "batch d_vocab"], pairs: PatchingPairs, metric: Metric = "logit_diff") -> Float[Tensor, "batch"]:
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
