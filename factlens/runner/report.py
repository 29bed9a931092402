"""One self-contained HTML report of a run directory (plotly, works offline).

The report shows, for every localization of the run: the paper's Table 1 (forget / edit /
maintain, format robustness, side effects, with the unedited model's values as the
"original" row and at-chance formats flagged, each value with its 95 % confidence interval and
significant differences from the reference marked), the paired comparisons against each
reference unit (FLU and random by default; :func:`factlens.compare`), spider plots, format-robustness, relearning
and latent-probe plots, the mechanism table, each localization's attribution heatmap /
probe curve and mask, the edit loss curves, every metric, and the run metadata (model,
data, config, package versions and timings per step). plotly.js is embedded once.
Its figures are drawn by :mod:`factlens.runner.report_figures` (split from here to keep this module small).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from factlens.evaluation.relearning import BEFORE_ATTACK_METRICS
from factlens.evaluation.result import EvalResult
from factlens.runner.report_figures import _eval_plots, _scores_section, _try_fig
from factlens.runner.report_comparisons import equivalence_html
from factlens.runner.report_variance import variance_html
from factlens.runner.report_runs import _e, _edit_table, _history_fig, _localizations, _timings_html
from factlens.value_checks import as_float
from factlens.runner.report_stats import (annotate_table1, cell_interval, cell_names, cell_text, comparisons_html,
                                          params_edited, report_references, run_eval, run_metric, seed_mismatch,
                                          table1_legend, unequal_budget_note)

__all__ = ["write_report", "build_report", "load_run_dir", "table1_rows", "metric_matrix", "TABLE_COLUMNS"]

# (group, label, suite, metric name(s), transform): names are averaged when several exist
# (over the formats that are not at chance, if any); "one_minus" shows 1 - value (the paper
# reports forgetting as an error rate, higher = better).
TABLE_COLUMNS: tuple[tuple[str, str, str, tuple[str, ...], str | None], ...] = (
    ("Standard", "Forget ↑", "standard", ("forget_accuracy",), "one_minus"),
    ("Standard", "Edit ↑", "standard", ("edit_accuracy",), None),
    ("Standard", "Maintain ↑", "standard", ("maintain_accuracy",), None),
    ("MCQ", "Forget ↑", "formats", ("mcq_forget_error",), None),
    ("MCQ", "Edit ↑", "formats", ("mcq_edit_accuracy",), None),
    ("MCQ", "Maintain ↑", "formats", ("mcq_maintain_accuracy",), None),
    ("Paraphrase", "Forget ↑", "formats", ("paraphrase_forget_error",), None),
    ("Paraphrase", "Edit ↑", "formats", ("paraphrase_edit_accuracy",), None),
    ("Neighborhood", "Edit error ↓", "formats", ("neighborhood_edit_error",), None),
    ("Neighborhood", "Maintain ↑", "formats", ("neighborhood_maintain_accuracy",), None),
    ("Phrasings", "Forget ↑", "formats", ("zero_shot_forget_error", "professional_forget_error",
                                          "sport_played_forget_error"), None),
    ("Phrasings", "Edit ↑", "formats", ("zero_shot_edit_accuracy", "professional_edit_accuracy",
                                        "sport_played_edit_accuracy"), None),
    ("Side effects", "Text acc ↑", "side_effects", ("next_token_accuracy",), None),
    ("Side effects", "KL ↓", "side_effects", ("kl_divergence",), None),
    ("Side effects", "MMLU ↑", "side_effects", ("mmlu_accuracy",), None),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1250px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr.orig td{background:#f7f7ff;font-style:italic}
td.chance,tr.chance td{color:#999;background:#f3f3f3}.note{color:#666;font-size:.85rem}.err{color:#a00}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid>div{flex:0 0 auto}
pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.78rem;max-height:28rem}
details{margin:.4rem 0}code{font-size:.85rem}
"""


# ---------------------------------------------------------------------------------------------
# loading


