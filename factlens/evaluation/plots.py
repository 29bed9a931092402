"""Plotly figures of evaluation results (one :class:`~factlens.evaluation.result.EvalResult` per localization).

Every function takes either one result or a dict ``{localization name: result}`` (results
may also be single :class:`~factlens.evaluation.result.SuiteResult` objects) and returns a
``plotly.graph_objects.Figure``. Metric names are shown with the paper's names
(:func:`metric_label`: ``forget_accuracy`` -> "Forget", ``mcq_edit_accuracy`` -> "MCQ Edit", ...).

Example:
    >>> from factlens.evaluation.result import EvalResult, Metric, SuiteResult
    >>> r = EvalResult({"standard": SuiteResult("standard", (Metric("forget_accuracy", 0.1, 8, higher_is_better=False),
    ...                                                       Metric("maintain_accuracy", 0.9, 8)))})
    >>> len(metric_bars({"flu": r}).data), metric_label("mcq_forget_error")
    (1, 'MCQ Forget Error')
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from factlens.evaluation.relearning import BEFORE_ATTACK_METRICS
from factlens.evaluation.result import EvalResult, Metric, SuiteResult

__all__ = ["spider_plot", "spider_metrics", "metric_bars", "suite_bars", "probe_curves", "lens_curves", "in_context_curves", "relearning_bars", "update_size_histogram",
           "metric_label", "SPIDER_METRICS", "BAR_METRICS", "HEADLINE_METRICS"]

#: Default axes of :func:`spider_plot` (those present in the results are drawn).
SPIDER_METRICS: tuple[str, ...] = (
    "forget_accuracy", "edit_accuracy", "maintain_accuracy", "mcq_forget_error", "mcq_edit_accuracy",
    "paraphrase_forget_error", "paraphrase_edit_accuracy", "neighborhood_maintain_accuracy",
    "neighborhood_edit_error", "relearn_forget_accuracy", "soft_prompt_forget_accuracy",
    "probe_true_accuracy_max", "probe_target_accuracy_max", "mmlu_accuracy",
)

#: Default metrics of :func:`metric_bars`.
BAR_METRICS: tuple[str, ...] = (
    "forget_accuracy", "edit_accuracy", "maintain_accuracy", "mcq_forget_error", "mcq_edit_accuracy",
    "mcq_maintain_accuracy", "paraphrase_forget_error", "paraphrase_edit_accuracy", "neighborhood_maintain_accuracy",
    "neighborhood_edit_error", "mmlu_accuracy",
)

#: The headline metrics: the defaults of :meth:`EvalResult.plot <factlens.evaluation.result.EvalResult.plot>`
#: (:func:`suite_bars`) and the metrics shown first in the run report's Comparisons section.
HEADLINE_METRICS: tuple[str, ...] = (
    "forget_accuracy", "edit_accuracy", "maintain_accuracy", "mcq_forget_error", "paraphrase_forget_error",
    "paraphrase_edit_accuracy", "next_token_accuracy", "kl_divergence", "mmlu_accuracy", "relearn_forget_accuracy",
    "soft_prompt_forget_accuracy", "probe_true_accuracy_last", "probe_target_accuracy_last",
)

_EXACT = {
    "forget_accuracy": "Forget", "forget_prob": "Forget Prob", "edit_accuracy": "Edit", "edit_prob": "Edit Prob",
    "maintain_accuracy": "Maintain", "maintain_prob": "Maintain Prob", "mmlu_accuracy": "MMLU",
    "next_token_accuracy": "Text Acc", "next_token_loss": "Text Loss", "kl_divergence": "KL",
    "neighborhood_maintain_accuracy": "Neighborhood", "neighborhood_edit_error": "Neighborhood Edit Error",
    "relearn_forget_accuracy": "Relearned Forget", "relearn_forget_accuracy_before": "Forget (before relearning)",
    "soft_prompt_forget_accuracy": "Soft-Prompt Forget", "probe_true_accuracy_max": "Probe True (max)",
    "probe_true_accuracy_last": "Probe True (last)", "probe_target_accuracy_max": "Probe Target (max)",
    "probe_target_accuracy_last": "Probe Target (last)",
}
_PREFIX = {"mcq": "MCQ", "paraphrase": "Paraphrase", "zero_shot": "Zero-Shot", "professional": "Professional",
           "sport_played": "Sport-Played", "neighborhood": "Neighborhood", "relearn": "Relearn",
           "soft_prompt": "Soft-Prompt", "probe": "Probe"}
_SUFFIX = {"forget_accuracy": "Forget", "forget_error": "Forget Error", "edit_accuracy": "Edit",
           "maintain_accuracy": "Maintain", "edit_error": "Edit Error", "train_accuracy": "Train"}


def metric_label(name: str) -> str:
    """The paper's name of a metric (falls back to a title-cased name)."""
    if name in _EXACT:
        return _EXACT[name]
    for p, pl in _PREFIX.items():
        if name.startswith(p + "_"):
            rest = name[len(p) + 1:]
            return f"{pl} {_SUFFIX.get(rest, rest.replace('_', ' ').title())}"
    return name.replace("_", " ").title()


