"""Linear probes on the residual stream: where does the attribute become decodable?

For every probed layer ``l`` the residual stream after the block, ``resid_post`` of layer
``l`` (layers ``0 .. n_layers - 1``), is read at the subject's last token and at the final
token; the embedding itself (``resid_pre`` of layer 0) is probed too, as the starting point
of the curve (``extra["embedding_accuracy"]``: what token identity alone gives away). A
logistic-regression probe (scikit-learn) predicts the attribute (``record.answer``); its
accuracy is **cross-validated** with a seeded (optionally repeated) ``StratifiedKFold``.
The chance level is the majority-class rate.

Features are standardized inside each training fold. The default, ``scaling="global"``,
centers every feature and divides all features by **one** common scale (the RMS of the
centered features), so the L2 penalty means the same at every depth although the residual
norm grows; per-feature standardization (``scaling="feature"``, sklearn's
``StandardScaler``) is available but blows near-constant dimensions up to unit variance,
which lets the probe fit noise: it under-rates exactly decodable attributes and over-rates
layers that hold only token identity (measured: docs/localization/probing.md, "Feature
scaling").

As component scores, MLP layer ``l`` gets the rise of the subject-position accuracy that
block ``l`` brings, ``acc[l] - acc[l_prev]`` (before layer 0: the embedding's accuracy, at
least chance; before a later first probed layer: chance), and heads get 0: probing cannot separate a block's heads from its MLP, and the fact
lookup is attributed to MLPs (Geva et al. 2023; Guo et al. 2024). ``scores.plot()`` draws
the probe curves.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Literal, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from factlens.components import ModelShape, resid_hook, resolve_components
from factlens.data.records import as_records
from factlens.progress_bars import progress_bar
from factlens.scores import ComponentScores
from factlens.tokens import encode_records, iter_batches

__all__ = ["probing", "residual_features", "probe_accuracy", "POSITIONS"]

Scaling = Literal["global", "feature"]

#: Token positions that can be probed.
POSITIONS: tuple[str, ...] = ("subject_last", "subject_first", "final")


def _positions(batch, name: str) -> torch.Tensor:
    if name == "final":
        return batch.last_pos
    pos = batch.subject_last if name == "subject_last" else batch.subject_first
    if bool((pos < 0).any()):
        raise ValueError(f"position {name!r} needs records with a subject span")
    return pos


def residual_features(
    model,
    dataset,
    *,
    layers: Sequence[int],
    positions: Sequence[str] = ("subject_last", "final"),
    batch_size: int = 16,
) -> dict[str, dict[int, np.ndarray]]:
    """``resid_post`` activations at the given positions: ``{position: {layer: [n, d_model]}}``.

    Layer ``-1`` is the embedding (``resid_pre`` of layer 0). Only the requested positions
    are kept (float32 numpy), batch by batch; the forward pass stops after the last
    requested layer, so no logits are computed.
    """
    records = list(dataset)
    layers = _checked_layers(layers, least=-1, n_layers=ModelShape.of(model).n_layers)  # -1: the embedding
    feats: dict[str, dict[int, list[np.ndarray]]] = {p: {l: [] for l in layers} for p in positions}
    for sl in progress_bar(list(iter_batches(len(records), batch_size)), desc="probe activations"):
        batch = encode_records(model, records[sl])
        b = torch.arange(len(batch), device=batch.tokens.device)
        idx = {p: _positions(batch, p) for p in positions}

        def keep(layer):
            def hook(act, hook):
                for p in positions:
                    feats[p][layer].append(act[b, idx[p]].detach().float().cpu().numpy())
            return hook

        hooks = [(resid_hook(0, "pre") if l == -1 else resid_hook(l, "post"), keep(l)) for l in layers]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            model(batch.tokens, stop_at_layer=max(max(layers), 0) + 1)  # -1 alone: block 0's resid_pre must run
    return {p: {l: np.concatenate(v) for l, v in d.items()} for p, d in feats.items()}


class _GlobalScaler(TransformerMixin, BaseEstimator):
    """Center every feature and divide all of them by one scale (the RMS of the centered
    training features): the probe's L2 penalty then means the same at every layer, and
    near-constant residual dimensions are not blown up as per-feature standardization does."""

    def fit(self, X, y=None):
        self.mean_ = X.mean(axis=0)
        scale = float(np.sqrt(((X - self.mean_) ** 2).mean()))
        self.scale_ = scale if scale > 0 else 1.0
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_


def probe_accuracy(X: np.ndarray, y: Sequence, *, cv: int = 5, seed: int = 0, C: float = 1.0,
                   scaling: Scaling = "global", repeats: int = 1) -> tuple[float, float]:
    """Mean and std over folds of the cross-validated accuracy of a logistic-regression probe.

    Args:
        X: ``[n, d]`` features.
        y: ``n`` labels.
        cv: Stratified folds (capped by the smallest class size).
        seed: Seed of the fold shuffling.
        C: Inverse L2 regularization strength (a finite number > 0).
        scaling: ``"global"`` (center each feature, one common scale; default) or
            ``"feature"`` (per-feature standardization, ``StandardScaler``). Scalers are fit
            on the training folds only.
        repeats: Repeat the cross-validation with reshuffled folds and average.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 20)
        >>> X = rng.normal(size=(40, 5)) + y[:, None] * 3
        >>> probe_accuracy(X, y)[0]
        1.0
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if scaling not in ("global", "feature"):
        raise ValueError(f"scaling must be 'global' or 'feature', got {scaling!r}")
    _check_folds(cv=cv, repeats=repeats, C=C)
    y = np.asarray(y)
    _, counts = _checked_classes(y)  # one class, or a class of one fact: say so, not sklearn's "n_splits=1"
    n_splits = min(cv, int(counts.min()))
    scaler = _GlobalScaler() if scaling == "global" else StandardScaler()
    # newton-cg: same optimum as lbfgs, ~20x faster on [60, 640] residual features
    pipe = make_pipeline(scaler, LogisticRegression(C=C, solver="newton-cg", max_iter=1000))
    folds = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=repeats, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        acc = cross_val_score(pipe, np.asarray(X, dtype=np.float64), y, cv=folds, scoring="accuracy")
    return float(acc.mean()), float(acc.std())


