"""The ``factlens`` command line.

``factlens run <task> [options]`` runs localize -> mask -> edit -> evaluate for every
localization and seed and writes per-run JSON plus ``report.html`` into ``--out``;
``factlens report <run dir> [--reference UNIT]`` rewrites the report of a run directory; ``factlens compare
<run dir> [--reference flu] [--csv out.csv]`` prints the paired comparison of every
localization with a reference (:func:`factlens.compare`); ``factlens equivalence <run dir> --margin 0.1`` the
equivalence tests of the same pairs (:func:`factlens.equivalence`: which differences the run rules out);
``factlens plan <run dir> --difference 0.1`` the facts or seeds needed to find such a difference
(:func:`factlens.plan_units`); ``factlens verdict <run dir> --margin 0.1`` both tests read together
(:func:`factlens.verdicts`); ``factlens preregister FILE ...`` fixes a comparison's tests before its
results exist and ``factlens confirm <run dir> --prereg FILE`` runs them
(:mod:`factlens.preregistration`). The parser itself is :mod:`factlens.runner.cli_parser`.

Settings come from the :class:`~factlens.runner.config.RunConfig` defaults, then a config
file (``--config run.toml``/``.yaml``), then the flags given on the command line.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from factlens.runner.cli_parser import build_parser

__all__ = ["main", "build_parser", "config_from_args"]


def _margin(given: Sequence[str]) -> float | dict[str, float]:
    """``--margin``: one number for every metric, or ``METRIC=MARGIN`` once per metric (which also
    chooses the metrics, as ``factlens report --equivalence`` does)."""
    if len(given) == 1 and "=" not in given[0]:
        try:
            return float(given[0])
        except ValueError:
            raise ValueError(f"--margin takes a number (e.g. 0.1) or METRIC=MARGIN per metric (e.g. "
                             f"maintain_accuracy=0.1), got {given[0]!r}") from None
    if any("=" not in g for g in given):
        raise ValueError(f"--margin given {len(given)} times: give each as METRIC=MARGIN (one per metric), or one "
                         f"number for every metric, got {list(given)}")
    return _equivalence_margins(given, flag="--margin")


_LIST_FLAGS = ("localizations", "seeds", "suites", "methods", "objectives")
_PLAIN_FLAGS = ("model", "forget_size", "out", "data", "mcq_data", "max_facts", "filter_known", "param_budget", "localize_on",
                "edit_preset", "eval_preset", "device", "dtype", "executor", "workers", "ray_address", "gpus_per_job", "cpus_per_job",
                "show_progress")


def config_from_args(args: argparse.Namespace):
    """Defaults, then ``--config``, then the flags given."""
    from factlens.runner.config import RunConfig

    return RunConfig.from_dict(_settings(args)[1])


def flag_overrides(args: argparse.Namespace) -> tuple[str, ...]:
    """The settings of ``--config`` that the flags given changed, as ``"key: file value -> run value"``
    (dotted keys inside ``edit``/``eval``); empty without ``--config``.

    The folder's copy of the file keeps the file's values, so a rerun of the copy alone was
    refused as another configuration without a word on why; the run now prints these at its
    start and heads the copy with them.
    """
    if args.config is None:
        return ()
    file_d, d = _settings(args)
    a, b = _flat(file_d), _flat(d)
    return tuple(f"{k}: {a[k]!r} -> {_held(k, b.get(k))!r}" for k in a if not _same(k, b.get(k, a[k]), a[k]))


def _held(key: str, v: Any) -> Any:
    """A setting as the config holds it, without checking it (the file alone need not be a valid
    config): list flags as lists, ``--seeds 0`` as ``[0]``."""
    from factlens.runner.config_checks import as_seed

    if isinstance(v, (list, tuple)):
        v = list(v)
        if key == "seeds":
            try:
                v = [as_seed(x) for x in v]
            except ValueError:
                pass
    return v


def _same(key: str, a: Any, b: Any) -> bool:
    a, b = _held(key, a), _held(key, b)
    if key in ("out", "data", "mcq_data") and isinstance(a, str) and isinstance(b, str):
        return Path(a) == Path(b)  # --out x/ is the file's out = "x"
    return a == b


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of ``--config`` alone, and with the flags given on top."""
    from factlens.runner.config import RunConfig
    from factlens.runner.inputs import load_config_file

    d: dict[str, Any] = {}
    if args.config is not None:
        given = _run_record_settings(load_config_file(args.config))
        d.update({str(k).replace("-", "_"): v for k, v in given.items()})
        for name in ("edit", "eval"):  # merged with the flags below: a non-table was a TypeError traceback
            if name in d and not isinstance(d[name], dict):
                raise ValueError(f"{args.config}: {name} must be a table of {name.capitalize()}Config options "
                                 f"([{name}] in TOML, a mapping in YAML/JSON), got {d[name]!r}")
        if isinstance(d.get("localize_options"), dict):
            d["localize_options"] = _on_default_options(d["localize_options"])
    file_d = dict(d)
    if args.task is not None:
        d["task"] = args.task
    for name in _PLAIN_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            d[name] = v
    for name in _LIST_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            items = [x.strip() for x in v.split(",")] if v.strip() else []
            if "" in items[:-1]:  # "0,,1" (a value left out) was read as "0,1"; a trailing comma is fine
                raise ValueError(f"--{name.replace('_', '-')} {v!r} has an empty item; give comma-separated "
                                 f"values, e.g. --{name.replace('_', '-')} {','.join(x for x in items if x) or '0'}")
            d[name] = [x for x in items if x]
    for name in ("edit", "eval"):
        pairs = getattr(args, name, None) or []
        if pairs:
            d[name] = _merged(d.get(name, {}), dict(pairs))
    ev = dict(d.get("eval", {}))
    if args.text_source is not None:
        ev["text.source"] = args.text_source
    if args.mmlu_source is not None:
        ev["side_effects.mmlu_source"] = args.mmlu_source
    if ev:
        d["eval"] = ev
    if "model" not in d and d.get("task") == "planted":
        d["model"] = "planted"
    if "out" not in d:
        d["out"] = str(Path("results") / d.get("task", RunConfig.task))
    return file_d, d