# -- inputs ------------------------------------------------------------------------------------
def _as_dict(results) -> dict[str, Any]:
    if isinstance(results, (EvalResult, SuiteResult)):
        return {"model": results}
    if isinstance(results, Mapping) and results:
        bad = [k for k, v in results.items() if not isinstance(v, (EvalResult, SuiteResult))]
        if bad:
            raise TypeError(f"results {bad} are not EvalResult/SuiteResult objects")
        return dict(results)
    raise TypeError("give an EvalResult, a SuiteResult or a non-empty dict {localization: result}, "
                    f"got {type(results).__name__}")


def _find(res, name: str) -> Metric | None:
    try:
        return res.metric(name) if isinstance(res, EvalResult) else res[name]
    except KeyError:
        return None


def _suite(res, suite: str) -> SuiteResult | None:
    if isinstance(res, SuiteResult):
        return res if res.suite == suite else None
    return res.suites.get(suite)


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _present(results: dict[str, Any], metrics: Sequence[str], *, unit_interval: bool = False) -> list[str]:
    out = []
    for name in metrics:
        ms = [m for m in (_find(r, name) for r in results.values()) if m is not None and _finite(m.value)]
        if ms and (not unit_interval or all(-1e-9 <= m.value <= 1 + 1e-9 for m in ms)):
            out.append(name)
    return out


def _metric_names(metrics: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """``metrics`` as a list (``default`` when ``None``), refusing one bare name: iterated, a string was
    its letters ("none of the metrics ['f', 'o', ...]" from :func:`metric_bars` and :func:`spider_plot`)."""
    wanted = list(default if metrics is None else metrics)
    if isinstance(metrics, str) or not all(isinstance(n, str) for n in wanted):
        raise TypeError(f"metrics must be a list of metric names, got {metrics!r}"
                        + (f"; write metrics=[{metrics!r}]" if isinstance(metrics, str) else ""))
    return wanted


def _error_bars(ms: Sequence[Metric | None]) -> dict[str, Any]:
    """plotly ``error_y``: the metrics' 95 % intervals (asymmetric), else their standard errors, else
    none (NaN: plotly draws no bar; a 0 drew a cap that read as an exact value)."""
    up, down = [], []
    for m in ms:
        if m is not None and _finite(m.value) and _finite(m.ci_low) and _finite(m.ci_high):
            up.append(max(m.ci_high - m.value, 0.0))
            down.append(max(m.value - m.ci_low, 0.0))
        else:
            se = m.stderr if m is not None and _finite(m.stderr) else float("nan")
            up.append(se)
            down.append(se)
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down}


def _go():
    import plotly.graph_objects as go

    return go


# -- figures -----------------------------------------------------------------------------------
def spider_metrics(results, metrics: Sequence[str] | None = None) -> list[str]:
    """The metrics :func:`spider_plot` draws for ``results``: those of ``metrics`` (default
    :data:`SPIDER_METRICS`) that some result has with a value in ``[0, 1]``; empty when the
    suites have none (``--suites mechanisms``: the report says so instead of an error)."""
    return _present(_as_dict(results), _metric_names(metrics, SPIDER_METRICS), unit_interval=True)


