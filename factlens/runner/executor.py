"""Executors run independent jobs; :func:`run_experiment` plans them over a run directory.

A run directory holds::

    run_config.json          the config (and the exact edit/eval settings, the sha256 of every
                             input file) of its results
    manifest.json            every file factlens wrote here (``--overwrite`` deletes only those)
    config.toml|yaml         the user's config file, when one was given
    plan/seed<S>.json        the parameter budget (FLU mask) and mechanisms of seed S
    runs/seed<S>/<loc>.json  one finished localization (written atomically on completion)
    report.html              the self-contained report

Files of the user in the same folder are never deleted: ``--overwrite`` deletes the files
listed in ``manifest.json`` (a folder written before manifests existed: ``run_config.json``,
``plan/seed*.json``, ``runs/seed*/*.json``, ``report.html`` and the copied ``config.*``), and
refuses a non-empty folder that is not a factlens run folder.

Jobs are independent: :class:`LocalExecutor` runs them one after another in this process
(sharing the loaded model); :class:`RayExecutor` sends them to a Ray cluster (one job per
worker, ``gpus_per_job`` GPUs each; every job loads its own model, which is cheap next to
an edit and its evaluation), and the driver writes each result as it arrives, so
interrupted runs resume on any executor.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from factlens.evaluation.result import json_default
from factlens.files import write_atomic
from factlens.progress_bars import progress, progress_bar, progress_enabled
from factlens.runner.config import RunConfig, merged_objectives
from factlens.runner.method_settings import _norm, method_settings_diff, without_method_tables
from factlens.runner.pipeline import Job, PlanJob, Workspace, plan_job, run_job, unbudgeted, versions
from factlens.runner.plan_handoff import PlanHandoff, start_order
from factlens.runner.stored import added_eval_flags, upgrade_stored, without_added_eval_fields

__all__ = [
    "Executor", "LocalExecutor", "RayExecutor", "make_executor", "RunDir", "RunSummary", "run_experiment",
    "ConfigMismatchError", "RunDirError", "write_json_atomic", "read_json",
]


class Executor(ABC):
    """Runs independent jobs and hands each result to ``on_result`` as soon as it is done.

    A job function is called as ``fn(item, workspace)``: the :class:`~factlens.runner.workspace.Workspace`
    (loaded model and data) of the process it runs in.
    """

    name: str = "executor"

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_result: Callable[[Any, Any], None],
            desc: str = "jobs") -> None:
        """Run ``fn(item, workspace)`` for every item; call ``on_result(item, result)`` in this process.

        The bar over the jobs follows :func:`factlens.progress`; the jobs' own bars are up to
        each job (context variables do not reach other processes: ``Job.show_progress``).
        """

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class LocalExecutor(Executor):
    """Run jobs on this machine: one after another in this process (its :class:`Workspace`, the
    loaded model, shared between jobs), or on ``workers`` processes.

    Args:
        workspace: The workspace to use (default: a new one, kept for the executor's lifetime).
        workers: Worker processes (``1``: this process). With ``N > 1`` each worker loads its own
            model (N times the memory) and runs ``threads`` torch threads; results are the same
            (:mod:`factlens.runner.processes`). On a CPU, two single-thread workers keep both
            cores busy where one two-thread process does not (docs/performance.md).
        threads: Torch threads per worker (default: this process's threads divided by ``workers``).
    """

    name = "local"

    def __init__(self, workspace: Workspace | None = None, *, workers: int = 1, threads: int | None = None) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workspace = workspace if workspace is not None else Workspace()
        self.workers = int(workers)
        self._pool = None
        if self.workers > 1:
            import torch

            from factlens.runner.processes import ProcessPool

            self._pool = ProcessPool(self.workers, threads or max(1, torch.get_num_threads() // self.workers))

    def describe(self) -> dict[str, Any]:
        if self._pool is None:
            return {"name": self.name}
        return {"name": self.name, "workers": self.workers, "threads_per_worker": self._pool.threads}

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.close()

    def map(self, fn, items, *, on_result, desc="jobs", on_error=None) -> None:
        """As :meth:`Executor.map`; ``on_error(item, message)`` is called, here, for each job that
        fails in a worker process, as soon as it fails (the map still raises at the end)."""
        if self._pool is not None:
            self._pool.map(fn, items, on_result=on_result, on_error=on_error, desc=desc)
            return
        with progress_bar(total=len(items), desc=desc, position=0) as bar:
            for item in items:
                bar.set_postfix_str(getattr(item, "key", ""))
                on_result(item, fn(item, self.workspace))
                bar.update()


class RayExecutor(Executor):
    """Run jobs as Ray tasks (``pip install "factlens[ray]"``).

    Args:
        address: Cluster address (``None``: join the running instance, or start a local one;
            ``"auto"``: join the cluster this machine belongs to).
        num_gpus: GPUs reserved per job (use 1 on a GPU cluster with ``device="cuda"``).
        num_cpus: CPUs reserved per job.
        init_kwargs: Extra ``ray.init`` keywords (when this executor starts Ray).

    Every node needs factlens installed (or a ``runtime_env`` in ``init_kwargs``). Results
    come back to the driver, which writes them, so the nodes need no shared filesystem.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_gpus: float = 0.0, num_cpus: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.num_gpus = float(num_gpus)
        self.num_cpus = float(num_cpus)
        self.init_kwargs = dict(init_kwargs or {})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "num_gpus": self.num_gpus, "num_cpus": self.num_cpus}

    def map(self, fn, items, *, on_result, desc="jobs") -> None:
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
            started = True
        try:
            opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
            env = _source_runtime_env()
            if env:
                opts["runtime_env"] = env
            remote = ray.remote(_in_fresh_workspace).options(**opts)
            pending = {remote.remote(fn, item): item for item in items}
            errors: list[tuple[Any, BaseException]] = []
            try:
                with progress_bar(total=len(items), desc=f"{desc} (ray)") as bar:
                    while pending:
                        done, _ = ray.wait(list(pending), num_returns=1)
                        for ref in done:
                            item = pending.pop(ref)
                            try:
                                result = ray.get(ref)
                            except Exception as e:  # noqa: BLE001 - collect, keep the other results
                                errors.append((item, e))
                                continue
                            on_result(item, result)
                            bar.update()
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
            if errors:
                from factlens.runner.processes import JobError

                keys = [getattr(it, "key", str(it)) for it, _ in errors]
                # the jobs' own exceptions (a RayTaskError wraps one as .cause), so that the CLI tells a bad
                # setting (TaskSizeError, MaskNotSupported) from a defect as with local workers; it printed a traceback
                causes = [getattr(e, "cause", None) or e for _, e in errors]
                raise JobError(f"{len(errors)} Ray job(s) failed: {keys}; first error: {errors[0][1]}",
                               causes) from causes[0]
        finally:
            if started:
                ray.shutdown()


def _in_fresh_workspace(fn: Callable[[Any, Workspace], Any], item: Any) -> Any:
    """A Ray job: ``fn(item, workspace)`` with a workspace of its own (each job loads its model)."""
    return fn(item, Workspace())


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError('the Ray executor needs ray: pip install "factlens[ray]" (or pip install ray)') from e
    return ray


def _source_runtime_env() -> dict[str, Any] | None:
    """Point Ray workers at this source tree when factlens is not an installed distribution."""
    import importlib.metadata as md

    try:
        md.distribution("factlens")
        return None
    except md.PackageNotFoundError:
        import factlens

        root = str(Path(factlens.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        return {"env_vars": {"PYTHONPATH": path}}


def make_executor(config: RunConfig) -> Executor:
    """The executor named by ``config.executor``."""
    if config.executor == "ray":
        return RayExecutor(address=config.ray_address, num_gpus=config.gpus_per_job, num_cpus=config.cpus_per_job)
    return LocalExecutor(workers=config.workers)


# ---------------------------------------------------------------------------------------------
# run directory


class RunDirError(ValueError):
    """The run directory cannot be used as asked (the message says why and what to do)."""


class ConfigMismatchError(RunDirError):
    """The run directory holds results of a different configuration."""


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a truncated or corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it is truncated or was edited by hand. Delete it and rerun "
                         "`factlens run` with the same settings to redo it") from e


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path``, never half-written (:func:`~factlens.files.write_atomic`)."""
    text = json.dumps(obj, indent=1, default=json_default, allow_nan=True)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


MANIFEST = "manifest.json"


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
            return read_json(self.config_path)
        except ValueError as e:
            raise RunDirError(f"{e}; or pass --overwrite to discard the folder's results") from e

    def completed(self, seed: int, localization: str) -> bool:
        p = self.run_path(seed, localization)
        if not p.exists():
            return False
        try:
            return json.loads(p.read_text()).get("kind") == "factlens.run"
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return False

    def load_plan(self, seed: int) -> dict[str, Any] | None:
        p = self.plan_path(seed)
        return read_json(p) if p.exists() else None

    def run_files(self) -> list[Path]:
        return sorted((self.path / "runs").glob("seed*/*.json"))

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

    def clear(self) -> None:
        """Delete the results this directory holds: only the files factlens wrote.

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
                other = sorted(p.relative_to(self.path).as_posix() for p in self.path.iterdir())
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
        self.manifest_path.unlink(missing_ok=True)

    def discard_if_empty(self, *, remove_folder: bool, keep: Path | None = None) -> bool:
        """Delete what :meth:`open` wrote if no plan or run file followed (a run that failed or
        was interrupted before its first result); returns whether it did.

        Without it the folder would keep the failed run's settings and refuse the corrected
        command as "a different configuration" until ``--overwrite``. ``remove_folder``: the
        folder did not exist before, so it goes too once empty (the user's files always stay).
        ``keep``: the ``--config`` file the run was started with; when it is the folder's own
        copy (which factlens wrote, so :meth:`clear` deletes it) it stays, as the user's file:
        ``--overwrite`` with an edited ``config.toml`` that failed at once lost the edits.
        """
        if self.run_files() or any((self.path / "plan").glob("seed*.json")):
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

    def open(self, config: RunConfig, *, overwrite: bool = False, config_file: str | Path | None = None) -> RunConfig:
        """Create or resume the run directory for ``config``; returns the merged config.

        Raises:
            ConfigMismatchError: Results of another configuration (or of other input file
                contents) are there (and not ``overwrite``).
            RunDirError: The path is a file, or it holds files of someone else.
        """
        self._check_is_folder()
        # --config may be the run folder's own copy (edited by the user), which clear() deletes: keep its text
        config_text = Path(config_file).read_bytes() if config_file is not None else None
        if overwrite:
            self.clear()
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
            diff = _diff(*({k: v for k, v in without_added_eval_fields(without_method_tables(c.experiment_dict())).items()
                            if k not in ("edit", "eval")} for c in (old, config)))
            upgraded = upgrade_stored(stored, self.run_files())  # settings older versions wrote otherwise, or not
            old_res = upgraded.get("resolved", {})
            try:
                merged = config.replace(localizations=tuple(dict.fromkeys(old.localizations + config.localizations)),
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
            diff += [f"resolved {k}: {d}" for k in ("edit", "eval") for d in _diff(a.get(k, {}), b.get(k, {}))
                     if "error" not in a.get(k, {}) and "error" not in b.get(k, {})]
            diff += [f"resolved edit: {d}" for d in methods_diff] + _input_diff(upgraded.get("inputs"), inputs)
            flags += added_eval_flags(a.get("eval") or {}, b.get("eval") or {})
            if diff:
                raise ConfigMismatchError(
                    f"{self.path} already holds results of a different configuration:\n  " + "\n  ".join(diff)
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
        other = sorted(p.name for p in self.path.iterdir() if p.resolve() != own_config)
        if other:
            raise RunDirError(
                f"{self.path} is not a factlens run folder (no run_config.json) and holds other files "
                f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); the run would write its results "
                "among them. Choose a new or empty --out")

    def _copy_config_file(self, src: Path, text: bytes) -> None:
        """Write ``--config``'s ``text`` (read before ``--overwrite`` could clear it) into the folder."""
        dst = self.path / f"config{src.suffix}"
        if dst.exists() and dst.resolve() == src.resolve():
            return  # the user's own file, already in place: never list it as ours
        if dst.exists() and dst.relative_to(self.path).as_posix() not in self.owned():
            raise RunDirError(f"{dst} exists and factlens did not write it; the run's copy of --config {src} would "
                              "replace it. Move it away or choose another --out")
        self.own(dst)
        dst.write_bytes(text)


def _input_diff(stored: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Input files whose content changed (``stored`` is ``None`` for folders written before hashes were kept)."""
    if stored is None:
        return []
    out = []
    for k in sorted(set(stored) | set(now)):
        a, b = (stored.get(k) or {}).get("sha256"), (now.get(k) or {}).get("sha256")
        if a != b:
            path = (now.get(k) or stored.get(k) or {}).get("path")
            out.append(f"input {k} ({path}): its content changed since the stored results were made "
                       f"(sha256 {str(a)[:12]} stored, {str(b)[:12]} now)")
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} (stored) != {b.get(k)!r} (now)" for k in keys if _norm(a.get(k)) != _norm(b.get(k))]


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_experiment` did.

    Attributes:
        out: The run directory.
        ran: Keys (``"seed0/flu"``...) of the jobs run now.
        skipped: Keys of the jobs found completed and skipped.
        report: Path of the HTML report (``None`` if not written).
        seconds: Wall time.
    """

    out: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    report: Path | None
    seconds: float
    files: tuple[Path, ...] = field(default=())


def run_experiment(config: RunConfig, *, overwrite: bool = False, executor: Executor | None = None,
                   config_file: str | Path | None = None, report: bool = True) -> RunSummary:
    """Run (or resume) every localization x seed of ``config`` and write the report.

    Args:
        config: The run configuration; ``config.out`` is the run directory.
        overwrite: Discard results of the run directory first.
        executor: Where jobs run (default: :func:`make_executor` of the config).
        config_file: The config file the run came from (copied into the run directory).
        report: Write ``report.html`` at the end.

    Raises:
        ConfigMismatchError: The run directory holds results of another configuration or
            other contents of its input files.
        RunDirError: ``config.out`` is a file, or a folder of someone else (see :meth:`RunDir.clear`).

    Example:
        >>> import tempfile
        >>> cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",),
        ...                 out=tempfile.mkdtemp(), show_progress=False, edit={"steps": 2})
        >>> s = run_experiment(cfg, report=False)
        >>> s.ran
        ('seed0/all_mlps',)
    """
    t_start = time.perf_counter()
    rd = RunDir(Path(config.out))
    existed = rd.path.exists()
    fresh = overwrite or not rd.config_path.exists()
    # a resume that fails before any new unit must leave the folder's settings as they were: a failed
    # --methods rome attempt recorded rome, and every later resume was crossed with it
    previous = None if fresh else (rd.config_path.read_bytes(), set(rd.run_files()))
    rd.open(config, overwrite=overwrite, config_file=config_file)
    own = executor is None
    executor = executor or make_executor(config)
    try:
        with progress(progress_enabled() and config.show_progress):  # --no-progress, or an outer progress(False)
            return _run(config, rd, executor, report, t_start)
    except BaseException:
        if fresh:  # e.g. a forget size the known facts cannot fill: the next run may take other settings
            rd.discard_if_empty(remove_folder=not existed, keep=Path(config_file) if config_file is not None else None)
        elif previous is not None and set(rd.run_files()) == previous[1]:
            write_atomic(rd.config_path, lambda tmp: tmp.write_bytes(previous[0]))
        raise
    finally:
        if own and isinstance(executor, LocalExecutor):
            executor.close()


def _run(config: RunConfig, rd: "RunDir", executor: Executor, report: bool, t_start: float) -> "RunSummary":
    show = progress_enabled()
    # the jobs' bars: in this process only (bars of worker processes would mix); the setting travels in the job
    inner = show and isinstance(executor, LocalExecutor) and executor.workers == 1
    cfg_dict = config.to_dict()

    plans: dict[int, dict[str, Any]] = {}
    todo_plans: list[PlanJob] = []
    for s in config.seeds:
        todo = [config.split_unit(u)[0] for u in config.units() if not rd.completed(s, u)]
        if not todo:
            continue
        need = any(loc not in unbudgeted() or loc == "flu" for loc in todo)  # flu reuses the plan's mask
        need_mech = "mechanisms" in config.suites
        p = rd.load_plan(s)
        if p is not None and (p.get("param_budget") is not None or not need) and (p.get("mechanisms") or not need_mech):
            plans[s] = p
        else:
            done = any(rd.completed(s, u) for u in config.units())  # units scored against the stored mechanisms
            keep = p.get("mechanisms") if p is not None and done else None
            todo_plans.append(PlanJob(cfg_dict, s, inner, need, keep))

    def _plan_done(job: PlanJob, plan: dict[str, Any]) -> None:
        rd.write_json(rd.plan_path(job.seed), plan)
        plans[job.seed] = plan

    # Several local workers: jobs start while their seed's plan is computed and read it where they need
    # it (factlens.runner.plan_handoff); elsewhere (one process, Ray) every plan is done first.
    overlap = bool(todo_plans) and isinstance(executor, LocalExecutor) and executor.workers > 1
    if not overlap:
        executor.map(plan_job, todo_plans, on_result=_plan_done, desc="plan (budget, mechanisms)")

    jobs: list[Job] = []
    skipped: list[str] = []
    handoff = PlanHandoff.temporary() if overlap else None
    for s in config.seeds:
        for unit in start_order(config, config.units()):  # localization x method x objective
            if rd.completed(s, unit):
                skipped.append(f"seed{s}/{unit}")
            elif s in plans:
                jobs.append(Job(cfg_dict, s, unit, plans[s], inner))
            else:
                jobs.append(Job(cfg_dict, s, unit, None, inner, plan_handoff=handoff.folder))
    ran: list[str] = []
    files: list[Path] = []

    def _run_done(job: Job, record: dict[str, Any]) -> None:
        record["executor"] = executor.describe()
        path = rd.run_path(job.seed, job.localization)
        rd.write_json(path, record)
        ran.append(job.key)
        files.append(path)

    if skipped and show:
        tqdm.write(f"resuming {rd.path}: skipping {len(skipped)} completed run(s): {', '.join(skipped)}")
    if handoff is None:
        executor.map(run_job, jobs, on_result=_run_done, desc="localizations")
    else:
        handoff.run(executor, todo_plans, jobs, on_plan=_plan_done, on_job=_run_done)

    report_path = None
    if report:
        from factlens.runner.report import write_report

        report_path = write_report(rd.path)
    return RunSummary(rd.path, tuple(ran), tuple(skipped), report_path, time.perf_counter() - t_start, tuple(files))


def completed_runs(path: str | Path) -> Iterable[dict[str, Any]]:
    """The records of every finished run in a run directory."""
    for p in RunDir(Path(path)).run_files():
        yield read_json(p)
