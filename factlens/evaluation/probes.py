"""Latent knowledge: linear probes for the true answer and the edit target (paper Figure 40).

For every probed layer a standardized logistic-regression probe is trained on the
residual stream (``resid_post``) of facts the edit did not touch (``task.maintain`` and
``task.retain``), predicting each fact's answer (its attribute label, e.g. the sport). The
probes are then applied to the edited facts (``task.forget``): if an edit only hid the
fact from the output, a probe still reads the **true** answer from the activations; if the
edit reached the representation, the probe reads the **edit target** (inject tasks).

Activations are taken at the final prompt token (where the answer is predicted) or, with
``position="subject_last"``, at the last subject token (where the fact-lookup MLPs write
the attribute). A probe can only predict labels seen in training: an edit target that is
never a true answer of a training fact (e.g. golf in Full-Sports-Editing) is never
predicted, which ``extra["target_in_classes"]`` reports.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float

from factlens.components import resid_hook
from factlens.config import ConfigBase, check_numbers, layer_indices
from factlens.data.records import FactDataset
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached, facts_key
from factlens.evaluation.result import Metric, SuiteResult
from factlens.prefix import residual_after_prefix
from factlens.progress_bars import progress_bar
from factlens.tokens import encode_records, iter_batches

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests ProbesConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["run_probes", "ProbesConfig", "collect_activations", "probe_layers", "Position", "Scaling"]


@dataclass(frozen=True)
class ProbesConfig(ConfigBase):
    """Settings of the ``probes`` suite (``EvalConfig.probes``).

    Attributes:
        layers: Layers probed (``None``: all). The probes run on them in ascending order,
            without duplicates, so the ``_last`` metrics are those of the deepest layer.
        C: Inverse regularization strength of the logistic-regression probes.

    Example:
        >>> ProbesConfig(layers=[1, 2]).layers
        (1, 2)
    """

    layers: tuple[int, ...] | None = None
    C: float = 1.0

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        object.__setattr__(self, "layers", layer_indices(self.layers, where="ProbesConfig.layers",
                                                         none_means="every layer"))
        if not self.C > 0:
            raise ValueError(f"ProbesConfig.C must be > 0, got {self.C!r}")

Position = Literal["final", "subject_last"]


def collect_activations(model, facts: FactDataset | Sequence, *, layers: Sequence[int], position: Position = "final",
                        batch_size: int = 16) -> Float[np.ndarray, "n n_layers d_model"]:
    """``resid_post`` of ``layers`` at one position of each fact's prompt (float32, CPU).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> collect_activations(p.model, p.dataset[:5], layers=[0, 2]).shape
        (5, 2, 96)
    """
    if position not in ("final", "subject_last"):
        raise ValueError(f"position must be 'final' or 'subject_last', got {position!r}")
    records = list(facts)
    if not records:
        raise ValueError("no facts to collect activations from")
    layers = list(layers)
    out = np.zeros((len(records), len(layers), model.cfg.d_model), dtype=np.float32)
    store: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for sl in progress_bar(list(iter_batches(len(records), batch_size)), desc="activations", leave=False):
            batch = encode_records(model, records[sl])
            pos = batch.last_pos if position == "final" else batch.subject_last
            rows = torch.arange(len(batch), device=batch.tokens.device)

            def hooks(p: int):  # the prompts' shared prefix runs once; hooks see positions from p on
                def keep(layer: int):
                    def hook(act, hook):
                        store[layer] = act[rows, (pos - p).to(act.device)].detach().float().cpu()
                    return hook
                return [(resid_hook(l, "post"), keep(l)) for l in layers]

            residual_after_prefix(model, batch.tokens, first_read=int(pos.min()), lengths=batch.lengths,
                                  stop_at_layer=max(layers) + 1, hooks=hooks)
            for j, l in enumerate(layers):
                out[sl, j] = store[l].numpy()
    return out


Scaling = Literal["clip", "feature", "global"]


def _standardizer(mode: Scaling):
    """Feature scaling fit on the training activations.

    ``"global"`` (default): per-feature centring and one common scale (the RMS of the centred
    features), so relative feature magnitudes are kept and low-variance noise directions
    are not inflated to the size of the signal (with a few hundred training facts and
    hundreds of dimensions, per-feature scaling lets the probe fit noise).
    ``"feature"``: per-feature standardization (sklearn's ``StandardScaler``). ``"clip"``:
    per-feature standardization with test z-scores clipped to the range seen in training,
    so a feature that was (nearly) constant in training, e.g. a direction only the held-out
    subjects use, cannot blow up to z = 100 and swamp the probe.
    """
    from sklearn.base import BaseEstimator, TransformerMixin

    class _Scaler(TransformerMixin, BaseEstimator):
        def __init__(self, mode: str = "clip") -> None:
            self.mode = mode

        def fit(self, X, y=None):
            X = np.asarray(X, dtype=np.float64)
            self.mean_ = X.mean(0)
            # global: one scale, the RMS of the centred features (as the FLU probes'); X.std() also counted the
            # spread of the features' means, so a constant offset in one dimension shrank every feature
            sd = X.std(0) if self.mode != "global" else np.full(X.shape[1], np.sqrt(((X - self.mean_) ** 2).mean()))
            self.scale_ = np.where(sd > 0, sd, 1.0)
            z = (X - self.mean_) / self.scale_
            self.lo_, self.hi_ = z.min(0), z.max(0)
            return self

        def transform(self, X):
            z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
            return np.clip(z, self.lo_, self.hi_) if self.mode == "clip" else z

    if mode not in ("clip", "feature", "global"):
        raise ValueError(f"scaling must be 'clip', 'feature' or 'global', got {mode!r}")
    return _Scaler(mode)


def _probe(C: float, scaling: Scaling = "global"):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(_standardizer(scaling), LogisticRegression(C=C, max_iter=2000))


def _cv_facts(y: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """The training facts cross-validation can use: those whose answer at least one other fact
    has (a stratified fold needs two of a class). A single fact of a rare answer made every
    layer's accuracy NaN, and the metric was flagged "at chance" on CounterFact-like data where
    most answers are rare, even where the probes read the answer perfectly. With ``groups``
    (subjects) that repeat, the folds keep a subject together, so an answer needs two subjects."""
    grouped = groups is not None and len(set(groups)) < len(groups)
    per_class: dict[Any, set] = {}
    for i, c in enumerate(y):
        per_class.setdefault(c, set()).add(groups[i] if grouped else i)
    keep = np.array([len(per_class[c]) >= 2 for c in y], dtype=bool)
    return keep if len(np.unique(y[keep])) >= 2 else np.zeros(len(y), dtype=bool)


def _cv_accuracy(X: np.ndarray, y: np.ndarray, C: float, scaling: Scaling, groups: np.ndarray | None = None) -> float:
    """Stratified k-fold accuracy (k = min(5, the rarest kept class)) on the facts of :func:`_cv_facts`.

    ``groups``: each fact's subject. Where a subject has several facts (CounterFact-like data,
    two templates of one subject), the folds keep a subject's facts together
    (``StratifiedGroupKFold``): at the subject's last token two such facts have the same
    activations, and a probe that memorised the subject in one fold read it back in the other
    (0.67 cross-validated at a layer that reads 0.08 of new subjects). Data with one fact per
    subject keeps ``StratifiedKFold``'s folds.

    The accuracy is the share of the kept facts predicted right when held out (every fact is
    held out once), not the mean of the folds' accuracies: with folds of unequal size those
    differ, and :func:`_cv_metric` counts ``accuracy * n`` correct facts for its interval (the
    fold mean made that count off by one fact in 3 of 200 random draws).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    keep = _cv_facts(y, groups)
    if not keep.any():
        return float("nan")
    X, y = X[keep], y[keep]
    g = None if groups is None else np.asarray(groups, dtype=object)[keep]
    if g is not None and len(set(g)) < len(g):
        # a class's distinct subjects bound the folds
        k = int(min(5, min(len(set(g[y == c])) for c in np.unique(y))))
        if k < 2:
            return float("nan")
        return float(np.mean(cross_val_predict(_probe(C, scaling), X, y, groups=g,
                                               cv=StratifiedGroupKFold(n_splits=k)) == y))
    k = int(min(5, np.unique(y, return_counts=True)[1].min()))
    return float(np.mean(cross_val_predict(_probe(C, scaling), X, y, cv=StratifiedKFold(n_splits=k)) == y))