def _spider_point(m: Metric | None) -> tuple[float | None, float | None, float | None]:
    """A metric's (value, interval low, interval high) as the spider draws it: ``1 - x`` where lower
    is better, so the interval's ends swap there (``[a, b]`` becomes ``[1 - b, 1 - a]``)."""
    if m is None or not _finite(m.value):
        return None, None, None
    ci = (m.ci_low, m.ci_high) if _finite(m.ci_low) and _finite(m.ci_high) else (None, None)
    if m.higher_is_better:
        return m.value, ci[0], ci[1]
    return 1 - m.value, None if ci[1] is None else 1 - ci[1], None if ci[0] is None else 1 - ci[0]


def _spider_interval(loc: str, labels: Sequence[str], points: Sequence[tuple], color: str):
    """A localization's 95 % intervals: a short radial segment from low to high on each axis (plotly's
    polar traces have no error bars), in its colour and legend group, ``None`` when it has none."""
    go = _go()
    r, theta, text = [], [], []
    for label, (v, lo, hi) in zip(labels, points):
        if lo is None:
            continue
        tip = f"{loc}, {label}: {v:.3f} [{lo:.3f}, {hi:.3f}]"
        r += [lo, hi, None]
        theta += [label, label, None]
        text += [tip, tip, None]
    if not r:
        return None
    return go.Scatterpolar(r=r, theta=theta, mode="lines+markers", name=f"{loc} 95 % interval", legendgroup=loc,
                           showlegend=False, connectgaps=False, line={"color": color, "width": 3},
                           marker={"size": 4, "color": color}, opacity=0.8, hoverinfo="text", text=text)


def spider_plot(results, metrics: Sequence[str] | None = None, *, title: str | None = None):
    """Radar chart per localization over robustness metrics, oriented so that outward = better.

    Metrics where lower is better (``higher_is_better=False``, e.g. forget accuracy) are shown
    as ``1 - value`` (their interval ``[a, b]`` as ``[1 - b, 1 - a]``); only metrics in ``[0, 1]``
    are drawn. A localization missing a metric has a gap there. An axis whose metric is at
    chance on the unedited model for some localization says "(at chance)" (its value says
    nothing about robustness). A metric's 95 % interval is a short radial segment on its axis
    in the localization's colour (hover: value [low, high]); metrics without one have none.

    Args:
        results: ``{localization: EvalResult}`` (or one result).
        metrics: Metric names (default :data:`SPIDER_METRICS`, those present).
        title: Figure title.
    """
    go = _go()
    res = _as_dict(results)
    names = spider_metrics(res, metrics)
    if not names:
        raise ValueError(f"none of the metrics {list(metrics or SPIDER_METRICS)} (with values in [0, 1]) is in the results")
    fig = go.Figure()
    labels = []
    for n in names:
        m = next(m for m in (_find(r, n) for r in res.values()) if m is not None)
        label = metric_label(n) if m.higher_is_better else f"1 - {metric_label(n)}"
        # as the bars and Table 1 say: the unedited model is not above chance there
        chance = any(x is not None and x.at_chance for x in (_find(r, n) for r in res.values()))
        labels.append(f"{label} (at chance)" if chance else label)
    intervals = []
    for loc, r in res.items():
        points = [_spider_point(_find(r, n)) for n in names]
        vals = [p[0] for p in points]
        fig.add_trace(go.Scatterpolar(r=vals + vals[:1], theta=labels + labels[:1], name=loc, fill="toself",
                                      opacity=0.55, connectgaps=False, legendgroup=loc))
        intervals.append((loc, points))
    colors = fig.layout.template.layout.colorway or _default_colorway()
    for i, (loc, points) in enumerate(intervals):  # after the areas: these keep the colours they had
        trace = _spider_interval(loc, labels, points, colors[i % len(colors)])
        if trace is not None:
            fig.add_trace(trace)
    fig.update_layout(title=title or "Robustness per localization (outward = better)",
                      polar={"radialaxis": {"range": [0, 1]}}, showlegend=True)
    return fig


def _default_colorway() -> list[str]:
    import plotly.colors

    return list(plotly.colors.qualitative.Plotly)


