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

__all__ = ["is_run_file", "check_one_setup", "warned_already"]

#: The words after the path in :func:`is_run_file`'s warning (what :func:`warned_already` filters).
_NOT_A_RUN_FILE = "is not a factlens run file"


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
        yield


def check_one_setup(config: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], files: Sequence[Path]) -> None:
    """Refuse a folder whose run files were not made by one configuration (files copied in from a run
    with another forget size, seed list, model or evaluation settings were pooled into one report and
    one comparison, without a word)."""
    from factlens.comparison import _setup  # the settings factlens compare checks between folders

    seeds = set(config.get("seeds") or ())
    first: tuple[Path, dict, dict] | None = None
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
        if first is None:
            first = (f, task, setup)
            continue
        differ = sorted(k for k in first[2].keys() & setup.keys() if first[2][k] != setup[k])
        if task != first[1] or differ:
            what = (f"task {first[1]} vs {task}" if task != first[1] else
                    ", ".join(f"{k}: {first[2][k]!r} vs {setup[k]!r}" for k in differ))
            raise RunFileError(f"{first[0]} and {f} were made with different settings ({what}): one folder's "
                             "report and comparisons need one task, model and evaluation setup; move the foreign "
                             "run files out (or compare the folders with factlens compare DIR1 DIR2)")
