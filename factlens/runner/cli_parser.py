"""The ``factlens`` command line's parser: its commands and flags (:func:`build_parser`) and the
``KEY=VALUE`` reading of ``--edit``/``--eval`` (split from :mod:`factlens.runner.cli`, which runs
the commands, to keep each module small)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["build_parser"]


def _kv(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--edit`` / ``--eval``: the value as JSON (``5``, ``true``, ``[1, 2]``), else
    as a number Python spells but JSON does not (``.5``, ``5.``, ``+1``: kept as strings, they were
    refused as the wrong type), else the string itself (``adamw``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val: Any = json.loads(v)
    except json.JSONDecodeError:
        val = _number(v)
    return k.strip().replace("-", "_"), val


def _number(text: str) -> Any:
    """``text`` as an int, else as a finite float, else ``text`` unchanged (``nan``, ``inf``: words)."""
    for kind in (int, float):
        try:
            val = kind(text)
        except ValueError:
            continue
        return val if math.isfinite(val) else text
    return text

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="factlens", description="Localize, edit and evaluate facts in language models.")
    sub = p.add_subparsers(dest="command", required=True)

    _add_run(sub)
    _add_report(sub)
    _add_tables(sub)
    _add_preregistration(sub)
    return p


def _add_run(sub) -> None:
    """``factlens run``: every setting of :class:`~factlens.runner.config.RunConfig` as a flag."""
    from factlens.runner.config import TASK_NAMES

    r = sub.add_parser("run", help="run an experiment (localize -> edit -> evaluate) and write a report",
                       description="Run every localization x seed of a task; completed runs in --out are skipped.")
    r.add_argument("task", nargs="?", choices=TASK_NAMES, help="task (default: from --config, else sports-athlete-editing)")
    r.add_argument("--config", type=Path, help="TOML, YAML or JSON run config (flags given here override it)")
    r.add_argument("--model", help="gemma-3-270m (default), planted, or a TransformerLens model name")
    r.add_argument("--localizations", help="comma-separated localizations "
                                           "(default: flu,causal_tracing,attribution_patching,random,all_mlps,nonlocalized)")
    from factlens.editing.registry import EDIT_METHODS, OBJECTIVES  # the names registered (entries only, no imports)

    r.add_argument("--methods", help=f"comma-separated edit methods crossed with the localizations: "
                                     f"{', '.join(EDIT_METHODS.names())} (default: finetune; rome needs one-MLP masks: "
                                     "--localizations causal_tracing_top_mlp)")
    r.add_argument("--objectives", help="comma-separated training objectives crossed with the localizations: "
                                        f"{', '.join(OBJECTIVES.names())} (default: the task's own)")
    r.add_argument("--forget-size", type=int, help="facts to edit (chunk size for sequential editing); default 16")
    r.add_argument("--seeds", help="comma-separated seeds, one run each (default: 0)")
    r.add_argument("--out", help="run directory (default: results/<task>)")
    r.add_argument("--data", help="facts in the paper's format (Sports Facts CSV / CounterFact JSON), path or HF name")
    r.add_argument("--mcq-data", help="CounterFact multiple-choice questions (JSONL/parquet)")
    r.add_argument("--max-facts", type=int, help="cap on the known facts used (seeded subsample)")
    r.add_argument("--no-filter-known", dest="filter_known", action="store_const", const=False,
                   help="keep facts the model does not know")
    r.add_argument("--param-budget", type=int, help="parameter budget (default: the FLU mask's n_params)")
    r.add_argument("--localize-on", choices=("auto", "forget", "known"),
                   help="facts to localize on: the task's forget facts, every known fact, or auto (default: "
                        "the sports FLU probes on every known fact, the other localizations on the forget facts)")
    r.add_argument("--suites", help="comma-separated evaluation suites (default: the paper's seven; the attack suites "
                   "quantization, update_size, unrelated_finetune, direction_ablation, logit_lens, linear_lens, "
                   "in_context, and plugins' suites, only when listed)")
    r.add_argument("--edit-preset", choices=("fast", "paper"), help="EditConfig.fast() (default) or EditConfig()")
    r.add_argument("--eval-preset", choices=("small", "full"), help="small evaluation sizes (default) or EvalConfig()")
    r.add_argument("--edit", action="append", type=_kv, metavar="KEY=VALUE", help="EditConfig field (repeatable)")
    r.add_argument("--eval", action="append", type=_kv, metavar="KEY=VALUE",
                   help="EvalConfig field; a built-in suite's setting as SUITE.FIELD, e.g. relearning.steps=5, a "
                        "suite without a field of its own as other_suites.SUITE.FIELD (repeatable)")
    r.add_argument("--text-source", help="general text for side effects, the relearning and unrelated fine-tuning "
                   "attacks, the linear lens's fit and ROME/MEMIT's key covariance "
                   "(e.g. ../shared/data/wikitext2/test.txt)")
    r.add_argument("--mmlu-source", help="MMLU folder of CSVs or datasets name (default: skip MMLU)")
    r.add_argument("--device", help="model device (default: cpu)")
    r.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="model weight dtype (default: float32; bfloat16 for 7-9B models on a GPU)")
    r.add_argument("--executor", choices=("local", "ray"), help="where jobs run (default: local)")
    r.add_argument("--workers", type=int, help="worker processes of the local executor (default 1; each loads its "
                                               "own model: N times the memory, same results)")
    r.add_argument("--ray-address", help="Ray cluster address (default: local instance)")
    r.add_argument("--gpus-per-job", type=float, help="GPUs per Ray job")
    r.add_argument("--cpus-per-job", type=float, help="CPUs per Ray job")
    r.add_argument("--overwrite", action="store_true",
                   help="discard results already in --out (they come back if the run fails before its first result)")
    r.add_argument("--no-progress", dest="show_progress", action="store_const", const=False, help="no progress bars")
    r.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")


def _add_report(sub) -> None:
    """``factlens report``."""
    rep = sub.add_parser("report", help="(re)write report.html of a run directory")
    rep.add_argument("out", type=Path, help="run directory")
    rep.add_argument("--output", type=Path,
                     help="where to write the HTML (default: <out>/report.html), or the markdown with --markdown "
                          "(default: print it); never a file inside the run folder, nor an existing file that is "
                          "not such a report")
    rep.add_argument("--markdown", action="store_true",
                     help="markdown tables (Table 1, attacks and probes, comparisons, every metric, timings) "
                          "instead of HTML")
    rep.add_argument("--reference", action="append", metavar="UNIT",
                     help="unit to compare against, in the Comparisons section and Table 1's marks (the first "
                          "given); repeatable (default: flu and random, else the units whose localization is flu or "
                          "random, e.g. flu+graddiff and random+graddiff)")
    rep.add_argument("--equivalence", action="append", metavar="METRIC=MARGIN",
                     help="add an Equivalence section: TOST of METRIC against each reference unit with this margin "
                          "(the largest difference you call negligible, fixed before looking, e.g. "
                          "maintain_accuracy=0.1); repeatable, one per metric (factlens equivalence)")


def _add_tables(sub) -> None:
    """The table commands: ``compare``, ``equivalence``, ``plan`` and ``verdict``."""
    cmp_ = sub.add_parser("compare", help="paired comparison of every localization with a reference (CI, p, power)",
                          description="One row per (localization, metric): difference from the reference with a "
                                      "paired 95% CI (Newcombe's for 0/1 outcomes, with several seeds its hull "
                                      "with the paired bootstrap over seeds then facts; a paired bootstrap for "
                                      "other values), sign-flip permutation p-value, Holm-corrected "
                                      "significance and minimum detectable difference (docs/statistics.md).")
    _table_flags(cmp_, out_help="run directory; several directories with the same facts are merged (e.g. a ROME "
                                "folder next to a fine-tuning folder)",
                 metrics_help="comma-separated metric names (default: every metric with per-fact values)")
    _table_parser(sub, "equivalence", help="equivalence tests (TOST) against a reference: which differences a run "
                                           "rules out",
                  description="One row per (localization, metric): is the difference from the reference smaller than "
                              "a margin you call negligible? Two one-sided tests on the paired interval, "
                              "Holm-corrected per localization; 'rules out beyond' is the smallest margin the run "
                              "would have declared equivalent (docs/statistics.md).",
                  out_help="run directory (several with the same facts are merged)",
                  metrics_help="comma-separated metric names (default: every metric with per-fact values, all judged "
                               "against one margin)", number="--margin", number_help=_MARGIN_HELP)
    plan = sub.add_parser("plan", help="power plan: the facts or seeds needed to find a difference of a given size, "
                                       "or to show equivalence within a margin",
                          description="One row per (localization, metric) of factlens compare: the paired units "
                                      "needed to find a true difference of --difference from the reference with "
                                      "power 0.8 at the row's Holm level, or (--margin) to show equivalence within "
                                      "the margin (factlens equivalence) with power 0.8 if the true difference is "
                                      "--assumed, if the paired differences keep the spread this run shows "
                                      "(docs/statistics.md, Planning).")
    _table_flags(plan, out_help="run directory, the pilot (several with the same facts are merged)",
                 metrics_help="comma-separated metric names (default: every metric with per-fact values, all planned "
                              "for one difference or margin)")
    goal = plan.add_mutually_exclusive_group(required=True)
    goal.add_argument("--difference", type=float,
                      help="the smallest true difference worth finding, on the metrics' own scale (e.g. 0.1 for "
                           "accuracies); choose the metrics with --metrics")
    goal.add_argument("--margin", action="append", metavar="MARGIN or METRIC=MARGIN",
                      help="plan to show equivalence instead: " + _MARGIN_HELP)
    plan.add_argument("--assumed", type=float, default=0.0,
                      help="with --margin: the true difference the plan assumes (default 0: no difference)")
    _table_parser(sub, "verdict", help="what a run concludes per difference: lower/higher, negligible, equivalent or "
                                       "undecided",
                  description="One row per (localization, metric): factlens compare's paired test and factlens "
                              "equivalence's test at --margin, read together: significant (lower/higher, or "
                              "'negligible' when also within the margin), equivalent, or undecided "
                              "(docs/statistics.md, Verdicts).",
                  out_help="run directory (several with the same facts are merged)",
                  metrics_help="comma-separated metric names (default: every metric with per-fact values, all judged "
                               "against one margin)", number="--margin", number_help=_MARGIN_HELP)


def _add_preregistration(sub) -> None:
    """``factlens preregister`` (fix the tests before the results) and ``factlens confirm`` (run them)."""
    pre = sub.add_parser("preregister", help="fix a comparison's tests before its results exist (JSON, never "
                                             "overwritten)",
                         description="Write a pre-registration: the localizations compared with the reference, the "
                                     "primary metric(s) that decide the claim, secondary metrics, the unit, the "
                                     "equivalence margin and the predicted direction, with the time they were "
                                     "fixed; factlens confirm runs exactly these tests (docs/statistics.md, "
                                     "Pre-registered comparisons).")
    pre.add_argument("file", type=Path, help="the JSON file to write (refused if it exists)")
    pre.add_argument("--claim", required=True, help="the claim in words")
    pre.add_argument("--localizations", required=True, help="comma-separated units compared with the reference")
    pre.add_argument("--primary", required=True, help="comma-separated metric(s) that decide the claim (one Holm "
                                                      "family)")
    pre.add_argument("--secondary", default="", help="comma-separated further metrics (a Holm family of their own)")
    pre.add_argument("--reference", default="flu", help="unit compared against (default: flu)")
    pre.add_argument("--expect", choices=("lower", "higher"),
                     help="the direction the claim predicts for localization - reference (default: none)")
    pre.add_argument("--unit", choices=("fact", "seed"), default="fact",
                     help="what the tests pair: facts pooled (default) or each seed's mean difference")
    pre.add_argument("--margin", type=float, help="equivalence margin on the metrics' scale (default: none, no "
                                                  "equivalence test)")
    pre.add_argument("--alpha", type=float, default=0.05, help="family-wise level (default 0.05)")
    pre.add_argument("--run-command", default="", help="the command that will make the results (for the record)")
    con = sub.add_parser("confirm", help="run a pre-registration's tests on finished runs",
                         description="The registered tests (factlens verdict per family) and their outcome against "
                                     "the predicted direction: supported, contradicted, not supported (equivalent) "
                                     "or undecided; warns when the registration is younger than a result.")
    con.add_argument("out", type=Path, nargs="+", help="run directory (several with the same facts are merged)")
    con.add_argument("--prereg", type=Path, required=True, help="the file factlens preregister wrote")
    con.add_argument("--csv", type=Path, help="also write the full table to this CSV file (not inside a run folder)")
    con.add_argument("--rename", nargs=2, action="append", metavar=("DIR", "UNIT=NAME[,...]"),
                     help="compare the units of DIR under other names (as for factlens compare)")


_MARGIN_HELP = ("the largest difference you call negligible, on the metrics' own scale (e.g. 0.1 for accuracies; "
                "choose the metrics with --metrics), or METRIC=MARGIN once per metric (metrics of other scales, e.g. "
                "--margin maintain_accuracy=0.1 --margin kl_divergence=0.05)")


def _table_parser(sub, name: str, *, help: str, description: str, out_help: str, metrics_help: str, number: str,
                  number_help: str) -> None:
    """A table command that takes one number besides :func:`_table_flags` (``equivalence``'s
    ``--margin``, ``plan``'s ``--difference``, ``verdict``'s ``--margin``). A margin may also be
    given per metric (``--margin maintain_accuracy=0.1 --margin kl_divergence=0.05``: :func:`_margin`)."""
    parser = sub.add_parser(name, help=help, description=description)
    _table_flags(parser, out_help=out_help, metrics_help=metrics_help)
    if number == "--margin":
        parser.add_argument(number, action="append", required=True, metavar="MARGIN or METRIC=MARGIN",
                            help=number_help)
    else:
        parser.add_argument(number, type=float, required=True, help=number_help)


def _table_flags(sub: argparse.ArgumentParser, *, out_help: str, metrics_help: str) -> None:
    """The flags ``compare``, ``equivalence``, ``plan`` and ``verdict`` share: the folders, ``--reference``,
    ``--metrics``, ``--unit``, ``--csv`` and ``--rename``."""
    sub.add_argument("out", type=Path, nargs="+", help=out_help)
    sub.add_argument("--reference", default="flu", help="localization compared against (default: flu)")
    sub.add_argument("--metrics", help=metrics_help)
    _unit_flag(sub)
    sub.add_argument("--csv", type=Path, help="also write the full table to this CSV file (not inside a run folder; "
                                              "over an existing file only if it is such a CSV)")
    sub.add_argument("--rename", nargs=2, action="append", metavar=("DIR", "UNIT=NAME[,...]"),
                     help="compare the units of DIR (one of the folders given) under other names, e.g. --rename "
                          "results/steps40 flu=flu_40: one localization run in two folders with other edit "
                          "settings (repeatable)")


def _unit_flag(sub: argparse.ArgumentParser) -> None:
    """``--unit`` of ``compare``, ``equivalence`` and ``plan`` (``unit=`` of :func:`factlens.compare`)."""
    sub.add_argument("--unit", choices=("fact", "seed"), default="fact",
                     help="what the test pairs: the facts of every seed, pooled (default), or each seed's mean "
                          "difference as one unit (over mask draws and trainings; needs 2 seeds, 6 to reach 0.05)")
