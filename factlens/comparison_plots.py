"""A forest plot of paired differences: the table of :func:`factlens.compare`,
:func:`factlens.equivalence` or :func:`factlens.verdicts` as one figure.

Each row of the table is a horizontal line: the mean paired difference (localization minus
reference) with its interval, against a vertical line at 0 and, where the table has margins
(equivalence and verdict tables), ticks at plus and minus the margin. Rows are coloured by what
the table concluded: the ``verdict`` of a verdict table, else ``significant`` (compare) or
``equivalent`` (equivalence), so that a reader sees at a glance which differences are real,
which are ruled out and which the run cannot tell.

Example:
    >>> import pandas as pd
    >>> t = pd.DataFrame({"localization": ["random", "random"], "metric": ["forget_accuracy", "maintain_accuracy"],
    ...                   "diff": [0.3, -0.02], "ci_low": [0.1, -0.08], "ci_high": [0.5, 0.04],
    ...                   "significant": [True, False]})
    >>> fig = difference_plot(t, reference="flu")
    >>> sorted(tr.name for tr in fig.data)
    ['not significant', 'significant']
"""

from __future__ import annotations

import math
from typing import Any

from factlens.value_checks import as_float

__all__ = ["difference_plot"]

#: Colours of the verdicts (and of compare's / equivalence's two outcomes).
_COLOURS = {"lower": "#c0392b", "higher": "#2471a3", "lower, negligible": "#e6a19a", "higher, negligible": "#9cc3e0",
            "equivalent": "#239b56", "undecided": "#7f8c8d", "at chance": "#bdc3c7", "not tested": "#bdc3c7",
            "significant": "#c0392b", "not significant": "#7f8c8d", "not shown equivalent": "#7f8c8d"}


def difference_plot(table, *, reference: str = "flu", title: str | None = None):
    """The paired differences of a comparison table with their intervals, one line per row.

    Args:
        table: A DataFrame from :func:`factlens.compare`, :func:`factlens.equivalence` or
            :func:`factlens.verdicts` (or any with ``localization``, ``metric``, ``diff``,
            ``ci_low`` and ``ci_high``; a verdict, significance or equivalence column colours the rows).
        reference: The reference the differences are taken from (the axis title).
        title: Figure title.

    Returns:
        A ``plotly.graph_objects.Figure``: one trace per outcome (legend), a line at 0 and,
        with a ``margin`` column, a ``±margin`` trace of ticks. Metrics of other scales get panels
        of their own (:func:`_panels`: accuracies, probabilities and rates share one; a KL
        divergence or a loss drawn on their axis squeezed them to a point), each with its traces.

    Raises:
        ValueError: The table is empty or lacks one of the columns above.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from factlens.evaluation.plots import metric_label

    need = ("localization", "metric", "diff", "ci_low", "ci_high")
    missing = [c for c in need if c not in getattr(table, "columns", ())]
    if missing or not len(table):
        raise ValueError(f"difference_plot needs a non-empty table with the columns {list(need)} (factlens.compare, "
                         f"equivalence or verdicts); {'missing ' + str(missing) if missing else 'it has no row'}")
    rows = table.to_dict("records")
    panels = _panels(rows)
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=list(panels) if len(panels) > 1 else None,
                        row_heights=[len(v) + 1 for v in panels.values()], vertical_spacing=0.3 / len(panels))
    shown: set[str] = set()
    for k, idx in enumerate(panels.values(), start=1):
        for trace in _panel_traces(go, [rows[i] for i in idx], metric_label, shown):
            fig.add_trace(trace, row=k, col=1)
        labels = [_label(rows[i], metric_label) for i in idx]
        fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(list(dict.fromkeys(labels)))), row=k, col=1)
        fig.add_vline(x=0, line={"color": "black", "width": 1}, row=k, col=1)
    fig.update_xaxes(title_text=f"localization − {reference}", row=len(panels), col=1)
    fig.update_layout(title=title or f"Paired differences from {reference} (95 % intervals)",
                      height=max(300, 28 * len(rows) + 150 + 60 * (len(panels) - 1)))
    return fig


def _label(r: dict[str, Any], metric_label) -> str:
    return f"{r['localization']} · {metric_label(str(r['metric']))}"


def _panels(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices per panel: metrics on the unit scale share one panel (accuracies, probabilities,
    error rates, shares: differences of one meaning); a metric of its own scale gets a panel of its
    own, so that its differences do not squeeze the others to a point: one whose name says so (a
    KL divergence, a loss, a count: small KL values lie in [0, 1] too) or whose values (and
    reference values, where the table has them) leave [-1, 1] (a selective recovery, a difference
    of two rates, may be below 0)."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        values = [as_float(r[k]) for k in ("value", "reference_value") if k in r]
        unit = (not any(w in str(r["metric"]) for w in _OWN_SCALE)
                and all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in values if not math.isnan(v)))
        out.setdefault("accuracies, probabilities and rates" if unit else str(r["metric"]), []).append(i)
    return out


#: Parts of metric names whose values are on a scale of their own, whatever range a run shows.
_OWN_SCALE = ("kl", "loss", "divergence", "entropy", "norm", "params", "count")


def _panel_traces(go, rows: list[dict[str, Any]], metric_label, shown: set[str]) -> list:
    """One panel's traces: one per outcome (each outcome in the legend once, across panels), and
    the ``±margin`` ticks where the table has margins."""
    labels = [_label(r, metric_label) for r in rows]
    outcome = [_outcome(r) for r in rows]
    traces = []
    for name in dict.fromkeys(outcome):
        idx = [i for i, o in enumerate(outcome) if o == name]
        x = [as_float(rows[i]["diff"]) for i in idx]
        up = [as_float(rows[i]["ci_high"]) - x[k] for k, i in enumerate(idx)]
        down = [x[k] - as_float(rows[i]["ci_low"]) for k, i in enumerate(idx)]
        traces.append(go.Scatter(x=x, y=[labels[i] for i in idx], mode="markers", name=name, legendgroup=name,
                                 showlegend=name not in shown, marker={"color": _COLOURS.get(name, "#34495e"), "size": 9},
                                 error_x={"type": "data", "symmetric": False, "array": up, "arrayminus": down}))
        shown.add(name)
    ms = [(labels[i], as_float(r["margin"])) for i, r in enumerate(rows)
          if "margin" in r and math.isfinite(as_float(r["margin"]))]
    if ms:
        traces.append(go.Scatter(x=[s * m for _, m in ms for s in (-1, 1)], y=[y for y, _ in ms for _ in (0, 1)],
                                 mode="markers", name="± margin", legendgroup="± margin",
                                 showlegend="± margin" not in shown,
                                 marker={"symbol": "line-ns-open", "size": 14, "color": "#239b56"}))
        shown.add("± margin")
    return traces


def _outcome(r: dict[str, Any]) -> str:
    """What the row's table concluded: its verdict, else compare's significance, else equivalence."""
    if isinstance(r.get("verdict"), str):
        return r["verdict"]
    if "significant" in r:
        return "significant" if bool(r["significant"]) else "not significant"
    if "equivalent" in r:
        return "equivalent" if bool(r["equivalent"]) else "not shown equivalent"
    return "difference"