def load_run_dir(path: str | Path) -> dict[str, Any]:
    """Read a run directory: ``{"config", "resolved", "inputs", "versions", "plans", "runs"}``.

    ``runs`` is a list of run records (one per finished localization x seed), in the
    config's localization order, then by seed: its JSON with ``"eval"`` read into an
    :class:`~factlens.evaluation.result.EvalResult`, so the report reads typed metrics.
    ``inputs``: the input files' paths and content digests by option name (``{}`` for a folder
    written before they were kept). Raises ``FileNotFoundError`` (not a run directory) or ``ValueError`` (a damaged run file).
    """
    p = Path(path)
    cfg_file = p / "run_config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{p} is not a factlens run directory (no run_config.json); run `factlens run` first")
    from factlens.runner.run_dir import read_json, read_json_table  # name a damaged file in their errors

    meta = read_json_table(cfg_file, tables=("config",))
    from factlens.runner.run_files import check_one_setup, is_run_file

    files = [f for f in sorted((p / "runs").glob("seed*/*.json")) if is_run_file(f)]
    runs = [_typed_run(read_json(f), f) for f in files]
    check_one_setup(meta["config"], runs, files)
    order = {l: i for i, l in enumerate(meta["config"].get("localizations", []))}
    runs.sort(key=lambda r: (order.get(r["localization"], len(order)), r["localization"], r["seed"]))
    plans = {int(f.stem[4:]): read_json_table(f) for f in sorted((p / "plan").glob("seed*.json"))}
    from factlens.runner.stored import stored_inputs

    return {"path": str(p), "config": meta["config"], "resolved": meta.get("resolved", {}),
            "inputs": stored_inputs(meta), "versions": meta.get("versions", {}), "created": meta.get("created"),
            "updated": meta.get("updated"), "plans": plans, "runs": runs}


def _typed_run(rec: dict[str, Any], path: Path) -> dict[str, Any]:
    """The run record with its ``"eval"`` as an :class:`EvalResult`."""
    try:
        return {**rec, "eval": run_eval(rec)}
    except ValueError as e:
        raise ValueError(f"{path}: the evaluation in this run file cannot be read ({e}); the file is damaged, "
                         "delete it and rerun the same command to redo that run") from e


def _units(cfg: dict) -> list[str]:
    """The configured units (localization x method x objective); the localizations for old configs."""
    from factlens.runner.config import default_objective, unit_names

    return list(unit_names(cfg.get("localizations", []), cfg.get("methods") or ("finetune",), cfg.get("objectives") or (),
                           default_objective=default_objective(cfg.get("task", ""))))


def _eval_results(runs: Sequence[dict]) -> dict[str, list[EvalResult]]:
    out: dict[str, list[EvalResult]] = {}
    for r in runs:
        out.setdefault(r["localization"], []).append(run_eval(r))
    return out


def _metric_any(run: dict, suite: str, names: Sequence[str]) -> bool:
    return any(run_metric(run, suite, n) is not None for n in names)




# ---------------------------------------------------------------------------------------------
# Table 1


def _cell(runs: Sequence[dict], suite: str, names: Sequence[str], transform: str | None, *, baseline: bool):
    if baseline:  # the unedited model: one value per seed (every run of a seed has the same baseline)
        firsts: dict[int, dict] = {}
        for r in runs:
            if _metric_any(r, suite, names):
                firsts.setdefault(r["seed"], r)
        runs = list(firsts.values())
    if not any(_metric_any(r, suite, names) for r in runs):
        return None
    used = cell_names(runs, suite, names)  # the formats the model knows at every seed, if any
    vals, flags = [], []
    for r in runs:
        ms = [m for m in (run_metric(r, suite, n) for n in used) if m is not None]
        if not ms:
            continue
        flags += [bool(m.at_chance) for m in ms]
        vs = [v for v in (as_float(m.baseline if baseline else m.value) for m in ms) if not math.isnan(v)]
        vs = [1.0 - v for v in vs] if transform == "one_minus" else vs
        vals.append(float(np.mean(vs)) if vs else float("nan"))
    arr = np.array(vals, dtype=float)
    ok = arr[~np.isnan(arr)]
    mean = float(ok.mean()) if ok.size else float("nan")
    std = float(ok.std(ddof=1)) if ok.size > 1 else None
    return {"mean": mean, "std": std, "n_seeds": int(ok.size), "at_chance": any(flags)}