def metric_bars(results, metrics: Sequence[str] | None = None, *, show_baseline: bool = True,
                title: str | None = None):
    """Grouped bars of metrics (paper names) per localization, with the unedited baseline.

    Error bars are the metrics' 95 % confidence intervals (their standard errors for
    results saved without intervals).

    Args:
        results: ``{localization: EvalResult}`` (or one result).
        metrics: Metric names (default :data:`BAR_METRICS`, those present).
        show_baseline: Add an "original" bar group: the unedited model's value of each metric
            where every result agrees on it (none for a relearning metric whose baseline is
            the edited model before the attack, nor where the unedited model was scored on
            each localization's own data).
        title: Figure title.
    """
    go = _go()
    res = _as_dict(results)
    names = _present(res, _metric_names(metrics, BAR_METRICS))
    if not names:
        raise ValueError(f"none of the metrics {list(metrics or BAR_METRICS)} is in the results")
    labels = [metric_label(n) for n in names]
    fig = go.Figure()
    if show_baseline:
        base = [_shared_original(res, n) for n in names]
        if any(b is not None for b in base):
            fig.add_trace(go.Bar(x=labels, y=base, name="original", marker_color="lightgray"))
    for loc, r in res.items():
        ms = [_find(r, n) for n in names]
        y = [m.value if m is not None and _finite(m.value) else None for m in ms]
        text = ["(at chance)" if m is not None and m.at_chance else "" for m in ms]
        fig.add_trace(go.Bar(x=labels, y=y, name=loc, error_y=_error_bars(ms), text=text,
                             hovertext=[f"{n}: n={m.n}" if m is not None else n for n, m in zip(names, ms)]))
    fig.update_layout(barmode="group", title=title or "Evaluation metrics per localization", yaxis_title="value",
                      xaxis_title="metric")
    return fig


def _shared_original(res: dict[str, Any], name: str) -> float | None:
    """The unedited model's value of ``name`` when every result that has it agrees on it, else ``None``.

    A relearning metric's baseline is each edited model before the attack
    (:data:`~factlens.evaluation.relearning.BEFORE_ATTACK_METRICS`), and some suites score the
    unedited model on each localization's own data: the first result's baseline was drawn as
    every localization's "original".
    """
    if name.rsplit(".", 1)[-1] in BEFORE_ATTACK_METRICS:
        return None
    bases = [m.baseline for m in (_find(r, name) for r in res.values()) if m is not None and _finite(m.baseline)]
    if not bases or not all(math.isclose(b, bases[0], rel_tol=1e-9, abs_tol=1e-12) for b in bases):
        return None
    return bases[0]


def _suite_panels(result: EvalResult, metrics: Sequence[str] | None) -> list[tuple[str, list[Metric]]]:
    """``[(suite, [metric, ...])]``: per suite, the wanted metrics it has, in the order asked for."""
    wanted = _metric_names(metrics, HEADLINE_METRICS)
    rank = {n: i for i, n in enumerate(wanted)}
    panels, found = [], set()
    for s in result.suites.values():
        hits = [(rank.get(f"{s.suite}.{m.name}", rank.get(m.name)), m) for m in s.metrics]
        hits = sorted(((i, m) for i, m in hits if i is not None), key=lambda x: x[0])
        found |= {wanted[i] for i, _ in hits}
        if hits:
            panels.append((s.suite, [m for _, m in hits]))
    have = [f"{s.suite}.{m.name}" for s in result.suites.values() for m in s.metrics]
    if metrics is not None and set(wanted) - found:
        raise ValueError(f"the result has no metric {sorted(set(wanted) - found)}; it has {have}")
    if not panels:
        raise ValueError(f"none of the metrics {wanted} is in the result (it has {have}); "
                         "pass metrics=[...] naming the ones to draw")
    return panels


