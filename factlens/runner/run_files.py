"""Which files of a run folder are its run records, and were they made by one configuration?

``factlens report`` and ``factlens compare`` read every ``runs/seed*/*.json``; these checks keep a
user's own JSON file there out of the report (with a warning) and refuse run files copied in from a
folder with other settings, which were pooled into one report and one comparison without a word.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence


class RunFileError(ValueError):
    """A file of a run folder cannot be used (damaged, or made with other settings than its
    folder's); the message names it and what to do. ``factlens run``/``report`` exit 2."""

__all__ = ["is_run_file", "check_one_setup", "warned_already", "mixed_code_note", "CODE_KEYS"]

#: The words after the path in :func:`is_run_file`'s warning (what :func:`warned_already` filters).
_NOT_A_RUN_FILE = "is not a factlens run file"
#: The words that start :func:`mixed_code_note` (the report shows the note itself: its warning is filtered).
_MIXED_CODE = "The units here were computed by different code"
#: The entries of a run record's ``versions`` that decide its numbers (the factlens source tree, then
#: the packages of :data:`~factlens.runner.provenance.RESULT_PACKAGES` but the plotting one).
CODE_KEYS = ("factlens_source", "factlens", "torch", "transformer-lens", "transformers", "numpy", "scipy",
             "statsmodels", "scikit-learn")


def is_run_file(path: Path) -> bool:
    """A run record (``localization``, ``seed`` and ``eval``); another JSON file under ``runs/`` (a user's
    own, which ``--overwrite`` keeps) is left alone with a warning instead of crashing the report."""
    from factlens.runner.run_dir import read_json

    rec = read_json(path)
    if isinstance(rec, dict) and {"localization", "seed", "eval"} <= rec.keys():
        return True
    warnings.warn(f"{path} {_NOT_A_RUN_FILE} (no localization/seed/eval): left out of the report", stacklevel=3)
    return False


@contextmanager
def warned_already() -> Iterator[None]:
    """Inside the block, reading a folder again does not repeat :func:`is_run_file`'s warning
    (the report reads its folder for its tables, then for its comparisons; the first read warned)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".* {_NOT_A_RUN_FILE}", category=UserWarning)
        warnings.filterwarnings("ignore", message=_MIXED_CODE, category=UserWarning)
        yield


def mixed_code_note(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """A sentence naming the :data:`CODE_KEYS` whose recorded values differ between ``runs`` (and the
    units of each value), or ``None`` when every unit was computed by the same code.

    A folder resumed after an update of factlens or torch, or folders of several sessions merged by
    ``factlens compare``, pool units computed by different code; nothing in their numbers shows it,
    and a difference between two localizations may then be one between two versions. A unit whose
    record lacks an entry (written before factlens recorded its source tree) reads "not recorded":
    it cannot be told to be the same code.

    Example:
        >>> a = {"localization": "flu", "seed": 0, "versions": {"factlens_source": "tree " + "a" * 40, "torch": "2.13.0"}}
        >>> b = {"localization": "random", "seed": 0, "versions": {"factlens_source": "tree " + "b" * 40, "torch": "2.13.0"}}
        >>> mixed_code_note([a, a]) is None
        True
        >>> print(mixed_code_note([a, b]))  # doctest: +ELLIPSIS
        The units here were computed by different code ... factlens_source: tree aaaaaaaaaaaa (seed 0 flu); tree bbbbbbbbbbbb (seed 0 random). Rerun ...
    """
    differ = []
    for key in CODE_KEYS:
        units: dict[str, list[str]] = {}
        for r in runs:
            value = str((r.get("versions") or {}).get(key) or "not recorded")
            if key == "factlens_source" and value.startswith("tree "):  # "tree <sha> [+changes <digest>]"
                parts = value.split()
                value = " ".join([parts[0], parts[1][:12], *parts[2:]])
            units.setdefault(value, []).append(f"seed {r.get('seed')} {r.get('localization')}")
        if len(units) > 1:
            differ.append(f"{key}: " + "; ".join(
                f"{v} ({', '.join(u[:3])}{f' and {len(u) - 3} more' if len(u) > 3 else ''})" for v, u in units.items()))
    if not differ:
        return None
    return (f"{_MIXED_CODE} (a folder resumed after an update, or folders merged): a difference between units "
            "may be one between versions. " + " | ".join(differ) + ". Rerun the units of the older code "
            "(delete their run files and rerun the same command) to compare like with like.")


def check_one_setup(config: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], files: Sequence[Path]) -> None:
    """Refuse a folder whose run files were not made by one configuration (files copied in from a run
    with another forget size, seed list, model or evaluation settings were pooled into one report and
    one comparison, without a word)."""
    from factlens.comparison import _setup  # the settings factlens compare checks between folders

    seeds = set(config.get("seeds") or ())
    first: tuple[Path, dict, dict] | None = None
    _check_places(runs, files)
    for r, f in zip(runs, files):
        if seeds and r["seed"] not in seeds:
            raise RunFileError(f"{f}: seed {r['seed']} is not one of this folder's seeds {sorted(seeds)} "
                             "(run_config.json): a run file from another folder? Move it out, or run with --seeds "
                             "that include it")
        # the seed and what the seed's split decides (neighbors that are other facts' prompts) differ by seed
        task = {k: v for k, v in (r.get("task") or {}).items() if k not in ("seed", "neighbors_dropped")}
        setup = _setup(r)
        eval_seed = setup.pop("eval.seed", r["seed"])  # each seed's evaluation runs with that seed
        if eval_seed != r["seed"]:
            raise RunFileError(f"{f}: a run of seed {r['seed']} evaluated with seed {eval_seed}: a run file edited or "
                             "made elsewhere? Move it out of the folder")
        _check_unit(config, r, f)
        if first is None:
            first = (f, task, setup)
            continue
        differ = differing(first[2], setup)
        if task != first[1] or differ:
            what = (f"task {first[1]} vs {task}" if task != first[1] else
                    ", ".join(f"{k}: {first[2][k]!r} vs {setup[k]!r}" for k in differ))
            raise RunFileError(f"{first[0]} and {f} were made with different settings ({what}): one folder's "
                             "report and comparisons need one task, model and evaluation setup; move the foreign "
                             "run files out (or compare the folders with factlens compare DIR1 DIR2)")
    _check_edits_and_budgets(runs, files)


_FOREIGN = "a run file from another folder? Move it out (or compare the folders with factlens compare DIR1 DIR2)"


def _check_places(runs: Sequence[Mapping[str, Any]], files: Sequence[Path]) -> None:
    """Each unit of each seed once, at the path the runner writes it (``runs/seed<S>/<unit>.json``).

    A copy (``flu (copy).json``) or a record filed under another seed was read as one more run:
    Table 1 averaged it in (the FLU's seed 0 counted twice) while its intervals, keyed by seed,
    did not, so the mean sat beside another sample's interval.
    """
    seen: dict[tuple[Any, Any], Path] = {}
    for r, f in zip(runs, files):
        seed, unit = r["seed"], r["localization"]
        if f.parent.name != f"seed{seed}" or f.stem != str(unit):
            raise RunFileError(f"{f}: this record is the run of {unit!r} at seed {seed}, which the runner writes to "
                               f"runs/seed{seed}/{unit}.json: a copied or renamed file? Move it out of runs/ "
                               "(or back to that name)")
        key = (seed, unit)
        if key in seen:  # (two spellings of one path, e.g. a case-insensitive file system)
            raise RunFileError(f"{seen[key]} and {f} are both the run of {unit!r} at seed {seed}: move one out of runs/")
        seen[key] = f


def _check_unit(config: Mapping[str, Any], r: Mapping[str, Any], f: Path) -> None:
    """A run of a localization the folder's configuration does not list was pooled into its report."""
    locs = config.get("localizations")
    loc = (r.get("unit") or {}).get("localization", r.get("localization"))  # "localization" is the unit's label (flu+npo)
    if locs and loc not in locs:
        raise RunFileError(f"{f}: localization {loc!r} is not one of this folder's "
                           f"{list(locs)} (run_config.json): {_FOREIGN}")


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The settings both records have whose values differ, sorted (a field added since an older run
    was written is no difference)."""
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


#: Edit settings that change how an edit is computed, not what it is: gradient checkpointing
#: recomputes the same activations (the same gradients, bitwise on CPU). A folder's units made
#: with and without it (the runner's CPU preset turned it on) edit alike.
EXECUTION_EDIT_SETTINGS: frozenset[str] = frozenset({"checkpoint"})


def edit_settings(r: Mapping[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """A run record's edit method and its settings but the seed (each seed trains with its own)
    and the :data:`EXECUTION_EDIT_SETTINGS`; ``None`` for a record without them."""
    cfg = (r.get("edit") or {}).get("config")
    if not cfg:
        return None
    return (r.get("unit") or {}).get("method"), {k: v for k, v in cfg.items()
                                                  if k != "seed" and k not in EXECUTION_EDIT_SETTINGS}


def _check_edits_and_budgets(runs: Sequence[Mapping[str, Any]], files: Sequence[Path]) -> None:
    """Refuse runs of one edit method trained with other settings, and runs of one seed made with
    another parameter budget (each records its seed's plan budget): a file copied in from a run
    with ``--edit lr=0.1 --param-budget 30000`` was compared with the folder's own as if at one budget."""
    edits: dict[Any, tuple[Path, dict]] = {}
    budgets: dict[Any, tuple[Path, Any]] = {}
    for r, f in zip(runs, files):
        if (settings := edit_settings(r)) is not None:
            method, cfg = settings
            seen = edits.setdefault(method, (f, cfg))
            if differ := differing(seen[1], cfg):
                raise RunFileError(f"{seen[0]} and {f} were edited with different settings "
                                   f"({', '.join(f'{k}: {seen[1].get(k)!r} vs {cfg.get(k)!r}' for k in differ)}): "
                                   f"{_FOREIGN}")
        if r.get("param_budget") is not None:  # every run of a seed records its plan's budget, used or not
            seen_b = budgets.setdefault(r["seed"], (f, (r["param_budget"], r.get("budget_source"))))
            if seen_b[1] != (r["param_budget"], r.get("budget_source")):
                raise RunFileError(f"{seen_b[0]} and {f} localized seed {r['seed']} at different parameter budgets "
                                   f"({seen_b[1][0]:,} from {seen_b[1][1]} vs {r['param_budget']:,} from "
                                   f"{r.get('budget_source')}): the folder's localizations are compared at one "
                                   f"budget per seed; {_FOREIGN}")