def table1_rows(runs: Sequence[dict], *, reference: str | None = "flu") -> tuple[list[tuple], list[dict]]:
    """The Table 1 columns present in ``runs`` and one row per localization (plus ``original``).

    Returns:
        ``(columns, rows)``: columns are :data:`TABLE_COLUMNS` entries that some run has;
        each row is ``{"name", "cells": [cell | None]}`` with ``cell = {"mean", "std",
        "n_seeds", "at_chance", "ci_low", "ci_high", "significant"}`` (means over seeds, 95 %
        interval, difference from ``reference`` significant; see
        :mod:`factlens.runner.report_stats`; ``None``: no marks); the first row, ``"original"``,
        holds the unedited model's values (the metrics' baselines).
    """
    cols = [c for c in TABLE_COLUMNS if _cell(runs, c[2], c[3], c[4], baseline=False) is not None]
    rows = [{"name": "original", "cells": [_cell(runs, c[2], c[3], c[4], baseline=True) for c in cols]}]
    for loc in _localizations(runs):
        sub = [r for r in runs if r["localization"] == loc]
        rows.append({"name": loc, "cells": [_cell(sub, c[2], c[3], c[4], baseline=False) for c in cols]})
    annotate_table1(runs, cols, rows, reference=reference or "")
    for j in range(len(cols)):
        _mark_unequal_seeds([row["cells"][j] for row in rows])
    return cols, rows


def _mark_unequal_seeds(cells: Sequence[dict | None]) -> None:
    """Cells of one column (one metric) that are means over different numbers of seeds (a unit not
    finished or failed) each say their count: the table read "means over seeds" while one row
    averaged three seeds and the next one, with nothing to show it."""
    present = [c for c in cells if c is not None and c.get("n_seeds")]
    if len({c["n_seeds"] for c in present}) > 1:
        for c in present:
            c["seeds_shown"] = c["n_seeds"]


def _fmt(cell: dict | None) -> tuple[str, str]:
    if cell is not None and cell.get("varies"):
        return "per localization", ""
    if cell is None or cell["mean"] is None or math.isnan(cell["mean"]):
        return "–", ""
    s = cell_text(cell)
    if cell.get("own_baseline") is not None and not math.isnan(cell["own_baseline"]):
        s += f" (unedited {cell['own_baseline']:.3f})"
    if cell.get("before_attack") is not None and not math.isnan(cell["before_attack"]):
        s += f" (before the attack {cell['before_attack']:.3f})"
    if cell.get("seeds_shown"):
        s += f" ({cell['seeds_shown']} seed{'s' if cell['seeds_shown'] != 1 else ''})"
    if cell.get("at_chance"):
        return s + " †", "chance"
    return s, ""


def table1_reference(runs: Sequence[dict], references: Sequence[str] | None = None) -> str | None:
    """The unit Table 1 marks differences from: the first of :func:`report_references` (flu by default)."""
    return next(iter(report_references(_localizations(runs), references)), None)


def _table1_html(runs: Sequence[dict], budgets: dict[str, Any], reference: str | None) -> str:
    cols, rows = table1_rows(runs, reference=reference)
    if not cols:
        return "<p class='note'>No standard / format / side-effect metrics in these runs.</p>"
    groups: list[tuple[str, int]] = []
    for c in cols:
        if groups and groups[-1][0] == c[0]:
            groups[-1] = (c[0], groups[-1][1] + 1)
        else:
            groups.append((c[0], 1))
    h = ["<table><tr><th class='l' rowspan=2>localization</th><th rowspan=2>params edited</th>"]
    h += [f"<th colspan={n}>{_e(g)}</th>" for g, n in groups] + ["</tr><tr>"]
    h += [f"<th title='{_e(c[2])}: {_e(', '.join(c[3]))}'>{_e(c[1])}</th>" for c in cols] + ["</tr>"]
    for row in rows:
        cls = " class='orig'" if row["name"] == "original" else ""
        h.append(f"<tr{cls}><td class='l'>{_e(row['name'])}</td><td>{_e(budgets.get(row['name'], ''))}</td>")
        for cell in row["cells"]:
            text, klass = _fmt(cell)
            h.append(f"<td class='{klass}'>{_e(text)}</td>")
        h.append("</tr>")
    h.append("</table>")
    legend = table1_legend(_localizations(runs), reference, unmarked=seed_mismatch(runs, reference))
    h.append(f"<p class='note'>{_e(legend.replace(chr(92), ''))} "
             "Means over seeds. <b>original</b>: the "
             "unedited model. ↑/↓: higher/lower is better; \"Forget\" is the error rate on the true answer "
             "(1 − accuracy). † and grey: the unedited model is not clearly above chance in this format, so the "
             "number says nothing about robustness. Hover a column header for the metric names.</p>")
    return "".join(h)


