"""The relearning attack (Deeb & Roger 2024; paper appendix A.8).

The forget set is split in two seeded halves. A LoRA adapter on every weight matrix of
the transformer blocks (``W_Q``, ``W_K``, ``W_V``, ``W_O`` including the grouped
``_W_K``/``_W_V``, ``W_in``, ``W_gate``, ``W_out``; rank ``RelearningConfig.rank`` capped at
each matrix's rank, see :mod:`factlens.evaluation.lora`) is trained for ``RelearningConfig.steps`` steps
on half A's **true** answers, plus a retain loss on ``task.retain`` and an SFT
(next-token) loss on general text, both with weight 1. Forget accuracy (the true answer
wins among the candidates) is then measured on the held-out half B: if a method only
suppressed the facts, relearning some of them brings the others back.

Memory: the attack runs on a *structural* copy of the model (:func:`shared_copy`: new module
objects that share the model's weight tensors, read-only), so the user's model object is
never touched and the weights are not duplicated. The adapters are the extra memory: for
rank 512 on Gemma 3 270M about 117M parameters, ~1.9 GB in float32 with their gradients and
AdamW state (plus the model itself, ~1.8 GB with its untied unembedding). The weights never
receive gradients (only the adapters are differentiated, with :func:`torch.autograd.grad`)
and the optimizer only holds the adapters, so the shared tensors stay bitwise equal.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from factlens.config import ConfigBase, check_numbers
from factlens.data.formats import format_prompts
from factlens.data.records import FactDataset
from factlens.editing.training import with_gradients
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached
from factlens.evaluation.lora import DEFAULT_TARGETS, LoraHandle, add_lora
from factlens.data.text import load_texts, passages_without, token_chunks
from factlens.editing.losses import answer_logprob_grad, sft_loss, sft_positions
from factlens.evaluation.result import SuiteResult
from factlens.evaluation.relearning_collapse import chance as _chance
from factlens.evaluation.relearning_collapse import collapse_checks
from factlens.evaluation.relearning_collapse import wins as _wins
from factlens.evaluation.relearning_metrics import _fact_rows, _flags, _metric, _metrics, _roles, _selectivity_metrics
from factlens.evaluation.standard import score_items, scores_key
from factlens.memory import checkpointed_blocks
from factlens.progress_bars import progress_bar
from factlens.prompt_scores import PromptScores

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests RelearningConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["run_relearning", "relearn", "Relearned", "RelearningConfig", "split_halves", "forget_scores", "shared_copy",
           "BEFORE_ATTACK_METRICS"]

#: Metrics whose ``baseline`` is the evaluated (edited) model before the attack, not the unedited
#: model (which :func:`run_relearning` does not score on them): report and plots must not call it "original".
BEFORE_ATTACK_METRICS: frozenset[str] = frozenset({"relearn_edit_accuracy", "relearn_maintain_accuracy"})


@dataclass(frozen=True)
class RelearningConfig(ConfigBase):
    """Settings of the relearning attack (``EvalConfig.relearning``); its SFT text is ``EvalConfig.text``.

    Attributes:
        steps: Optimizer steps.
        rank: LoRA rank (capped at each matrix's rank).
        lr: Learning rate (AdamW, no weight decay): 1e-4 for Gemma 3 270M, ~1e-3 for the
            planted test model (measured: docs/reproduction.md, "Robustness"). On Gemma 3 270M
            3e-4 and 1e-3 collapse the relearned model onto one answer instead of recovering
            more facts (sweep: docs/attacks.md, benchmarks/relearning_sweep.py).
        batch_size: Facts per step (and as many retain facts).
        text_batch_size: General-text chunks per step (the SFT term; ``EvalConfig.text`` says
            which text). A training setting: it changes the attack, so it is its own field
            (before 2026-12-03 it was ``EvalConfig.text.batch_size``, documented as a
            forward-pass size; run folders of then resume with that value).
        both_halves: Attack twice, once trained on each half of the forget set and scored on
            the other (cross-fitting), so that every forget fact is a held-out fact once: twice
            the held-out n (and the training cost). ``False``: train on half A, hold out half B.
            The runner's CPU preset turns it off to keep the main job's time (docs/performance.md).
        checkpoint: Recompute each block's activations in the backward pass instead of keeping
            them (:func:`factlens.memory.checkpointed_blocks`): the same gradients and results
            (bitwise on CPU), a lower peak memory (the attack is the main job's peak), about one
            more forward pass per step (docs/performance.md).
        lora_forward: How the adapters enter the model (:func:`~factlens.evaluation.lora.add_lora`):
            ``"factored"`` adds ``(x @ A) @ B`` beside the frozen weights, ``"merged"`` builds
            ``W + A @ B`` for every adapted matrix on each step (one more copy of the block
            weights with its gradient). The same attack up to float rounding; the measured
            memory and time of both are in docs/performance.md. Models whose blocks the
            factored hooks cannot reach (see :mod:`factlens.evaluation.lora_factored`) need
            ``"merged"``.
        retain_avoids_subjects: Leave out of the retain loss the retain facts about a forget or
            maintain fact's subject, as the general-text passages naming one are left out (and
            as the unrelated fine-tuning attack does): "The official language of Italy is"
            trained beside a held-out "The capital of Italy is" can teach the held-out fact
            back, which the attack would count as recovered. (On sports tasks no retain fact
            shares a subject; CounterFact's 16-fact task kept 12 of 63.) Run folders written
            before 2026-12-05 resume with ``False``, as those versions trained.

    Example:
        >>> RelearningConfig(steps=10).replace(lr=1e-3)  # doctest: +NORMALIZE_WHITESPACE
        RelearningConfig(steps=10, rank=512, lr=0.001, batch_size=8, text_batch_size=4, both_halves=True,
                         checkpoint=True, lora_forward='factored', retain_avoids_subjects=True)
    """

    steps: int = 20
    rank: int = 512
    lr: float = 1e-4
    batch_size: int = 8
    text_batch_size: int = 4
    both_halves: bool = True
    checkpoint: bool = True
    lora_forward: str = "factored"
    retain_avoids_subjects: bool = True

    def __post_init__(self) -> None:
        from factlens.evaluation.lora import LORA_FORWARDS

        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        if self.lora_forward not in LORA_FORWARDS:
            raise ValueError(f"RelearningConfig.lora_forward must be one of {list(LORA_FORWARDS)}, got {self.lora_forward!r}")
        if int(self.steps) < 0:
            raise ValueError(f"RelearningConfig.steps must be >= 0, got {self.steps!r}")
        for name in ("rank", "batch_size", "text_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RelearningConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"RelearningConfig.lr must be > 0, got {self.lr!r}")


# -- shared helpers (also used by the soft-prompt suite) -------------------------------------
def retain_not_about_scored(task) -> FactDataset:
    """``task.retain`` without the facts that are, or are about the subject of, a forget or
    maintain fact: an attack that trains on them could teach the facts it is judged on (also the
    unrelated fine-tuning attack's retain data)."""
    scored = (*task.forget, *task.maintain)
    ids, subjects = {r.id for r in scored}, {r.subject for r in scored}
    return task.retain.filter(lambda r: r.id not in ids and r.subject not in subjects)


def split_halves(facts: FactDataset, *, seed: int) -> tuple[FactDataset, FactDataset]:
    """Seeded split of ``facts`` into half A (about ``ceil(n/2)``, trained on) and half B (held out).

    Facts about one subject stay in one half (:func:`~factlens.data.records.grouped_parts`):
    an attack trained on "The capital of Italy" would otherwise be scored on "The official
    language of Italy", whose activations at the subject are the same. With one fact per subject
    (the sports tasks) this is :meth:`FactDataset.split`'s seeded ``ceil(n/2)`` cut.

    Raises:
        ValueError: Fewer than 2 facts, or every fact is about one subject.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> a, b = split_halves(planted_fact_model().task.forget, seed=0)
        >>> len(a), len(b), set(r.id for r in a).isdisjoint(r.id for r in b)
        (4, 4, True)
    """
    n = len(facts)
    if n < 2:
        raise ValueError(f"the attack needs at least 2 forget facts (one to train on, one held out), got {n}")
    a, b = facts.split((n + 1) // 2, seed=seed, by_subject=True)
    if not len(b):
        raise ValueError(f"all {n} forget facts are about one subject ({facts[0].subject!r}); the attack needs "
                         "held-out facts about subjects it does not train on")
    return a, b


def forget_scores(model, facts: FactDataset, config: EvalConfig) -> PromptScores:
    """Scores of the facts' default prompts (true answer / edit target among the candidates)."""
    return score_items(model, format_prompts(facts, "default", seed=config.seed), config)


def shared_copy(model):
    """A copy of ``model`` whose weights share memory with the original's, frozen.

    The copy has new module objects; each of its parameters is a new ``Parameter`` over the
    original's storage (``p.detach()``) with ``requires_grad=False``, and the tokenizer and the
    buffers (rotary tables, masks: 0.3 GB for Gemma 3 270M at ``n_ctx`` 8192) are the
    original's own objects. Changing the copy's structure (parametrizations, hooks, train/eval
    mode) or its gradient flags leaves the original untouched, and no autograd graph runs
    through the weights; the shared storage must only be read (TransformerLens replaces its
    buffers by assignment, which rebinds the copy's attribute only).

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> c = shared_copy(m)
        >>> c.blocks[0] is not m.blocks[0], c.blocks[0].attn.W_Q.data_ptr() == m.blocks[0].attn.W_Q.data_ptr()
        (True, True)
        >>> c.blocks[0].attn.W_Q.requires_grad, m.blocks[0].attn.W_Q.requires_grad
        (False, True)
    """
    memo: dict[int, Any] = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): b for b in model.buffers()})
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        memo[id(tok)] = tok
    return copy.deepcopy(model, memo)


def _text_chunks(model, config: EvalConfig, avoid_subjects: Sequence[str] = ()) -> tuple[Tensor, str, int]:
    """General-text chunks for the SFT loss (``config.text``: ``source``, ``n_chunks``, ``seq_len``)
    from the passages that name none of ``avoid_subjects``; also returns how many passages were
    dropped (the same rule as the unrelated fine-tuning attack's text)."""
    text = config.text
    texts = load_texts(text.source, seed=config.seed)
    kept = passages_without(texts, avoid_subjects)
    if not kept:
        raise ValueError(f"every passage of the text {text.source or 'builtin'!r} names a subject of the evaluated "
                         "facts, and the SFT loss trains on none of those: give other text (--text-source, or "
                         "EvalConfig(text=TextConfig(source=...))), or call relearn(..., l_sft=0) directly to "
                         "train without the SFT loss (the relearning suite always uses it)")
    chunks = token_chunks(model, kept, seq_len=text.seq_len, n_chunks=text.n_chunks)
    return chunks, f"text:{text.source or 'builtin'}", len(texts) - len(kept)


# -- the attack ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relearned:
    """A relearned copy of a model.

    Attributes:
        model: A :func:`shared_copy` of the attacked model with the trained LoRA adapters
            attached (``lora.remove()`` detaches them; the weights are the original's).
        lora: The adapter handle.
        history: One dict per step: ``step``, ``loss``, ``loss_forget``, ``loss_retain``, ``loss_sft``.
        sft_kind: ``"text:<source>"`` or ``"skipped: ..."``.
        seconds: Training wall time.
    """

    model: Any
    lora: LoraHandle
    history: tuple[dict[str, float], ...] = ()
    sft_kind: str = ""
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def _cycle(n: int, gen: torch.Generator):
    """Indices ``0..n-1`` forever, each pass in a fresh seeded permutation."""
    while True:
        for i in torch.randperm(n, generator=gen).tolist():
            yield i


def _loss(work, fb: list, rb: list, cb: Tensor | None, positions, *, l_retain: float,
          l_sft: float) -> tuple[Tensor, dict[str, float]]:
    """One relearning step's loss: ``-logp`` of the true answers of ``fb`` (+ ``l_retain`` x that of
    the retain facts ``rb``, + ``l_sft`` x the next-token loss on the text chunks ``cb``), and its terms."""
    lp = answer_logprob_grad(work, [r.prompt for r in fb + rb], [r.answer for r in fb + rb])
    loss_f = -lp[: len(fb)].mean()
    loss = loss_f
    rec = {"loss_forget": loss_f.item()}
    if rb:
        loss_r = -lp[len(fb):].mean()
        loss = loss + l_retain * loss_r
        rec["loss_retain"] = loss_r.item()
    if cb is not None:
        loss_s = sft_loss(work, cb, positions)
        loss = loss + l_sft * loss_s
        rec["loss_sft"] = loss_s.item()
    return loss, rec


@with_gradients  # also under a notebook's torch.inference_mode(): enable_grad alone does not leave it
def relearn(model, facts: FactDataset, *, retain: FactDataset | None = None, config: EvalConfig | None = None,
            targets: Sequence[str] = DEFAULT_TARGETS, l_retain: float = 1.0, l_sft: float = 1.0,
            avoid_subjects: Sequence[str] = ()) -> Relearned:
    """Retrain a copy of ``model`` on the true answers of ``facts`` with LoRA adapters.

    Each step uses ``config.relearning.batch_size`` facts (cycling through a seeded
    permutation), the same number of retain facts and ``config.relearning.text_batch_size``
    general-text chunks (SFT); the loss is ``-logp(true answers) + l_retain * -logp(retain answers) + l_sft *
    next-token CE``, optimized with AdamW (``config.relearning.lr``) on the adapters only.

    Args:
        model: The attacked model (not modified: the adapters live on a :func:`shared_copy`).
        facts: Facts whose true answers are retrained.
        retain: Facts kept by the retain loss (``None`` or empty: no retain loss).
        config: ``relearning`` (:class:`RelearningConfig`), ``seed`` and ``text`` (``None``:
            ``EvalConfig()``).
        targets: LoRA targets (see :func:`~factlens.evaluation.lora.add_lora`).
        l_retain: Weight of the retain loss.
        l_sft: Weight of the SFT loss (0 disables it and skips loading text).
        avoid_subjects: Text passages that name any of these (exact substring) are left out of
            the SFT loss, so that general text cannot teach the held-out facts the attack is
            judged on (the relearning suite passes every forget and maintain subject).

    Returns:
        The relearned copy with its adapters and the loss history.

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EvalConfig(relearning=RelearningConfig(steps=2, rank=4))
        >>> r = relearn(p.model, p.task.forget, config=cfg)
        >>> len(r.history), r.model is not p.model
        (2, True)
    """
    from factlens.evaluation.config import or_default

    if len(facts) == 0:
        raise ValueError("relearn needs at least one fact to train on")
    config = or_default(config)
    rc = config.relearning
    t0 = time.perf_counter()
    work = shared_copy(model)
    work.eval()
    lora = add_lora(work, rank=rc.rank, targets=targets, seed=config.seed, forward=rc.lora_forward)
    trainable = lora.parameters()
    opt = torch.optim.AdamW(trainable, lr=rc.lr, weight_decay=0.0)
    chunks, sft_kind, n_dropped = ((None, "skipped: l_sft=0", 0) if l_sft == 0
                                   else _text_chunks(work, config, avoid_subjects))
    gen = torch.Generator().manual_seed(config.seed)
    bs = rc.batch_size
    f_it = _cycle(len(facts), gen)
    r_it = _cycle(len(retain), gen) if retain is not None and len(retain) else None
    c_it = _cycle(len(chunks), gen) if chunks is not None and len(chunks) else None
    history: list[dict[str, float]] = []
    positions = sft_positions(config.text.seq_len, 16, kl=False) if chunks is not None else None
    with torch.enable_grad(), checkpointed_blocks(work, rc.checkpoint):
        for step in progress_bar(range(rc.steps), desc="relearning", leave=False):
            fb = [facts[next(f_it)] for _ in range(min(bs, len(facts)))]
            rb = [retain[next(r_it)] for _ in range(min(bs, len(retain)))] if r_it is not None and l_retain else []
            cb = (chunks[[next(c_it) for _ in range(min(rc.text_batch_size, len(chunks)))]]
                  if c_it is not None else None)
            with parametrize.cached():  # each adapter's W + A @ B is built once per step
                lora.materialize()  # here, outside any checkpointed block
                loss, rec = _loss(work, fb, rb, cb, positions, l_retain=l_retain, l_sft=l_sft)
                grads = torch.autograd.grad(loss, trainable)  # the shared weights get no gradient
            for p, g in zip(trainable, grads):
                p.grad = g
            del grads
            opt.step()
            opt.zero_grad(set_to_none=True)  # the next step's backward must not run beside these gradients
            history.append({"step": step, **rec, "loss": loss.item()})
    meta = {"n_lora_params": lora.n_params, "delta_norm": lora.delta_norm(), "n_train_facts": len(facts),
            "n_dropped_passages": n_dropped}
    return Relearned(work, lora, tuple(history), sft_kind, time.perf_counter() - t0, meta)


# -- the suite -------------------------------------------------------------------------------
def run_relearning(model, task, *, original=None, config: EvalConfig | None = None,
                   baselines: BaselineCache | None = None) -> SuiteResult:
    """Relearn half of the forget set with LoRA and measure forget accuracy on the other half.

    With ``config.relearning.both_halves`` (the default) the attack runs twice, trained on each
    half and scored on the other, so every forget fact is held out once (cross-fitting: the
    held-out metrics have ``n = len(task.forget)``); otherwise once, trained on half A.

    Args:
        model: The evaluated (edited / unlearned) model; not modified.
        task: The task; ``task.forget`` is split in halves A and B (trained on / held out),
            ``task.retain`` feeds the retain loss.
        original: The unedited model; its (un-attacked) forget accuracy on each half is the
            ``baseline`` of the forget metrics (what the model knew before editing).
        config: ``relearning`` (:class:`RelearningConfig`), ``seed``, ``batch_size`` and ``text``
            for the SFT term (``None``: ``EvalConfig()``).

    Returns:
        Metrics (all forget accuracies = true answer wins among the candidates, lower is
        better): ``relearn_forget_accuracy`` (held-out facts after relearning),
        ``relearn_forget_accuracy_before`` (the same facts before), ``relearn_train_accuracy``
        and ``relearn_train_accuracy_before`` (the trained-on facts), ``relearn_edit_accuracy``
        (held out, edit target wins after relearning; inject tasks) and
        ``relearn_maintain_accuracy`` (``task.maintain`` after the attack trained on half A,
        higher is better); the ``baseline`` of these two is the evaluated model before
        relearning. ``relearn_control_bias`` (per held-out fact, the share of its own control
        facts, maintain facts with another answer, that the attack that held it out makes
        give its answer) and ``relearn_selective_recovery`` (the fact's relearned win minus
        that bias: recovery net of an attack that gives the forget answer to everyone;
        :mod:`factlens.evaluation.selectivity`), both with the original model's value as
        baseline and absent when no held-out fact has a control (the controls dealt to each
        fact are in ``extra["selectivity"]``). One per-fact row per forget fact (``half`` "A"/"B", ``held_out``,
        ``answer_wins_before``/``_after``, ``p_answer_before``/``_after``). ``extra`` holds the
        halves' ids, one entry per attack in ``attacks`` (loss history, LoRA size and update
        norm, SFT source), the first attack's loss history as ``history``, and the attack
        budget (``budget``: steps, lr, rank, batch size, training facts per attack, number of
        attacks), ``maintain_collapse`` (``collapsed``: the maintain accuracy after relearning is not above what
        a reader answering like the model, regardless of the athlete, scores, so the relearned forget accuracy is
        not evidence of recovery; ``bar``: the bar used, see :func:`~factlens.evaluation.relearning_collapse.collapse_check`; ``collapsed`` over every attack), and ``at_chance_bar`` (per role, which check flagged its metrics:
        :func:`~factlens.evaluation.standard.chance_flags`).

    Example:
        >>> from factlens.evaluation import EvalConfig
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> cfg = EvalConfig(relearning=RelearningConfig(steps=2, rank=8))
        >>> r = run_relearning(p.model, p.task, config=cfg)
        >>> r["relearn_forget_accuracy_before"].value, r["relearn_forget_accuracy"].value
        (1.0, 1.0)
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default

    config = or_default(config)
    t0 = time.perf_counter()
    half_a, half_b = split_halves(task.forget, seed=config.seed)
    facts = {"A": half_a, "B": half_b}
    halves = {"A": format_prompts(half_a, "default", seed=config.seed), "B": format_prompts(half_b, "default", seed=config.seed)}
    before = {h: score_items(model, items, config) for h, items in halves.items()}
    base = None if original is None else {h: _original_scores(original, model, items, before[h], config, baselines)
                                          for h, items in halves.items()}
    maintain_items = format_prompts(task.maintain, "default", seed=config.seed)
    maintain_before = score_items(model, maintain_items, config) if maintain_items else None
    trained, held, controls, attacks = _attacks(model, task, facts, halves, config)
    held_role, trained_role = _roles(held, before, base), _roles(trained, before, base)
    original_maintain = None if original is None or not maintain_items else _original_scores(
        original, model, maintain_items, maintain_before, config, baselines)
    flags, chance_bar = _flags({"held": held_role, "trained": trained_role}, original_maintain)
    metrics = _metrics(task, held_role, trained_role, flags)
    maintain_after = controls.get(attacks[0]["held_out"])
    if maintain_after is not None:
        metrics.append(_metric("relearn_maintain_accuracy", maintain_after, _wins(maintain_after),
                               baseline=_wins(maintain_before), higher_is_better=True,
                               at_chance=flags.get("maintain", False)))
        sel_metrics, sel_extra = _selectivity_metrics(held, controls, base, original_maintain,
                                                      at_chance=flags["held"], seed=config.seed)
        metrics += sel_metrics
    rows = _fact_rows(before, trained, held, base)
    first = attacks[0]
    extra: dict[str, Any] = {
        "half_a": [r.id for r in half_a], "half_b": [r.id for r in half_b], "history": first["history"],
        "attacks": attacks, "sft": first["sft"], "lora_params": first["n_lora_params"],
        "lora_delta_norm": first["lora_delta_norm"], "train_seconds": sum(a["train_seconds"] for a in attacks),
        "chance": _chance(before["B"]), "at_chance_bar": chance_bar,
        "budget": {"steps": config.relearning.steps, "lr": config.relearning.lr, "rank": config.relearning.rank,
                   "batch_size": config.relearning.batch_size,
                   "text_batch_size": config.relearning.text_batch_size, "n_train_facts": len(half_a),
                   "n_lora_params": first["n_lora_params"], "both_halves": config.relearning.both_halves,
                   "n_attacks": len(attacks), "lora_forward": config.relearning.lora_forward},
        "maintain_collapse": collapse_checks(maintain_before, controls, attacks),
        "selectivity": sel_extra if maintain_after is not None else {"note": "no maintain facts"},
        "note": ("held-out facts: " + ("each half, after the attack trained on the other half"
                                       if config.relearning.both_halves else "half B, after training on half A")
                 + "; baselines: forget/train accuracies = "
                 + ("the original model without relearning" if original is not None
                    else "none (original=None: the unedited model was not scored)")
                 + "; edit and maintain accuracies = the evaluated model before relearning (maintain after the "
                 "attack trained on half A)"),
    }
    return SuiteResult("relearning", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)


def _original_scores(original, model, items: list, evaluated: PromptScores, config: EvalConfig,
                     baselines: BaselineCache | None) -> PromptScores:
    """The original model's scores of ``items`` (``evaluated``, the evaluated model's, when they
    are the same model), cached under the key every suite uses for prompt scores."""
    if original is model:
        return evaluated
    return cached(baselines, scores_key(items, config),
                  lambda: score_items(original, items, config))


def _attacks(model, task, facts: dict[str, FactDataset], halves: dict[str, list], config: EvalConfig):
    """Relearn on half A (and on half B with ``both_halves``); score each half after the attack
    that trained on it (``trained``) and after the one that held it out (``held``), and the
    maintain facts after each attack (``controls``, keyed like ``held`` by the held-out half).
    Returns ``(trained, held, controls, attacks)``."""
    trained: dict[str, PromptScores] = {}
    held: dict[str, PromptScores] = {}
    controls: dict[str, PromptScores] = {}
    attacks = []
    avoid = [r.subject for r in (*task.forget, *task.maintain)]
    retain = retain_not_about_scored(task) if config.relearning.retain_avoids_subjects else task.retain
    for train, out in (("A", "B"), ("B", "A")) if config.relearning.both_halves else (("A", "B"),):
        rel = relearn(model, facts[train], retain=retain, config=config, avoid_subjects=avoid)
        try:
            with parametrize.cached():
                trained[train] = score_items(rel.model, halves[train], config)
                held[out] = score_items(rel.model, halves[out], config)
                if len(task.maintain):
                    controls[out] = forget_scores(rel.model, task.maintain, config)
        finally:
            rel.lora.remove()
        attacks.append({"train": train, "held_out": out, "history": list(rel.history), "train_seconds": rel.seconds,
                        "lora_delta_norm": rel.meta["delta_norm"], "n_lora_params": rel.meta["n_lora_params"],
                        "n_train_facts": len(facts[train]), "sft": rel.sft_kind,
                        "n_dropped_passages": rel.meta["n_dropped_passages"], "n_retain": len(retain),
                        "n_dropped_retain": len(task.retain) - len(retain)})
        del rel  # drop the relearned copy before the next attack
    return trained, held, controls, attacks
