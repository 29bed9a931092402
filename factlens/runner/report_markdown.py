"""``factlens report <run dir> --markdown``: the report's tables as Markdown.

Every number is read from the run's JSON files (through :mod:`factlens.runner.report`), so a
documentation page built from it says exactly what the run measured.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

from factlens.runner.report import (_comparisons, _fmt, _localizations, all_metrics_notes, load_run_dir,
                                    metric_matrix, missing_units, table1_reference, table1_rows)
from factlens.runner.run_dir import RunDir
from factlens.runner.report_runs import unit_seconds
from factlens.runner.report_comparisons import equivalence_markdown
from factlens.runner.report_variance import variance_markdown
from factlens.value_checks import as_float
from factlens.runner.run_files import _MIXED_CODE, mixed_code_note
from factlens.runner.report_stats import (comparisons_markdown, md_escape, params_edited, run_eval, run_metric,
                                          seed_mismatch, table1_legend, unequal_budget_note)

__all__ = ["markdown_summary", "is_markdown_summary"]

#: Robustness metrics of the markdown summary: (label, suite, metric); ↓ lower is better. The
#: "net of bias" columns are the selective recoveries (:mod:`factlens.evaluation.selectivity`):
#: an attack that gives the forget answers to every subject raises the raw accuracies beside them.
ROBUSTNESS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("relearned forget acc ↓", "relearning", "relearn_forget_accuracy"),
    ("relearned, net of bias ↓", "relearning", "relearn_selective_recovery"),
    ("soft-prompt forget acc ↓", "soft_prompts", "soft_prompt_forget_accuracy"),
    ("soft prompt, net of bias ↓", "soft_prompts", "soft_prompt_selective_recovery"),
    ("probe: true answer, last layer ↓", "probes", "probe_true_accuracy_last"),
    ("probe: new answer, last layer ↑", "probes", "probe_target_accuracy_last"),
)


def _md_cell(cell: dict | None) -> str:
    text, klass = _fmt(cell)
    return text


#: The robustness table's legend of ◊ (:func:`_collapsed`), as ``factlens compare`` marks the same runs.
COLLAPSE_NOTE = ("◊ after the relearning attack the model answers (nearly) regardless of the athlete: its "
                 "maintain accuracy is not above, by 2 standard errors, what answers independent of the athlete "
                 "and distributed as its own would score, nor above uniform chance (extra[\"maintain_collapse\"]; "
                 "the attack or already the edit may have made it so). Its relearned accuracy then partly counts "
                 "one answer given to many athletes, not recovered facts; the net-of-bias column subtracts that "
                 "answer (one answer given to everyone scores 0 on average).")


def _collapsed(run: dict, suite: str) -> bool:
    """Whether ``suite``'s attack left the run's model answering regardless of the fact
    (``extra["maintain_collapse"]["collapsed"]``, set by the relearning suite)."""
    from factlens.evaluation.relearning_collapse import collapsed

    return collapsed(run_eval(run).suites.get(suite))


def _robustness_row(run: dict) -> str:
    """One run's row of the robustness table: value [interval] (n), † where the metric is at chance
    on the unedited model, as Table 1 and "All metrics" mark it (the row gave no sign of it), and ◊
    where the suite's attack left the model collapsed (:func:`_collapsed`), as ``compare`` marks it."""
    vals = []
    for _, suite, name in ROBUSTNESS_COLUMNS:
        m = run_metric(run, suite, name)
        ci = "" if m is None or m.ci_low is None else f" [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        vals.append("–" if m is None else f"{as_float(m.value):.3f}{ci} (n={m.n})" + (" †" if m.at_chance else "")
                    + (" ◊" if _collapsed(run, suite) else ""))
    labels = run.get("mask_labels", [])
    comps = ", ".join(labels) if len(labels) <= 6 else f"{len(labels)} components"
    return f"| {md_escape(run['localization'])} (seed {run['seed']}) | {md_escape(comps)} | " + " | ".join(vals) + " |"


def _original_rows(runs: list[dict]) -> list[str]:
    """The robustness table's unedited-model rows: one per seed (each seed samples its own facts, so
    the unedited model's values differ by seed; the table showed the first run's for every seed), each
    value from the first run of the seed that has the metric."""
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    rows = []
    for s in seeds:
        base = []
        for _, suite, name in ROBUSTNESS_COLUMNS:
            m = next((m for r in runs if r["seed"] == s and (m := run_metric(r, suite, name)) is not None
                      and m.baseline is not None), None)
            base.append("–" if m is None else f"{as_float(m.baseline):.3f}")
        label = "original" if len(seeds) == 1 else f"original (seed {s})"
        rows.append(f"| {label} | – | " + " | ".join(base) + " |")
    return rows


#: How the notes that may head a :func:`markdown_summary` begin (unfinished units, units of other code).
_NOTE_STARTS: tuple[str, ...] = ("> Not finished: ", f"> {_MIXED_CODE}")
#: The line that starts Table 1, the first line of a summary without notes.
_TABLE1_START = "| localization"


def is_markdown_summary(head: str) -> bool:
    """Whether ``head`` (a file's first bytes) begins a :func:`markdown_summary`: Table 1's header,
    after the notes that may come first (``factlens report --markdown --output F`` refused to
    rewrite its own earlier file when it began with such a note). A head that ends inside the
    notes (a long list of unfinished units) counts too; any other file is someone else's.

    Example:
        >>> is_markdown_summary("> Not finished: seed0/random (their cells...).\\n\\n| localization | params |")
        True
        >>> is_markdown_summary("> my own notes\\n\\n| localization | params |"), is_markdown_summary("# notes")
        (False, False)
    """
    lines, notes = head.splitlines(), False
    for i, line in enumerate(lines):
        if line.startswith(_NOTE_STARTS):
            notes = True
        elif line.strip():
            cut = i == len(lines) - 1 and any(s.startswith(line) for s in (*_NOTE_STARTS, _TABLE1_START))
            return line.startswith(_TABLE1_START) or (notes and cut)  # cut: the head ends inside that line
    return notes