# ---------------------------------------------------------------------------------------------
# tables


def _mechanisms_html(runs: Sequence[dict]) -> str:
    """Paper Table 2: the share of each localization's parameters inside each mechanism."""
    rows = [r for r in runs if "mechanisms" in run_eval(r).suites]
    if not rows:
        return "<p class='note'>mechanisms suite not run.</p>"
    mechs: list[str] = []
    for r in rows:
        for m in run_eval(r)["mechanisms"].metrics:
            n = m.name
            if n.endswith("_share") and not n.startswith("weight_mask_") and n[:-6] not in mechs:
                mechs.append(n[:-6])
    mechs = [m for m in mechs if m != "other"] + (["other"] if "other" in mechs else [])
    h = ["<table><tr><th class='l'>localization</th><th>params</th>"]
    h += [f"<th>{_e(m)}</th>" for m in mechs] + ["</tr>"]
    for loc in _localizations(rows):
        sub = [r for r in rows if r["localization"] == loc]
        size = _cell(sub, "mechanisms", ("mask_params",), None, baseline=False)
        size_text = f"{size['mean']:,.0f}" if size else "–"
        h.append(f"<tr><td class='l'>{_e(loc)}</td><td>{size_text}</td>")
        for m in mechs:
            share = _cell(sub, "mechanisms", (f"{m}_share",), None, baseline=False)
            cnt = _cell(sub, "mechanisms", (f"{m}_params",), None, baseline=False)
            if share is None or share["mean"] is None or math.isnan(share["mean"]):
                h.append("<td>–</td>")
            else:
                h.append(f"<td>{100 * share['mean']:.1f}% ({cnt['mean']:,.0f})</td>" if cnt else
                         f"<td>{100 * share['mean']:.1f}%</td>")
        h.append("</tr>")
    h.append("</table>")
    comps = run_eval(rows[0])["mechanisms"].extra.get("mechanisms", {})
    if comps:
        h.append("<p class='note'>Share of each mask's parameters inside each mechanism (parameter count), found on "
                 f"the unedited model (seed {rows[0]['seed']}): "
                 + "; ".join(f"<b>{_e(k)}</b>: {_e(', '.join(v) or 'none')}" for k, v in comps.items()) + ".</p>")
    return "".join(h)