def probe_layers(model, train: FactDataset, test: FactDataset, *, layers: Sequence[int] | None = None,
                 position: Position = "final", C: float = 1.0, scaling: Scaling = "global", batch_size: int = 16,
                 cv: bool = True) -> dict[str, Any]:
    """Train a probe per layer on ``train`` answers and apply it to ``test``.

    Each probe is ``scaling`` (see :func:`_standardizer`) followed by an L2-regularized
    logistic regression (``C``). ``layers`` (``None``: all) are probed in ascending order,
    duplicates dropped, whatever order they are given in: every curve runs from the shallowest
    to the deepest layer, and its last entry is the deepest layer's.

    Returns:
        ``{"layers" (sorted), "classes", "true" (per-layer accuracy of predicting each test fact's
        answer), "target" (of predicting its ``target_new``; NaN without targets),
        "maintain_cv" (cross-validated accuracy on ``train``'s facts whose answer another fact
        has; NaN when fewer than two answers have two facts), "n_cv" (those facts), "cv_chance"
        (their majority-class share), "predictions"
        ([n_test][n_layers] labels), "chance" (majority-class share of ``train``)}``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> out = probe_layers(p.model, p.task.maintain, p.task.retain, position="subject_last", cv=False)
        >>> out["true"][0] < 0.7, out["true"][1]
        (True, 1.0)
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else sorted({int(l) for l in layers})
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layers]
    if bad or not layers:
        raise ValueError(f"probe layers {bad or layers} out of range for a model with {model.cfg.n_layers} layers")
    y = np.array([r.answer for r in train])
    subjects = np.array([r.subject for r in train], dtype=object)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"probes need training facts with at least 2 different answers, got {list(classes)}")
    Xtr = collect_activations(model, train, layers=layers, position=position, batch_size=batch_size)
    Xte = collect_activations(model, test, layers=layers, position=position, batch_size=batch_size)
    true = np.array([r.answer for r in test])
    target = np.array([r.target_new if r.target_new is not None else "" for r in test])
    has_t = np.array([r.target_new is not None for r in test])
    acc_true, acc_target, cvs, preds = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny/separable data
        for j, _ in enumerate(progress_bar(layers, desc="probes", leave=False)):
            clf = _probe(C, scaling).fit(Xtr[:, j], y)
            pred = clf.predict(Xte[:, j])
            preds.append(pred)
            acc_true.append(float(np.mean(pred == true)))
            acc_target.append(float(np.mean(pred[has_t] == target[has_t])) if has_t.any() else float("nan"))
            cvs.append(_cv_accuracy(Xtr[:, j], y, C, scaling, subjects) if cv else float("nan"))
    kept = y[_cv_facts(y, subjects)]
    cv_chance = float(np.unique(kept, return_counts=True)[1].max() / len(kept)) if len(kept) else float("nan")
    return {"layers": layers, "classes": classes.tolist(), "true": acc_true, "target": acc_target,
            "maintain_cv": cvs, "n_cv": int(len(kept)), "cv_chance": cv_chance,
            "predictions": np.array(preds).T.tolist(), "chance": float(counts.max() / counts.sum()),
            "true_in_classes": int(np.isin(true, classes).sum()),
            "target_in_classes": int(np.isin(target[has_t], classes).sum()), "n_train": len(y), "n_test": len(true)}


def _nan_max(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=float)
    return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")


def _fact_metric(name: str, ids: list[str], hits: np.ndarray, which: str, baseline: float | None,
                 hib: bool, *, at_chance: bool = False) -> Metric:
    """Accuracy over facts of the probe at the last (deepest) layer (Wilson interval) or at the best layer.

    ``hits`` is ``[n_facts, n_layers]`` (probe prediction correct). For the maximum over
    layers the samples are the facts' outcomes at the best layer, and the interval is that of
    the largest of the layers' accuracies (``"wilson-max"``, :func:`factlens.stats.max_wilson_interval`:
    Wilson intervals at the Bonferroni level over the layers), so choosing the layer on the same
    facts is paid for. ``at_chance`` is the flag of :func:`_original_at_chance`.
    """
    from factlens.stats import max_wilson_interval

    h = hits.astype(float)
    col = h.shape[1] - 1 if which == "last" else int(np.argmax(h.mean(0)))
    m = Metric.from_samples(name, dict(zip(ids, h[:, col])), baseline=baseline, higher_is_better=hib,
                            at_chance=at_chance)
    if which == "max":
        lo, hi = max_wilson_interval(h.sum(0), len(ids))
        m = replace(m, ci_low=lo, ci_high=hi, ci_method="wilson-max")
    return m


def _cv_metric(res: dict[str, Any], base: dict[str, Any] | None) -> Metric:
    """Best layer's cross-validated accuracy on the training facts.

    Each training fact is predicted once (stratified k-fold), so ``accuracy * n_train`` counts
    correct held-out predictions per layer; the best layer is chosen on those same predictions,
    so the interval is that of a maximum (``"wilson-max"``, Wilson at the Bonferroni level over
    the layers; no per-fact predictions are kept, so no ``samples``). ``at_chance``: the
    original's best layer is not above the majority-class share of the cross-validated facts
    as a maximum is tested (:func:`_max_not_above_chance`): even the unedited model's probes
    read no answer. (Until 2026-12-05 the best of the layers got a single layer's interval and
    2-standard-error bar: pure noise over 12 layers was declared readable in 17 of 40 draws.)
    """
    from factlens.stats import max_wilson_interval

    def counts(r: dict[str, Any]) -> tuple[list[int], int]:
        m = int(r.get("n_cv", r["n_train"]))  # results cached before n_cv
        return [int(round(a * m)) for a in r["maintain_cv"] if not math.isnan(a)], m

    v = _nan_max(res["maintain_cv"])
    ks, n = counts(res)
    ci = max_wilson_interval(ks, n) if n and ks else None
    b = _nan_max(base["maintain_cv"]) if base is not None else None
    # NaN (too few facts per answer to cross-validate): not measured, which is no finding of chance
    flag = False
    if base is not None and not np.isnan(b):
        flag = _best_count_not_above_chance(*counts(base), float(base.get("cv_chance", base["chance"])))
    return Metric("probe_maintain_cv_max", v, n, "facts", b, flag, True, None, ci[0] if ci else None,
                  ci[1] if ci else None, "wilson-max" if ci else None)


def _hits(res: dict[str, Any], forget) -> dict[str, np.ndarray]:
    """``[n_facts, n_layers]`` booleans of a :func:`probe_layers` result on ``forget``: each
    layer's probe predicted the fact's true answer (``"true"``) / its edit target (``"target"``)."""
    preds = np.array(res["predictions"], dtype=object).reshape(len(forget), -1)
    return {"true": preds == np.array([r.answer for r in forget], dtype=object)[:, None],
            "target": preds == np.array([r.target_new for r in forget], dtype=object)[:, None]}


def blind_chance(answers: Sequence[str], classes: Sequence[str]) -> float:
    """What a probe that reads nothing scores on facts with these ``answers``: it gives one of its
    training ``classes`` to every fact, so at best the largest share of the facts whose answer is
    one class. (The majority share of the *training* facts, the bar before 2026-12-05, is another
    number: 10 forget facts all of the training majority's answer are read perfectly by a layer
    that carries no fact.)

    Example:
        >>> blind_chance(["football"] * 8 + ["golf"] * 2, ["baseball", "basketball", "football"])
        0.8
    """
    a = np.asarray(list(answers), dtype=object)
    if not len(a):
        return float("nan")
    return max((float(np.mean(a == c)) for c in classes), default=0.0)


def _max_not_above_chance(hits: np.ndarray, chance: float) -> bool:
    """Is the best layer's accuracy (``hits``: ``[n_facts, n_layers]``) no better than ``chance``?
    The best of the layers is tested as such: the lower end of its interval at the Bonferroni
    level over the layers (:func:`factlens.stats.max_wilson_interval`) is not above ``chance``."""
    return _best_count_not_above_chance([int(k) for k in hits.astype(int).sum(0)], int(hits.shape[0]), chance)


def _best_count_not_above_chance(ks: Sequence[int], n: int, chance: float) -> bool:
    """:func:`_max_not_above_chance` from the layers' counts of correct facts (``ks``, of ``n``)."""
    from factlens.stats import max_wilson_interval

    if n == 0 or not len(ks) or math.isnan(chance):
        return True
    lo, _ = max_wilson_interval(list(ks), n)
    return bool(lo <= chance)