def suite_bars(result, metrics: Sequence[str] | None = None, *, show_baseline: bool = True,
               title: str | None = None):
    """One panel per suite: bars of its metrics with 95 % intervals as error bars (``EvalResult.plot``).

    Each panel has its own value axis (a KL divergence and an accuracy do not share a scale).
    The grey bar beside each metric is the unedited model's value (its ``baseline``; a darker
    "before the attack" bar for the relearning metrics whose baseline is the edited model
    before the attack, :data:`~factlens.evaluation.relearning.BEFORE_ATTACK_METRICS`); metrics
    flagged ``at_chance`` are labelled so. Error bars are the metrics' 95 % confidence
    intervals (their standard errors for results saved without intervals).

    Args:
        result: An :class:`~factlens.evaluation.result.EvalResult` or one
            :class:`~factlens.evaluation.result.SuiteResult`.
        metrics: Metric names (``"forget_accuracy"`` or ``"standard.forget_accuracy"``), drawn
            in this order; default: those of :data:`HEADLINE_METRICS` present.
        show_baseline: Draw the unedited model's value where it is known.
        title: Figure title.

    Raises:
        TypeError: ``result`` is not an EvalResult/SuiteResult.
        ValueError: None of the metrics is in the result, or a named metric is not.
    """
    go = _go()
    from plotly.subplots import make_subplots

    if isinstance(result, SuiteResult):
        result = EvalResult({result.suite: result})
    if not isinstance(result, EvalResult):
        raise TypeError(f"give an EvalResult or a SuiteResult, got {type(result).__name__}")
    panels = _suite_panels(result, metrics)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[s for s, _ in panels])
    legend = set()
    for col, (_, ms) in enumerate(panels, start=1):
        labels = [metric_label(m.name) for m in ms]
        for group, color, keep in (("original", "lightgray", lambda m: m.name not in BEFORE_ATTACK_METRICS),
                                   ("before the attack", "darkgray", lambda m: m.name in BEFORE_ATTACK_METRICS)):
            base = [m.baseline if _finite(m.baseline) and keep(m) else None for m in ms]
            if show_baseline and any(b is not None for b in base):
                fig.add_trace(go.Bar(x=labels, y=base, name=group, marker_color=color, legendgroup=group,
                                     showlegend=group not in legend), row=1, col=col)
                legend.add(group)
        fig.add_trace(go.Bar(x=labels, y=[m.value if _finite(m.value) else None for m in ms], name="edited",
                             marker_color="#636efa", error_y=_error_bars(ms), legendgroup="edited",
                             showlegend="edited" not in legend, text=["(at chance)" if m.at_chance else "" for m in ms],
                             hovertext=[f"{m.name}: n={m.n} {m.unit}" for m in ms]), row=1, col=col)
        legend.add("edited")
    fig.update_layout(barmode="group", title=title or "Evaluation: headline metrics per suite (95 % intervals)",
                      width=max(420, 260 * len(panels)), height=420)
    return fig


def _layer_curves(result_or_results, suite: str, lines: Sequence[tuple[str, str, str]], *, title: str,
                  single_only: Sequence[str] = (), chance_keys: Sequence[str] = ("chance",)):
    """Per-layer lines of ``suite``'s ``extra`` (``(key, dash, label)``), one set per localization,
    with the original's true-answer line (``extra["baseline"]["true"]``) when there is one result.
    The "chance" line is the first of ``chance_keys`` that ``extra`` has: the bar of the facts the
    curves are computed on (a suite can record other chance levels, e.g. of its training facts)."""
    go = _go()
    res = _as_dict(result_or_results)
    fig = go.Figure()
    single = len(res) == 1
    chance = None
    for loc, r in res.items():
        s = _suite(r, suite)
        if s is None:
            continue
        layers = s.extra.get("layers") or list(range(len(s.extra.get("true", []))))
        chance = next((s.extra[k] for k in chance_keys if s.extra.get(k) is not None), chance)
        pre = "" if single else f"{loc}: "
        for key, dash, label in lines:
            ys = s.extra.get(key)
            if not ys or all(y is None for y in ys) or (key in single_only and not single):
                continue
            fig.add_trace(go.Scatter(x=layers, y=ys, mode="lines+markers", name=pre + label, line={"dash": dash}))
        base = s.extra.get("baseline")
        if single and base and base.get("true"):
            fig.add_trace(go.Scatter(x=layers, y=base["true"], mode="lines", name="true answer (original)",
                                     line={"dash": "dot", "color": "gray"}))
    if not fig.data:
        raise ValueError(f"no {suite!r} suite with per-layer curves in the results")
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title="layer (resid_post)", yaxis_title="accuracy", yaxis_range=[0, 1.05])
    return fig