def _check_folds(*, cv: int, repeats: int, C: float = 1.0) -> None:
    """Refuse ``cv`` / ``repeats`` that are not whole numbers >= 2 / >= 1: ``cv=2.5`` failed in sklearn
    ("The number of folds must be of Integral type") after the activations were collected, and
    ``cv=True`` read as "got cv=True"; and a ``C`` that :func:`check_probe_C` refuses."""
    checks = (("cv", cv, 2, "stratified folds"), ("repeats", repeats, 1, "cross-validation runs"))
    for opt, value, least, what in checks:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"need {opt} >= {least}: {opt} must be a whole number (the number of {what}), "
                             f"got {type(value).__name__} {value!r}")
    check_probe_C(C)


def check_probe_C(C: float) -> None:
    """Refuse a probe regularization ``C`` that is not a finite number > 0: ``C=0`` failed only after the
    activations were collected, with sklearn's "All the 2 fits failed" and a traceback per fold.
    :func:`~factlens.localization.registry.check_localize_options` calls it before any job runs.

    Example:
        >>> check_probe_C(0.0)
        Traceback (most recent call last):
        ...
        ValueError: C (the inverse L2 regularization strength of the probes) must be a finite number > 0, got 0.0; smaller C regularizes more (default 1.0)
    """
    if isinstance(C, bool) or not isinstance(C, numbers.Real) or not math.isfinite(C) or C <= 0:
        raise ValueError(f"C (the inverse L2 regularization strength of the probes) must be a finite number > 0, "
                         f"got {C!r}; smaller C regularizes more (default 1.0)")


