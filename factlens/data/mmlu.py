"""MMLU: general-knowledge multiple choice, a side-effect check for edited models.

:func:`load_mmlu` reads the official MMLU CSVs (headerless: question, A, B, C, D, answer
letter; one file per subject such as ``abstract_algebra_dev.csv``) from a local folder or
file, or a Hugging Face dataset (``"cais/mmlu:all"``, ``"tinyBenchmarks/tinyMMLU"``).
:func:`mmlu_accuracy` asks each question with the standard prompt

.. code-block:: text

    The following are multiple choice questions (with answers) about {subject}.

    {question}
    A. ...
    B. ...
    C. ...
    D. ...
    Answer:

(optionally preceded by solved same-subject examples) and takes the argmax over the tokens
``" A"``, ``" B"``, ``" C"``, ``" D"``. Chance (:attr:`MMLUResult.chance`) is the larger of 0.25
and the accuracy of always giving the most frequent answer letter of the questions asked.
"""

from __future__ import annotations

import csv
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from factlens.files import looks_local
from factlens.progress_bars import progress_bar
from factlens.tokens import (PromptBatch, _encode, _pad_id, answer_token_ids, final_logits, length_batches,
                             tokenize_prompts, unique_argmax)

__all__ = ["MMLUQuestion", "MMLUResult", "load_mmlu", "mmlu_prompt", "mmlu_accuracy", "MMLU_CHANCE"]

LETTERS = ("A", "B", "C", "D")
MMLU_CHANCE = 0.25
_SPLIT_SUFFIXES = ("_dev", "_val", "_test", "_auxiliary_train")


@dataclass(frozen=True)
class MMLUQuestion:
    """One MMLU question.

    Attributes:
        subject: Subject id, e.g. ``"abstract_algebra"``.
        question: The question text.
        choices: The four answer options.
        answer_index: Index of the correct option (0-3).
    """

    subject: str
    question: str
    choices: tuple[str, ...]
    answer_index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
        if len(self.choices) != 4:
            raise ValueError(f"an MMLU question needs 4 choices, got {len(self.choices)}: {self.question[:60]!r}")
        if not 0 <= self.answer_index < 4:
            raise ValueError(f"answer_index must be 0-3, got {self.answer_index}")

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer_index]


def _subject_of(path: Path) -> str:
    stem = path.stem
    for suf in _SPLIT_SUFFIXES:
        if stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


def _read_csv(path: Path) -> list[MMLUQuestion]:
    """The questions of one headerless MMLU CSV. Errors name the physical line a bad record ends on
    (questions may span lines); ``utf-8-sig`` drops the byte-order mark of Excel's "CSV UTF-8", which
    otherwise began the first question."""
    subject = _subject_of(path)
    out: list[MMLUQuestion] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if row:
                    _check_row(row, f"{path}:{reader.line_num}", first=not out)
                    out.append(MMLUQuestion(subject, row[0], tuple(row[1:5]), LETTERS.index(row[5].strip())))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); save the file as UTF-8") from e
    return out


def _check_row(row: list[str], where: str, *, first: bool) -> None:
    """Raise a ``ValueError`` saying what is wrong with an MMLU CSV row (``where``: file and line): the
    column count, a header row (MMLU CSVs have none) or the answer letter (upper-case A-D)."""
    if len(row) != 6:
        raise ValueError(f"{where}: expected 6 columns (question, A, B, C, D, answer letter A-D), got {len(row)} "
                         f"columns ending in {row[-1][:20]!r}")
    answer = row[5].strip()
    if answer in LETTERS:
        return
    header = answer.lower() in ("answer", "target", "label") or [c.strip().upper() for c in row[1:5]] == list(LETTERS)
    if first and header:
        raise ValueError(f"{where}: {row[:6]!r} looks like a header row, but MMLU CSVs have none (each row is a "
                         "question, its options A-D and the answer letter); delete the header row")
    hint = " (upper case: MMLU's letters are A, B, C, D)" if answer.upper() in LETTERS else ""
    raise ValueError(f"{where}: the answer letter (6th column) must be one of A, B, C, D, got {row[5][:20]!r}{hint}")


