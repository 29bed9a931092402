"""Where :func:`factlens.comparison.compare` reads its evaluations from, and the checks that make
two of them pairable: run folders (the same facts, model and evaluation settings per seed;
budgets and edit settings of one method compared, a difference warned) or in-memory results.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["load_evaluations", "RunFolder"]


def _fact_ids(ev) -> frozenset[str]:
    """The forget facts behind a run's standard suite (the ids its per-fact samples are keyed by)."""
    s = ev.suites.get("standard") if hasattr(ev, "suites") else None
    if s is None:
        return frozenset()
    return frozenset(k for m in s.metrics if m.name.startswith("forget_") and m.samples for k in m.samples)


@dataclass(frozen=True, eq=False)
class InputFile:
    """An input file's setting as two folders compare it: the path as given and, where the run
    hashed it, the content's sha256. Two settings with digests are equal when the contents are:
    a folder run with ``--eval text.source=../shared/data/wikitext2/test.txt`` and one with the
    absolute path of the same file read the same text (their pairs were refused as "measured
    differently"). Without a digest on either side (a dataset name, or a folder written before
    digests were kept) the paths as given are compared.

    Example:
        >>> InputFile("../t.txt", "ab12") == InputFile("/work/t.txt", "ab12")
        True
        >>> InputFile("t.txt", "ab12") == InputFile("t.txt", "cd34"), InputFile("a", None) == InputFile("b", None)
        (False, False)
        >>> InputFile("t.txt", "ab12") == "t.txt"  # a path without a digest: compared as given
        True
    """

    path: str
    sha256: str | None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # a setting without a digest (results respelled or built in memory)
            return self.path == other
        if not isinstance(other, InputFile):
            return NotImplemented
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return self.path == other.path

    __hash__ = None  # type: ignore[assignment]  # equal by content, not by path: not a dict key

    def __repr__(self) -> str:
        return f"{self.path!r} (sha256 {self.sha256[:12]})" if self.sha256 else repr(self.path)


@dataclass(frozen=True)
class RunFolder:
    """A run folder whose units enter a comparison under other names.

    Two folders that ran one localization with other edit settings (``--edit steps=40`` next to
    the default 20 steps) both hold a unit ``flu``; merged, the names collide and the comparison
    was refused, so "the FLU at 40 steps against the FLU at 20" needed a hand-built mapping of
    results (which skipped the folders' checks: same facts, same evaluation). Renaming one
    folder's units keeps those checks and makes the two variants two rows.

    Args:
        path: The run directory (``factlens run ... --out DIR``).
        rename: ``{unit: name}``: each listed unit of the folder is compared as ``name``. Units of
            different seeds may share a name (random MLPs at seeds 0 and 5 and random components at
            1 and 2 pooled as ``"random_40"``); a name that meets another unit at one seed is refused
            as any collision is. A renamed unit's edit settings and parameter budget are not warned
            about: renaming says they differ on purpose (a budget sweep: ``rename={"flu": "flu_2x"}``).

    Example:
        >>> RunFolder("results/steps40-flu", rename={"flu": "flu_40"}).name_of("flu")
        'flu_40'
        >>> RunFolder("results/x", rename={"flu": ""})
        Traceback (most recent call last):
        ...
        ValueError: RunFolder(results/x).rename: 'flu' -> '': give each unit a non-empty new name
    """

    path: str | Path
    rename: Mapping[str, str] = None  # type: ignore[assignment]  # None: no unit renamed

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, Path)):
            raise TypeError(f"RunFolder.path must be a run directory path, got {type(self.path).__name__}")
        rename = {} if self.rename is None else self.rename
        if not isinstance(rename, Mapping):
            raise TypeError(f"RunFolder({self.path}).rename must be a mapping unit -> new name, e.g. "
                            f"{{'flu': 'flu_40'}}, got {type(rename).__name__}")
        for old, new in rename.items():
            if not isinstance(old, str) or not isinstance(new, str) or not old.strip() or not new.strip():
                raise ValueError(f"RunFolder({self.path}).rename: {old!r} -> {new!r}: give each unit a non-empty "
                                 "new name")
        object.__setattr__(self, "rename", dict(rename))

    def name_of(self, unit: str) -> str:
        """The name ``unit`` of this folder is compared under."""
        return self.rename.get(unit, unit)

    def __str__(self) -> str:
        return str(self.path)


def with_digests(settings: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]], *,
                 prefix: str = "") -> dict[str, Any]:
    """``settings`` with each input file's path (``eval.text.source``, found in ``inputs`` as
    ``prefix + key``) as an :class:`InputFile` that compares by content; other values as given."""
    out = dict(settings)
    for key, value in settings.items():
        h = inputs.get(prefix + key)
        if isinstance(value, str) and isinstance(h, Mapping) and h.get("path") == value:
            out[key] = InputFile(value, h.get("sha256"))
    return out


