"""Typed evaluation results: per fact first, then aggregated with counts."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from factlens.strict_json import json_default, read_json, strict_dumps  # json_default: importable here as before

__all__ = ["Metric", "SuiteResult", "EvalResult"]


#: ``Metric.ci_method`` values of metrics chosen on the same data (a best layer or attack variant)
SELECTED_CI_METHODS = frozenset({"wilson-max", "wilson-selected", "bootstrap-selected", "bootstrap-max"})


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
        ci_low: Lower end of the 95 % confidence interval of ``value``.
        ci_high: Upper end. Both are ``None`` only where no sample is behind the number:
            counts of a mask's parameters (the mechanisms suite: ``mask_params``,
            ``<mechanism>_params`` / ``_share``, ``weight_mask_*``) are properties of the mask,
            and the update_size suite's fractions (``update_below_half_bin_<scheme>``,
            ``update_erased_<scheme>``) are counted over every entry the edit changed, both
            not estimates; and a metric over a single unit has no spread to resample.
        ci_method: How the interval was computed: ``"wilson"`` (Wilson score interval of a
            proportion of 0/1 outcomes), ``"bootstrap"`` (seeded percentile bootstrap of the
            mean over units, 2,000 resamples), ``"wilson-max"`` (the largest of several
            accuracies on the same units, e.g. over layers: Wilson intervals at the Bonferroni
            level, :func:`factlens.stats.max_wilson_interval`), ``"bootstrap-selected"`` (the
            bootstrap of a metric measured at a variant chosen on the same facts: the interval
            of that variant, not of the choice), ``"wilson-selected"`` (the same for 0/1 outcomes:
            the Wilson interval of that variant), ``"bootstrap-max"`` (results saved before
            ``"wilson-max"``: a bootstrap of the maximum, which undercovers), ``"wilson-approx"``
            (results saved before 2026-12-05: Wilson on a cross-validated accuracy at the layer
            chosen on it, which ignores the choice); ``None`` without interval.
        samples: The per-unit values behind ``value``: unit id (the fact's ``record.id``,
            ``"chunk:<i>"`` for general-text chunks, ``"question:<i>"`` for MMLU) -> value.
            Two evaluations on the same units are paired on these ids
            (:func:`factlens.compare`). ``None`` when the metric has no per-unit values.
        weights: The per-unit weights behind ``value`` when it is a weighted mean (tokens per
            text chunk for ``next_token_accuracy``, ``next_token_loss``, ``kl_divergence``):
            unit id -> weight, the same ids as ``samples``. Paired differences, intervals over
            seeds and tests of the metric use them, so they estimate the same weighted mean
            as ``value``. ``None``: every unit counts the same (also results saved before
            weights were kept, whose token metrics then pair as plain chunk means).
    """

    name: str
    value: float
    n: int
    unit: str = "facts"
    baseline: float | None = None
    at_chance: bool = False
    higher_is_better: bool = True
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    samples: dict[str, float] | None = field(default=None, compare=False, repr=False)
    weights: dict[str, float] | None = field(default=None, compare=False, repr=False)

    @property
    def selected(self) -> bool:
        """Is ``value`` the best of several statistics chosen on the same data (a maximum over layers),
        or measured at a variant chosen that way (the strongest direction ablation)?

        Its ``samples`` are the units' outcomes at the chosen layer, so a paired test over
        them would ignore the choice (and pair two sides chosen at different layers):
        :func:`factlens.compare` reports the difference of such metrics but does not test it.
        """
        return self.ci_method in SELECTED_CI_METHODS

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metric":
        """Inverse of :meth:`to_dict` (a ``None`` ``value`` loads as NaN, as :meth:`to_dict` writes NaN as
        ``None``; ``baseline`` and ``stderr`` stay ``None``, "none"); results saved before intervals existed load with ``ci_* = None``, those saved
        before weights were kept with ``weights = None`` (equal weights).

        Raises:
            ValueError: ``d`` is not a mapping with ``name``, ``value`` and ``n``, or a field has
                the wrong type (a number that is not one, an ``n`` that is no whole number >= 0,
                an ``at_chance`` / ``higher_is_better`` that is not true or false).
        """
        missing = [k for k in ("name", "value", "n") if not isinstance(d, Mapping) or k not in d]
        if missing:
            what = repr(d.get("name", "?")) if isinstance(d, Mapping) else f"a {type(d).__name__}"
            raise ValueError(f"a Metric dict needs 'name', 'value' and 'n' (what Metric.to_dict() writes); "
                             f"metric {what} lacks {missing}")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("value") is None:
            kw["value"] = float("nan")
        bad = [k for k in ("value", "n", "baseline", "stderr", "ci_low", "ci_high") if k in kw and kw[k] is not None
               and (isinstance(kw[k], bool) or not isinstance(kw[k], numbers.Real))]
        if bad or (isinstance(kw.get("n"), numbers.Real) and kw["n"] < 0):
            # a damaged file's "abc" went into to_frame() and plots without a word
            raise ValueError(f"metric {kw.get('name')!r}: {bad or ['n']} must be numbers (n >= 0), got "
                             f"{ {k: kw[k] for k in bad or ['n']} }: the file is damaged or not factlens's")
        _check_count_and_flags(kw)
        if isinstance(kw["n"], float):
            kw["n"] = int(kw["n"])  # a whole number written as 3.0
        return cls(**kw)

    @classmethod
    def from_samples(cls, name: str, samples: Mapping[str, float], *, unit: str = "facts",
                     baseline: float | None = None, at_chance: bool = False, higher_is_better: bool = True,
                     weights: Mapping[str, float] | None = None, confidence: float = 0.95, seed: int = 0,
                     proportion: bool = True) -> "Metric":
        """The mean of per-unit values with its 95 % interval (the one way suites build metrics).

        The interval is a Wilson score interval when every value is 0 or 1 (an accuracy over
        facts/prompts/questions), otherwise a seeded percentile bootstrap over units
        (``factlens.stats``). NaN values (e.g. a fact without an edit target) are left out.

        Args:
            name: Metric name.
            samples: Unit id (``record.id``...) -> value.
            unit: What the units are (``"facts"``, ``"tokens"``...; ``n`` counts the units,
                or with ``weights`` their total weight).
            baseline: The unedited model's value.
            at_chance: The chance flag of the format.
            higher_is_better: Direction.
            weights: Optional weight per unit (tokens per text chunk; >= 0, one for every unit
                with a value): weighted mean, its standard error
                (:func:`factlens.stats.weighted_mean_se`), and the bootstrap resamples units
                with their weights. Kept in the metric's ``weights`` for paired comparisons.
            confidence: Interval coverage.
            seed: Bootstrap seed.
            proportion: ``False`` for a metric whose per-unit values can lie outside [0, 1] (a
                selective recovery, -1 ... 1): it keeps the bootstrap interval when its values
                happen to be all 0 or 1 (a Wilson interval pinned at 0 is no interval of such a
                mean), and :func:`factlens.compare` then treats it as continuous too.

        Raises:
            ValueError: No unit has a value, or ``weights`` lacks a unit, has a negative or
                non-finite weight, or sums to zero.

        Example:
            >>> m = Metric.from_samples("forget_accuracy", {f"f{i}": float(i < 8) for i in range(16)})
            >>> m.value, m.n, round(m.ci_low, 3), round(m.ci_high, 3), m.ci_method
            (0.5, 16, 0.28, 0.72, 'wilson')
        """
        from factlens.stats import bootstrap_mean_interval, is_binary, weighted_mean_se, wilson_interval

        ids = [k for k, v in samples.items() if v is not None and not math.isnan(float(v))]
        if not ids:
            raise ValueError(f"metric {name!r}: no unit has a value (all {len(samples)} are missing/NaN)")
        v = np.array([float(samples[k]) for k in ids])
        w = None if weights is None else _unit_weights(name, ids, weights)
        value = float(v.mean()) if w is None else float((w * v).sum() / w.sum())
        se = weighted_mean_se(v, weights=w)
        if w is None and proportion and is_binary(v):
            ci, method = wilson_interval(int(v.sum()), len(v), confidence=confidence), "wilson"
        else:
            ci = bootstrap_mean_interval(v, weights=w, confidence=confidence, seed=seed)
            method = "bootstrap" if ci is not None else None
        n = len(v) if w is None else int(w.sum())
        return cls(name, value, n, unit, baseline, bool(at_chance), higher_is_better, se,
                   ci[0] if ci else None, ci[1] if ci else None, method, {k: float(x) for k, x in zip(ids, v)},
                   None if w is None else {k: float(x) for k, x in zip(ids, w)})


