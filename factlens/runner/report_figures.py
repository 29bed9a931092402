"""The report's figures: the evaluation plots of each localization (spider, format robustness,
relearning, probe and lens curves, means over seeds) and the Localizations section (each
localization's scores plot and mask).

Every figure is drawn by :func:`_try_fig`, so that one that fails shows its error in its place
instead of losing the whole report. Split from :mod:`factlens.runner.report` to keep it small.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from factlens.runner.report_runs import _e, _localizations
from factlens.runner.report_stats import seed_pooled


def _fig_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def _try_fig(make: Callable[[], Any], what: str) -> str:
    try:
        fig = make()
    except Exception as e:  # noqa: BLE001 - one broken plot must not lose the whole report
        return f"<p class='err'>{_e(what)} could not be drawn: {_e(type(e).__name__)}: {_e(str(e))}</p>"
    if fig is None:
        return ""
    figs = fig if isinstance(fig, (list, tuple)) else [fig]
    return "<div class='grid'>" + "".join(f"<div>{_fig_html(f)}</div>" for f in figs) + "</div>"


def _eval_plots(evals: dict[str, list[Any]]) -> dict[str, str]:
    """Spider, format bars, relearning bars, probe and logit-lens curves from ``factlens.evaluation.plots``."""
    first = {loc: seed_pooled(rs) for loc, rs in evals.items()}  # means over seeds, as Table 1
    counts = sorted({len(rs) for rs in evals.values()})
    # a unit not finished at some seed: the localizations' means are over different numbers of seeds
    over = ("" if counts[-1] <= 1 else f" (mean over {counts[0]} seeds)" if len(counts) == 1
            else f" (means over {counts[0]}–{counts[-1]} seeds: not every unit finished)")
    try:
        from factlens.evaluation import plots as P
    except ImportError as e:
        msg = f"<p class='err'>factlens.evaluation.plots is not available ({_e(str(e))}).</p>"
        return {k: msg for k in ("spider", "formats", "relearning", "probes")}
    has = lambda suite: any(suite in r.suites for r in first.values())  # noqa: E731
    out = {"spider": _try_fig(lambda: P.spider_plot(first, title="Robustness per localization (outward = better)"
                                                    + over), "spider plot") if P.spider_metrics(first)
           else "<p class='note'>No spider-plot metrics (accuracies in [0, 1]) in these suites.</p>"}
    fmt_names = list(dict.fromkeys(m.name for r in first.values() if "formats" in r.suites
                                   for m in r.suites["formats"].metrics))
    change = [n for n in fmt_names if "maintain" not in n]
    keep = [n for n in fmt_names if "maintain" in n]
    out["formats"] = (_try_fig(lambda: [P.metric_bars(first, change, title="Format robustness: forget and edit" + over),
                                        P.metric_bars(first, keep, title="Format robustness: maintained facts" + over)]
                               if keep else P.metric_bars(first, change, title="Format robustness" + over),
                               "format-robustness bars")
                      if fmt_names else "<p class='note'>formats suite not run.</p>")
    out["relearning"] = _try_fig(lambda: P.relearning_bars(
        first, title="Forget accuracy on held-out facts under relearning" + over), "relearning bars") \
        if has("relearning") else "<p class='note'>relearning suite not run.</p>"
    curves = "Probe accuracy on the forget facts per layer" + (" (first seed of each localization)" if over else "")
    out["probes"] = _try_fig(lambda: P.probe_curves(first, title=curves), "probe curves") \
        if has("probes") else "<p class='note'>probes suite not run.</p>"
    for suite, name in (("logit_lens", "Logit lens"), ("linear_lens", "Linear lens")):
        if has(suite):  # opt-in attacks: their figures join the latent-knowledge section
            lens = f"{name} on the forget facts per layer" + (" (first seed of each localization)" if over else "")
            out["probes"] += _try_fig(lambda s=suite, t=lens: P.lens_curves(first, title=t, suite=s),
                                      f"{name.lower()} curves")
    if has("in_context"):  # opt-in attack: its shot curves join the robustness figures after relearning
        sources = list(dict.fromkeys(v["source"] for r in first.values() if "in_context" in r.suites
                                     for v in r.suites["in_context"].extra.get("variants", {}).values()))
        out["relearning"] += "".join(_try_fig(lambda src=src: P.in_context_curves(
            first, source=src, title=f"Forget facts asked after solved {src} facts{over}"), "in-context curves")
            for src in sources)
    return out


def _scores_section(runs: Sequence[dict], plans: dict[int, dict]) -> str:
    from factlens.scores import ComponentScores

    parts = []
    seeds = sorted({r["seed"] for r in runs})
    shown_seed = seeds[0] if seeds else 0
    for loc in _localizations(runs):
        r = next((x for x in runs if x["localization"] == loc and x["seed"] == shown_seed), None)
        if r is None:
            r = next(x for x in runs if x["localization"] == loc)
        head = (f"<h3>{_e(loc)}</h3><p class='note'>seed {r['seed']}: {r['n_components']} components, "
                f"{r['n_params']:,} parameters"
                + (f" (budget {r['param_budget']:,} from {_e(r.get('budget_source'))})" if r.get("budgeted") else "")
                + f"; localize {r['timings'].get('localize', float('nan')):.1f}s.{_dropped_note(r)}</p>")
        body = ""
        if r.get("scores"):
            sc = ComponentScores.from_dict(r["scores"])
            figs: list[Callable[[], Any]] = [lambda sc=sc: sc.plot(title=f"{loc}: {sc.method} ({sc.metric})")]
            if "probe_accuracy" in sc.extra and sc.method != "probing":
                from factlens.score_plots import probe_curve

                figs.append(lambda sc=sc: probe_curve(sc, title=f"{loc}: probe accuracy per layer"))
            body += "".join(_try_fig(f, f"{loc} scores") for f in figs)
        else:
            body += "<p class='note'>No scores: this localization selects components without scoring them.</p>"
        labels = r.get("mask_labels", [])
        body += (f"<details><summary>mask ({len(labels)} components)</summary><code>{_e(', '.join(labels))}</code>"
                 "</details>")
        parts.append(head + body)
    return "".join(parts)


def _dropped_note(run: dict) -> str:
    """Patching localizations: the first-token metric and the facts left out of the localization."""
    d = run.get("dropped_facts")
    if not d:
        return ""
    note = " Patching scores compare the first token of each answer."
    if d.get("n_dropped"):
        note += (f" {d['n_dropped']} fact(s) left out of this localization (no subject of their relation with a "
                 f"different answer keeps the tokens aligned when swapped in): {_e(', '.join(d.get('dropped_ids', [])[:10]))}.")
    return note
