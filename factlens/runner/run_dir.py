"""The run directory: its files, the manifest of what factlens wrote, and the resume check.

A run directory holds::

    run_config.json          the config (and the exact edit/eval settings, the sha256 of every
                             input file) of its results
    manifest.json            every file factlens wrote here (``--overwrite`` deletes only those)
    config.toml|yaml         the user's config file, when one was given
    plan/seed<S>.json        the parameter budget (FLU mask) and mechanisms of seed S
    runs/seed<S>/<loc>.json  one finished localization (written atomically on completion)
    report.html              the self-contained report
    .factlens-run.lock       while a run works here (factlens.runner.run_lock)
    .factlens-overwritten/   the results --overwrite set aside, until the new run has one

Files of the user in the same folder are never deleted: ``--overwrite`` deletes the files
listed in ``manifest.json`` (a folder written before manifests existed: ``run_config.json``,
``plan/seed*.json``, ``runs/seed*/*.json``, ``report.html`` and the copied ``config.*``), and
refuses a non-empty folder that is not a factlens run folder. :func:`~factlens.runner.executor.run_experiment`
plans the jobs over it.
The JSON files are read and written by :mod:`factlens.runner.run_json`, and what the resume check
compares is in :mod:`factlens.runner.resume_diff` (both split from here to keep this module small).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from factlens.files import write_atomic
from factlens.runner.config import RunConfig, merged_objectives
from factlens.runner.method_settings import method_settings_diff, without_method_tables
from factlens.runner.provenance import now as _now
from factlens.runner.provenance import plugin_version_diff, versions
from factlens.runner.resume_diff import _diff, _experiment, _input_diff, _ran_only, _respelled_inputs
from factlens.runner.run_json import read_json, read_json_table, write_json_atomic
from factlens.runner.stored import added_eval_flags, upgrade_stored

__all__ = ["RunDir", "RunDirError", "ConfigMismatchError", "read_json", "write_json_atomic", "MANIFEST"]




class RunDirError(ValueError):
    """The run directory cannot be used as asked (the message says why and what to do)."""


class ConfigMismatchError(RunDirError):
    """The run directory holds results of a different configuration."""


MANIFEST = "manifest.json"
SET_ASIDE = ".factlens-overwritten"  # --overwrite's old results until the new run has one (RunDir.set_aside)
LOCK = ".factlens-run.lock"  # the process running in the folder (factlens.runner.run_lock)
_OURS_HIDDEN = (SET_ASIDE, LOCK)
_COMPLETE = ".complete"  # in SET_ASIDE once every file is there


@dataclass
class RunDir:
    """The files of one run directory (see the module docstring)."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / "run_config.json"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def plan_path(self, seed: int) -> Path:
        return self.path / "plan" / f"seed{seed}.json"

    def run_path(self, seed: int, localization: str) -> Path:
        return self.path / "runs" / f"seed{seed}" / f"{localization}.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def stored(self) -> dict[str, Any] | None:
        if not self.config_path.exists():
            return None
        try:
            return read_json_table(self.config_path, tables=("config",))
        except ValueError as e:
            raise RunDirError(f"{e}; or pass --overwrite to discard the folder's results") from e

    def completed(self, seed: int, localization: str) -> bool:
        """Whether the unit's run file is a finished factlens run (valid JSON that is not an object,
        ``null`` or ``[]``, is no run file: it crashed with an AttributeError)."""
        return _is_run_record(self.run_path(seed, localization))

    def check_unit_paths(self, units: Sequence[tuple[int, str]]) -> None:
        """Refuse a unit's path that holds a file factlens did not write (not in the manifest and no
        factlens run record): the run of that unit would replace it and list it as its own, so that
        a later ``--overwrite`` deleted it too (the user's files are never deleted).

        Raises:
            RunDirError: Naming the files and what to do.
        """
        owned = set(self.owned())
        taken = [(s, u, p) for s, u in units for p in (self.run_path(s, u),)
                 if p.exists() and p.relative_to(self.path).as_posix() not in owned and not _is_run_record(p)]
        if taken:
            names = ", ".join(str(p) for _, _, p in taken[:5]) + (", ..." if len(taken) > 5 else "")
            keys = ", ".join(f"seed{s}/{u}" for s, u, _ in taken)
            raise RunDirError(f"{names}: factlens did not write these files, and the run of unit(s) {keys} would "
                              "replace them. Move them out of runs/ and rerun, or leave those units out "
                              "(--localizations, --seeds), or choose another --out")

    def load_plan(self, seed: int) -> dict[str, Any] | None:
        p = self.plan_path(seed)
        return read_json_table(p) if p.exists() else None

    def run_files(self) -> list[Path]:
        return sorted((self.path / "runs").glob("seed*/*.json"))

    def own_results(self) -> list[Path]:
        """The finished run records factlens wrote here (listed in the manifest): whether a run has a
        result of its own. A user's JSON under ``runs/``, which ``--overwrite`` leaves in place, is
        none: counted as one, it had the set-aside results of a run that failed deleted."""
        owned = set(self.owned())
        return [p for p in self.run_files() if p.relative_to(self.path).as_posix() in owned and _is_run_record(p)]

    # -- the manifest of factlens's own files ----------------------------------------------
    def owned(self) -> list[str]:
        """Paths (relative, POSIX) of the files factlens wrote here; ``[]`` without a manifest."""
        if not self.manifest_path.exists():
            return []
        m = read_json(self.manifest_path)
        if not isinstance(m, dict) or m.get("kind") != "factlens.manifest":
            raise RunDirError(f"{self.manifest_path} is not a factlens manifest; choose another --out")
        return list(m.get("files", []))

    def own(self, *paths: Path) -> None:
        """Add ``paths`` to the manifest (call before writing them: a crash never leaves an unlisted file)."""
        have = self.owned()
        new = [p.relative_to(self.path).as_posix() for p in paths]
        files = sorted(set(have) | set(new) | {MANIFEST})
        if files != sorted(have):
            write_json_atomic(self.manifest_path, {"kind": "factlens.manifest", "format": 1, "files": files})

    def write_json(self, path: Path, obj: Any) -> None:
        """Write one of this directory's JSON files atomically and list it in the manifest."""
        self.own(path)
        write_json_atomic(path, obj)

    def _legacy_files(self) -> list[str]:
        """The files a factlens run folder held before manifests existed (their known names)."""
        found = [self.config_path, self.report_path, *(self.path / "plan").glob("seed*.json"), *self.run_files(),
                 *(self.path / f"config{sfx}" for sfx in (".toml", ".yaml", ".yml", ".json"))]
        return [p.relative_to(self.path).as_posix() for p in found if p.is_file()]

    def clear(self, *, move_to: Path | None = None) -> None:
        """Delete the results this directory holds: only the files factlens wrote.

        ``move_to``: move them into that folder (same relative paths) instead of deleting them.

        Raises:
            RunDirError: The folder holds files but is not a factlens run folder (no
                ``manifest.json`` and no ``run_config.json``).
        """
        if not self.path.exists():
            return
        self._check_is_folder()
        files = self.owned()
        if not files:
            if not self.config_path.exists():
                other = sorted(p.relative_to(self.path).as_posix() for p in self.path.iterdir()
                               if p.name not in _OURS_HIDDEN)
                if other:
                    raise RunDirError(
                        f"{self.path} is not a factlens run folder (no run_config.json or {MANIFEST}) and holds other "
                        f"files ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); --overwrite only deletes "
                        "files factlens wrote. Choose a new or empty --out")
                return
            files = self._legacy_files()
        dirs: set[Path] = set()
        for rel in files:
            if rel == MANIFEST:
                continue
            p = self.path / rel
            if move_to is not None and p.is_file():
                (move_to / rel).parent.mkdir(parents=True, exist_ok=True)
                _move(p, move_to / rel)
            p.unlink(missing_ok=True)
            dirs.update(q for q in p.parents if self.path in q.parents)
        for d in [self.path, self.path / "plan", *(self.path / "runs").glob("seed*")]:  # interrupted atomic writes
            for tmp in d.glob(".*.json.*.tmp") if d.is_dir() else ():
                tmp.unlink(missing_ok=True)
        for tmp in self.path.glob(".factlens-mapped.*.tmp"):  # an edit record offloaded by a killed worker
            tmp.unlink(missing_ok=True)
        for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):  # folders left empty
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if move_to is not None and self.manifest_path.is_file():
            move_to.mkdir(parents=True, exist_ok=True)
            _move(self.manifest_path, move_to / MANIFEST)
        self.manifest_path.unlink(missing_ok=True)

    # -- --overwrite: the old results stay until the new run has one --------------------------
    @property
    def set_aside_path(self) -> Path:
        return self.path / SET_ASIDE

    def set_aside(self) -> None:
        """``--overwrite``: move factlens's files into :data:`SET_ASIDE` (the user's files stay).

        They come back with :meth:`restore_set_aside` when the new run fails or is interrupted
        before its first result, and go with :meth:`drop_set_aside` once it has one: deleting them
        at once lost a finished run to a command with a setting that failed (``--forget-size 500
        --overwrite`` left an empty folder). A move that fails part way (another disk, Ctrl-C)
        moves back what it moved; a marker file says that every file was moved, so that a run
        killed during the move is settled by putting the files back, never by deleting them.
        """
        self._check_is_folder()
        self.settle_earlier()  # what a killed --overwrite run left there
        if not self.path.exists():
            return
        try:
            self.clear(move_to=self.set_aside_path)
        except BaseException as e:
            self._move_back()
            if isinstance(e, OSError):
                raise RunDirError(f"could not set the results of {self.path} aside for --overwrite ({e}); they are "
                                  "where they were. Delete them by hand, or choose another --out") from e
            raise
        if self.set_aside_path.is_dir():
            (self.set_aside_path / _COMPLETE).touch()

    def restore_set_aside(self) -> bool:
        """Delete the new run's files and put the set-aside results back; returns whether any were.

        Raises:
            RunDirError: A file of the user's is where a set-aside file goes back (nothing is
                moved then; the message says what to do).
        """
        aside = self.set_aside_path
        if not aside.is_dir():
            return False
        if (aside / _COMPLETE).exists() and (self.owned() or self.config_path.exists()):  # the new run's files
            self.clear()
        self._move_back()
        return True

    def _move_back(self) -> None:
        aside = self.set_aside_path
        if not aside.is_dir():
            return
        files = sorted(q for q in aside.rglob("*") if q.is_file() and q != aside / _COMPLETE)
        taken = [self.path / p.relative_to(aside) for p in files if (self.path / p.relative_to(aside)).exists()]
        if taken:
            raise RunDirError(f"{', '.join(map(str, taken[:3]))} exist(s) where the earlier results set aside in "
                              f"{aside} go back; move them away and rerun, or move {aside}'s files back by hand")
        for p in files:
            dst = self.path / p.relative_to(aside)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _move(p, dst)
        shutil.rmtree(aside)

    def set_aside_note(self) -> str:
        """For a folder that shows no results: where a killed ``--overwrite`` run left them (``""`` if not)."""
        if not self.set_aside_path.is_dir():
            return ""
        return (f" (the results of an earlier run are set aside in {self.set_aside_path} by an --overwrite run that "
                "is still going or stopped; after it, `factlens run` on this folder puts them back unless that run "
                "finished a result)")

    def drop_set_aside(self) -> None:
        """Delete the results :meth:`set_aside` moved away (the new run has results of its own)."""
        if self.set_aside_path.is_dir():
            shutil.rmtree(self.set_aside_path)

    def settle_set_aside(self) -> bool:
        """The end of an ``--overwrite`` run: the results it set aside go if it finished a result,
        and come back if not (returns whether they did).

        Also what the next :meth:`open` does for a run killed outright, which left them set aside.
        """
        if not self.set_aside_path.is_dir():
            return False
        if self.own_results() and (self.set_aside_path / _COMPLETE).exists():
            self.drop_set_aside()
            return False
        return self.restore_set_aside()  # (also a move killed part way: its run files are the old ones)

    def settle_earlier(self) -> None:
        """:meth:`settle_set_aside` of what a run killed outright left, with a warning when the results come back."""
        if self.settle_set_aside():
            warnings.warn(f"{self.path}: an earlier --overwrite run stopped before its first result; the results it "
                          "had set aside are back in place", UserWarning, stacklevel=4)

    def discard_if_empty(self, *, remove_folder: bool, keep: Path | None = None, plans_too: bool = False) -> bool:
        """Delete what :meth:`open` wrote if no plan or run record of its own followed (a run that failed or
        was interrupted before its first result); returns whether it did.

        Without it the folder would keep the failed run's settings and refuse the corrected
        command as "a different configuration" until ``--overwrite``. ``remove_folder``: the
        folder did not exist before, so it goes too once empty (the user's files always stay).
        ``keep``: the ``--config`` file the run was started with; when it is the folder's own
        copy (which factlens wrote, so :meth:`clear` deletes it) it stays, as the user's file:
        ``--overwrite`` with an edited ``config.toml`` that failed at once lost the edits.
        ``plans_too``: plan files (the seed's FLU and budget) do not keep the folder either (a run
        that failed with a bad setting after its plan: the corrected command was refused as "a
        different configuration" though no result existed); an interrupted run keeps them, so
        that rerunning the same command reuses them.
        """
        if self.own_results() or (not plans_too and any((self.path / "plan").glob("seed*.json"))):
            return False
        kept = None
        if keep is not None and keep.is_file() and keep.resolve().parent == self.path.resolve():
            kept = (keep, keep.read_bytes())
        self.clear()
        if kept is not None:
            kept[0].write_bytes(kept[1])  # not in a manifest any more: the user's file
            return True
        if remove_folder and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
        return True

    def _check_is_folder(self) -> None:
        for p in [self.path, *self.path.parents]:
            if p.exists() and not p.is_dir():
                raise RunDirError(f"--out {self.path}: {p} is a file, not a folder; give a folder for the run's results")
            if p.exists():
                return

    def open(self, config: RunConfig, *, overwrite: bool = False, config_file: str | Path | None = None,
             config_overrides: Sequence[str] = ()) -> RunConfig:
        """Create or resume the run directory for ``config``; returns the merged config.

        ``config_overrides``: settings of ``config_file`` that ``config`` changes; the folder's
        copy of the file is headed by them (in a comment; a JSON file has none, only the run's
        message names them).
        ``overwrite``: the folder's results are set aside (:meth:`set_aside`); the caller keeps
        them back with :meth:`restore_set_aside` or lets them go with :meth:`drop_set_aside`.

        Raises:
            ConfigMismatchError: Results of another configuration (or of other input file
                contents) are there (and not ``overwrite``).
            RunDirError: The path is a file, or it holds files of someone else.
        """
        self._check_is_folder()
        # --config may be the run folder's own copy (edited by the user), which clear() deletes: keep its text
        config_text = Path(config_file).read_bytes() if config_file is not None else None
        if config_text is not None and Path(config_file).suffix != ".json":
            config_text = _with_overrides_header(config_text, config_overrides)
        if overwrite:
            self.set_aside()
            try:
                return self._open(config, overwrite=True, config_file=config_file, config_text=config_text)
            except BaseException:
                self.restore_set_aside()
                raise
        self.settle_earlier()
        return self._open(config, overwrite=False, config_file=config_file, config_text=config_text)

    def forget_a_run_without_results(self, config_file: str | Path | None) -> None:
        """Drop the settings of an earlier run that was killed before its plan or first result (a
        kill -9 skips the clean-up of a failed run): nothing in the folder was computed with them,
        yet they refused the corrected command as "results of a different configuration"."""
        if not (self.config_path.is_file() and self.manifest_path.is_file()) or self.run_files() \
                or any((self.path / "plan").glob("seed*.json")):
            return
        if self.discard_if_empty(remove_folder=False, keep=Path(config_file) if config_file is not None else None):
            warnings.warn(f"{self.path} held only the settings of a run that ended before its first result; this "
                          "run's settings replace them", UserWarning, stacklevel=2)

    def _open(self, config: RunConfig, *, overwrite: bool, config_file: str | Path | None,
              config_text: bytes | None) -> RunConfig:
        stored = self.stored()
        if stored is None and self.path.exists() and not overwrite:  # (after clear(): the user's files remain)
            self._check_not_foreign(config_file)
        merged = config
        resolved = config.resolved()
        inputs = config.input_hashes()
        if stored is not None:
            if not self.manifest_path.exists():  # adopt a folder written before manifests existed
                self.own(*(self.path / f for f in self._legacy_files()))
            try:
                old = RunConfig.from_dict(stored["config"])
            except (ValueError, KeyError, TypeError) as e:  # e.g. options this version refuses
                raise ConfigMismatchError(f"{self.config_path} holds settings that are no longer accepted ({e}); pass "
                                          "--overwrite to discard the old results, or choose another --out") from e
            # the edit / eval overrides as given are compared through the resolved settings below: an option
            # spelled out at the value the folder ran with (relearning.steps=5 where the preset says 5) was refused
            diff = _diff(_experiment(old, stored["config"]), _experiment(config))
            upgraded = upgrade_stored(stored, self.run_files())  # settings older versions wrote otherwise, or not
            old_res = upgraded.get("resolved", {})
            try:
                merged = config.replace(suites=old.suites if sorted(old.suites) == sorted(config.suites)
                                        else config.suites,  # the same suites keep the stored order
                                        localizations=tuple(dict.fromkeys(old.localizations + config.localizations)),
                                        seeds=tuple(dict.fromkeys(old.seeds + config.seeds)),
                                        methods=tuple(dict.fromkeys(old.methods + config.methods)),
                                        objectives=merged_objectives(old, config))
            except ValueError as e:  # e.g. the folder's rome units and this run's npo: no cross product holds both
                raise ConfigMismatchError(
                    f"{self.path} holds units of methods {list(old.methods)} and objectives "
                    f"{list(old.objectives or (old.default_objective,))}; adding this run's methods "
                    f"{list(config.methods)} and objectives {list(config.objectives or (config.default_objective,))} "
                    f"to them is not possible ({e}). Run them in another --out (factlens compare merges folders), "
                    "or pass --overwrite to discard the old results.") from None
            new_res = merged.resolved()  # the record to write: its method settings must match every stored method's
            methods_diff, flags = method_settings_diff((old_res.get("edit") or {}).get("methods"),
                                                       (new_res.get("edit") or {}).get("methods"))
            # merged's first seed is the stored one: a run that adds seeds compares the same seed's settings
            a, b = without_method_tables(old_res), without_method_tables(new_res)
            # a suite the run does not run decides none of its numbers
            ran = [{**x, "eval": _ran_only(x.get("eval", {}), config.suites)} for x in (a, b)]
            diff += [f"resolved {k}: {d}" for k in ("edit", "eval") for d in _diff(ran[0].get(k, {}), ran[1].get(k, {}))
                     if "error" not in a.get(k, {}) and "error" not in b.get(k, {})]
            diff += [f"resolved edit: {d}" for d in methods_diff] + _input_diff(upgraded.get("inputs"), inputs)
            flags += added_eval_flags(ran[0].get("eval") or {}, ran[1].get("eval") or {})
            diff += plugin_version_diff(stored, old)  # a plugin's new version computes the stored units' entries otherwise
            if diff:
                raise ConfigMismatchError(
                    f"{self.path} already holds results of a different configuration:\n  " + "\n  ".join(diff)
                    + "".join(f"\n{h}" for h in _respelled_inputs(upgraded.get("inputs"), inputs))
                    + (f"\nTo resume with the settings the stored units ran with, pass {' '.join(flags)} "
                       "(a setting the stored record lacks holds the value its finished units ran with, or, if none "
                       "finished, that of the versions before the setting existed)." if flags else "")
                    + "\nRerun with the same settings to resume, pass --overwrite to discard the old results, "
                      "or choose another --out.")
            resolved = new_res
        self.path.mkdir(parents=True, exist_ok=True)
        self.own(self.config_path, self.report_path)
        if config_file is not None:
            self._copy_config_file(Path(config_file), config_text)
        now = _now()
        write_json_atomic(self.config_path, {
            "config": merged.to_dict(), "resolved": resolved, "inputs": inputs, "versions": versions(),
            "created": (stored or {}).get("created", now), "updated": now,
        })
        return merged

    def _check_not_foreign(self, config_file: str | Path | None) -> None:
        """Refuse a folder without ``run_config.json`` that holds anything but the ``--config`` file itself."""
        ours = [p for p in (self.path / "runs", self.path / "plan", self.report_path, self.manifest_path) if p.exists()]
        if ours:
            raise ConfigMismatchError(
                f"{self.path} holds {', '.join(p.name for p in ours)} but no run_config.json; it is not a factlens "
                "run folder (or a damaged one). Choose another --out")
        own_config = Path(config_file).resolve() if config_file is not None else None
        other = sorted(p.name for p in self.path.iterdir()
                       if p.resolve() != own_config and p.name not in _OURS_HIDDEN)
        if other:
            raise RunDirError(
                f"{self.path} is not a factlens run folder (no run_config.json) and holds other files "
                f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); the run would write its results "
                "among them. Choose a new or empty --out")

    def config_copy_path(self, config_file: str | Path) -> Path:
        """Where :meth:`open` copies ``--config`` ``config_file`` (``config.toml`` and so on)."""
        return self.path / f"config{Path(config_file).suffix}"

    def put_back(self, path: Path, data: bytes | None) -> None:
        """Give one of this folder's files the bytes it held before (``None``: it was absent, so it
        goes, and leaves the manifest): a resume that failed before its first result restores
        ``run_config.json`` and the folder's copy of ``--config`` this way."""
        if data is not None:
            write_atomic(path, lambda tmp: tmp.write_bytes(data))
            return
        path.unlink(missing_ok=True)
        rel = path.relative_to(self.path).as_posix()
        have = self.owned()
        if rel in have:
            write_json_atomic(self.manifest_path, {"kind": "factlens.manifest", "format": 1,
                                                   "files": [f for f in have if f != rel]})

    def _copy_config_file(self, src: Path, text: bytes) -> None:
        """Write ``--config``'s ``text`` (read before ``--overwrite`` could clear it) into the folder."""
        dst = self.config_copy_path(src)
        if dst.exists() and dst.resolve() == src.resolve():
            return  # the user's own file, already in place: never list it as ours
        if dst.exists() and dst.relative_to(self.path).as_posix() not in self.owned():
            raise RunDirError(f"{dst} exists and factlens did not write it; the run's copy of --config {src} would "
                              "replace it. Move it away or choose another --out")
        self.own(dst)
        dst.write_bytes(text)


