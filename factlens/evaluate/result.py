"""Typed evaluation results: per fact first, then aggregated with counts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Metric", "SuiteResult", "EvalResult"]


@dataclass(frozen=True)
class Metric:
    """One aggregated number with the count behind it.

    Attributes:
        name: Metric name in the paper's terms (``"forget_accuracy"``, ``"mcq_edit_accuracy"``...).
        value: The aggregate (mean over facts unless stated).
        n: Number of facts (or prompts/tokens, see ``unit``) behind it.
        unit: What ``n`` counts (``"facts"``, ``"prompts"``, ``"tokens"``, ``"questions"``).
        baseline: The same metric on the unedited model (``None`` if not computed).
        at_chance: True when the unedited model is not clearly above chance on this format,
            so the metric says nothing about robustness.
        higher_is_better: Direction, for plots and tables.
        stderr: Standard error when meaningful.
    """

    name: str
    value: float
    n: int
    unit: str = "facts"
    baseline: float | None = None
    at_chance: bool = False
    higher_is_better: bool = True
    stderr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SuiteResult:
    """The result of one evaluation suite.

    Attributes:
        suite: Suite name (``"standard"``, ``"formats"``, ``"side_effects"``, ``"relearning"``,
            ``"probes"``, ``"soft_prompts"``, ``"mechanisms"``).
        metrics: Aggregated metrics.
        per_fact: One dict per fact (``record_id`` plus per-fact values) — the raw data.
        extra: Suite-specific JSON-serializable data (curves, per-layer arrays, notes).
        seconds: Wall time of the suite.
    """

    suite: str
    metrics: tuple[Metric, ...]
    per_fact: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __getitem__(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"suite {self.suite!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}")

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "metrics": [m.to_dict() for m in self.metrics], "per_fact": list(self.per_fact),
                "extra": self.extra, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SuiteResult":
        mets = tuple(Metric(**{k: (float("nan") if k == "value" and v is None else v) for k, v in m.items()})
                     for m in d["metrics"])
        return cls(d["suite"], mets, tuple(d.get("per_fact", ())), d.get("extra", {}), d.get("seconds", 0.0))


@dataclass(frozen=True)
class EvalResult:
    """All suites of one evaluation.

    Attributes:
        suites: Suite name -> result.
        task: ``Task.summary()`` of the evaluated task.
        meta: Model name, localization, seeds, timings...
    """

    suites: dict[str, SuiteResult]
    task: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, suite: str) -> SuiteResult:
        return self.suites[suite]

    def metric(self, name: str) -> Metric:
        """Find a metric by name in any suite."""
        for s in self.suites.values():
            for m in s.metrics:
                if m.name == name:
                    return m
        raise KeyError(name)

    def flat(self) -> dict[str, float]:
        """``{"suite.metric": value}`` for tables."""
        return {f"{s.suite}.{m.name}": m.value for s in self.suites.values() for m in s.metrics}

    def to_frame(self):
        """One row per metric: suite, metric, value, n, unit, baseline, at_chance."""
        import pandas as pd

        rows = [{"suite": s.suite, **m.to_dict()} for s in self.suites.values() for m in s.metrics]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "meta": self.meta, "suites": {k: v.to_dict() for k, v in self.suites.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        return cls({k: SuiteResult.from_dict(v) for k, v in d["suites"].items()}, d.get("task", {}), d.get("meta", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=_default))

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)