def _check_count_and_flags(kw: Mapping[str, Any]) -> None:
    """Refuse (``ValueError`` naming the field) a Metric dict's ``n`` that is no whole number and an
    ``at_chance`` / ``higher_is_better`` that is not a bool: a hand-edited file's ``"false"`` loaded
    as a truthy string (the metric then counted as at chance), a ``2.5`` as a count of facts."""
    name = kw.get("name")
    n = kw.get("n")
    if isinstance(n, bool) or not (isinstance(n, numbers.Integral) or (isinstance(n, float) and n.is_integer())):
        raise ValueError(f"metric {name!r}: 'n' must be a whole number (the count of units behind the value), "
                         f"got {n!r}: the file is damaged or not factlens's")
    for key in ("at_chance", "higher_is_better"):
        if key in kw and not isinstance(kw[key], (bool, np.bool_)):
            raise ValueError(f"metric {name!r}: {key!r} must be true or false, got {kw[key]!r} (a "
                             f"{type(kw[key]).__name__}): the file is damaged or not factlens's; write true or false")


def _unit_weights(name: str, ids: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """The weights of ``ids`` (``Metric.from_samples``), checked: one per unit, finite, >= 0, not all 0."""
    missing = [k for k in ids if k not in weights]
    if missing:
        raise ValueError(f"metric {name!r}: weights lack {len(missing)} of the {len(ids)} units with a value "
                         f"(e.g. {missing[:3]}); give one weight per unit")
    w = np.array([float(weights[k]) for k in ids])
    if not np.all(np.isfinite(w) & (w >= 0)) or not w.sum() > 0:
        raise ValueError(f"metric {name!r}: weights must be finite and >= 0 with a positive sum, got "
                         f"min {w.min()}, sum {w.sum()}")
    return w


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
        m = self.get(name)
        if m is None:
            raise KeyError(f"suite {self.suite!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}")
        return m

    def get(self, name: str, default: Metric | None = None) -> Metric | None:
        """The metric called ``name``, or ``default`` when the suite has none (like ``dict.get``)."""
        return next((m for m in self.metrics if m.name == name), default)

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "metrics": [m.to_dict() for m in self.metrics], "per_fact": list(self.per_fact),
                "extra": self.extra, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SuiteResult":
        """Inverse of :meth:`to_dict` (metrics with their intervals and samples, ``per_fact``, ``extra``).

        Raises:
            ValueError: ``d`` lacks ``suite`` or ``metrics``, or a metric is malformed.
        """
        if not isinstance(d, Mapping) or "suite" not in d or not isinstance(d.get("metrics"), (list, tuple)):
            raise ValueError("a SuiteResult dict needs 'suite' and a 'metrics' list (what SuiteResult.to_dict() "
                             f"writes); got {sorted(d) if isinstance(d, Mapping) else type(d).__name__}")
        mets = tuple(Metric.from_dict(m) for m in d["metrics"])
        return cls(d["suite"], mets, tuple(d.get("per_fact", ())), dict(d.get("extra") or {}), d.get("seconds", 0.0))


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
        """One row per metric: suite, name, value, n, unit, baseline, at_chance, higher_is_better,
        stderr, ci_low, ci_high, ci_method (the 95 % interval; ``None`` only where no sample is
        behind the number, see :class:`Metric`). The per-unit ``samples`` and ``weights`` are left out."""
        import pandas as pd

        rows = [{"suite": s.suite, **{k: v for k, v in m.to_dict().items() if k not in ("samples", "weights")}}
                for s in self.suites.values() for m in s.metrics]
        return pd.DataFrame(rows)

    def plot(self, *, metrics: Sequence[str] | None = None, show_baseline: bool = True, title: str | None = None):
        """A plotly Figure: one panel per suite with bars of its headline metrics, the unedited
        model's value beside each, and the 95 % intervals as error bars
        (:func:`factlens.evaluation.plots.suite_bars`).

        Args:
            metrics: Metric names (``"forget_accuracy"`` or ``"standard.forget_accuracy"``);
                default: those of :data:`~factlens.evaluation.plots.HEADLINE_METRICS` present.
            show_baseline: Draw the unedited model's value (grey bars) where it is known.
            title: Figure title.

        Raises:
            ValueError: None of the metrics is in the result, or a named metric is not.
        """
        from factlens.evaluation.plots import suite_bars

        return suite_bars(self, metrics, show_baseline=show_baseline, title=title)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "meta": self.meta, "suites": {k: v.to_dict() for k, v in self.suites.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        """Inverse of :meth:`to_dict`: reads :meth:`save`'s JSON and the ``"eval"`` of a run record.

        Raises:
            ValueError: ``d`` has no ``suites`` mapping, or a suite or metric in it is malformed
                (the message names the suite).
        """
        if not isinstance(d, Mapping) or not isinstance(d.get("suites"), Mapping):
            raise ValueError("an EvalResult dict needs a 'suites' mapping (what EvalResult.to_dict() writes); got "
                             f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}")
        suites = {}
        for k, v in d["suites"].items():
            try:
                suites[k] = SuiteResult.from_dict(v)
            except ValueError as e:
                raise ValueError(f"suite {k!r}: {e}") from e
        return cls(suites, dict(d.get("task") or {}), dict(d.get("meta") or {}))

    def save(self, path: str | Path) -> None:
        """Save as JSON that strict parsers read too (NaN and infinities as ``null``,
        :mod:`factlens.strict_json`), written atomically.

        Raises:
            ValueError: ``path`` is a folder, or an existing file that is not an evaluation
                factlens saved (it is left alone; an earlier saved evaluation is replaced).
        """
        from factlens.files import check_output, write_atomic

        check_output(path, what="saved EvalResult", ours=lambda head: _is_saved_eval(head) and _has_eval_layout(path))
        text = strict_dumps(self.to_dict())
        write_atomic(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        """Read a file :meth:`save` wrote.

        Raises:
            ValueError: The file is empty or not JSON (the message names it), or not an evaluation's layout.
        """
        return cls.from_dict(read_json(path, what="a saved EvalResult (JSON written by EvalResult.save)"))


def _is_saved_eval(head: str) -> bool:
    """Whether a file's first characters are those of :meth:`EvalResult.save` (``{"task": {`` or
    ``{"task": null``: its first key; the task's description can be long, so the rest of the layout is
    checked on the whole file, :func:`_has_eval_layout`)."""
    import re

    return re.match(r'\{\s*"task": (?:\{|null\b)', head) is not None


def _has_eval_layout(path: str | Path) -> bool:
    """Whether the JSON file at ``path`` has the layout every version of :meth:`EvalResult.save` wrote:
    an object with ``"task"`` and ``"meta"`` (objects, or null) and ``"suites"`` (an object of suite
    objects). A file that merely opens with a ``"task"`` key (a user's ``{"task": "my notes"}``) was
    taken for a saved evaluation and overwritten."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not JSON (UnicodeDecodeError is a ValueError): not ours
        return False
    return (isinstance(d, dict) and {"task", "meta", "suites"} <= set(d)
            and all(d[k] is None or isinstance(d[k], dict) for k in ("task", "meta"))
            and isinstance(d["suites"], dict) and all(isinstance(v, dict) for v in d["suites"].values()))
