"""Component scores: the result of every localization method."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from factlens.components import COMPONENT_KEYWORDS, Component, Mask, ModelShape, _checked

__all__ = ["ComponentScores", "ResidMap"]


def _floats(x: Any, ndim: int, what: str) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{what} must be a {ndim}-d array, got shape {a.shape}")
    return a


@dataclass(frozen=True)
class ResidMap:
    """A layer x position map over the residual stream (one ``hook_resid_pre`` state patched at a time).

    Prompts of different lengths are right-aligned on their last token: column ``j`` is the
    position ``offsets[j]`` relative to the end (``-1`` = last token) and averages the
    ``counts[j]`` prompts long enough to have it; for prompts of equal length the columns are
    the absolute positions.

    Attributes:
        values: ``[n_layers, n_positions]``, in the units of the method's component scores.
        offsets: Position of each column relative to the last token.
        counts: Prompts averaged into each column.
        tokens: The longest prompt's tokens (column labels).
        by_role: ``[n_layers, len(roles)]``: the map averaged over ROME's token roles instead
            of positions (NaN where no prompt has the role), or ``None``.
        roles: The roles of ``by_role``'s columns.
        patched: ``[n_layers, n_positions]`` raw averaged metric of each patched run (before
            the effect and normalization; activation patching), or ``None``.

    Example:
        >>> m = ResidMap([[0.0, 1.0]], offsets=[-2, -1], counts=[1, 2])
        >>> ResidMap.from_dict(m.to_dict()).values.tolist(), m.n_positions
        ([[0.0, 1.0]], 2)
    """

    values: np.ndarray
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    tokens: tuple[str, ...] = ()
    by_role: np.ndarray | None = None
    roles: tuple[str, ...] = ()
    patched: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "values", _floats(self.values, 2, "ResidMap.values"))
        set_(self, "offsets", tuple(int(o) for o in self.offsets))
        set_(self, "counts", tuple(int(c) for c in self.counts))
        set_(self, "tokens", tuple(str(t) for t in self.tokens))
        set_(self, "roles", tuple(str(r) for r in self.roles))
        set_(self, "by_role", _floats(self.by_role, 2, "ResidMap.by_role"))
        set_(self, "patched", _floats(self.patched, 2, "ResidMap.patched"))
        n = self.values.shape[1]
        if len(self.offsets) != n or len(self.counts) != n or (self.tokens and len(self.tokens) != n):
            raise ValueError(f"ResidMap: {n} columns but {len(self.offsets)} offsets, {len(self.counts)} counts "
                             f"and {len(self.tokens)} tokens")
        if self.by_role is not None and self.by_role.shape != (self.values.shape[0], len(self.roles)):
            raise ValueError(f"ResidMap.by_role has shape {self.by_role.shape}; expected "
                             f"{(self.values.shape[0], len(self.roles))} (rows x roles)")
        if self.patched is not None and self.patched.shape != self.values.shape:
            raise ValueError(f"ResidMap.patched has shape {self.patched.shape}; expected {self.values.shape}")

    @property
    def n_positions(self) -> int:
        return int(self.values.shape[1])

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: _jsonable(v) for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResidMap":
        return cls(**d)


#: Keys that older saved scores kept in ``extra``: typed field -> old key(s), first found wins.
_LEGACY = {
    "per_example": ("per_example",),
    "example_ids": ("per_example_ids", "record_ids"),
    "clean_metric": ("clean_metric", "clean_prob_per_example"),
    "corrupted_metric": ("corrupted_metric", "noised_prob_per_example"),
    "patched": ("patched",),
    "dropped_ids": ("dropped_ids",),
}
#: Old ``extra`` keys that are now derived (properties) or folded into a :class:`ResidMap`.
_LEGACY_DERIVED = ("clean_mean", "corrupted_mean", "clean_prob", "noised_prob", "n_examples", "n_dropped",
                   "resid", "resid_offsets", "resid_counts", "resid_tokens", "resid_by_role", "resid_patched",
                   "roles", "mlp_window", "mlp_window_by_role")


@dataclass(frozen=True)
class ComponentScores:
    """Scores aligned with components, from one localization method.

    Attributes:
        components: The scored components (:meth:`ModelShape.all_components` order unless a
            method was given its own list).
        values: One score per component (``float64``); larger ``|value|`` = more important
            (larger ``value`` with ``rank_by="value"``).
        method: The method name (``"activation_patching"``, ...).
        metric: What the score measures (``"logit_diff"``, ``"prob"``, ``"probe_accuracy"``...).
        shape: The model's :class:`ModelShape`, used for parameter budgets and plotting.
        extra: Method-specific, JSON-serializable details (options used, probe curves,
            ``flu_layers``...); each method's docstring lists its keys.
        name: Optional name of the localization (``"flu"``, ``"causal_tracing_mlps"``).

    The patching methods also fill these keyword fields (``None`` where a method has no such thing):

    * ``per_example`` ``[n_components, n_examples]``: the per-example values whose mean is the
      score (activation patching: the raw patched metric, whose mean is ``patched``);
      ``example_ids``: the record id of each example column.
    * ``clean_metric`` / ``corrupted_metric`` ``[n_examples]``: the metric of the unpatched
      clean and corrupted runs (causal tracing: the answer probability, clean and
      subject-noised); their means are :attr:`clean_mean` / :attr:`corrupted_mean`.
    * ``patched`` ``[n_components]``: the raw averaged metric of each patched run.
    * ``resid`` / ``mlp_window``: :class:`ResidMap` layer x position maps.
    * ``dropped_ids``: facts left out because no subject swap of their relation keeps the
      tokens aligned (:attr:`n_dropped`); ``None`` for methods that pair no facts.

    ``rank_by`` says how :meth:`top` and :meth:`to_mask` rank: ``"abs"`` (default) by
    ``|value|``, for effects whose sign only says their direction (patching: a component that
    lowers the answer matters as much as one that raises it); ``"value"`` by the signed value,
    for scores where a negative value means "not here" (probing: a layer where the probe's
    accuracy drops is not where the attribute is written). With ``"value"``, :meth:`top` and a
    ``param_budget`` take only components with a positive score: zero is "no evidence" (probing
    scores every head 0), and a budget filled with them was a mask of layer-0 heads nobody scored.

    Example:
        >>> s = ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)
        >>> sc = ComponentScores.from_dict_of_scores({"L0H1": 0.5, "L1.mlp": -2.0, "L0.mlp": 0.1}, method="manual", metric="x", shape=s)
        >>> [c.label for c in sc.top(2)]
        ['L1.mlp', 'L0H1']
    """

    components: tuple[Component, ...]
    values: np.ndarray
    method: str
    metric: str
    shape: ModelShape
    extra: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    _: KW_ONLY
    per_example: np.ndarray | None = None
    example_ids: tuple[str, ...] | None = None
    clean_metric: np.ndarray | None = None
    corrupted_metric: np.ndarray | None = None
    patched: np.ndarray | None = None
    resid: ResidMap | None = None
    mlp_window: ResidMap | None = None
    dropped_ids: tuple[str, ...] | None = None
    rank_by: str = "abs"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.rank_by not in RANK_BY:
            raise ValueError(f"rank_by must be one of {RANK_BY}, got {self.rank_by!r}")
        vals = np.array(self.values, dtype=np.float64)  # a copy: the caller's array may change later
        if vals.ndim != 1:
            raise ValueError(f"values must be one score per component (1-d), got shape {vals.shape}; a grid "
                             "flattened here would put scores on the wrong components")
        set_(self, "values", vals)
        set_(self, "components", tuple(self.components))
        if len(vals) != len(self.components):
            raise ValueError(f"{len(self.components)} components but {len(vals)} values")
        if len(set(self.components)) != len(self.components):
            raise ValueError("components must be unique")
        for c in self.components:  # a component the model lacks would count in masks and budgets
            _checked(c, self.shape, True, "ComponentScores components")
        for name, ndim in (("per_example", 2), ("clean_metric", 1), ("corrupted_metric", 1), ("patched", 1)):
            set_(self, name, _floats(getattr(self, name), ndim, name))
        for name in ("example_ids", "dropped_ids"):
            if getattr(self, name) is not None:
                set_(self, name, tuple(str(i) for i in getattr(self, name)))
        for name in ("per_example", "patched"):
            a = getattr(self, name)
            if a is not None and a.shape[0] != len(vals):
                raise ValueError(f"{name} has {a.shape[0]} rows for {len(vals)} components")
        if self.per_example is not None and self.example_ids is not None \
                and self.per_example.shape[1] != len(self.example_ids):
            raise ValueError(f"per_example has {self.per_example.shape[1]} examples but there are "
                             f"{len(self.example_ids)} example_ids")
        for name in ("resid", "mlp_window"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), ResidMap):
                raise TypeError(f"{name} must be a ResidMap or None, got {type(getattr(self, name)).__name__}")

    @classmethod
    def from_dict_of_scores(cls, scores: dict, *, method: str, metric: str, shape: ModelShape, **kw) -> "ComponentScores":
        comps = [c if isinstance(c, Component) else Component.parse(c) for c in scores]
        return cls(tuple(comps), np.array(list(scores.values()), dtype=np.float64), method, metric, shape, **kw)

    def __len__(self) -> int:
        return len(self.components)

    def __iter__(self) -> Iterator[Component]:
        """The scored components, in :attr:`components` order (that of :meth:`to_frame`'s rows)."""
        return iter(self.components)

    def __contains__(self, c: object) -> bool:
        """Whether a component (or a label such as ``"L1.mlp"``) has a score here."""
        if isinstance(c, str):
            c = Component.parse(c)
        return c in self.components

    def __getitem__(self, c: Component | str) -> float:
        """The score of a component or label (``scores["L1.mlp"]``); positions are refused: there is
        no "score 0" to mean (``scores.components[i]`` / ``scores.values[i]`` are by position)."""
        if isinstance(c, str):
            c = Component.parse(c)
        if not isinstance(c, Component):
            raise TypeError(f"scores are looked up by component or label (scores['L1.mlp']), got "
                            f"{type(c).__name__} {c!r}; by position use scores.components[i] and scores.values[i], "
                            "the best ones scores.top(k)")
        if c not in self.components:
            raise KeyError(f"{c.label} has no score here ({len(self.components)} components scored)")
        return float(self.values[self.components.index(c)])

    def as_dict(self) -> dict[str, float]:
        return {c.label: float(v) for c, v in zip(self.components, self.values)}

    # baselines
    @property
    def clean_mean(self) -> float | None:
        """Mean of :attr:`clean_metric` (``None`` without one)."""
        return None if self.clean_metric is None else float(self.clean_metric.mean())

    @property
    def corrupted_mean(self) -> float | None:
        """Mean of :attr:`corrupted_metric` (``None`` without one)."""
        return None if self.corrupted_metric is None else float(self.corrupted_metric.mean())

    @property
    def n_examples(self) -> int | None:
        """Number of examples the scores average over (``None`` when not recorded)."""
        for a in (self.per_example, self.clean_metric):
            if a is not None:
                return int(a.shape[-1])
        return None if self.example_ids is None else len(self.example_ids)

    @property
    def n_dropped(self) -> int | None:
        """Number of facts left out for want of an aligned corrupting subject (``None``: no pairing)."""
        return None if self.dropped_ids is None else len(self.dropped_ids)

    def _order(self) -> np.ndarray:
        # by |score| descending; ties in Component order (heads, MLPs, neurons, each by layer and
        # index), so the selection does not depend on the order a method lists components in.
        # Signed ranking: only positive scores are candidates (see the class docstring).
        n = len(self.components)
        rank = np.empty(n, dtype=np.int64)
        rank[sorted(range(n), key=self.components.__getitem__)] = np.arange(n)
        order = np.lexsort((rank, -self._key()))
        # a NaN score is no score: never a candidate (threshold= already left it out; top_k and a
        # budget took NaN components once the finite ones ran out)
        return order[~np.isnan(self.values[order])] if self.rank_by == "abs" else order[self.values[order] > 0]

    def _key(self) -> np.ndarray:
        return np.abs(self.values) if self.rank_by == "abs" else self.values

    def top(self, k: int) -> list[Component]:
        """The ``k`` components with the largest ``|score|`` (``score`` with ``rank_by="value"``,
        where only positive scores count: fewer than ``k`` when fewer are positive).

        Ties go in :class:`Component` order (heads, then MLPs, then neurons, each by layer and index).

        Raises:
            TypeError: ``k`` is not a whole number (``top(True)`` was taken as ``top(1)``, ``top(2.0)``
                failed with "slice indices must be integers").
            ValueError: ``k < 0``.
        """
        _check_whole("top", "k", k)
        if k < 0:
            raise ValueError(f"top: k must be >= 0 (the number of components to take), got {k}")
        return [self.components[i] for i in self._order()[:k]]

    def restrict(self, kind: str | Sequence[str]) -> "ComponentScores":
        """Only components of the given kind(s) (e.g. ``"mlp"`` for MLP-only localizations).

        The per-component fields (``per_example``, ``patched``) keep the matching rows.
        """
        kinds = {COMPONENT_KEYWORDS.get(k, k) for k in ([kind] if isinstance(kind, str) else kind)}
        if not kinds <= {"head", "mlp", "neuron"}:
            raise ValueError(f"restrict takes 'head', 'mlp', 'neuron' (or 'heads', 'mlps'), got {kind!r}")
        idx = [i for i, c in enumerate(self.components) if c.kind in kinds]
        rows = {n: getattr(self, n)[idx] for n in ("per_example", "patched") if getattr(self, n) is not None}
        return dataclasses.replace(self, components=tuple(self.components[i] for i in idx), values=self.values[idx],
                                   extra=dict(self.extra), **rows)

    def to_mask(self, *, top_k: int | None = None, threshold: float | None = None,
                param_budget: int | None = None, name: str | None = None) -> Mask:
        """Turn scores into a :class:`Mask`; give exactly one of the three options.

        Args:
            top_k: The ``k`` components with the largest ``|score|`` (here and below: the
                signed score where :attr:`rank_by` is ``"value"``).
            threshold: Components with ``|score| >= threshold`` (a finite number, or ``-inf`` for
                every scored component; NaN and ``inf`` select nothing and are refused).
            param_budget: Components in order of ``|score|`` while the total parameter count
                stays within the budget; a component that would overshoot is skipped and
                smaller ones further down are still tried (a greedy fill in score order: the
                budget is never exceeded, but a lower-scored set could sometimes fill it closer).
            name: Name of the mask (default: the scores' name or method).
        """
        given = [x is not None for x in (top_k, threshold, param_budget)]
        if sum(given) != 1:
            raise ValueError("give exactly one of top_k=, threshold= or param_budget=")
        _check_selection(top_k=top_k, threshold=threshold, param_budget=param_budget)
        name = name or self.name or self.method
        if top_k is not None:
            return Mask(frozenset(self.top(top_k)), name=name)
        if threshold is not None:
            return Mask(frozenset(c for c, v in zip(self.components, self._key()) if v >= threshold), name=name)
        if param_budget < 0:
            raise ValueError("param_budget must be >= 0")
        chosen: set[Component] = set()
        used = 0
        for i in self._order():
            c = self.components[i]
            trial = Mask(frozenset(chosen | {c}))
            n = trial._count(self.shape)  # the scores' components exist in their shape (checked when made)
            if n <= param_budget:
                chosen.add(c)
                used = n
                if used == param_budget:
                    break
        return Mask(frozenset(chosen), name=name)

    # tables and plots
    def to_frame(self):
        """A pandas DataFrame with one row per component: ``component`` (its label), ``kind``,
        ``layer``, ``index`` (nullable integers: head or neuron index, missing for MLPs), ``score``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "component": [c.label for c in self.components],
                "kind": [c.kind for c in self.components],
                "layer": [c.layer for c in self.components],
                "index": pd.array([c.index for c in self.components], dtype="Int64"),
                "score": self.values,
            }
        )

    def heatmap_array(self) -> np.ndarray:
        """``[n_layers, n_heads + 1]`` array: heads then an MLP column (NaN where unscored)."""
        s = self.shape
        arr = np.full((s.n_layers, s.n_heads + 1), np.nan)
        for c, v in zip(self.components, self.values):
            if c.kind == "head":
                arr[c.layer, c.index] = v
            elif c.kind == "mlp":
                arr[c.layer, s.n_heads] = v
        return arr

    def plot(self, *, title: str | None = None):
        """A plotly Figure.

        Component scores plot as a layers x (heads + MLP) heatmap with a diverging color
        scale centred at 0; probing results (``extra["probe_accuracy"]``) plot as an
        accuracy-per-layer curve.
        """
        from factlens.score_plots import probe_curve, scores_heatmap

        if "probe_accuracy" in self.extra and self.method == "probing":
            return probe_curve(self, title=title)
        return scores_heatmap(self, title=title)

    # persistence
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "method": self.method,
            "metric": self.metric,
            "name": self.name,
            "shape": self.shape.to_dict(),
            "scores": self.as_dict(),
            "extra": _jsonable(self.extra),
            "format": _FORMAT,
        }
        for f in _TYPED:
            v = getattr(self, f)
            if v is not None:
                d[f] = v.to_dict() if isinstance(v, ResidMap) else _jsonable(v)
        if self.rank_by != "abs":  # files of |value|-ranked scores stay as they were
            d["rank_by"] = self.rank_by
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ComponentScores":
        """Inverse of :meth:`to_dict`; also reads files saved when these fields lived in ``extra``
        (files without ``format``: only those have their ``extra`` keys moved, so that a method's
        own ``extra`` keys called ``roles`` or ``patched`` survive a round trip).

        Raises:
            ValueError: ``d`` is not the layout :meth:`to_dict` writes (a saved mask or evaluation
                loaded as scores was a bare ``KeyError: 'scores'``); the message says what to load it with.
        """
        _check_scores_dict(d)
        extra = dict(d.get("extra", {}))
        typed = {f: d[f] for f in _TYPED if d.get(f) is not None}
        for f in ("resid", "mlp_window"):
            if f in typed:
                typed[f] = ResidMap.from_dict(typed[f])
        if "format" not in d:
            _from_legacy_extra(extra, typed)
        return cls.from_dict_of_scores(d["scores"], method=d["method"], metric=d["metric"],
                                       shape=ModelShape.from_dict(d["shape"]), extra=extra, name=d.get("name", ""),
                                       rank_by=d.get("rank_by", "abs"), **typed)

    def save(self, path: str | Path) -> None:
        """Save as JSON (written to a temporary file first: an interrupted save leaves the old file).

        NaN and infinities are written as ``null`` (strict JSON, :mod:`factlens.strict_json`) and
        load as NaN (e.g. ``by_role`` of a token role that no prompt has). Scores saved there before
        are replaced (a re-run notebook cell); any other file is left alone and refused with a
        ``ValueError`` (it was overwritten without a word).
        """
        from factlens.files import check_output, write_atomic
        from factlens.strict_json import strict_dumps

        check_output(path, what="saved ComponentScores", ours=_is_saved_scores)
        text = strict_dumps(self.to_dict())
        write_atomic(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "ComponentScores":
        """Read a file :meth:`save` wrote.

        Raises:
            ValueError: The file is empty or not JSON (the message names it), or not the scores' layout.
        """
        from factlens.strict_json import read_json

        return cls.from_dict(read_json(path, what="saved ComponentScores (JSON written by ComponentScores.save)"))


#: Version of :meth:`ComponentScores.to_dict`'s layout (files without it kept the typed fields in ``extra``).
_FORMAT = 2

#: How :class:`ComponentScores` ranks components: by ``|value|`` or by the signed value.
RANK_BY = ("abs", "value")

#: The typed keyword fields of :class:`ComponentScores` (saved as top-level JSON keys).
_TYPED = ("per_example", "example_ids", "clean_metric", "corrupted_metric", "patched", "resid", "mlp_window",
          "dropped_ids")


def _check_selection(*, top_k: Any, threshold: Any, param_budget: Any) -> None:
    """Refuse a wrongly typed :meth:`ComponentScores.to_mask` option: ``top_k=2.5`` failed with "slice
    indices must be integers", ``param_budget="10000"`` with "'<' not supported", and ``top_k=True``
    was taken as 1."""
    for opt, value in (("top_k", top_k), ("param_budget", param_budget)):
        if opt == "param_budget" and isinstance(value, float) and value.is_integer():
            continue  # param_budget=1e6 worked before (it is only compared with counts)
        if value is not None:
            _check_whole("to_mask", opt, value)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)):
        fix = f"; write threshold=float({threshold!r})" if isinstance(threshold, str) else ""
        raise TypeError(f"to_mask: threshold must be a number (the |score| a component needs), got "
                        f"{type(threshold).__name__} {threshold!r}{fix}")
    # NaN and +inf compare >= with no finite score: an empty mask, without a word (-inf keeps every score)
    if threshold is not None and (math.isnan(float(threshold)) or float(threshold) == math.inf):  # float: Fraction
        raise ValueError(f"to_mask: threshold={float(threshold)} selects no component (no finite score is >= it); "
                         "give a finite number (the |score| a component needs), or top_k= / param_budget=")


def _check_whole(where: str, opt: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a whole number (an int; ``bool`` is refused: ``True`` meant 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fix = f"; write {opt}=int({value!r})" if isinstance(value, (float, str)) else ""
        raise TypeError(f"{where}: {opt} must be a whole number (an int), got {type(value).__name__} {value!r}{fix}")


#: The keys every :meth:`ComponentScores.to_dict` has.
_SCORES_KEYS = ("method", "metric", "shape", "scores")


def _check_scores_dict(d: Any) -> None:
    """Raise ``ValueError`` naming the layout when ``d`` is not what :meth:`ComponentScores.to_dict` writes."""
    if isinstance(d, Mapping) and all(k in d for k in _SCORES_KEYS):
        return
    from factlens.files import not_saved_as

    raise not_saved_as("ComponentScores", d, needs=f"the keys {list(_SCORES_KEYS)} (what ComponentScores.to_dict() "
                       "writes)", own_loader="ComponentScores.save / to_dict")


def _is_saved_scores(head: str) -> bool:
    """Whether a file's first characters are those of :meth:`ComponentScores.save` (``{"method": ..., "metric": ...``)."""
    return re.match(r'\{\s*"method": "(?:[^"\\]|\\.)*",\s*"metric": ', head) is not None


def _from_legacy_extra(extra: dict[str, Any], typed: dict[str, Any]) -> None:
    """Move the keys older files kept in ``extra`` into ``typed`` (in place); drop derived ones."""
    for f, keys in _LEGACY.items():
        found = [k for k in keys if k in extra]
        if found and f not in typed:
            typed[f] = extra[found[0]]
        for k in found:
            extra.pop(k)
    if "resid" in extra and "resid" not in typed:
        cols = dict(offsets=extra.get("resid_offsets", ()), counts=extra.get("resid_counts", ()),
                    tokens=extra.get("resid_tokens", ()), roles=extra.get("roles", ()))
        typed["resid"] = ResidMap(extra["resid"], by_role=extra.get("resid_by_role"),
                                  patched=extra.get("resid_patched"), **cols)
        if "mlp_window" in extra:
            typed["mlp_window"] = ResidMap(extra["mlp_window"], by_role=extra.get("mlp_window_by_role"), **cols)
    for k in _LEGACY_DERIVED:
        extra.pop(k, None)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "detach"):
        return x.detach().cpu().tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Component):
        return x.label
    return x
