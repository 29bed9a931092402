"""The report's per-run sections: the edit loss curves, the edit table and the timings per step
(:func:`factlens.runner.report.build_report` puts them in the page)."""

from __future__ import annotations

import html
import json
import math
from typing import Any, Sequence


def _localizations(runs: Sequence[dict]) -> list[str]:
    """The runs' localizations, each once, in run order."""
    return list(dict.fromkeys(r["localization"] for r in runs))


def _history_fig(runs: Sequence[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in runs:
        hist = r.get("edit", {}).get("history") or []
        if not hist:
            continue
        fig.add_trace(go.Scatter(x=[h.get("step", i) for i, h in enumerate(hist)], y=[h.get("loss") for h in hist],
                                 mode="lines", name=f"{r['localization']} (seed {r['seed']})"))
    if not fig.data:
        return None
    fig.update_layout(title="edit: training loss per step", xaxis_title="step", yaxis_title="loss", width=760,
                      height=380)
    return fig


#: Entries of a run's ``timings`` that are waits, not the unit's own work (another job's plan).
WAITS = ("plan_wait",)


def unit_seconds(timings: dict[str, float]) -> float:
    """A unit's own wall-clock seconds: its steps (``localize``, ``edit``, ``evaluate``, ``revert``,
    any other top-level step), not the suites inside them (``evaluate.*``) nor its waits
    (:data:`WAITS`). The HTML and Markdown reports give this one total (the HTML report added the
    plan wait: 405 s against the Markdown's 362 s for one unit)."""
    return sum(v for k, v in timings.items() if "." not in k and k not in WAITS)


def _timings_html(runs: Sequence[dict], plans: dict[int, dict]) -> str:
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.get("timings", {}) if k not in keys]
    h = ["<table><tr><th class='l'>run</th>"] + [f"<th>{_e(k)} (s)</th>" for k in keys]
    h.append("<th title='the steps, without waits for another job'>total (s)</th><th title='process CPU seconds, all threads'>CPU: localize / edit / evaluate (s)</th></tr>")
    for r in runs:
        t = r.get("timings", {})
        total = unit_seconds(t)
        cpu = r.get("cpu_seconds", {})
        cpu_text = " / ".join(f"{cpu[k]:.0f}" if k in cpu else "–" for k in ("localize", "edit", "evaluate"))
        h.append(f"<tr><td class='l'>seed {r['seed']} / {_e(r['localization'])}</td>")
        h += [f"<td>{t[k]:.1f}</td>" if k in t else "<td>–</td>" for k in keys]
        h.append(f"<td>{total:.1f}</td><td>{cpu_text}</td></tr>")
    h.append("</table><p class='note'>Wall-clock seconds per step (evaluate.* are the suites); CPU seconds count "
             "every thread of the process, so they stay comparable when the machine is shared.</p>")
    if plans:
        h.append("<p class='note'>Budget (FLU) per seed: " + "; ".join(
            (f"seed {s}: {p['param_budget']:,} params from {_e(p.get('budget_source'))}" if p.get("param_budget")
             is not None else f"seed {s}: none (only unbudgeted localizations)")
            + (f" in {p['flu']['seconds']:.1f}s" if p.get("flu") else "") for s, p in sorted(plans.items())) + "</p>")
    return "".join(h)


def _edit_table(runs: Sequence[dict]) -> str:
    h = ["<table><tr><th class='l'>run</th><th>steps</th><th>final loss</th><th>edit time (s)</th><th>SFT term</th>"
         "<th>restored exactly</th></tr>"]
    for r in runs:
        e = r.get("edit", {})
        hist = e.get("history") or []
        last = hist[-1].get("loss") if hist else None
        rest = r.get("restore", {})
        ok = "yes" if rest.get("exact") else f"no (max |Δ| {_short(rest.get('max_abs_diff'))}; repaired)"
        h.append(f"<tr><td class='l'>seed {r['seed']} / {_e(r['localization'])}</td><td>{len(hist)}</td>"
                 f"<td>{_short(last)}</td><td>{_short(e.get('seconds'))}</td><td>{_e(e.get('sft_kind'))}</td>"
                 f"<td>{ok}</td></tr>")
    return "".join(h) + "</table>"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        s = json.dumps(v)
        return s if len(s) < 120 else s[:117] + "..."
    return "–" if v is None else str(v)


def _e(x: Any) -> str:
    return html.escape(str(x))