def _from_datasets(name: str, split: str) -> list[MMLUQuestion]:
    repo, _, config = name.partition(":")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise ImportError("loading MMLU from the Hugging Face Hub needs the 'datasets' package") from e
    try:
        rows = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:
        raise OSError(f"could not load MMLU dataset {name!r} split {split!r} ({type(e).__name__}: {e}); the Hub may be "
                      "unreachable: pass a local folder of MMLU CSVs instead (e.g. '../shared/data/mmlu/dev')") from e
    out = []
    for r in rows:
        ans = r["answer"]
        idx = LETTERS.index(ans.strip()) if isinstance(ans, str) else int(ans)
        out.append(MMLUQuestion(str(r.get("subject", "") or "general"), r["question"], tuple(r["choices"]), idx))
    return out


def _stratified(qs: list[MMLUQuestion], n: int, seed: int) -> list[MMLUQuestion]:
    """``n`` questions spread evenly over subjects (round robin over shuffled subjects)."""
    rng = random.Random(seed)
    by: dict[str, list[MMLUQuestion]] = {}
    for q in qs:
        by.setdefault(q.subject, []).append(q)
    subjects = sorted(by)
    rng.shuffle(subjects)
    for s in subjects:
        rng.shuffle(by[s])
    out: list[MMLUQuestion] = []
    k = 0
    while len(out) < n:
        added = False
        for s in subjects:
            if k < len(by[s]) and len(out) < n:
                out.append(by[s][k])
                added = True
        if not added:
            break
        k += 1
    return out


def load_mmlu(source: str | Path, *, n: int | None = None, seed: int = 0, split: str = "test") -> list[MMLUQuestion]:
    """Load MMLU questions.

    Args:
        source: A folder of MMLU CSVs (every ``*.csv`` in it), one CSV file (``~`` is
            expanded, as the runner's input checks do), or a Hugging Face dataset name ``"name"`` / ``"name:config"`` (``"cais/mmlu:all"``,
            ``"tinyBenchmarks/tinyMMLU"``).
        n: Number of questions (``None``: all). Questions are then spread evenly over the
            subjects (with 57 subjects, ``n=57`` takes one question per subject). More than the
            source holds gives all of them, with a ``UserWarning`` saying how many.
        seed: Seed of the sampling.
        split: Dataset split for Hugging Face sources.

    Returns:
        The questions (ordered by subject when ``n`` is ``None``).

    Raises:
        FileNotFoundError: A local path that does not exist (and is no dataset name).
        OSError: A dataset name that cannot be loaded (e.g. no network).
        ValueError: Malformed CSV rows (the message names the file and line: column count,
            header row, answer letter), a file that is not UTF-8, or a folder with no CSV files.
    """
    p = Path(source).expanduser()
    if p.is_dir():
        files = sorted(p.glob("*.csv"))
        if not files:
            raise ValueError(f"{p} has no .csv files; expected the MMLU CSVs (e.g. abstract_algebra_dev.csv)")
        qs = [q for f in files for q in _read_csv(f)]
    elif p.is_file():
        qs = _read_csv(p)
    elif _dataset_name(str(source)):
        qs = _from_datasets(str(source), split)
    else:
        raise FileNotFoundError(f"MMLU source {str(source)!r} does not exist; pass a folder of MMLU CSVs or a dataset "
                                "name such as 'cais/mmlu:all'")
    if not qs:
        raise ValueError(f"no MMLU questions found in {source!r}")
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1 or None, got {n}")
        if n > len(qs):  # returned all of them silently: a reader of n=1000 thought 1000 were asked
            warnings.warn(f"MMLU: asked for n={n} questions but {source!r} holds only {len(qs)}; using all {len(qs)}",
                          UserWarning, stacklevel=2)
        qs = _stratified(qs, n, seed)
    return qs