def metric_matrix(runs: Sequence[dict], *, suites: Sequence[str] | None = None
                  ) -> tuple[list[str], list[dict[str, Any]]]:
    """Every metric of every suite, one row per (suite, metric): the unedited model's value and
    each localization's (cells as :func:`table1_rows` gives them), and ``n`` with its unit.

    A metric whose baseline is not the unedited model's (:data:`BEFORE_ATTACK_BASELINES`) has no
    ``original`` (``None``); each cell holds its localization's baseline as ``before_attack``.

    Returns:
        ``(localizations, rows)``; a row is ``{"suite", "metric", "original", "cells", "n"}``.
    """
    locs = _localizations(runs)
    names: list[tuple[str, str]] = []
    for r in runs:
        for sname, s in run_eval(r).suites.items():
            if suites is not None and sname not in suites:
                continue
            names += [(sname, m.name) for m in s.metrics if (sname, m.name) not in names]
    rows = []
    for sname, mname in names:
        cells = []
        for loc in locs:
            sub = [r for r in runs if r["localization"] == loc]
            cells.append(_with_interval(_cell(sub, sname, (mname,), None, baseline=False), sub, sname, mname, False))
        if (sname, mname) in BEFORE_ATTACK_BASELINES:  # no unedited value: each edited model's, before the attack
            _own_baselines(runs, locs, cells, sname, mname, key="before_attack")
            original: dict | None = None
        elif _baselines_vary(runs, sname, mname):  # read at each mask's layers: one unedited value per localization
            _own_baselines(runs, locs, cells, sname, mname, key="own_baseline")
            original = {"mean": None, "varies": True}
        else:
            firsts = list({r["seed"]: r for r in reversed(runs) if _metric_any(r, sname, (mname,))}.values())
            original = _with_interval(_cell(runs, sname, (mname,), None, baseline=True), firsts, sname, mname, True)
        _mark_unequal_seeds([original, *cells])
        rows.append({"suite": sname, "metric": mname, "original": original, "cells": cells,
                     "n": _n_text(runs, sname, mname)})
    return locs, rows


#: The "All metrics" legend for metrics whose unedited value is each mask's own.
VARIES_NOTE = ("\"per localization\": the unedited model's value depends on the mask (read at its layers: the lens "
               "suites, direction ablation), so each cell gives its own as \"(unedited x)\".")

#: ``(suite, metric)`` whose ``baseline`` is the evaluated (edited) model before the attack, not the
#: unedited model (:func:`~factlens.evaluation.relearning.run_relearning` does not score the unedited
#: model on them): "All metrics" printed that edited value as the "original" (or "(unedited x)").
BEFORE_ATTACK_BASELINES: frozenset[tuple[str, str]] = frozenset(("relearning", m) for m in BEFORE_ATTACK_METRICS)

#: The "All metrics" legend for :data:`BEFORE_ATTACK_BASELINES`.
BEFORE_ATTACK_NOTE = ("relearn_edit_accuracy and relearn_maintain_accuracy: their baseline is each edited model "
                      "before the relearning attack, not the unedited model (not scored on them), so \"original\" "
                      "reads – and each cell gives its own as \"(before the attack x)\".")


def all_metrics_notes(rows: Sequence[dict]) -> str:
    """The "All metrics" legend notes on baselines: :data:`VARIES_NOTE`, and :data:`BEFORE_ATTACK_NOTE`
    where ``rows`` (:func:`metric_matrix`'s) hold such a metric."""
    before = any((r["suite"], r["metric"]) in BEFORE_ATTACK_BASELINES for r in rows)
    return VARIES_NOTE + (" " + BEFORE_ATTACK_NOTE if before else "")


def _own_baselines(runs: Sequence[dict], locs: Sequence[str], cells: Sequence[dict | None], suite: str,
                   metric: str, *, key: str) -> None:
    """Give each localization's cell its own baseline (mean over its seeds) under ``key``."""
    for loc, cell in zip(locs, cells):
        own = _cell([r for r in runs if r["localization"] == loc], suite, (metric,), None, baseline=True)
        if cell is not None and own is not None:
            cell[key] = own["mean"]


def _baselines_vary(runs: Sequence[dict], suite: str, metric: str) -> bool:
    """Whether the unedited model's value of a metric differs between the localizations of one seed.

    The lens suites and direction ablation read the unedited model at each mask's layers, so its
    value is the mask's own; the "original" column showed the first localization's (the FLU's)
    beside every localization's (on lens-sae-v3, 0.958 beside causal tracing, whose own is 0.833).
    """
    by_seed: dict[Any, list[float]] = {}
    for r in runs:
        m = run_metric(r, suite, metric)
        if m is not None and m.baseline is not None and not math.isnan(as_float(m.baseline)):
            by_seed.setdefault(r["seed"], []).append(as_float(m.baseline))
    return any(max(v) - min(v) > 1e-12 for v in by_seed.values())


