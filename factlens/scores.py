"""Component scores: the result of every localization method."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from factlens.components import Component, Mask, ModelShape

__all__ = ["ComponentScores"]


@dataclass(frozen=True)
class ComponentScores:
    """Scores aligned with components, from one localization method.

    Attributes:
        components: The scored components.
        values: One score per component (``float64``); larger ``|value|`` = more important.
        method: The method name (``"activation_patching"``, ...).
        metric: What the score measures (``"logit_diff"``, ``"prob"``, ``"probe_accuracy"``...).
        shape: The model's :class:`ModelShape`, used for parameter budgets and plotting.
        extra: Method-specific arrays and metadata (JSON-serializable): e.g.
            ``"resid"`` (layer x position patching), ``"probe_accuracy"`` per layer,
            ``"per_example"`` scores, ``"flu_layers"``.
        name: Optional name of the localization (``"flu"``, ``"causal_tracing_mlps"``).

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

    def __post_init__(self) -> None:
        vals = np.asarray(self.values, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "components", tuple(self.components))
        if len(vals) != len(self.components):
            raise ValueError(f"{len(self.components)} components but {len(vals)} values")
        if len(set(self.components)) != len(self.components):
            raise ValueError("components must be unique")

    @classmethod
    def from_dict_of_scores(cls, scores: dict, *, method: str, metric: str, shape: ModelShape, **kw) -> "ComponentScores":
        comps = [c if isinstance(c, Component) else Component.parse(c) for c in scores]
        return cls(tuple(comps), np.array(list(scores.values()), dtype=np.float64), method, metric, shape, **kw)

    def __len__(self) -> int:
        return len(self.components)

    def __getitem__(self, c: Component | str) -> float:
        if isinstance(c, str):
            c = Component.parse(c)
        return float(self.values[self.components.index(c)])

    def as_dict(self) -> dict[str, float]:
        return {c.label: float(v) for c, v in zip(self.components, self.values)}

    def _order(self) -> np.ndarray:
        # stable: by |score| descending, ties by component order
        return np.argsort(-np.abs(self.values), kind="stable")

    def top(self, k: int) -> list[Component]:
        """The ``k`` components with the largest ``|score|``."""
        if k < 0:
            raise ValueError("k must be >= 0")
        return [self.components[i] for i in self._order()[:k]]

    def restrict(self, kind: str | Sequence[str]) -> "ComponentScores":
        """Only components of the given kind(s) (e.g. ``"mlp"`` for MLP-only localizations)."""
        kinds = {kind} if isinstance(kind, str) else set(kind)
        idx = [i for i, c in enumerate(self.components) if c.kind in kinds]
        return ComponentScores(tuple(self.components[i] for i in idx), self.values[idx], self.method, self.metric,
                               self.shape, dict(self.extra), self.name)

    def to_mask(self, *, top_k: int | None = None, threshold: float | None = None,
                param_budget: int | None = None, name: str | None = None) -> Mask:
        """Turn scores into a :class:`Mask`; give exactly one of the three options.

        Args:
            top_k: The ``k`` components with the largest ``|score|``.
            threshold: Components with ``|score| >= threshold``.
            param_budget: Components in order of ``|score|`` while the total parameter count
                stays within the budget; a component that would overshoot is skipped and
                smaller ones further down are still tried, so the budget is met as closely as
                the component granularity allows (never exceeded).
            name: Name of the mask (default: the scores' name or method).
        """
        given = [x is not None for x in (top_k, threshold, param_budget)]
        if sum(given) != 1:
            raise ValueError("give exactly one of top_k=, threshold= or param_budget=")
        name = name or self.name or self.method
        if top_k is not None:
            return Mask(frozenset(self.top(top_k)), name=name)
        if threshold is not None:
            return Mask(frozenset(c for c, v in zip(self.components, self.values) if abs(v) >= threshold), name=name)
        if param_budget < 0:
            raise ValueError("param_budget must be >= 0")
        chosen: set[Component] = set()
        used = 0
        for i in self._order():
            c = self.components[i]
            trial = Mask(frozenset(chosen | {c}))
            n = trial.n_params(self.shape)
            if n <= param_budget:
                chosen.add(c)
                used = n
                if used == param_budget:
                    break
        return Mask(frozenset(chosen), name=name)

    # tables and plots
    def to_frame(self):
        """A pandas DataFrame with one row per component (label, kind, layer, index, score)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "component": [c.label for c in self.components],
                "kind": [c.kind for c in self.components],
                "layer": [c.layer for c in self.components],
                "index": [c.index for c in self.components],
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
        from factlens.plots import probe_curve, scores_heatmap

        if "probe_accuracy" in self.extra and self.method == "probing":
            return probe_curve(self, title=title)
        return scores_heatmap(self, title=title)

    # persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "name": self.name,
            "shape": self.shape.to_dict(),
            "scores": self.as_dict(),
            "extra": _jsonable(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ComponentScores":
        return cls.from_dict_of_scores(d["scores"], method=d["method"], metric=d["metric"],
                                       shape=ModelShape(**d["shape"]), extra=d.get("extra", {}),
                                       name=d.get("name", ""))

    def save(self, path: str | Path) -> None:
        """Save as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ComponentScores":
        return cls.from_dict(json.loads(Path(path).read_text()))


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