def _dataset_name(source: str) -> bool:
    """Whether a source that is no local file or folder reads as a Hugging Face dataset name
    (``"owner/name"``, optionally ``":config"``): a missing local path such as ``data/mmlu/dev``
    (two slashes) or ``dev.csv`` was sent to the Hub and failed there, far from the typo.

    Example:
        >>> [_dataset_name(s) for s in ("cais/mmlu:all", "data/mmlu/dev", "./mmlu", "mmlu/dev.csv")]
        [True, False, False, False]
    """
    return "/" in source and not looks_local(source)


def _block(q: MMLUQuestion, with_answer: bool) -> str:
    lines = [q.question.strip()] + [f"{L}. {c}" for L, c in zip(LETTERS, q.choices)]
    lines.append("Answer:" + (f" {q.answer_letter}" if with_answer else ""))
    return "\n".join(lines)


def mmlu_prompt(question: MMLUQuestion, shots: Sequence[MMLUQuestion] = ()) -> str:
    """The standard MMLU prompt (header, solved ``shots``, then the question).

    Example:
        >>> q = MMLUQuestion("high_school_physics", "2+2?", ("3", "4", "5", "6"), 1)
        >>> print(mmlu_prompt(q))
        The following are multiple choice questions (with answers) about high school physics.
        <BLANKLINE>
        2+2?
        A. 3
        B. 4
        C. 5
        D. 6
        Answer:
    """
    head = f"The following are multiple choice questions (with answers) about {question.subject.replace('_', ' ')}."
    return "\n\n".join([head] + [_block(s, True) for s in shots] + [_block(question, False)])


@dataclass(frozen=True)
class MMLUResult:
    """Per-question MMLU results.

    Attributes:
        questions: The questions asked.
        predicted: Index of the most likely letter per question (-1 where letters tie at the
            top: no answer, scored wrong).
        p_correct: Probability of the correct letter normalized over A-D.
        n_shots: Solved examples asked for per prompt.
        truncated: Number of prompts cut (from the left) to the model's context length.
        shots_used: Solved examples each prompt actually holds: fewer than ``n_shots`` where
            the pool has fewer other questions of the subject (the dev split has 5 per
            subject, so at most 4 besides the question itself).
    """

    questions: tuple[MMLUQuestion, ...]
    predicted: np.ndarray
    p_correct: np.ndarray
    n_shots: int = 0
    truncated: int = 0
    shots_used: tuple[int, ...] = ()

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == np.array([q.answer_index for q in self.questions], dtype=int)

    @property
    def n(self) -> int:
        return len(self.questions)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.n else float("nan")

    @property
    def chance(self) -> float:
        """Uniform guessing (1/4), or the accuracy of always giving the same letter where that is
        higher (as for every multiple-choice format, :func:`factlens.data.known.prompt_chance`:
        the dev set's answers are not uniform over A-D, and a letter preference is not knowledge)."""
        if not self.n:
            return MMLU_CHANCE
        letters = np.bincount([q.answer_index for q in self.questions], minlength=4)
        return max(MMLU_CHANCE, float(letters.max() / self.n))

    @property
    def stderr(self) -> float:
        return math.sqrt(max(self.accuracy * (1 - self.accuracy), 1e-12) / max(self.n, 1))

    @property
    def at_chance(self) -> bool:
        """Accuracy below chance + 2 binomial standard errors."""
        c = self.chance
        return bool(self.accuracy < c + 2 * math.sqrt(c * (1 - c) / max(self.n, 1)))

    def by_subject(self) -> dict[str, dict[str, float]]:
        out: dict[str, list[bool]] = {}
        for q, c in zip(self.questions, self.correct):
            out.setdefault(q.subject, []).append(bool(c))
        return {s: {"n": len(v), "accuracy": float(np.mean(v))} for s, v in sorted(out.items())}


def _letter_ids(model) -> list[int]:
    ids = []
    for L in LETTERS:
        t = answer_token_ids(model, L)
        if len(t) != 1:
            raise ValueError(f"' {L}' is not a single token for this tokenizer ({t}); MMLU letter scoring needs it")
        ids.append(t[0])
    return ids