def _load_dirs(dirs: Sequence[str | Path | RunFolder]) -> dict[str, dict[Any, Any]]:
    """Units of several run directories, merged; each seed's folders must hold the same facts.

    A method that cannot be crossed with every localization of a run (ROME edits one MLP) runs
    in its own folder; merging the folders makes "method x localization" one comparison, which
    is only sound when every folder edited the same facts: same task, size, seed and data.
    """
    from factlens.runner.report import load_run_dir
    from factlens.runner.run_files import mixed_code_note

    out: dict[str, dict[Any, Any]] = {}
    records: list[Mapping[str, Any]] = []  # every unit read, for the check that one code computed them
    seen: dict[tuple[str, Any], str] = {}  # (unit, seed) -> folder
    facts: dict[Any, tuple[str, Any, frozenset[str]]] = {}  # seed -> (folder, task summary, fact ids)
    budgets: dict[Any, tuple[str, Any]] = {}  # seed -> (folder, parameter budget of its budgeted units)
    edits: dict[Any, tuple[str, dict[str, Any]]] = {}  # edit method -> (folder, its settings but the seed)
    across: dict[str, tuple[str, dict[str, Any]]] = {}  # the first unit's settings, but the evaluation seed
    for folder in (x if isinstance(x, RunFolder) else RunFolder(x) for x in dirs):
        d = folder.path
        loaded = load_run_dir(d)
        inputs = loaded["inputs"]  # the same file under two spellings is one setting (InputFile)
        _check_renamed(folder, loaded["runs"])
        for r in loaded["runs"]:
            records.append(r)
            unit, seed = folder.name_of(r["localization"]), r["seed"]
            if r["localization"] not in folder.rename:  # renamed: its settings and budget differ on purpose
                _warn_edit_settings(edits, str(d), r, inputs)
                _warn_budget(budgets, str(d), r)
            if (unit, seed) in seen:
                raise ValueError(f"unit {unit!r} (seed {seed}) is in both {seen[unit, seed]} and {d}: pass each "
                                 "unit once (compare the folders separately, leave one out, or name one folder's "
                                 f"units apart: RunFolder({str(d)!r}, rename={{{r['localization']!r}: 'other_name'}}), "
                                 f"CLI: --rename {d} {r['localization']}=other_name)")
            seen[unit, seed] = str(d)
            here = (f"{d} ({unit})", r.get("task"), _fact_ids(r["eval"]), with_digests(_setup(r), inputs))
            first = facts.setdefault(seed, here)
            if first[1] != here[1] or (first[2] and here[2] and first[2] != here[2]):
                # the units named too: two units of one folder with other facts named the folder twice
                only = sorted((first[2] ^ here[2]) if first[2] and here[2] else ())
                raise ValueError(f"{first[0]} and {here[0]} hold different facts for seed {seed} (task {first[1]} "
                                 f"vs {here[1]}{'; facts in one only: ' + str(only[:4]) if only else ''}): paired "
                                 "comparisons need the same task, forget size, seed and data")
            _check_same_setup(first[0], first[3], str(d), here[3], seed, fix="rerun one folder with the other's "
                              "--model and eval options")
            # every seed too (each evaluates with its own seed): folders of other seeds and other settings were
            # pooled into one mean and one test
            _check_across_seeds(across, f"{d} ({unit}, seed {seed})", here[3])
            # load_run_dir reads it typed; the folder's input digests go with it, so that results of two folders
            # paired in a mapping compare their input files by content too (_check_mapping_setups)
            ev = r["eval"]
            out.setdefault(unit, {})[seed] = replace(ev, meta={**ev.meta, "inputs": dict(inputs)}) if inputs else ev
    if (code := mixed_code_note(records)) is not None:
        warnings.warn(code, UserWarning, stacklevel=3)
    if not out:
        from factlens.runner.run_dir import RunDir

        notes = "".join(RunDir(Path(d)).set_aside_note() for d in dirs)
        raise ValueError(f"{', '.join(map(str, dirs))} hold(s) no finished runs yet{notes}: nothing to compare")
    return out