def _original_at_chance(base_hits: np.ndarray, which: str, chance: float) -> bool:
    """Does the original's probe read the true answer of these facts no better than chance?

    ``base_hits`` is ``[n_facts, n_layers]``: the original's probe predicted the fact's true
    answer. Its accuracy at the deepest layer (``which="last"``, by
    :func:`~factlens.evaluation.standard.not_above_chance` with ``n`` = the facts) or at the
    best layer (``"max"``, :func:`_max_not_above_chance`) is compared with ``chance``
    (:func:`blind_chance` of these facts). Where even the unedited model's probe cannot read the
    answer, neither the true-answer nor the edit-target accuracy of the edited model's probe
    says anything about the edit (at such a layer the probe predicts one class for everyone,
    which may happen to be the facts' answer or the edit target).
    """
    from factlens.evaluation.standard import not_above_chance

    if which == "max":
        return _max_not_above_chance(base_hits, chance)
    return not_above_chance(float(base_hits.astype(float).mean(0)[-1]), chance, int(base_hits.shape[0]))


def _informative_layers(base_hits: np.ndarray, chance: float) -> np.ndarray:
    """Columns (layers) where the original's probe reads the true answer above ``chance``.

    The maxima over layers (true answer and edit target) are taken over these only: at a layer
    where even the unedited model's probe reads nothing it predicts one class for everyone,
    which may be the edit target or the facts' own answer, and the maximum picked that layer
    (0.5 edit-target accuracy on a model never edited; a removed fact read as "latent" at 1.0
    by a blind layer 0, until 2026-12-05)."""
    from factlens.evaluation.standard import not_above_chance

    acc, n = base_hits.astype(float).mean(0), int(base_hits.shape[0])
    return np.array([j for j, a in enumerate(acc) if not not_above_chance(float(a), chance, n)], dtype=int)