def _fit_context(model, batch):
    """Cut prompts longer than ``n_ctx`` from the left, keeping BOS; returns (batch, n_cut)."""
    n_ctx = int(model.cfg.n_ctx)
    if batch.tokens.shape[1] <= n_ctx:
        return batch, 0
    keep_bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    toks, lengths = batch.tokens, batch.lengths.clone()
    out = torch.full((toks.shape[0], n_ctx), _pad_id(model), dtype=toks.dtype, device=toks.device)
    n_cut = 0
    for i in range(toks.shape[0]):
        L = int(lengths[i])
        row = toks[i, :L]
        if L > n_ctx:
            row = torch.cat([row[:1], row[L - n_ctx + 1:]]) if keep_bos else row[L - n_ctx:]
            n_cut += 1
        out[i, : len(row)] = row
        lengths[i] = len(row)
    return PromptBatch(out, lengths, batch.subject_first, batch.subject_last, batch.prompts), n_cut


def mmlu_accuracy(model, questions: Sequence[MMLUQuestion], *, n_shots: int = 0,
                  shots_pool: Sequence[MMLUQuestion] | None = None, batch_size: int = 8) -> MMLUResult:
    """Ask each question and take the argmax over the letters ``" A"`` .. ``" D"``.

    Args:
        model: A ``HookedTransformer`` with a tokenizer.
        questions: The questions.
        n_shots: Solved examples per prompt (>= 0), taken from ``shots_pool`` (default: the
            questions themselves) in the same subject, never the question itself.
        shots_pool: Where few-shot examples come from.
        batch_size: Prompts per forward pass.

    Returns:
        The per-question results (``.accuracy``, ``.n``, ``.at_chance``).

    Example:
        >>> from factlens.testing import tiny_model
        >>> q = MMLUQuestion("sports", "Which sport does Tiger Woods play?", ("golf", "football", "baseball", "basketball"), 0)
        >>> r = mmlu_accuracy(tiny_model(), [q])
        >>> r.n, r.chance  # one question: always giving its letter answers all of them
        (1, 1.0)
    """
    questions = tuple(questions)
    if not questions:
        raise ValueError("no MMLU questions given")
    if n_shots < 0:  # acted as a slice: -1 gave all but one of the pool's questions
        raise ValueError(f"n_shots must be >= 0 (solved examples per prompt), got {n_shots}")
    pool = list(shots_pool) if shots_pool is not None else list(questions)
    letters = torch.tensor(_letter_ids(model))
    prompts, used = [], []
    for q in questions:
        shots = [s for s in pool if s.subject == q.subject and s != q][:n_shots] if n_shots else []
        prompts.append(mmlu_prompt(q, shots))
        used.append(len(shots))
    short = sum(u < n_shots for u in used)
    if short:
        warnings.warn(f"MMLU: {short} of {len(questions)} prompts hold fewer than the {n_shots} solved examples asked "
                      f"for (between {min(used)} and {max(used)}): the pool has too few other questions of their "
                      "subjects (pass shots_pool=<a larger split>, or ask for fewer shots)", UserWarning, stacklevel=2)
    lengths = [len(_encode(model, p)[0]) for p in prompts]
    pred = np.zeros(len(questions), dtype=int)
    pc = np.zeros(len(questions))
    truncated = 0
    with torch.no_grad():
        for idx in progress_bar(length_batches(lengths, batch_size), desc="MMLU", leave=False):
            batch, cut = _fit_context(model, tokenize_prompts(model, [prompts[i] for i in idx]))
            truncated += cut
            logits = final_logits(model, batch).float()
            lp = torch.log_softmax(logits[:, letters.to(logits.device)], dim=-1).cpu()
            if not bool(torch.isfinite(lp).all()):  # argmax would answer "A" to every broken row
                raise FloatingPointError("the model gave non-finite scores for MMLU answer letters: its weights or "
                                         "activations are not finite (a diverged edit or attack?); such questions "
                                         "cannot be scored, and argmax would answer 'A' to each of them")
            for j, i in enumerate(idx):
                pred[i] = unique_argmax(lp[j])  # -1: letters tied at the top, no answer (argmax said "A")
                pc[i] = float(lp[j, questions[i].answer_index].exp())
    return MMLUResult(questions, pred, pc, n_shots, truncated, tuple(used))
