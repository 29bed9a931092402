"""Reading a model's residual stream through the lens: each layer's ``resid_post`` at the final
prompt token, (optionally mapped, then) through the final norm and unembedding.

:func:`lens_scores` reads a list of prompts at the chosen layers (:class:`LensScores`), and
``_Read`` holds the readings of a task's forget, maintain (and retain) prompts with the
per-fact views the lens attack needs. What the lens reads and how the attack uses it is
described in :mod:`factlens.evaluation.logit_lens`. Split from
:mod:`factlens.evaluation.logit_lens` to keep it small; that module imports these names back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from factlens.components import resid_hook
from factlens.evaluation.attacks import _task_items
from factlens.prefix import residual_after_prefix
from factlens.progress_bars import progress_bar
from factlens.tokens import answer_token_ids, iter_batches, scoring_logits, tokenize_prompts, unique_argmax

if TYPE_CHECKING:
    from factlens.data.formats import FormattedPrompt
    from factlens.evaluation.config import EvalConfig

__all__ = ["Translate", "LensScores", "lens_layers", "lens_scores"]

#: A map applied to a layer's residual before the final norm and unembedding (``(layer, resid) ->
#: resid``, same shape): ``None`` in the logit lens, a fitted affine map in
#: :mod:`~factlens.evaluation.linear_lens`.
Translate = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LensScores:
    """The lens read at every layer for a list of prompts (rows: prompts, columns: layers).

    Attributes:
        layers: The read layers.
        answer_wins: The answer's first token has the largest logit among the candidates'
            first tokens (NaN for a prompt whose candidates share a first token).
        target_wins: Same for the edit target (NaN without one, or when ambiguous).
        p_answer: The answer's probability among the candidates' first tokens.
        answer_rank: Rank of the answer's first token in the whole vocabulary (0 = top).
        winner: Index into the prompt's candidates of the one that wins (-1 when ambiguous, or
            where candidates tie at the top at that layer: no answer).
    """

    layers: tuple[int, ...]
    answer_wins: np.ndarray
    target_wins: np.ndarray
    p_answer: np.ndarray
    answer_rank: np.ndarray
    winner: np.ndarray

    @property
    def ambiguous(self) -> np.ndarray:
        """Prompts whose candidates share a first token (not scored)."""
        return np.isnan(self.answer_wins[:, 0]) if self.answer_wins.size else np.zeros(0, bool)


def lens_layers(model, layers: Sequence[int] | None) -> list[int]:
    """``layers`` checked against the model (``None``: every layer), sorted, without repeats.

    Raises:
        ValueError: A layer the model does not have (negative ones included: there is no
            ``blocks.-1`` hook, which surfaced as a bare KeyError of the hook name).
    """
    n = int(model.cfg.n_layers)
    out = list(range(n)) if layers is None else sorted({int(x) for x in layers})
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise ValueError(f"lens layers {bad} do not exist in a model with {n} layers (0 ... {n - 1})")
    return out


def _first_tokens(model, items: Sequence[FormattedPrompt]) -> list[list[int] | None]:
    """Each prompt's candidates' first tokens (``None`` when two candidates share one)."""
    out: list[list[int] | None] = []
    for it in items:
        ids = [answer_token_ids(model, c)[0] for c in it.candidates]
        out.append(ids if len(set(ids)) == len(ids) else None)
    return out


def _read(model, tokens, pos, lengths, layers: list[int]) -> dict[int, torch.Tensor]:
    """``resid_post`` of ``layers`` at ``pos`` of each row (one forward pass, hooks removed after)."""
    store: dict[int, torch.Tensor] = {}
    rows = torch.arange(tokens.shape[0], device=tokens.device)

    def hooks(p: int):  # the prompts' shared prefix runs once; hooks see positions from p on
        def keep(layer: int):
            def hook(act, hook):
                store[layer] = act[rows.to(act.device), (pos - p).to(act.device)].detach()
            return hook
        return [(resid_hook(layer, "post"), keep(layer)) for layer in layers]

    residual_after_prefix(model, tokens, first_read=int(pos.min()), lengths=lengths, stop_at_layer=max(layers) + 1,
                          hooks=hooks)
    return store


def lens_scores(model, items: Sequence[FormattedPrompt], *, layers: Sequence[int], batch_size: int = 16,
                translate: Translate | None = None, desc: str = "logit lens") -> LensScores:
    """Read ``items`` through the logit lens at ``layers`` (see the module docstring); with
    ``translate``, each layer's residual is mapped by it first (a tuned or linear lens).

    Raises:
        ValueError: No layers, or a layer the model does not have.

    Example:
        >>> from factlens.data.formats import format_prompts
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> s = lens_scores(p.model, format_prompts(p.task.forget), layers=[0, 3])
        >>> s.answer_wins.shape, float(s.answer_wins[:, 1].mean()), int(s.answer_rank[:, 1].max())
        ((8, 2), 1.0, 0)
    """
    items, layers = tuple(items), list(layers)
    if not layers:
        raise ValueError("no layers to read through the logit lens")
    lens_layers(model, layers)  # a layer the model lacks: ValueError, not a KeyError of its hook name
    n, nl = len(items), len(layers)
    aw, tw, pa = (np.full((n, nl), np.nan) for _ in range(3))
    rank, win = np.full((n, nl), -1, dtype=np.int64), np.full((n, nl), -1, dtype=np.int64)
    firsts = _first_tokens(model, items)  # per prompt, once: the loop below runs per layer
    answer_ids = [answer_token_ids(model, it.answer)[0] for it in items]
    answer_at = [it.candidates.index(it.answer) for it in items]
    target_at = [it.candidates.index(it.target) if it.target is not None and it.target in it.candidates else None
                 for it in items]
    with torch.no_grad():
        for sl in progress_bar(list(iter_batches(n, batch_size)), desc=desc, leave=False):
            batch = tokenize_prompts(model, [it.prompt for it in items[sl]])
            store = _read(model, batch.tokens, batch.last_pos, batch.lengths, layers)
            for j, layer in enumerate(layers):
                h = store[layer] if translate is None else translate(layer, store[layer])
                logits = scoring_logits(model, h[:, None, :])[:, 0].float()  # float32 in bf16: no rounded ties
                if j == 0:  # the ids once per batch, on the device the logits land on (the same for every layer)
                    answers = torch.tensor(answer_ids[sl], device=logits.device)
                    cands = [None if firsts[i] is None else torch.tensor(firsts[i], device=logits.device)
                             for i in range(sl.start, sl.stop)]
                own = logits.gather(1, answers[:, None])
                rank[sl, j] = (logits > own).sum(1).cpu().numpy()
                for r, i in enumerate(range(sl.start, sl.stop)):
                    if cands[r] is None:
                        continue
                    cand = logits[r, cands[r]].double()
                    best = win[i, j] = unique_argmax(cand)  # -1: a tie at the top, a win for none
                    aw[i, j] = float(best == answer_at[i])
                    pa[i, j] = float(torch.softmax(cand, 0)[answer_at[i]])
                    if target_at[i] is not None:
                        tw[i, j] = float(best == target_at[i])
    return LensScores(tuple(layers), aw, tw, pa, rank, win)


def _fact_mean(items, values: np.ndarray) -> dict[str, float]:
    """Per fact (``record_id``) the mean of ``values`` over its prompts (NaN where none has one)."""
    out: dict[str, list[float]] = {}
    for it, v in zip(items, values):
        out.setdefault(it.record_id, []).append(float(v))
    return {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for k, v in out.items()}


@dataclass(frozen=True)
class _Read:
    """The lens on one model: the task's forget and maintain prompts."""

    items: dict[str, tuple]
    scores: dict[str, LensScores]

    def at(self, split: str, layer_of: dict[str, int], field: str = "answer_wins") -> dict[str, float]:
        """Per fact of ``split`` the value of ``field`` at the layer ``layer_of[record_id]``."""
        s = self.scores[split]
        col = {layer: j for j, layer in enumerate(s.layers)}
        vals = getattr(s, field)
        rows = [vals[i, col[layer_of[it.record_id]]] for i, it in enumerate(self.items[split])]
        return _fact_mean(self.items[split], np.array(rows, dtype=float))

    def curve(self, split: str, field: str = "answer_wins") -> list[float | None]:
        """Per layer the mean over the split's facts (``None`` where no fact has a value)."""
        s = self.scores[split]
        out = []
        for j in range(len(s.layers)):
            v = list(_fact_mean(self.items[split], getattr(s, field)[:, j]).values())
            v = [x for x in v if not np.isnan(x)]
            out.append(float(np.mean(v)) if v else None)
        return out

    def topk(self, split: str, k: int, among: np.ndarray | None = None) -> dict[str, float]:
        """Per fact 1.0 when its answer's first token ranks below ``k`` at some read layer (of the
        layers where ``among`` is true, when given; NaN for a prompt whose candidates share a
        first token: a hit would not say which one is there)."""
        s = self.scores[split]
        ranks = s.answer_rank if among is None else s.answer_rank[:, np.asarray(among, dtype=bool)]
        hit = np.where(s.ambiguous, np.nan, (ranks < k).any(axis=1).astype(float))
        return _fact_mean(self.items[split], hit)

    def log_rank(self, split: str, among: np.ndarray | None = None) -> dict[str, float]:
        """Per fact ``log10(1 + r)``, ``r`` the answer's best vocabulary rank over the read layers
        (those where ``among`` is true; 0: the top token somewhere; NaN when ambiguous)."""
        s = self.scores[split]
        ranks = s.answer_rank if among is None else s.answer_rank[:, np.asarray(among, dtype=bool)]
        best = ranks.min(axis=1).astype(float) if ranks.shape[1] else np.full(len(ranks), np.nan)
        return _fact_mean(self.items[split], np.where(s.ambiguous, np.nan, np.log10(1.0 + best)))

    def topk_curve(self, split: str, k: int) -> list[float | None]:
        """Per layer the share of the split's unambiguous prompts whose answer ranks below ``k``."""
        s = self.scores[split]
        hit = (s.answer_rank[~s.ambiguous] < k).astype(float)
        return [float(hit[:, j].mean()) if len(hit) else None for j in range(len(s.layers))]


def _read_task(model, task, config: EvalConfig, layers: list[int], guard: bool, translate: Translate | None = None,
               desc: str = "logit lens") -> _Read:
    from factlens.data.formats import format_prompts

    items = {s: tuple(v) for s, v in _task_items(task, config, "default").items()}
    if guard:
        items["retain"] = tuple(format_prompts(task.retain, "default", seed=config.seed, n_shots=config.n_shots))
    return _Read(items, {s: lens_scores(model, v, layers=layers, batch_size=config.batch_size, translate=translate,
                                        desc=desc) if v else
                         LensScores(tuple(layers), *(np.zeros((0, len(layers))) for _ in range(3)),
                                    *(np.zeros((0, len(layers)), dtype=np.int64) for _ in range(2)))
                         for s, v in items.items()})