def markdown_summary(path: str | Path, *, references: Sequence[str] | None = None,
                     margins: Mapping[str, float] | None = None) -> str:
    """Markdown tables of a run directory: Table 1, the attacks and probes, the comparisons,
    every metric of every suite (those of suites added to factlens too), and timings.

    Every number is read from the run's JSON files, so a documentation page built from it
    says exactly what the run measured (``factlens report <run dir> --markdown``). ``references``:
    the units compared against (``--reference``; default
    :func:`~factlens.runner.report_stats.report_references`: flu and random); ``margins``: metric ->
    equivalence margin, which adds ``## Equivalence`` (``--equivalence maintain_accuracy=0.1``).
    """
    from factlens.tost import _margins

    if margins is not None:
        _margins(margins, None)  # refused before the work
    d = load_run_dir(path)
    runs = d["runs"]
    if not runs:
        raise ValueError(f"{path} holds no finished runs yet{RunDir(Path(path)).set_aside_note()}")
    reference = table1_reference(runs, references)  # a --reference not among the units: ValueError
    budgets = params_edited(runs, lambda n: f"{n:,}")  # (as millions to 2 places, 12,448 and 12,384 both read 0.01M)
    cols, rows = table1_rows(runs, reference=reference)
    missing = missing_units(d["config"], runs)
    out = [f"> Not finished: {', '.join(missing)} (their cells are left out; cells over fewer seeds say how many).",
           ""] if missing else []
    if (code := mixed_code_note(runs)) is not None:
        out = [f"> {code}", "", *out]
    out += ["| localization | params edited | " + " | ".join(f"{g} {label}" for g, label, *_ in cols) + " |",
           "|---|---:|" + "---:|" * len(cols)]
    for row in rows:
        cells = " | ".join(_md_cell(c) for c in row["cells"])
        out.append(f"| {md_escape(row['name'])} | {budgets.get(row['name'], '–')} | {cells} |")
    out.append("")
    legend = table1_legend(_localizations(runs), reference, unmarked=seed_mismatch(runs, reference))
    out.append("† the unedited model is not clearly above chance in this format (the number says nothing about "
               "robustness). Forget = 1 − accuracy on the true answer. " + legend)
    out.append("")
    out.append("| localization | components | " + " | ".join(c[0] for c in ROBUSTNESS_COLUMNS) + " |")
    out.append("|---|---|" + "---:|" * len(ROBUSTNESS_COLUMNS))
    out += _original_rows(runs)
    robust = [_robustness_row(r) for r in runs]
    out += robust
    out.append("")
    if any(" †" in row for row in robust):
        out += ["† the unedited model is not clearly above chance on that metric (the number says nothing about "
                "robustness).", ""]
    if any(" ◊" in row for row in robust):
        out += [COLLAPSE_NOTE, ""]
    out.append("## Comparisons")
    out.append("")
    note = unequal_budget_note(runs)
    if note:
        out += [f"> {note}", ""]
    out.append(_comparisons(comparisons_markdown, path, references))
    if len({r['seed'] for r in runs}) > 1:  # one seed: no split, and no second read of the run files for it
        out.append(_comparisons(variance_markdown, path))
    if margins:
        out.append(_comparisons(partial(equivalence_markdown, margins=margins), path, references))
    out.append(all_metrics_markdown(runs))
    out.append("## Timings")
    out.append("")
    out.append("| step | seconds |")
    out.append("|---|---:|")
    for s_, plan in sorted(d["plans"].items()):
        data = plan.get("data", {})
        for k in ("load_seconds", "data_seconds"):
            if k in data:
                out.append(f"| seed {s_}: {k.replace('_seconds', '')} | {data[k]:.0f} |")
        if plan.get("flu"):
            out.append(f"| seed {s_}: FLU (budget) | {plan['flu']['seconds']:.0f} |")
        if plan.get("mechanisms"):
            out.append(f"| seed {s_}: mechanisms | {plan['mechanisms']['seconds']:.0f} |")
    for r in runs:
        t = r.get("timings", {})
        parts = " + ".join(f"{k} {t[k]:.0f}" for k in ("localize", "edit", "evaluate") if k in t)
        total = unit_seconds(t)
        out.append(f"| {r['localization']} (seed {r['seed']}): {parts} | {total:.0f} |")
    return "\n".join(out) + "\n"


def all_metrics_markdown(runs: list[dict]) -> str:
    """``## All metrics``: one table per suite, a row per metric, the unedited model's value and
    each localization's with its interval (the HTML report's "All metrics", as Markdown)."""
    locs, rows = metric_matrix(runs)
    out = ["## All metrics", "",
           "value [95% interval] over the facts (mean over seeds where there are several); † at chance on the "
           "unedited model in that format. " + all_metrics_notes(rows), ""]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        out += [f"### {suite}", "", "| metric | original | " + " | ".join(md_escape(x) for x in locs) + " | n |",
                "|---|---:|" + "---:|" * len(locs) + "---|"]
        for row in (r for r in rows if r["suite"] == suite):
            cells = " | ".join(_md_cell(c) for c in (row["original"], *row["cells"]))
            out.append(f"| {md_escape(row['metric'])} | {cells} | {row['n']} |")
        out.append("")
    return "\n".join(out) + "\n"