def _check_renamed(folder: RunFolder, runs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a rename of a unit the folder does not hold (a typo renamed nothing and the two
    folders' units then collided, or were compared under the old name)."""
    held = {r["localization"] for r in runs}
    if held and (missing := sorted(set(folder.rename) - held)):
        raise ValueError(f"{folder.path} holds no finished unit {', '.join(map(repr, missing))} to rename; its units "
                         f"are {sorted(held)}")


def _warn_budget(budgets: dict[Any, tuple[str, Any]], folder: str, r: Mapping[str, Any]) -> None:
    """Warn when two folders localized one seed at other parameter budgets: their budgeted units are
    compared, but not at an equal budget (a ROME folder's one MLP is a legitimate pairing, hence a
    warning; a unit renamed with :class:`RunFolder` is a setting compared on purpose, e.g. a budget
    sweep, and is not warned about)."""
    if not (r.get("budgeted") and r.get("param_budget") is not None):
        return
    seed = r["seed"]
    first = budgets.setdefault(seed, (folder, r["param_budget"]))
    if first[1] != r["param_budget"]:
        warnings.warn(f"{first[0]} and {folder} localized seed {seed} at different parameter budgets "
                      f"({first[1]:,} vs {r['param_budget']:,}): their budgeted localizations are "
                      "not compared at an equal budget", UserWarning, stacklevel=4)
        budgets[seed] = (folder, r["param_budget"])  # warn once per change


def _warn_edit_settings(edits: dict[Any, tuple[str, dict[str, Any]]], folder: str, r: Mapping[str, Any],
                        inputs: Mapping[str, Mapping[str, Any]]) -> None:
    """Warn when two folders trained one edit method with other settings (``--edit lr=...``): their
    units were merged without a word, so a difference between them could be one of settings rather
    than of localization (within one folder such files are refused; budgets are warned the same way)."""
    from factlens.runner.run_files import differing, edit_settings

    if (settings := edit_settings(r)) is None:
        return
    method, cfg = settings
    cfg = with_digests(cfg, inputs, prefix="edit.")  # sft_source: compared by content
    first = edits.setdefault(method, (folder, cfg))
    differ = differing(first[1], cfg)
    if differ and first[0] != folder:
        warnings.warn(f"{first[0]} and {folder} trained {method!r} with different settings ("
                      + ", ".join(f"{k}: {first[1][k]!r} vs {cfg[k]!r}" for k in differ)
                      + "): a difference between their units may be one of settings, not of localization",
                      UserWarning, stacklevel=4)
        edits[method] = (folder, cfg)  # warn once per change


def _check_across_seeds(first: dict[str, tuple[str, dict[str, Any]]], name: str, setup: Mapping[str, Any]) -> None:
    """Refuse units of different seeds measured with other settings (the seed of the evaluation
    aside, which is the run's seed), as one folder's run files are (``check_one_setup``)."""
    from factlens.runner.run_files import differing

    mine = {k: v for k, v in setup.items() if k != "eval.seed"}
    ref_name, ref = first.setdefault("setup", (name, mine))
    differ = differing(ref, mine)
    if differ:
        raise ValueError(f"{ref_name} and {name} were measured differently ("
                         + ", ".join(f"{k}: {ref[k]!r} vs {mine[k]!r}" for k in differ)
                         + "): a mean over seeds and its paired test need one model and evaluation setup for every "
                         "seed; rerun one folder with the other's --model and eval options")


def _check_same_setup(a: str, setup_a: Mapping[str, Any], b: str, setup_b: Mapping[str, Any], seed: Any, *,
                      fix: str) -> None:
    """Refuse to pair two evaluations of one seed whose settings (:func:`_setup`) differ."""
    from factlens.runner.run_files import differing

    differ = differing(setup_a, setup_b)
    if differ:
        raise ValueError(f"{a} and {b} measured seed {seed} differently ("
                         + ", ".join(f"{k}: {setup_a[k]!r} vs {setup_b[k]!r}" for k in differ)
                         + f"): paired comparisons need the same model and evaluation settings; {fix}")


def _setup(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What a run was measured with, flattened: the model and every evaluation setting but batch sizes.

    Side-effect units are text chunks and MMLU questions keyed by position, and every suite's
    numbers depend on its settings (steps, learning rates, held-out split), so two folders'
    units pair only when these agree. The forward-pass sizes (``batch_size``, ``text.batch_size``)
    change no result and are left out; the attacks' training batches are compared (every field
    called ``batch_size`` was left out before, the relearning attack's facts per step too). So
    are the tables of suites the evaluation did not run left out (their settings decide none of
    its numbers: a folder without side effects need not name the other folder's MMLU source), and
    the general text's settings that no suite it ran reads (``Suite.reads_text``: the linear lens
    reads the source alone).
    Settings added since a folder was written take the value it ran with
    (:func:`factlens.runner.stored.upgrade_stored`'s table); ``other_suites`` tables hold every field.
    """
    from factlens.evaluation import SUITES, text_fields
    from factlens.runner.stored import reads_multiple_choice, with_added_eval_fields, with_suite_defaults

    out: dict[str, Any] = {"model": rec.get("model")}
    ran = set(getattr(rec["eval"], "suites", None) or ())
    config = with_added_eval_fields(rec["eval"].meta.get("config") or {})
    config = {k: v for k, v in config.items() if k not in SUITES or k in ran}
    read = text_fields(sorted(ran))  # per field: the linear lens reads only the source
    if isinstance(config.get("text"), Mapping):
        config["text"] = {k: v for k, v in config["text"].items() if k in read}
    if not config.get("text"):  # the general text decides none of its numbers: its settings neither
        config.pop("text", None)
    config = with_suite_defaults(config, sorted(ran))  # every field of the suites run, defaults included
    if isinstance(config.get("other_suites"), Mapping):
        config["other_suites"] = {k: v for k, v in config["other_suites"].items() if k in ran}
    if not reads_multiple_choice(config, sorted(ran)):  # (a resume without multiple choice does not ask for it)
        config.pop("mcq_shots", None)

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
        elif prefix not in ("eval.batch_size", "eval.text.batch_size"):
            out[prefix] = v

    walk("eval", config)
    return out


def load_evaluations(runs: str | Path | Sequence[str | Path] | Mapping[str, Any]) -> dict[str, dict[Any, Any]]:
    """``{localization: {seed: EvalResult}}`` from run directories or a mapping.

    Args:
        runs: A ``factlens run`` output directory (its ``runs/seed<S>/<localization>.json``);
            a list of such directories that hold the same facts (their units are merged,
            e.g. ROME's one-MLP folder next to the fine-tuning folder), each a path or a
            :class:`RunFolder` whose units enter under other names (one localization run with
            other edit settings in another folder); or
            ``{localization: [EvalResult, ...]}`` with one result per seed (results of
            different localizations are paired by their position in the lists),
            ``{localization: {seed: EvalResult}}`` (paired by seed), or
            ``{localization: EvalResult}`` for a single seed.

    Results read from run directories carry the folder's input files and their sha256 in
    ``meta["inputs"]``: an input file is one setting when its content is, however its path was
    spelled (:class:`InputFile`).

    Raises:
        ValueError: A unit appears in two directories (at one seed, after renaming), a
            :class:`RunFolder` renames a unit it does not hold, or the directories hold different facts or
            were measured with a different model or evaluation settings; results of one seed in a
            mapping were evaluated with different settings (their recorded ``meta["config"]``).
            (Mappings whose results hold different facts are refused by :func:`compare`, metric
            by metric.)
    """
    from factlens.evaluation.result import EvalResult

    if isinstance(runs, (str, Path, RunFolder)):
        return _load_dirs([runs])
    if isinstance(runs, (list, tuple)) and runs and all(isinstance(x, (str, Path, RunFolder)) for x in runs):
        return _load_dirs(list(runs))
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must be a run directory path, a list of them, or a mapping localization -> "
                        f"[EvalResult], got {type(runs).__name__}")
    out = {}
    for loc, rs in runs.items():
        by_seed = dict(rs) if isinstance(rs, Mapping) else dict(enumerate([rs] if isinstance(rs, EvalResult) else rs))
        bad = [type(r).__name__ for r in by_seed.values() if not isinstance(r, EvalResult)]
        if bad or not by_seed:
            raise TypeError(f"runs[{loc!r}] must be a non-empty list of EvalResult (one per seed), got {bad or 'none'}")
        out[str(loc)] = by_seed
    if not out:
        raise ValueError("runs is empty: nothing to compare")
    _check_mapping_setups(out)
    return out


def _check_mapping_setups(evals: Mapping[str, Mapping[Any, Any]]) -> None:
    """In-memory results of one seed must come from the same evaluation settings, as run folders must.

    Side-effect units are text chunks and MMLU questions keyed by position: two evaluations with
    other text or MMLU settings (``n_chunks``, ``seq_len``, ``source``, ``n_mmlu``) have units of
    the same names that are different chunks and questions, and the pairs would be meaningless.
    Results without a recorded config (built by hand) are not checked. Input files are compared
    by content where the results carry their digests (``meta["inputs"]``, which
    :func:`~factlens.evaluation.evaluate` records since 2026-12-08 and :func:`load_evaluations`
    sets from the folder's record for the results it reads from run folders).
    """
    first: dict[Any, tuple[str, dict[str, Any]]] = {}
    across: dict[str, tuple[str, dict[str, Any]]] = {}
    for loc, by_seed in evals.items():
        for seed, ev in by_seed.items():
            if not (ev.meta or {}).get("config"):
                continue
            setup = with_digests(_setup({"eval": ev}), ev.meta.get("inputs") or {})
            setup.pop("model")
            name, ref = first.setdefault(seed, (f"runs[{loc!r}]", setup))
            _check_same_setup(name, ref, f"runs[{loc!r}]", setup, seed,
                              fix="evaluate every localization with one EvalConfig per seed")
            _check_across_seeds(across, f"runs[{loc!r}][{seed!r}]", setup)