def _is_run_record(path: Path) -> bool:
    """Whether ``path`` holds a finished factlens run record (valid JSON that is not an object,
    ``null`` or ``[]``, is none)."""
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(record, dict) and record.get("kind") == "factlens.run"


def _move(src: Path, dst: Path) -> None:
    """Move one file, also to another disk (``runs/`` may be a link to one): a rename where it
    can be, else a copy and a delete (:func:`shutil.move`)."""
    shutil.move(str(src), str(dst))


_HEADER = ("# factlens: the run changed these settings of this file with flags (run_config.json holds the\n"
           "# settings it ran with; rerun this copy with the same flags):\n")


def _with_overrides_header(text: bytes, overrides: Sequence[str]) -> bytes:
    """``text`` of ``--config`` (TOML or YAML) headed by a comment naming the settings flags changed
    (a header an earlier run wrote is replaced, not stacked, and goes when no flag changed any).
    A UTF-8 byte order mark stays first."""
    bom = b"\xef\xbb\xbf" if text.startswith(b"\xef\xbb\xbf") else b""
    text = text[len(bom):]
    if text.startswith(_HEADER.encode()):
        lines = text.splitlines(keepends=True)[2:]
        while lines and lines[0].startswith(b"#   "):
            lines.pop(0)
        text = b"".join(lines)
    if not overrides:
        return bom + text
    return bom + (_HEADER + "".join(f"#   {o}\n" for o in overrides)).encode() + text