def probe_curves(result_or_results, *, title: str | None = None):
    """Per-layer probe accuracy on the forget facts: true answer vs edit target (paper Figure 40).

    The "chance" line is what a blind probe scores on the forget facts (``extra["forget_chance"]``,
    the bar of the suite's at-chance flags), not the majority share of the probes' training facts
    (``extra["chance"]``, drawn only for results saved before ``forget_chance`` was recorded).

    Args:
        result_or_results: An EvalResult / the ``probes`` SuiteResult, or a dict of them.
        title: Figure title.
    """
    return _layer_curves(result_or_results, "probes", (("true", "solid", "true answer"), ("target", "dash", "edit target"),
                                                       ("maintain_cv", "dot", "maintain (cv)")),
                         title=title or "Probe accuracy on the forget facts per layer", single_only=("maintain_cv",),
                         chance_keys=("forget_chance", "chance"))


def lens_curves(result_or_results, *, title: str | None = None, suite: str = "logit_lens"):
    """Per-layer lens reading of the forget facts (the ``logit_lens`` suite, or ``linear_lens``):
    how often the true answer and the edit target win among the candidates, and how often the
    answer is among the top k tokens, at each layer; the maintain facts for comparison.

    Args:
        result_or_results: An EvalResult / the lens's SuiteResult, or a dict of them.
        title: Figure title.
        suite: Which lens: ``"logit_lens"`` or ``"linear_lens"``.
    """
    if suite not in ("logit_lens", "linear_lens"):
        raise ValueError(f"lens_curves draws the 'logit_lens' or 'linear_lens' suite, got {suite!r}")
    name = "Logit lens" if suite == "logit_lens" else "Linear lens"
    return _layer_curves(result_or_results, suite,
                         (("true", "solid", "true answer"), ("target", "dash", "edit target"),
                          ("topk", "dashdot", "answer in top k"), ("maintain", "dot", "maintain")),
                         title=title or f"{name} on the forget facts per layer", single_only=("maintain", "topk"))


def in_context_curves(results, *, source: str = "forget", title: str | None = None):
    """Forget accuracy and selective recovery against the number of solved facts before each
    prompt (the ``in_context`` suite), one line pair per localization, with 95 % intervals; the
    unedited model asked the same prompts (the first result's baselines) in gray. Without shots
    (x = 0) the forget accuracy is the model's own (``recovery`` = the difference). The default
    title says when the shots left out the fact's own answer (``shot_answers="other"``).

    Args:
        results: ``{localization: EvalResult}`` (or one result / ``in_context`` SuiteResult).
        source: The shot source drawn (``"forget"`` or ``"retain"``).
        title: Figure title.
    """
    go = _go()
    res = _as_dict(results)
    fig = go.Figure()
    base_drawn, own_answer_left_out = False, False
    for loc, r in res.items():
        s = _suite(r, "in_context")
        own_answer_left_out |= bool(s and s.extra.get("settings", {}).get("shot_answers") == "other")
        ks = sorted(v["n_shots"] for v in (s.extra.get("variants", {}) if s else {}).values()
                    if v.get("source") == source)
        if not ks:
            continue
        acc = [_find(s, f"in_context_{source}_{k}_forget_accuracy") for k in ks]
        sel = [_find(s, f"in_context_{source}_{k}_selective_recovery") for k in ks]
        pre = "" if len(res) == 1 else f"{loc}: "
        fig.add_trace(go.Scatter(x=ks, y=[m.value for m in acc], mode="lines+markers", name=pre + "forget accuracy",
                                 error_y=_error_bars(acc)))
        if all(m is not None for m in sel):
            fig.add_trace(go.Scatter(x=ks, y=[m.value for m in sel], mode="lines+markers", line={"dash": "dash"},
                                     name=pre + "selective recovery", error_y=_error_bars(sel)))
        if not base_drawn and all(m.baseline is not None for m in acc):
            fig.add_trace(go.Scatter(x=ks, y=[m.baseline for m in acc], mode="lines", name="unedited model",
                                     line={"dash": "dot", "color": "gray"}))
            base_drawn = True
    if not fig.data:
        raise ValueError(f"no 'in_context' suite with shots from {source!r} in the results")
    note = " (no shot with the fact's own answer)" if own_answer_left_out else ""
    fig.update_layout(title=title or f"Forget facts asked after solved {source} facts{note}",
                      xaxis_title="solved facts before the prompt (shots)", yaxis_title="share of forget facts",
                      yaxis_range=[-0.05, 1.05])
    return fig


