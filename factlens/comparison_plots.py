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
        with a ``margin`` column, a ``±margin`` trace of ticks.

    Raises:
        ValueError: The table is empty or lacks one of the columns above.
    """
    import plotly.graph_objects as go

    from factlens.evaluation.plots import metric_label

    need = ("localization", "metric", "diff", "ci_low", "ci_high")
    missing = [c for c in need if c not in getattr(table, "columns", ())]
    if missing or not len(table):
        raise ValueError(f"difference_plot needs a non-empty table with the columns {list(need)} (factlens.compare, "
                         f"equivalence or verdicts); {'missing ' + str(missing) if missing else 'it has no row'}")
    rows = table.to_dict("records")
    labels = [f"{r['localization']} · {metric_label(str(r['metric']))}" for r in rows]
    outcome = [_outcome(r) for r in rows]
    fig = go.Figure()
    for name in dict.fromkeys(outcome):
        idx = [i for i, o in enumerate(outcome) if o == name]
        x = [as_float(rows[i]["diff"]) for i in idx]
        up = [as_float(rows[i]["ci_high"]) - x[k] for k, i in enumerate(idx)]
        down = [x[k] - as_float(rows[i]["ci_low"]) for k, i in enumerate(idx)]
        fig.add_trace(go.Scatter(x=x, y=[labels[i] for i in idx], mode="markers", name=name,
                                 marker={"color": _COLOURS.get(name, "#34495e"), "size": 9},
                                 error_x={"type": "data", "symmetric": False, "array": up, "arrayminus": down}))
    if "margin" in table.columns:
        ms = [(labels[i], as_float(r["margin"])) for i, r in enumerate(rows) if math.isfinite(as_float(r["margin"]))]
        if ms:
            fig.add_trace(go.Scatter(x=[s * m for _, m in ms for s in (-1, 1)], y=[y for y, _ in ms for _ in (0, 1)],
                                     mode="markers", name="± margin",
                                     marker={"symbol": "line-ns-open", "size": 14, "color": "#239b56"}))
    fig.add_vline(x=0, line={"color": "black", "width": 1})
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(list(dict.fromkeys(labels)))))
    fig.update_layout(title=title or f"Paired differences from {reference} (95 % intervals)",
                      xaxis_title=f"localization − {reference}", height=max(300, 28 * len(set(labels)) + 150))
    return fig


def _outcome(r: dict[str, Any]) -> str:
    """What the row's table concluded: its verdict, else compare's significance, else equivalence."""
    if isinstance(r.get("verdict"), str):
        return r["verdict"]
    if "significant" in r:
        return "significant" if bool(r["significant"]) else "not significant"
    if "equivalent" in r:
        return "equivalent" if bool(r["equivalent"]) else "not shown equivalent"
    return "difference"