def _train_facts(task, train_on: Sequence[str]):
    """The facts of the task splits ``train_on``, concatenated."""
    bad = [s for s in train_on if s not in ("maintain", "retain")]
    if bad or not train_on:
        raise ValueError(f"train_on must name task splits among 'maintain', 'retain' (the probes are tested on the "
                         f"forget facts, so they never train on them), got {list(train_on)}")
    train = getattr(task, train_on[0])
    for s in train_on[1:]:
        train = train.concat(getattr(task, s))
    ids, subjects = {r.id for r in task.forget}, {r.subject for r in task.forget}
    return train.filter(lambda r: r.id not in ids and r.subject not in subjects)  # a task built by hand may share them


def _fact_rows(forget, res: dict[str, Any], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per forget fact: each probed layer's prediction and whether it is the answer / target."""
    rows = []
    for i, r in enumerate(forget):
        pred = res["predictions"][i]
        row = {"record_id": r.id, "answer": r.answer, "target": r.target_new, "predictions": pred,
               "true_correct": [p == r.answer for p in pred]}
        if r.target_new is not None:
            row["target_correct"] = [p == r.target_new for p in pred]
        if base is not None:
            row["baseline_predictions"] = base["predictions"][i]
        rows.append(row)
    return rows


def run_probes(model, task, *, original=None, config: EvalConfig | None = None, position: Position = "final",
               scaling: Scaling = "global", train_on: Sequence[str] = ("maintain", "retain"),
               baselines: BaselineCache | None = None) -> SuiteResult:
    """Per-layer linear probes for the true answer and the edit target of the forget facts.

    Args:
        model: The evaluated model (unchanged).
        task: The task: probes are trained on the ``train_on`` splits and tested on ``forget``.
        original: The unedited model: the same probes on it give the ``baseline`` values and
            ``extra["baseline"]`` curves.
        config: ``probes`` (:class:`ProbesConfig`: ``layers``, ``C``) and ``batch_size`` (``None``:
            ``EvalConfig()``).
        position: ``"final"`` (the prompt's last token) or ``"subject_last"``.
        scaling: Feature scaling of the probes (``"clip"``, ``"feature"``, ``"global"``).
        train_on: Task splits whose facts train the probes (one name or several).

    Returns:
        Metrics ``probe_true_accuracy_max`` / ``_last`` (max over layers / deepest probed layer;
        lower is better: the true answer should not be latent), ``probe_target_accuracy_max`` /
        ``_last`` (inject tasks; higher is better; with ``original``, both maxima are over the
        layers where the original's probe reads the true answer above chance,
        :func:`_informative_layers`) and ``probe_maintain_cv_max``, each ``at_chance`` where the
        original's probe is not above what a blind probe scores on the same facts
        (:func:`blind_chance`, ``extra["forget_chance"]``; a maximum tested as one,
        :func:`_original_at_chance`; :func:`_cv_metric`; no flags without ``original``); per-fact rows
        with each layer's prediction; ``extra`` with the curves ``{"layers", "true", "target",
        "maintain_cv"}`` for :func:`factlens.evaluation.plots.probe_curves`.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_probes(p.model, p.task, position="subject_last")
        >>> r["probe_true_accuracy_last"].value
        1.0
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    from factlens.evaluation.config import or_default

    config = or_default(config)
    t0 = time.perf_counter()
    train_on = (train_on,) if isinstance(train_on, str) else tuple(train_on)  # one split, not its letters
    train = _train_facts(task, train_on)
    if len(task.forget) == 0:
        raise ValueError("task.forget is empty: nothing to probe")
    kw = dict(layers=config.probes.layers, position=position, C=config.probes.C, scaling=scaling,
              batch_size=config.batch_size)
    res = probe_layers(model, train, task.forget, **kw)
    base = None
    if original is not None:
        key = ("probes", facts_key(train), facts_key(task.forget), json.dumps(kw, sort_keys=True, default=str))
        base = res if original is model else cached(baselines, key, lambda: probe_layers(original, train, task.forget, **kw))
    n = len(task.forget)
    n_t = sum(r.target_new is not None for r in task.forget)

    ids = [r.id for r in task.forget]
    hits = _hits(res, task.forget)
    base_hits = _hits(base, task.forget)["true"] if base is not None else None
    rows_t = np.array([r.target_new is not None for r in task.forget])

    answers = np.array([r.answer for r in task.forget], dtype=object)

    def metric(name: str, key: str, which: str, hib: bool) -> Metric:
        keep = rows_t if key == "target" else np.ones(n, dtype=bool)
        cols = np.arange(len(res["layers"]))
        chance = blind_chance(answers[keep], res["classes"])  # the bar of a probe that reads nothing, on these facts
        if which == "max" and base_hits is not None:
            cols = _informative_layers(base_hits[keep], chance)
        b = np.asarray(base[key], dtype=float)[cols] if base is not None and len(cols) else None
        b = (_nan_max(b) if which == "max" else float(b[-1])) if b is not None else None
        # flagged by the original's TRUE-answer probe accuracy on the same facts, for the target metrics too; the
        # best layer is tested over EVERY probed layer (Bonferroni): tested over the layers kept above, which were
        # chosen on these facts, a blind original passed in a third of noise draws (12 layers, 32 facts)
        flag = base_hits is not None and (not len(cols) or _original_at_chance(base_hits[keep], which, chance))
        cols = cols if len(cols) else np.arange(len(res["layers"]))
        return _fact_metric(name, [i for i, k in zip(ids, keep) if k], hits[key][keep][:, cols], which, b, hib,
                            at_chance=flag)

    metrics = [metric("probe_true_accuracy_max", "true", "max", False),
               metric("probe_true_accuracy_last", "true", "last", False)]
    if n_t and task.objective == "inject":
        metrics += [metric("probe_target_accuracy_max", "target", "max", True),
                    metric("probe_target_accuracy_last", "target", "last", True)]
    metrics.append(_cv_metric(res, base))
    rows = _fact_rows(task.forget, res, base)
    curves = ("layers", "true", "target", "maintain_cv")
    extra: dict[str, Any] = {k: res[k] for k in curves}
    extra.update({k: res[k] for k in ("classes", "chance", "true_in_classes", "target_in_classes", "n_train")})
    extra["forget_chance"] = blind_chance(answers, res["classes"])
    extra.update(position=position, scaling=scaling, train_on=list(train_on))
    if res["true_in_classes"] < res["n_test"]:  # e.g. Sports-Unlearning: every forget fact's sport is absent
        extra["note"] = (f"{res['n_test'] - res['true_in_classes']} of {res['n_test']} forget facts have a true answer "
                         "no training fact has: the probe can never predict it, so the true-answer accuracy counts "
                         "them as misses on both models (train on splits that hold those answers to read them)")
    extra = {k: ([None if isinstance(x, float) and np.isnan(x) else x for x in v] if isinstance(v, list) else v)
             for k, v in extra.items()}
    if base is not None:
        extra["baseline"] = {k: [None if np.isnan(x) else x for x in base[k]] for k in curves[1:]}
    else:
        extra["baseline_note"] = "original=None: no baseline probes"
    return SuiteResult("probes", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)