def _n_text(runs: Sequence[dict], suite: str, metric: str) -> str:
    """A metric's ``n`` per (localization, seed): one number, or its range where they differ (seeds of
    other sizes, a localization without edit targets for some facts), not the first run's alone."""
    ms = [m for r in runs for m in [run_metric(r, suite, metric)] if m is not None]
    if not ms:
        return ""
    lo, hi = min(m.n for m in ms), max(m.n for m in ms)
    return f"{lo} {ms[0].unit}" if lo == hi else f"{lo}–{hi} {ms[0].unit}"


def _with_interval(cell: dict | None, runs: Sequence[dict], suite: str, metric: str, baseline: bool) -> dict | None:
    if cell is not None:
        ci = cell_interval(runs, suite, metric, baseline=baseline)
        cell["ci_low"], cell["ci_high"] = ci if ci else (None, None)
    return cell


def _metric_matrix(runs: Sequence[dict], *, suites: Sequence[str] | None = None) -> str:
    locs, rows = metric_matrix(runs, suites=suites)
    if not rows:
        return "<p class='note'>no metrics.</p>"
    h = ["<table><tr><th class='l'>suite</th><th class='l'>metric</th><th>original</th>"]
    h += [f"<th>{_e(l)}</th>" for l in locs] + ["<th>n</th></tr>"]
    for row in rows:
        h.append(f"<tr><td class='l'>{_e(row['suite'])}</td><td class='l'>{_e(row['metric'])}</td>")
        for cell in (row["original"], *row["cells"]):
            text, klass = _fmt(cell)
            h.append(f"<td class='{klass}'>{_e(text)}</td>")
        h.append(f"<td>{_e(row['n'])}</td></tr>")
    return "".join(h) + f"</table><p class='note'>{_e(all_metrics_notes(rows))}</p>"


def _pre(obj: Any) -> str:
    return f"<pre>{_e(json.dumps(obj, indent=1, default=str))}</pre>"


# ---------------------------------------------------------------------------------------------
# the report


def _facts_used(data: Mapping[str, Any]) -> str:
    """The header's fact count: known of all, and the number used when ``--max-facts`` cut it."""
    total, used = data.get("n_facts_total", "?"), data.get("n_facts", "?")
    if data.get("filter_known") is False:
        return f"{used} of {total}, not filtered for known facts"
    known = (data.get("known") or {}).get("known", used)
    return f"{known} known of {total}" + (f", {used} used (--max-facts)" if used != known else "")


def _comparisons(section, path, references: Sequence[str] | None = None) -> str:
    """A comparisons section of a folder this report has read already (its warnings given once)."""
    from factlens.runner.run_files import warned_already

    with warned_already():
        return section(path, references)


def missing_units(cfg: dict, runs: Sequence[dict]) -> list[str]:
    """The configured ``seed<S>/<unit>`` that have no finished run in ``runs``."""
    return [f"seed{s}/{l}" for s in cfg.get("seeds", []) for l in _units(cfg)
            if not any(r["seed"] == s and r["localization"] == l for r in runs)]


def _budget_note(runs: Sequence[dict]) -> str:
    note = unequal_budget_note(runs)
    return f"<p class='err'>{_e(note)}</p>" if note else ""