def _checked_layers(layers: Sequence[int], *, least: int, n_layers: int) -> list[int]:
    """``layers`` sorted and unique, refused unless they are whole numbers in ``least .. n_layers - 1``:
    ``layers=[1.7]`` was silently probed as layer 1 (``int(1.7)``), ``[True]`` as layer 1."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        fix = "" if isinstance(layers, (str, bytes)) else f"; write layers=[{layers!r}]"
        raise ValueError(f"layers= takes a list of layer numbers, got {type(layers).__name__} {layers!r}{fix}")
    layers = list(layers)
    bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, numbers.Real)
           or not (isinstance(l, numbers.Integral) or float(l).is_integer())]  # 1.0 worked before
    if bad:
        raise ValueError(f"layers must be whole numbers (layer indices), got {bad[:5]!r} in layers={layers!r}")
    layers = sorted(set(int(l) for l in layers))
    if not layers or layers[0] < least or layers[-1] >= n_layers:
        raise ValueError(f"layers must be within {least}..{n_layers - 1}, got {layers}")
    return layers


def check_positions(positions: Sequence[str]) -> None:
    """Refuse a bare string as ``positions=``: iterated, ``"final"`` was probed as the positions
    ``'f', 'i', 'n', 'a', 'l'`` ("unknown probe positions ['f', ...]")."""
    if isinstance(positions, str):
        raise TypeError(f"positions= takes a list of positions, got the string {positions!r}; write "
                        f"positions=[{positions!r}] (choose from {POSITIONS})")


def _checked_sites(shape: ModelShape, positions: Sequence[str],
                   layers: Sequence[int] | None) -> tuple[tuple[str, ...], list[int]]:
    """The probed positions and (sorted, unique) layers, checked against :data:`POSITIONS` and the model."""
    check_positions(positions)
    positions = tuple(positions)
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise ValueError(f"unknown probe positions {bad or positions!r}; choose from {POSITIONS}")
    if layers is None:
        return positions, list(range(shape.n_layers))
    return positions, _checked_layers(layers, least=0, n_layers=shape.n_layers)


def _checked_classes(y: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The answers' classes and counts; raises unless there are two classes of >= 2 facts each."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"probing needs at least two different answers; all facts answer {classes[0].item()!r}")
    if counts.min() < 2:
        rare = [c.item() if hasattr(c, "item") else c for c, n in zip(classes, counts) if n < 2]  # not np.str_(..)
        raise ValueError(f"answers {rare[:5]} occur only once; cross-validated probing needs >= 2 facts per answer "
                         "(filter them out, e.g. dataset.filter(...))")
    return classes, counts


def _mlp_gains(comps, layers: list[int], curve: list[float], start: float) -> list[float]:
    """Component scores: MLP ``l`` = probe accuracy gain from the previous probed layer (``start``
    before the first) to ``l``; heads and unprobed layers 0."""
    gains = {l: curve[i] - (curve[i - 1] if i else start) for i, l in enumerate(layers)}
    return [gains.get(c.layer, 0.0) if c.kind == "mlp" else 0.0 for c in comps]


def probing(
    model,
    dataset,
    *,
    positions: Sequence[str] = ("subject_last", "final"),
    layers: Sequence[int] | None = None,
    cv: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    C: float = 1.0,
    scaling: Scaling = "global",
    repeats: int = 1,
) -> ComponentScores:
    """Per-layer probe accuracy for the facts' attribute, as component scores.

    Args:
        model: A ``HookedTransformer`` (left unchanged: no hooks remain).
        dataset: Facts; the probe target is ``record.answer`` (each answer needs >= 2 facts).
        positions: Any of ``"subject_last"``, ``"subject_first"``, ``"final"``.
        layers: ``resid_post`` layers to probe (default: all, ``0 .. n_layers - 1``).
        cv: Number of stratified folds (capped by the smallest class size).
        seed: Seed of the fold shuffling.
        batch_size: Facts per forward pass (results do not depend on it).
        C: Inverse L2 regularization strength of the logistic regression (a finite number > 0).
        scaling: Feature scaling inside each fold: ``"global"`` (center every feature and
            divide by one common scale) or ``"feature"`` (per-feature standardization).
        repeats: Repeat the cross-validation with reshuffled folds and average (less noise).

    Returns:
        Scores (method ``"probing"``, metric ``"probe_accuracy"``): MLP ``l`` = accuracy gain
        at the subject position (``"subject_last"`` if probed, else the first position) from
        the previous probed layer to ``l``; heads 0; ranked by the signed gain
        (``rank_by="value"``: a budget takes layers where accuracy rises, not where it drops). ``extra``: ``"probe_accuracy"``
        ``{position: [acc per probed layer]}``, ``"probe_accuracy_std"`` (over folds),
        ``"embedding_accuracy"`` (``{position: acc}`` of the embedding), ``"layers"``, ``"chance"`` (majority-class rate), ``"n_splits"``, ``"classes"``,
        ``"gain_position"``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> s = probing(p.model, p.dataset)
        >>> acc = s.extra["probe_accuracy"]["subject_last"]
        >>> acc[0] < 0.5, acc[1], s.top(1) == [p.lookup_mlp]
        (True, 1.0, True)
    """
    shape = ModelShape.of(model)
    if shape.attn_only:  # every score would be 0 and a budget would pick an empty mask
        raise ValueError("the model is attention-only: probing scores MLPs by the probe's gain and there are none; "
                         "for the per-layer probe accuracy use residual_features(...) and probe_accuracy(...) of "
                         "factlens.localization.probing")
    records = as_records(dataset)
    if not records:
        raise ValueError("the dataset is empty")
    positions, layers = _checked_sites(shape, positions, layers)
    _check_folds(cv=cv, repeats=repeats, C=C)  # before the activations are collected
    y = [r.answer for r in records]
    classes, counts = _checked_classes(y)
    chance = float(counts.max() / counts.sum())
    feats = residual_features(model, records, layers=[-1] + layers, positions=positions, batch_size=batch_size)
    acc: dict[str, list[float]] = {}
    acc_std: dict[str, list[float]] = {}
    embed_acc: dict[str, float] = {}
    for p in positions:
        embed_acc[p] = probe_accuracy(feats[p][-1], y, cv=cv, seed=seed, C=C, scaling=scaling, repeats=repeats)[0]
        acc[p], acc_std[p] = [], []
        for l in progress_bar(layers, desc=f"probes ({p})"):
            m, s = probe_accuracy(feats[p][l], y, cv=cv, seed=seed, C=C, scaling=scaling, repeats=repeats)
            acc[p].append(m)
            acc_std[p].append(s)
    gain_pos = "subject_last" if "subject_last" in acc else positions[0]
    comps = resolve_components(shape)
    values = _mlp_gains(comps, layers, acc[gain_pos], max(chance, embed_acc[gain_pos]) if layers[0] == 0 else chance)
    extra = {
        "probe_accuracy": acc,
        "probe_accuracy_std": acc_std,
        "embedding_accuracy": embed_acc,
        "layers": layers,
        "chance": chance,
        "n_splits": int(min(cv, counts.min())),
        "classes": [str(c) for c in classes],
        "gain_position": gain_pos,
        "activation": "resid_post",
        "scaling": scaling,
        "repeats": repeats,
    }
    # a layer where decodability drops is not where the attribute is written: rank by the signed gain
    return ComponentScores(tuple(comps), np.array(values), "probing", "probe_accuracy", shape, extra, rank_by="value")
