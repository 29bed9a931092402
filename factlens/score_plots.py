"""Plotly figures for component scores (more plots live in ``factlens.evaluation.plots``)."""

from __future__ import annotations

import numpy as np

__all__ = ["scores_heatmap", "probe_curve"]


def scores_heatmap(scores, *, title: str | None = None):
    """Heads heatmap (layers x heads) with a diverging scale centred at 0, plus an MLP column;
    neuron scores have no cell, and the figure says how many it leaves out."""
    import plotly.graph_objects as go

    arr = scores.heatmap_array()
    s = scores.shape
    finite = arr[np.isfinite(arr)]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    lim = lim or 1.0
    x = [f"H{h}" for h in range(s.n_heads)] + ["MLP"]
    fig = go.Figure(
        go.Heatmap(
            z=arr, x=x, y=[f"L{l}" for l in range(s.n_layers)], colorscale="RdBu", zmid=0.0,
            zmin=-lim, zmax=lim, colorbar={"title": scores.metric},
            hovertemplate="%{y} %{x}: %{z:.4g}<extra></extra>",
        )
    )
    neurons = sum(c.kind == "neuron" for c in scores.components)
    if neurons:  # the grid has no cell for a neuron: say so rather than draw an empty map
        fig.add_annotation(text=f"{neurons} neuron score(s) not drawn (scores.to_frame() lists them)",
                           xref="paper", yref="paper", x=0, y=1.0, yanchor="bottom", showarrow=False)
    fig.update_layout(
        title=title or f"{scores.name or scores.method} ({scores.metric})",
        xaxis_title="head / MLP", yaxis_title="layer", yaxis_autorange="reversed",
        width=420 + 18 * s.n_heads, height=260 + 16 * s.n_layers,
    )
    return fig


def probe_curve(scores, *, title: str | None = None):
    """Probe accuracy per layer (one line per probed position), with FLU layers shaded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    acc = scores.extra["probe_accuracy"]

    def at(vals) -> list[int]:  # the probed layers (probing(layers=[4, 8, 12]) was drawn at 0, 1, 2)
        layers = list(scores.extra.get("layers") or ())
        return layers if len(layers) == len(vals) else list(range(len(vals)))

    if isinstance(acc, dict):
        for pos, vals in acc.items():
            fig.add_trace(go.Scatter(y=list(vals), x=at(vals), mode="lines+markers", name=str(pos)))
    else:
        fig.add_trace(go.Scatter(y=list(acc), x=at(acc), mode="lines+markers", name="accuracy"))
    if "chance" in scores.extra:
        fig.add_hline(y=scores.extra["chance"], line_dash="dot", annotation_text="chance")
    for l in scores.extra.get("flu_layers", []):
        fig.add_vrect(x0=l - 0.5, x1=l + 0.5, fillcolor="green", opacity=0.12, line_width=0)
    fig.update_layout(title=title or f"{scores.name or 'probing'}: probe accuracy per layer",
                      xaxis_title="layer (resid_post)", yaxis_title="cross-validated accuracy", yaxis_range=[0, 1.05])
    return fig