def build_report(path: str | Path, *, references: Sequence[str] | None = None,
                 margins: Mapping[str, float] | None = None) -> str:
    """The report of a run directory as one HTML string (plotly.js embedded once); ``references``:
    the units compared against (``factlens report --reference``; default :func:`report_references`);
    ``margins``: metric -> equivalence margin, which adds an Equivalence section
    (``factlens report --equivalence maintain_accuracy=0.1``; :func:`factlens.equivalence`)."""
    import plotly.offline

    from factlens.tost import _margins

    if margins is not None:
        _margins(margins, None)  # refused before the work: an empty mapping, a margin that is not > 0

    d = load_run_dir(path)
    cfg, runs, plans = d["config"], d["runs"], d["plans"]
    title = f"factlens: {cfg.get('task')} on {cfg.get('model')}"
    missing = missing_units(cfg, runs)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style>",
             f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
             f"<h1>{_e(title)}</h1>"]
    task = runs[0]["task"] if runs else {}
    data = runs[0].get("data", {}) if runs else {}
    parts.append("<p>" + " · ".join(_e(x) for x in [
        f"task {task.get('name', cfg.get('task'))} ({task.get('objective', '?')})",
        f"{task.get('n_forget', '?')} forget / {task.get('n_retain', '?')} retain / {task.get('n_maintain', '?')} "
        "maintain facts",
        f"data: {data.get('data', cfg.get('data') or 'built-in')} ({_facts_used(data)})",
        f"seeds {', '.join(map(str, cfg.get('seeds', [])))}",
        f"{len(runs)} finished run(s)"]) + "</p>")
    from factlens.runner.run_files import mixed_code_note

    if (code := mixed_code_note(runs)) is not None:
        parts.append(f"<p class='err'>{_e(code)}</p>")
    if missing:
        parts.append(f"<p class='err'>Not finished (rerun the same command to resume; a unit whose edit method cannot "
                     f"edit its mask stays unfinished, and the run's error names it): {_e(', '.join(missing))}</p>")
    if not runs:
        from factlens.runner.run_dir import RunDir

        parts.append(f"<p>No finished runs yet{_e(RunDir(Path(path)).set_aside_note())}.</p></body></html>")
        return "".join(parts)

    reference = table1_reference(runs, references)  # a --reference not among the units: ValueError, before the work
    budgets = params_edited(runs, lambda n: f"{n:,}")
    evals = _eval_results(runs)
    plots = _eval_plots(evals)
    parts += ["<h2>Table 1: editing, robustness and side effects</h2>", _table1_html(runs, budgets, reference),
              "<h2>Comparisons</h2>", _budget_note(runs), _comparisons(comparisons_html, path, references),
              _comparisons(variance_html, path) if len({r['seed'] for r in runs}) > 1 else "",  # one seed: no split
              *(("<h2>Equivalence</h2>", _comparisons(partial(equivalence_html, margins=margins), path, references))
                if margins else ()),
              "<h2>Overview (spider plot)</h2>", plots["spider"],
              "<h2>Format robustness</h2>", plots["formats"],
              "<h2>Relearning</h2>", plots["relearning"],
              "<h2>Latent knowledge (linear probes, logit and linear lens)</h2>", plots["probes"],
              "<h2>Mechanisms</h2>", _mechanisms_html(runs),
              "<h2>Localizations</h2>", _scores_section(runs, plans),
              "<h2>Editing</h2>", _try_fig(lambda: _history_fig(runs), "edit loss curves"),
              _edit_table(runs),
              "<h2>All metrics</h2>", _metric_matrix(runs),
              "<h2>Run metadata</h2>",
              "<h3>Timings per step</h3>", _timings_html(runs, plans),
              "<h3>Model and data</h3>", _pre({"model": cfg.get("model"), "shape": runs[0].get("shape"), **data}),
              "<h3>Configuration</h3>", _pre(cfg),
              "<h3>Resolved edit and evaluation settings</h3>", _pre(d["resolved"]),
              "<h3>Package versions</h3>", _pre(d["versions"]),
              f"<p class='note'>Run directory {_e(d['path'])}; created {_e(d['created'])}, updated {_e(d['updated'])}. "
              "Per-run JSON: runs/seed&lt;S&gt;/&lt;localization&gt;.json.</p>",
              "</body></html>"]
    return "".join(parts)


def write_report(path: str | Path, *, output: str | Path | None = None,
                 references: Sequence[str] | None = None, margins: Mapping[str, float] | None = None) -> Path:
    """Write ``report.html`` (or ``output``) for a run directory and return its path (``references``,
    ``margins``: see :func:`build_report`)."""
    from factlens.files import check_output, write_atomic

    out = Path(output) if output is not None else Path(path) / "report.html"
    # never over a run file (--output DIR/run_config.json destroyed the folder) nor a file of one's own
    check_output(out, what="report", protected=[path], allowed=("report.html",),
                 ours=lambda head: head.startswith("<!DOCTYPE html>") and "factlens" in head)
    text = build_report(path, references=references, margins=margins)
    write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