def _run_record_settings(d: dict[str, Any]) -> dict[str, Any]:
    """``--config`` as read; a run folder's ``run_config.json`` (its ``config`` and ``resolved``
    tables: no setting has either name) as the settings it ran with, its ``config`` table, less
    ``out``: a run is reproduced into a new folder (``--out``, else ``results/<task>``), not over
    the one it ran in (read as settings, the record was refused: "unknown config key 'config'")."""
    if not (isinstance(d.get("config"), dict) and "resolved" in d):
        return d
    return {k: v for k, v in d["config"].items() if k != "out"}


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` on top of ``base``, table by table: ``--eval 'relearning={"both_halves": true}'``
    changes that key of the config file's ``[eval.relearning]`` and keeps its others (as
    ``--eval relearning.both_halves=true`` does), instead of replacing the whole table."""
    out = dict(base)
    for k, v in given.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _on_default_options(given: dict[str, Any]) -> dict[str, Any]:
    """A config file's ``[localize_options.<method>]`` tables on top of the defaults' tables.

    Like ``[edit]`` and ``[eval]``, a table names only what changes: ``n_samples = 4`` for
    causal tracing keeps the default ``include_resid = false`` instead of dropping it (which
    made the run trace the residual stream too, about 4x the time).
    """
    from factlens.runner.config import on_default_localize_options

    return on_default_localize_options(given)  # (RunConfig does the same for a table given in Python)


def _cmd_run(args: argparse.Namespace) -> int:
    from factlens.runner.config import check_device
    from factlens.runner.executor import run_experiment
    from factlens.runner.defects import defect_location
    from factlens.runner.processes import JobError

    try:
        cfg = config_from_args(args)
        check_device(cfg)
    except (ValueError, FileNotFoundError, ImportError) as e:
        return _error(e)
    print(f"factlens run {cfg.task}: model={cfg.model} localizations={','.join(cfg.localizations)} "
          f"seeds={','.join(map(str, cfg.seeds))} out={cfg.out} executor={cfg.executor}", file=sys.stderr)
    overrides = flag_overrides(args)
    if overrides:
        print(f"flags change {len(overrides)} setting(s) of {args.config}: " + "; ".join(overrides), file=sys.stderr)
    try:
        summary = run_experiment(cfg, overwrite=args.overwrite, config_file=args.config, report=args.report,
                                 config_overrides=overrides)
    except JobError as e:  # a setting refused in a worker process (--workers > 1): its plan job and those waiting for it
        # (a job raises a ValueError from outside factlens as a RuntimeError naming it: a defect is no cause here)
        bad = [c for c in e.causes if isinstance(c, ValueError)]
        if not bad:
            raise
        return _error(_with_cap(bad[0], cfg))
    except ValueError as e:  # every refused setting is one: RunDirError and RunFileError (another configuration's
        # results, --out a file, a damaged file in it), TaskSizeError (--forget-size beyond the known facts),
        # EmptyMask (--param-budget too small), MaskNotSupported (ROME on several MLPs), and what a job is the
        # first to check (a --text-source too short for one chunk). One raised outside factlens (a plugin, torch,
        # numpy: runner.defects.defect_location) is a defect: it propagates with its traceback (from a job, as a
        # RuntimeError naming the job), instead of reading as a bad setting
        if defect_location(e) is not None:
            raise
        return _error(_with_cap(e, cfg))
    print(f"ran {len(summary.ran)} run(s), skipped {len(summary.skipped)} completed, {summary.seconds:.0f}s", file=sys.stderr)
    if summary.report is not None:
        print(f"report: {summary.report}", file=sys.stderr)
    print(str(summary.report or summary.out))
    return 0


def _error(e: BaseException) -> int:
    print(f"factlens: error: {e}", file=sys.stderr)
    return 2


def _with_cap(e: BaseException, cfg) -> BaseException | str:
    """A task-size error names "the facts the model knows"; with ``--max-facts`` the dataset is
    the user's cap, which the message then says (raising the cap is the fix, not the data)."""
    from factlens.tasks import TaskSizeError

    if isinstance(e, TaskSizeError) and cfg.max_facts is not None:
        return f"{e}; the dataset is capped at {cfg.max_facts} facts by --max-facts: raise the cap or leave it out"
    return e


def _cmd_report(args: argparse.Namespace) -> int:
    from factlens.files import check_output, write_atomic
    from factlens.runner.report import write_report
    from factlens.runner.report_markdown import is_markdown_summary, markdown_summary

    try:
        margins = _equivalence_margins(args.equivalence)
        if args.markdown:
            if args.output is None:
                print(markdown_summary(args.out, references=args.reference, margins=margins), end="")
                return 0
            check_output(args.output, what="markdown report", ours=is_markdown_summary, protected=[args.out])
            text = markdown_summary(args.out, references=args.reference, margins=margins)
            write_atomic(args.output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            print(str(args.output))
            return 0
        path = write_report(args.out, output=args.output, references=args.reference, margins=margins)
    except ValueError as e:  # a truncated or corrupt JSON file of the run directory (the message names it)
        return _error(e)
    print(str(path))
    return 0


def _equivalence_margins(given: Sequence[str] | None, *, flag: str = "--equivalence") -> dict[str, float] | None:
    """``--equivalence METRIC=MARGIN`` (repeatable; ``flag``: the option's name in messages) as
    ``{metric: margin}``; ``None`` when not given."""
    if not given:
        return None
    out: dict[str, float] = {}
    for item in given:
        name, sep, value = item.partition("=")
        try:
            margin = float(value)
        except ValueError:
            margin = None
        if not sep or not name.strip() or margin is None:
            raise ValueError(f"{flag} takes METRIC=MARGIN, e.g. maintain_accuracy=0.1 (the largest "
                             f"difference you call negligible), got {item!r}")
        if name.strip() in out:
            raise ValueError(f"{flag} names {name.strip()!r} twice; give each metric one margin")
        out[name.strip()] = margin
    return out


def _unfinished(folders: Sequence[str | Path]) -> dict[str, list[str]]:
    """Per run folder, its planned ``seed<S>/<unit>`` without a finished run file (the comparison
    pairs only finished units; it said nothing about a missing unit or a seed that ran only some
    of them, while the report listed them). A folder that cannot be read is left to ``compare``,
    whose error names the file."""
    from factlens.runner.report import missing_units
    from factlens.runner.run_dir import read_json, read_json_table
    from factlens.runner.run_files import is_run_file

    read: dict[str, dict] = {}
    finished: list[dict] = []  # every folder's: a unit planned in one folder and run into another is in the comparison
    for folder in map(Path, folders):
        cfg_file = folder / "run_config.json"
        if not cfg_file.is_file():
            continue
        try:
            cfg = read_json_table(cfg_file, tables=("config",))["config"]
            with warnings.catch_warnings():  # compare warns about a user's own JSON once
                warnings.simplefilter("ignore")
                runs = [read_json(f) for f in sorted((folder / "runs").glob("seed*/*.json")) if is_run_file(f)]
            missing_units(cfg, runs)  # raises on a config it cannot read: that folder is left to compare
        except (ValueError, KeyError, TypeError):
            continue
        read[str(folder)] = cfg
        finished += runs
    missing = {folder: missing_units(cfg, finished) for folder, cfg in read.items()}
    return {folder: units for folder, units in missing.items() if units}


def _renamed_folders(folders: Sequence[Path], renames: Sequence[Sequence[str]] | None) -> list:
    """The folders as given, those named by ``--rename DIR UNIT=NAME[,UNIT=NAME]`` as a
    :class:`~factlens.compare_inputs.RunFolder` with their renames."""
    from factlens.compare_inputs import RunFolder

    by_folder: dict[Path, dict[str, str]] = {}
    for where, spec in renames or ():
        matches = [f for f in folders if f == Path(where) or f.resolve() == Path(where).resolve()]
        if not matches:
            raise ValueError(f"--rename {where}: not one of the folders given ({', '.join(map(str, folders))}); "
                             "name the folder as you passed it")
        names = by_folder.setdefault(matches[0], {})
        for item in spec.split(","):
            old, sep, new = (x.strip() for x in item.partition("="))
            if not sep or not old or not new:
                raise ValueError(f"--rename {where} takes UNIT=NAME[,UNIT=NAME], e.g. flu=flu_40, got {spec!r}")
            if old in names:
                raise ValueError(f"--rename {where} names {old!r} twice; give each unit one new name")
            names[old] = new
    return [RunFolder(f, rename=by_folder[f]) if f in by_folder else f for f in folders]


def _note_unfinished(unfinished: dict[str, list[str]]) -> None:
    for folder, units in unfinished.items():
        print(f"note: {folder}: not finished: {', '.join(units)} (not in the comparison; rerun the run command "
              "to finish them)", file=sys.stderr)


def _cmd_compare(args: argparse.Namespace) -> int:
    from factlens.comparison import compare
    from factlens.runner.report_stats import compare_text

    return _table_command(args, "comparison", lambda runs, metrics: compare(runs, reference=args.reference,
                                                                            metrics=metrics, unit=args.unit),
                          compare_text)


def _cmd_equivalence(args: argparse.Namespace) -> int:
    from factlens.runner.report_comparisons import equivalence_text
    from factlens.tost import equivalence

    return _table_command(args, "equivalence", lambda runs, metrics: equivalence(
        runs, reference=args.reference, metrics=metrics, margin=_margin(args.margin), unit=args.unit), equivalence_text)


def _cmd_plan(args: argparse.Namespace) -> int:
    from factlens.power_plan import plan_text, plan_units

    if args.margin is None and args.assumed != 0:
        return _error(ValueError("--assumed is the true difference of an equivalence plan: give it with --margin"))
    def goal() -> dict:  # a malformed --margin is refused inside the table command, as equivalence's
        return {"difference": args.difference} if args.margin is None else {"margin": _margin(args.margin),
                                                                              "assumed": args.assumed}
    return _table_command(args, "power plan", lambda runs, metrics: plan_units(
        runs, reference=args.reference, metrics=metrics, unit=args.unit, **goal()), plan_text)


def _cmd_verdict(args: argparse.Namespace) -> int:
    from factlens.verdict import verdict_text, verdicts

    return _table_command(args, "verdicts", lambda runs, metrics: verdicts(
        runs, reference=args.reference, metrics=metrics, margin=_margin(args.margin), unit=args.unit), verdict_text)


def _cmd_preregister(args: argparse.Namespace) -> int:
    from factlens.preregistration import Preregistration

    names = lambda text: tuple(x.strip() for x in text.split(",") if x.strip())  # noqa: E731
    try:
        p = Preregistration(claim=args.claim, localizations=names(args.localizations), primary=names(args.primary),
                            secondary=names(args.secondary), reference=args.reference, expected=args.expect,
                            unit=args.unit, margin=args.margin, alpha=args.alpha, command=args.run_command)
        p.save(args.file)
    except (ValueError, FileExistsError) as e:
        return _error(e)
    print(f"wrote {args.file} (registered {p.written}); after the run: factlens confirm RUN_DIR --prereg {args.file}",
          file=sys.stderr)
    return 0


def _cmd_confirm(args: argparse.Namespace) -> int:
    """``factlens confirm``: the registered tests as markdown (and ``--csv``)."""
    from factlens.preregistration import Preregistration, confirm, confirm_text

    read: dict[str, Preregistration] = {}

    def build(runs, _metrics):
        read["p"] = Preregistration.load(args.prereg)  # a bad file is refused as a bad setting, inside the command
        return confirm(runs, read["p"])
    return _table_command(args, "confirm", build, lambda table, **_: confirm_text(table, read["p"]),
                          csv_head="family,expected,")


def _table_command(args: argparse.Namespace, what: str, build, text, *, csv_head: str = "localization,metric,") -> int:
    """``factlens compare`` / ``equivalence`` / ``plan`` / ``verdict`` / ``confirm``: the table of
    ``build(runs, metrics)`` printed as ``text``, and written to ``--csv`` (a file of ours starts with
    ``csv_head``); a refused setting (an empty table, a ``--reference`` that is planned but has not
    finished) is an error message, with the folders' unfinished units noted."""
    from factlens.files import check_output, write_atomic

    given = getattr(args, "metrics", None)  # confirm takes its metrics from the registration
    metrics = [m.strip() for m in given.split(",") if m.strip()] if given else None
    unfinished = _unfinished(args.out)
    try:
        if args.csv is not None:  # checked first: never over a run's own file or someone's other file
            check_output(args.csv, what=f"{what} CSV", ours=lambda head: head.startswith(csv_head),
                         protected=[p for p in args.out if Path(p).is_dir()])
        folders = _renamed_folders(args.out, args.rename)
        table = build(folders[0] if len(folders) == 1 else folders, metrics)  # empty: NothingToCompare
    except ValueError as e:
        _note_unfinished(unfinished)
        return _error(e)
    _note_unfinished(unfinished)
    if args.csv is not None:
        write_atomic(args.csv, lambda tmp: table.to_csv(tmp, index=False))
        print(f"wrote {args.csv}", file=sys.stderr)
    print(text(table, reference=getattr(args, "reference", None)), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factlens`` command (``[project.scripts] factlens``).

    Returns:
        0 on success, 2 for bad settings (a forget size larger than the known facts allow
        included), a run directory holding results of another configuration, or an edit method
        crossed with a localization whose mask it cannot edit (the message says what to change;
        completed units stay saved), 130 when
        interrupted (rerun the same command to resume). Other errors during the run itself
        propagate with a traceback; so does a ``ValueError`` raised outside factlens (a plugin's
        code, torch, numpy: a defect, not a refused setting; from a job, as a ``RuntimeError``
        naming the job), unless it is one of factlens's own error types such as
        ``MaskNotSupported`` (:func:`factlens.runner.defects.defect_location`).
    """
    from factlens.plugins import PluginError

    try:
        parser = build_parser()  # --help lists the registered methods: reads the plugins
    except PluginError as e:
        return _error(e)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "equivalence":
            return _cmd_equivalence(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "verdict":
            return _cmd_verdict(args)
        if args.command == "preregister":
            return _cmd_preregister(args)
        if args.command == "confirm":
            return _cmd_confirm(args)
        return _cmd_report(args)
    except KeyboardInterrupt:
        print("\ninterrupted: completed runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except FileNotFoundError as e:
        return _error(e)
    except PluginError as e:  # an installed package's entry point (the message names the package)
        return _error(e)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