#: The relearning bars' legend line for a collapsed unit (``factlens compare`` marks its rows ◊ too).
COLLAPSE_LEGEND = ("◊ collapsed: after the attack the model answers (nearly) regardless of the athlete<br>(maintain "
                   "accuracy not above answer agreement or chance): its relearned accuracy is not recovery alone")


def _collapsed(res) -> bool:
    """Whether the relearning attack left the model answering regardless of the fact
    (the suite's ``extra["maintain_collapse"]["collapsed"]``)."""
    from factlens.evaluation.relearning_collapse import collapsed

    return collapsed(_suite(res, "relearning"))


def relearning_bars(results, *, title: str | None = None):
    """Forget accuracy on the held-out half before and after relearning, per localization
    (error bars: 95 % confidence interval after relearning); a localization whose relearning metric
    is at chance on the unedited model has its bars labelled "(at chance)", and one whose attack left
    the model answering regardless of the athlete (``extra["maintain_collapse"]``) its bar after
    relearning "◊ collapsed", explained by a note under the plot (:data:`COLLAPSE_LEGEND`).

    Args:
        results: ``{localization: EvalResult}`` (or one result / relearning SuiteResult).
        title: Figure title.
    """
    go = _go()
    res = _as_dict(results)
    locs, before, after, err, base, collapsed = [], [], [], [], [], []
    for loc, r in res.items():
        a, b = _find(r, "relearn_forget_accuracy"), _find(r, "relearn_forget_accuracy_before")
        if a is None:
            continue
        locs.append(loc)
        after.append(a.value)
        err.append(a)
        before.append(b.value if b is not None else None)
        base.append(a.baseline)
        collapsed.append(_collapsed(r))
    if not locs:
        raise ValueError("no result has the relearning metric 'relearn_forget_accuracy'")
    chance = ["(at chance)" if a.at_chance else "" for a in err]  # as metric_bars and the spider say it
    marked = [" ".join(x for x in (c, "◊ collapsed" if k else "") if x) for c, k in zip(chance, collapsed)]
    fig = go.Figure([go.Bar(x=locs, y=before, name="before relearning", text=chance),
                     go.Bar(x=locs, y=after, name="after relearning", error_y=_error_bars(err), text=marked)])
    known = [b for b in base if _finite(b)]
    if known:
        fig.add_hline(y=sum(known) / len(known), line_dash="dot", annotation_text="original")
    if any(collapsed):
        fig.add_annotation(text=COLLAPSE_LEGEND, xref="paper", yref="paper", x=0, y=-0.22, showarrow=False,
                           xanchor="left", font={"size": 11})
        fig.update_layout(margin={"b": 110})
    fig.update_layout(barmode="group", title=title or "Forget accuracy on held-out facts under relearning",
                      yaxis_title="forget accuracy (lower = more robust)", yaxis_range=[0, 1.05])
    return fig


def update_size_histogram(result, *, scheme: str = "nf4", title: str | None = None):
    """Distribution of ``log10(|delta| / bin width)`` per edited tensor (the ``update_size`` suite).

    Entries left of the dotted line (half a bin) are updates smaller than half the
    quantization bin of the original weight.

    Args:
        result: An :class:`~factlens.evaluation.update_size.UpdateSizes`, the ``update_size``
            SuiteResult or an EvalResult holding it.
        scheme: ``"nf4"``, ``"int4"`` or ``"int8"``.
        title: Figure title.
    """
    go = _go()
    if isinstance(result, EvalResult):
        result = result["update_size"]
    d = result.extra if isinstance(result, SuiteResult) else result.to_dict()
    hists = (d.get("histograms") or {}).get(scheme)
    if not hists:
        raise ValueError(f"no update-size histogram for scheme {scheme!r} in the result")
    edges = d["edges"]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure()
    for param, counts in hists.items():
        total = sum(counts)
        if total:
            fig.add_trace(go.Scatter(x=centers, y=[c / total for c in counts], mode="lines+markers", name=param))
    fig.add_vline(x=math.log10(0.5), line_dash="dot", annotation_text="half a bin")
    fig.update_layout(title=title or f"Update size relative to the {scheme} bin of the original weight",
                      xaxis_title="log10(|delta| / bin width)", yaxis_title="fraction of changed entries")
    return fig
