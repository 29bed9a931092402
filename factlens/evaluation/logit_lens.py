"""Logit lens: is an edited fact still readable in the middle of the model?

An edit can remove a fact or only keep it from reaching the output: the answer is still
computed in the residual stream and a late component overrides it. The logit lens reads each
layer's residual stream (``resid_post`` at the final prompt token) through the model's own
final norm and unembedding, as if the layers after it were skipped. If the true answer of a
forgotten fact wins among the candidates at some layer, the edit suppressed it after that
layer; if it wins nowhere, the lens finds nothing (which does not prove removal: a probe or a
relearning attack may still find it). This is the training-free attack of Patil et al. 2023
("Can Sensitive Information Be Deleted From LLMs?", their head projection attack, which reads
intermediate hidden states after ROME deletions) and one of Lynch et al. 2024's eight robustness
evaluations.

Two numbers per model (the edited one, and the original read the same way as the control):

* **Best layer, cross-fitted** (``logit_lens_forget_accuracy`` and the other
  :func:`~factlens.evaluation.attacks.attack_metrics`): the forget facts are split at random
  into ``folds`` parts; each part is scored at the layer where the lens gives the true answer
  most often on the *other* parts (ties: the higher mean candidate probability, then the
  deeper layer), so the choice of the best of ``n_layers`` layers does not inflate the number.
  Maintain facts are split into the same number of parts and each is read at one part's
  layer. The recovery is per fact: the lens at its layer minus the model's own output.
* **Net of bias** (``logit_lens_selective_recovery``, ``logit_lens_control_bias``): each
  forget fact's lens win minus the rate at which the lens at its layer gives that answer to
  the fact's own control facts (maintain facts of other answers;
  :mod:`~factlens.evaluation.selectivity`), as for the relearning, soft-prompt and
  direction-ablation attacks: a layer that answers one candidate for every prompt scores 0.
* **Any layer, top k** (``logit_lens_forget_topk``): the share of forget facts whose answer's
  first token is among the ``top_k`` tokens of the whole vocabulary at *some* eligible layer
  (Patil et al.'s attack succeeds when the answer is among the candidates the lens offers). No
  fitting is involved; the original model's rate at the same layers is its baseline. Eligible
  are the layers that read the task's retain facts better than one answer for everyone would,
  as for the layer choice (``extra["topk_layers"]``, ``extra["eligibility"]``): a layer that carries no fact offers the same tokens for every
  prompt, and on a forget set with one answer (an unlearned sport) those would count as hits.
  ``logit_lens_forget_log_rank`` reads the same ranks without a budget: per fact ``log10(1 + r)``
  of the answer's best rank ``r`` over those layers (0: the top token at some layer; higher: the
  edit pushed it further down), a continuous number that compares more finely than a top k.

Only each candidate's **first token** can be read from one position: facts whose candidates
share a first token are left out of the lens metrics (``extra["n_ambiguous"]``), and for
multi-token candidates the last layer's lens can differ from the ``standard`` suite, which
scores whole answers. The model is never changed and no hook outlives a call.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from factlens.config import ConfigBase, check_numbers, layer_indices
from factlens.evaluation.attacks import TaskScores, attack_metrics, fact_rows, scores_before, suite_settings, task_key
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached
from factlens.evaluation.lens_reading import LensScores, Translate, _Read, _read_task, lens_layers, lens_scores
from factlens.evaluation.result import Metric, SuiteResult

if TYPE_CHECKING:
    from factlens.evaluation.config import EvalConfig

__all__ = ["LogitLensConfig", "LensScores", "lens_scores", "lens_layers", "run_logit_lens", "run_lens", "SELECTIONS",
           "Translate"]

#: How the layer of each fold is chosen on the fitting facts (:class:`LogitLensConfig`).
SELECTIONS: tuple[str, ...] = ("selective", "forget")


@dataclass(frozen=True)
class LogitLensConfig(ConfigBase):
    """Settings of the ``logit_lens`` suite (``EvalConfig(other_suites={"logit_lens": ...})``).

    Attributes:
        layers: Layers whose ``resid_post`` is read (``None``: every layer; the last one is the
            model's own output for single-token candidates).
        top_k: The vocabulary rank below which the answer's first token counts as offered by
            a layer (``logit_lens_forget_topk``; Patil et al.'s candidate set size). Only the
            layers eligible for the layer choice are searched (with ``"forget"``, every layer).
        folds: Cross-fitting folds over the forget facts (``>= 2``: each fact is read at a layer
            chosen on the other folds; ``1``: on the facts themselves, optimistic for the attack).
        selection: How the layer is chosen (:data:`SELECTIONS`): ``"selective"``, the true
            answer's win rate on the fitting forget facts plus its win rate on the task's retain
            facts, among the layers where the lens reads the retain facts better than one
            answer for everyone would (a layer that carries no fact answers one candidate for
            every prompt: it wins on the forget facts of that candidate only, and on that
            candidate's share of the retain facts; when no layer passes that bar, the layers
            above uniform chance, else every layer:
            :func:`~factlens.evaluation.standard.readable`);
            ``"forget"``, forget wins only (also what ``"selective"`` does without retain facts:
            the maintain facts are scored, so they never choose).

    Example:
        >>> LogitLensConfig(layers=[3, 1, 3]).layers
        (1, 3)
    """

    layers: tuple[int, ...] | None = None
    top_k: int = 20
    folds: int = 2
    selection: str = "selective"

    def __post_init__(self) -> None:
        check_numbers(self)
        cls = type(self).__name__
        if self.layers is not None:
            v = layer_indices(self.layers, where=f"{cls}.layers", none_means="every layer")
            object.__setattr__(self, "layers", tuple(sorted(set(v))))
        if self.top_k < 1:
            raise ValueError(f"{cls}.top_k must be an integer >= 1, got {self.top_k!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"{cls}.selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.folds < 1:
            raise ValueError(f"{cls}.folds must be an integer >= 1 (2 or more cross-fit the layer), "
                             f"got {self.folds!r}")


def _rates(read: _Read, split: str, fit: set[str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per layer the answer's win rate and mean candidate probability over ``split``'s scored
    prompts (of the facts ``fit`` only, when given); ``None`` without one."""
    s, items = read.scores.get(split), read.items.get(split, ())
    if s is None:
        return None
    rows = [i for i, it in enumerate(items)
            if (fit is None or it.record_id in fit) and not np.isnan(s.answer_wins[i, 0])]
    return (np.nanmean(s.answer_wins[rows], axis=0), np.nanmean(s.p_answer[rows], axis=0)) if rows else None


def _eligible(read: _Read) -> tuple[np.ndarray, str]:
    """Per read layer: may the attack use it? Those where the lens reads the retain facts better
    than one answer for everyone would, else better than uniform chance, else every layer
    (:func:`~factlens.evaluation.standard.readable`; a layer that reads no fact answers by class
    share); and the bar that decided (``"no retain facts"`` when none were read)."""
    from factlens.evaluation.standard import readable

    n_layers = len(next(iter(read.scores.values())).layers)
    rates = _rates(read, "retain")
    if rates is None:
        return np.ones(n_layers, dtype=bool), "no retain facts"
    items = [it for i, it in enumerate(read.items["retain"]) if not np.isnan(read.scores["retain"].answer_wins[i, 0])]
    return readable(rates[0], items)


def _choose(read: _Read, fit: set[str], layers: list[int], ok: np.ndarray) -> int:
    """The layer where the lens gives the true answer most often on the forget facts ``fit``, plus
    on the retain facts when they were read, among the ``ok`` layers (:func:`_eligible`); ties: the
    higher mean candidate probability, then the deeper layer. The last layer (the model's output)
    when no fitting fact can be scored."""
    rates = _rates(read, "forget", fit)
    if rates is None:
        return layers[-1]
    acc, prob = rates
    guard = _rates(read, "retain")
    if guard is not None:
        acc, prob = acc + guard[0], prob + guard[1]
    acc = np.where(ok, acc, -np.inf)
    return layers[int(np.lexsort((np.arange(len(layers)), prob, acc))[-1])]


def _assign(task, read: _Read, layers: list[int], folds: int, seed: int,
            ok: np.ndarray) -> tuple[dict[str, int], list[dict]]:
    """Per forget and maintain fact the layer it is read at, and per fold its facts and layer."""
    from factlens.evaluation.direction_ablation import fact_folds

    forget = [r.id for r in task.forget]
    parts = fact_folds(forget, folds, seed=seed, subjects=[r.subject for r in task.forget])
    m_ids = [r.id for r in task.maintain]
    m_parts = fact_folds(m_ids, min(folds, len(m_ids)), seed=seed + 1) if m_ids else []
    layer_of: dict[str, int] = {}
    info = []
    for k, held in enumerate(parts):
        fit = set(forget) - set(held) if folds > 1 else set(forget)
        best = _choose(read, fit, layers, ok)
        layer_of.update({rid: best for rid in held})
        maint = m_parts[k] if k < len(m_parts) else ()
        layer_of.update({rid: best for rid in maint})
        info.append({"layer": best, "n_held_out": len(held), "n_maintain": len(maint), "held_out": list(held)})
    return layer_of, info


def _selectivity(read: _Read, wins: dict[str, float], folds: list[dict], seed: int):
    """Each forget fact's lens win at its fold's layer minus the rate at which the lens at that
    layer gives the fact's answer to its control facts (:mod:`~factlens.evaluation.selectivity`:
    what a layer that says one answer to everyone "recovers"); ``None`` without controls or
    without one prompt per fact."""
    from factlens.evaluation.selectivity import selectivity_of

    f_items = [it for it in read.items["forget"] if not np.isnan(wins.get(it.record_id, float("nan")))]
    m_scores = read.scores["maintain"]
    # the prompts with candidates to score (a -1 winner is also a tie at that layer: a control that says nothing)
    m_rows = [i for i in range(len(read.items["maintain"])) if not m_scores.ambiguous[i]]
    m_items = [read.items["maintain"][i] for i in m_rows]
    ids = [it.record_id for it in [*f_items, *m_items]]
    if not f_items or not m_items or len(set(ids)) != len(ids):
        return None
    col = {layer: j for j, layer in enumerate(m_scores.layers)}
    def said_at(i: int, layer: int) -> str | None:
        w = int(m_scores.winner[i, col[layer]])
        return read.items["maintain"][i].candidates[w] if w >= 0 else None  # -1: a tie, no answer

    said = {k: {read.items["maintain"][i].record_id: said_at(i, f["layer"]) for i in m_rows}
            for k, f in enumerate(folds)}
    fold_of = {rid: k for k, f in enumerate(folds) for rid in f["held_out"]}
    return selectivity_of(f_items, [wins[it.record_id] for it in f_items], [fold_of[it.record_id] for it in f_items],
                          said, m_items, seed=seed)


def _scores_at(read: _Read, layer_of: dict[str, int], task) -> TaskScores:
    edit = read.at("forget", layer_of, "target_wins") if task.objective == "inject" else {}
    return TaskScores(read.at("forget", layer_of), {k: v for k, v in edit.items() if not np.isnan(v)},
                      read.at("maintain", layer_of))


def run_logit_lens(model, task, *, original=None, config: EvalConfig | None = None,
                   baselines: BaselineCache | None = None, logit_lens_config: LogitLensConfig | None = None
                   ) -> SuiteResult:
    """Read the edited facts through the logit lens at every layer; is the answer still there?

    Args:
        model: The evaluated (edited) model; not changed.
        task: The task (forget facts with their answers and edit targets; maintain facts).
        original: The unedited model, read the same way at the same layers (the baselines).
        config: Evaluation settings (``batch_size``; ``seed`` draws the folds).
        baselines: Cache of computations on ``original``.
        logit_lens_config: The suite's settings (default: ``config.suite_config("logit_lens")``).

    Returns:
        ``logit_lens_forget_accuracy`` (lower is better), ``logit_lens_forget_recovery`` (the
        lens minus the model's output, per fact), ``logit_lens_edit_accuracy`` (inject tasks),
        ``logit_lens_maintain_accuracy``, each at the cross-fitted layer with the original read
        at the same layer as ``baseline``; ``logit_lens_selective_recovery`` and
        ``logit_lens_control_bias`` (each forget fact's win minus the rate at which the lens at
        its layer gives its answer to its control facts; :mod:`~factlens.evaluation.selectivity`);
        ``logit_lens_forget_topk`` and ``logit_lens_forget_log_rank`` (at the eligible layers,
        ``topk_layers``). ``extra``: ``layers``,
        per-layer curves (``true``, ``target``, ``maintain``, ``topk``; ``baseline`` holds the
        original's) for :func:`~factlens.evaluation.plots.lens_curves`, ``folds``,
        ``n_ambiguous``, ``chance``, ``settings``, ``note`` and ``at_chance_bar`` (per split, which
        check set its at-chance flag: :meth:`~factlens.evaluation.attacks.TaskScores.chance_flags`). One
        per-fact row per forget and maintain fact. A split whose prompts are all ambiguous gives no
        metric, and a warning and ``note`` say so (not an error: a run's other suites go on).

    Raises:
        ValueError: No forget facts, fewer forget facts than folds, or a layer the model lacks.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_logit_lens(p.model, p.task, original=p.model)
        >>> r["logit_lens_forget_accuracy"].value, r["logit_lens_forget_recovery"].value, r.extra["layers"]
        (1.0, 0.0, [0, 1, 2, 3])
    """
    from factlens.evaluation.config import or_default

    config = or_default(config)
    st = suite_settings(config, "logit_lens", LogitLensConfig, logit_lens_config)
    return run_lens(model, task, name="logit_lens", settings=st, original=original, config=config,
                    baselines=baselines)


#: Fits a lens to one model: the map applied to each layer's residual before the unembedding
#: (``None``: the logit lens) and a JSON-ready record of the fit for ``extra``.
FitLens = Callable[[Any], tuple["Translate | None", "dict[str, Any] | None"]]


def run_lens(model, task, *, name: str, settings: LogitLensConfig, config: EvalConfig, fit: FitLens | None = None,
             fit_key: tuple = (), original=None, baselines: BaselineCache | None = None) -> SuiteResult:
    """The lens attack of :func:`run_logit_lens` under the suite name ``name`` (its metrics'
    prefix), with each model's residual first mapped by the lens ``fit`` returns for it: the
    edited model and the original each get their own, as an attacker with the weights would fit
    one (``fit_key`` names the fit's settings in the baseline cache). See the module docstring.
    """
    if fit is not None and not fit_key:
        raise ValueError(f"run_lens({name!r}) with a fit needs a fit_key naming its settings: the original's "
                         "reading is cached under it, and one without would be served to another fit")
    baselines = bound(baselines, model, original)
    t0 = time.perf_counter()
    label = name.replace("_", " ")
    layers = lens_layers(model, settings.layers)
    if not len(task.forget):
        raise ValueError(f"the {label} reads the task's forget facts, and it has none")
    n_subjects = len({r.subject for r in task.forget})  # a subject's facts share a fold (fact_folds)
    if settings.folds > n_subjects:
        about = "" if n_subjects == len(task.forget) else f" about {n_subjects} subject(s)"
        raise ValueError(f"the {label} cannot cross-fit {len(task.forget)} forget facts{about} in {settings.folds} "
                         f"folds (every fold needs a fact, and facts about one subject share a fold): lower "
                         f"other_suites.{name}.folds (1 chooses the layer on the scored facts themselves)")
    before, base_before = scores_before(model, task, config, original=original, baselines=baselines)
    guard = settings.selection == "selective" and len(task.retain) > 0
    translate, fit_info = fit(model) if fit is not None else (None, None)
    read = _read_task(model, task, config, layers, guard, translate, label)
    ok, bar = _eligible(read)
    layer_of, folds = _assign(task, read, layers, int(settings.folds), config.seed, ok)
    attacked = _scores_at(read, layer_of, task)
    base = base_read = base_fit = None
    if original is not None:
        def read_original():
            tr, info = fit(original) if fit is not None else (None, None)
            return _read_task(original, task, config, layers, False, tr, label), info

        key = (name, *fit_key, tuple(layers), task_key(task, config))
        base_read, base_fit = (read, fit_info) if original is model else cached(baselines, key, read_original)
        base = _scores_at(base_read, layer_of, task)
    metrics = attack_metrics(name, attacked, before, base_attacked=base, base_before=base_before)
    sel = _selectivity(read, attacked.forget, folds, config.seed)
    if sel is not None:
        from factlens.evaluation.selectivity import selectivity_metrics

        b_sel = _selectivity(base_read, base.forget, folds, config.seed) if base is not None else None
        metrics += selectivity_metrics(name, sel, b_sel, at_chance=metrics[0].at_chance)
    if settings.folds == 1:  # the layer was chosen on the facts it is scored on
        metrics = [_mark_selected(m, name) for m in metrics]
    vocab, columns = _vocab_metrics(name, read, base_read, settings.top_k, ok)
    metrics += vocab
    rows = fact_rows(task, {**_columns(name, before, attacked, base, layer_of), **columns})
    extra = {**_extra(read, base_read, layers, folds, settings, before),
             "topk_layers": [layer for layer, o in zip(layers, ok) if o], "eligibility": bar,
             "at_chance_bar": base_before.chance_flags()[1] if base_before is not None else None}
    if fit is not None:
        extra["fit"] = {"model": fit_info, **({"original": base_fit} if original is not None else {})}
    unread = _ambiguity_note(read, label)
    if unread is not None:  # said, not raised: the run's other suites go on
        warnings.warn(unread, stacklevel=2)
        extra["note"] = f"{unread}; {extra['note']}"
    return SuiteResult(name, tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)


def _ambiguity_note(read: _Read, label: str) -> str | None:
    """Why a split has no lens metric at all: every one of its prompts is ambiguous (candidates that
    share a first token, the only token the lens reads, so it cannot say which one it reads) and is
    left out; ``None`` when each non-empty split has a prompt to score."""
    unread = [(s, n) for s in ("forget", "maintain")
              if (n := len(read.items[s])) and int(read.scores[s].ambiguous.sum()) == n]
    if not unread:
        return None
    splits = " and ".join(f"all {n} {s}" for s, n in unread)
    return (f"no {label} metric of the {' or '.join(s for s, _ in unread)} facts: {splits} prompts are ambiguous "
            "(n_ambiguous): their candidates share a first token, and the lens reads first tokens only, so it "
            "cannot tell which candidate it reads; give each fact candidates whose first tokens differ")


def _vocab_metrics(name: str, read: _Read, base_read: _Read | None, k: int,
                   ok: np.ndarray) -> tuple[list[Metric], dict[str, dict[str, float]]]:
    """The whole-vocabulary metrics at the eligible layers ``ok`` (no layer choice involved, the
    original at the same layers as baseline): ``<name>_forget_topk`` and ``<name>_forget_log_rank``
    (``log10(1 + best rank)`` of the old answer: a continuous reading of how far down the edit
    pushed it, for every candidate budget ``k`` at once); and their per-fact columns."""
    top, rank = read.topk("forget", k, ok), read.log_rank("forget", ok)
    if all(np.isnan(v) for v in top.values()):
        return [], {}

    def base(values: dict[str, float] | None) -> float | None:
        return float(np.nanmean(list(values.values()))) if values is not None else None

    b_top, b_rank = (base_read.topk("forget", k, ok), base_read.log_rank("forget", ok)) if base_read else (None, None)
    metrics = [Metric.from_samples(f"{name}_forget_topk", top, higher_is_better=False, baseline=base(b_top)),
               Metric.from_samples(f"{name}_forget_log_rank", rank, higher_is_better=True, baseline=base(b_rank),
                                   proportion=False)]
    return metrics, {f"{name}_topk": top, f"{name}_log_rank": rank}


def _columns(name: str, before: TaskScores, attacked: TaskScores, base: TaskScores | None,
             layer_of: dict[str, int]) -> dict[str, dict[str, float]]:
    """The per-fact columns: outcomes before, under the lens (and the original's), the layer read."""
    columns = {"answer_wins_before": {**before.forget, **before.maintain},
               f"{name}_answer_wins": {**attacked.forget, **attacked.maintain},
               f"{name}_layer": {k: float(v) for k, v in layer_of.items()}}
    if attacked.edit:
        columns[f"{name}_target_wins"] = attacked.edit
    if base is not None:
        columns[f"baseline_{name}_answer_wins"] = {**base.forget, **base.maintain}
    return columns


def _mark_selected(m: Metric, name: str) -> Metric:
    from dataclasses import replace

    if m.ci_method is None or not m.name.startswith((f"{name}_forget", f"{name}_edit", f"{name}_selective")):
        return m
    return replace(m, ci_method=("wilson-selected" if m.ci_method == "wilson" else "bootstrap-selected"))


def _extra(read: _Read, base_read: _Read | None, layers: list[int], folds: list[dict], st: LogitLensConfig,
           before: TaskScores) -> dict[str, Any]:
    def curves(r: _Read) -> dict[str, Any]:
        out = {"true": r.curve("forget"), "target": r.curve("forget", "target_wins"),
               "maintain": r.curve("maintain"), "topk": r.topk_curve("forget", st.top_k)}
        if "retain" in r.scores:  # what the layer choice's guard saw
            out["retain"] = r.curve("retain")
        return out

    n_amb = {s: int(read.scores[s].ambiguous.sum()) for s in ("forget", "maintain")}
    out: dict[str, Any] = {
        "settings": st.to_dict(), "layers": layers, **curves(read), "folds": folds, "n_ambiguous": n_amb,
        "chance": before.chance.get("forget"),
        "selection": ("true-answer wins on the fitting forget facts plus on the task's retain facts, among the "
                      "layers that read the retain facts above one answer for everyone + 2 SE (else above uniform "
                      "chance + 2 SE, else all layers; the bar used is in eligibility)"
                      if "retain" in read.scores else "true-answer wins on the fitting forget facts"),
        "note": (f"each forget fact read at the layer chosen (see selection) on the other {len(folds) - 1} fold(s)"
                 if len(folds) > 1 else
                 "every forget fact read at the layer chosen on the forget facts themselves (optimistic)")
                + f" among {len(layers)} layers; candidates compared by their first token only; "
                  f"topk: the answer's first token among the {st.top_k} most likely tokens at some eligible "
                  "layer (topk_layers)",
    }
    if base_read is not None:
        out["baseline"] = curves(base_read)
    else:
        out["baseline_note"] = "original=None: the unedited model was not read through the lens (no baselines)"
    return out
