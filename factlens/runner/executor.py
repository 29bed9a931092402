"""Executors run independent jobs; :func:`run_experiment` plans them over a run directory
(:mod:`factlens.runner.run_dir`: its files, the manifest, the resume check).

Jobs are independent: :class:`LocalExecutor` runs them one after another in this process
(sharing the loaded model); :class:`RayExecutor` sends them to a Ray cluster (one job per
worker, ``gpus_per_job`` GPUs each; every job loads its own model, which is cheap next to
an edit and its evaluation), and the driver writes each result as it arrives, so
interrupted runs resume on any executor.
"""

from __future__ import annotations

import os
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from factlens.progress_bars import progress, progress_bar, progress_enabled
from factlens.runner.config import RunConfig, check_device
from factlens.runner.config_checks import unread_settings
from factlens.runner.run_lock import LOCK, RunLock
from factlens.runner.pipeline import Job, PlanJob, Unsupported, Workspace, plan_job, run_job, unbudgeted
from factlens.runner.plan_handoff import PlanHandoff, start_order
# the run folder lived here: its names stay importable from this module
from factlens.runner.run_dir import (MANIFEST, ConfigMismatchError, RunDir, RunDirError,  # noqa: F401
                                     read_json, write_json_atomic)

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "RunSummary", "run_experiment", "completed_runs"]


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

    def scratch_folder(self) -> str | None:
        """A temporary folder removed with the worker processes, also when this process is killed
        outright (:meth:`ProcessPool.scratch`); ``None`` without worker processes."""
        return self._pool.scratch() if self._pool is not None else None

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
                bar.set_postfix_str(getattr(item, "key", ""), refresh=False)
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
                   config_file: str | Path | None = None, report: bool = True,
                   config_overrides: Sequence[str] = ()) -> RunSummary:
    """Run (or resume) every localization x seed of ``config`` and write the report.

    Args:
        config: The run configuration; ``config.out`` is the run directory.
        overwrite: Discard the run directory's results (they are set aside, and come back
            if this run fails or is interrupted before its first result).
        executor: Where jobs run (default: :func:`make_executor` of the config).
        config_file: The config file the run came from (copied into the run directory).
        report: Write ``report.html`` at the end.
        config_overrides: The settings of ``config_file`` that ``config`` changes (as the CLI's
            :func:`~factlens.runner.cli.flag_overrides` says them): the folder's copy names them.

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
    # the device asked for now (a stored folder's need not exist here), where the jobs will run: an
    # executor passed here (RunConfig.executor "local" with a RayExecutor given was refused for CUDA)
    check_device(config, local=None if executor is None else isinstance(executor, LocalExecutor))
    rd = RunDir(Path(config.out))
    existed = rd.path.exists()
    rd._check_is_folder()
    made_parents = _missing_parents(rd.path)  # which the lock creates: they go with a folder this run removes
    lock = RunLock.acquire(rd.path)  # one run per folder at a time
    try:
        return _locked(config, rd, overwrite=overwrite, executor=executor, config_file=config_file, report=report,
                       config_overrides=config_overrides, t_start=t_start)
    finally:
        removed = False
        try:  # a folder this run made and left empty but for the lock (a failed first attempt): removed while
            # still locked, so that no run starting meanwhile loses its folder
            if not existed and rd.path.is_dir() and {p.name for p in rd.path.iterdir()} <= {LOCK}:
                lock.path.unlink(missing_ok=True)
                removed = True
                rd.path.rmdir()
                for p in made_parents:  # deepest first; one that holds something now stays, and those above it
                    p.rmdir()
        except OSError:
            pass  # something arrived meanwhile: the folder stays
        lock.release(remove_file=not removed)


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first (``--out a/b/c`` in an empty
    folder: ``a/b``, ``a``): a failed first run left them behind, empty, when it removed ``c``."""
    out = []
    for p in path.parents:
        if p.exists():
            break
        out.append(p)
    return out


def _locked(config: RunConfig, rd: RunDir, *, overwrite: bool, executor: Executor | None, config_file: str | Path | None,
            report: bool, config_overrides: Sequence[str], t_start: float) -> RunSummary:
    """:func:`run_experiment` once the folder is locked."""
    rd.settle_earlier()  # before the state a failed resume restores is read (a killed --overwrite run's)
    if not overwrite:
        rd.forget_a_run_without_results(config_file)  # a first run killed before its plan decided nothing
    fresh = overwrite or not rd.config_path.exists()
    # a resume that fails before any new unit must leave the folder's settings as they were: a failed
    # --methods rome attempt recorded rome, and every later resume was crossed with it
    # (and the folder's copy of --config, which the new run's replaces: its bytes, or None where there was none)
    copy = rd.config_copy_path(config_file) if config_file is not None else None
    previous = None if fresh else (rd.config_path.read_bytes(), set(rd.run_files()),
                                   copy.read_bytes() if copy is not None and copy.is_file() else None)
    merged = rd.open(config, overwrite=overwrite, config_file=config_file, config_overrides=config_overrides)
    # (a method or objective the folder stores is compared with the stored settings)
    for msg in unread_settings(config, methods=merged.methods,
                               objectives=merged.objectives or (merged.default_objective,)):
        warnings.warn(msg, UserWarning, stacklevel=3)
    own = executor is None
    try:
        # a file of the user's at a unit's path: the unit's run would replace it (and own it)
        rd.check_unit_paths([(s, u) for s in config.seeds for u in config.units()])
        if not fresh:  # a unit file copied in from another setup was taken as finished and never rerun
            _check_stored_units(rd)
        executor = executor or make_executor(config)
        with progress(progress_enabled() and config.show_progress):  # --no-progress, or an outer progress(False)
            summary = _run(config, rd, executor, report, t_start)
        _settle_overwrite(rd, overwrite)
        return summary
    except BaseException as e:
        if overwrite and rd.set_aside_path.is_dir():
            _settle_overwrite(rd, overwrite)
        elif fresh:  # e.g. a forget size the known facts cannot fill: the next run may take other settings
            # (the folder keeps the lock's file until run_experiment removes a folder it made)
            rd.discard_if_empty(remove_folder=False, keep=Path(config_file) if config_file is not None else None,
                                plans_too=_bad_setting(e))
        elif previous is not None and set(rd.run_files()) == previous[1]:
            rd.put_back(rd.config_path, previous[0])
            if copy is not None:
                rd.put_back(copy, previous[2])
        raise
    finally:
        if own and isinstance(executor, LocalExecutor):  # (None when make_executor failed)
            executor.close()


def _check_stored_units(rd: RunDir) -> None:
    """Refuse a resume whose folder holds run files of another setup (another seed's record at a
    unit's path, another edit or evaluation setting) before any job: the run counted such a file as
    a finished unit and never computed the unit; only the report at the end (not written with
    ``--no-report``) said the folder was mixed, after the missing units had been computed."""
    from factlens.runner.report import load_run_dir

    load_run_dir(rd.path)  # check_one_setup: the checks the report and factlens compare make


def _settle_overwrite(rd: RunDir, overwrite: bool) -> None:
    """After an ``--overwrite`` run: the old results go once it has a result of its own, and come
    back (with a warning) when it ended without one (failed, interrupted, or every unit refused)."""
    if overwrite and rd.settle_set_aside():
        warnings.warn(f"the --overwrite run ended before its first result; {rd.path}'s earlier results are back in "
                      "place", UserWarning, stacklevel=4)


def _bad_setting(e: BaseException) -> bool:
    """Whether ``e`` says a setting must change (then the plan goes with the failed attempt's
    settings, which would refuse the corrected command): a forget size the facts cannot fill, a
    budget that selects nothing, a mask the method cannot edit, also from a worker. Any other
    failure (out of memory, a crashed worker, an interrupt) keeps the plan for the same command.
    A ``ValueError`` counts as a setting: a job raises it for a setting only it can check."""
    from factlens.runner.processes import JobError

    # TaskSizeError, EmptyMask and MaskNotSupported are ValueErrors, and so is what a job raises for a
    # setting only it can check (a --text-source too short for one chunk needs the tokenizer)
    return isinstance(e, ValueError) or (isinstance(e, JobError) and any(isinstance(c, ValueError) for c in e.causes))


def _run(config: RunConfig, rd: "RunDir", executor: Executor, report: bool, t_start: float) -> "RunSummary":
    show = progress_enabled()
    # the jobs' bars: in this process only (bars of worker processes would mix); the setting travels in the job
    inner = show and isinstance(executor, LocalExecutor) and executor.workers == 1
    cfg_dict = config.to_dict()

    plans, todo_plans = _plans(config, rd, cfg_dict, inner)

    def _plan_done(job: PlanJob, plan: dict[str, Any]) -> None:
        rd.write_json(rd.plan_path(job.seed), plan)
        plans[job.seed] = plan

    # Several local workers: jobs start while their seed's plan is computed and read it where they need
    # it (factlens.runner.plan_handoff); elsewhere (one process, Ray) every plan is done first.
    overlap = bool(todo_plans) and isinstance(executor, LocalExecutor) and executor.workers > 1
    if not overlap:
        executor.map(plan_job, todo_plans, on_result=_plan_done, desc="plan (budget, mechanisms)")

    # in the workers' folder: a driver killed outright left factlens-plans-* in the temporary directory
    handoff = PlanHandoff.temporary(within=executor.scratch_folder()) if overlap else None
    jobs, skipped = _jobs(config, rd, cfg_dict, plans, inner, handoff)
    ran: list[str] = []
    files: list[Path] = []
    unsupported: list[Unsupported] = []

    def _run_done(job: Job, record: dict[str, Any] | Unsupported) -> None:
        if isinstance(record, Unsupported):  # the method cannot edit this unit's mask: the others go on
            unsupported.append(record)
            return
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
    if report and (ran or not unsupported):
        from factlens.runner.report import write_report

        report_path = write_report(rd.path)
    elif ran and (rd.path / "report.html").exists():  # an earlier run's report no longer shows every result
        import warnings

        warnings.warn(f"{rd.path / 'report.html'} was written before the {len(ran)} run(s) that just finished and "
                      f"does not show them; `factlens report {rd.path}` rewrites it", UserWarning, stacklevel=2)
    if unsupported:
        raise _unsupported_error(unsupported, ran)
    return RunSummary(rd.path, tuple(ran), tuple(skipped), report_path, time.perf_counter() - t_start, tuple(files))



def _plans(config: RunConfig, rd: "RunDir", cfg_dict: dict[str, Any], inner: bool
           ) -> tuple[dict[int, dict[str, Any]], list[PlanJob]]:
    """The seeds' plans (budget, mechanisms) stored in the folder and still good, and the plan jobs
    of the seeds that need one (a unit left to run that needs a budget or the mechanisms it lacks)."""
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
    return plans, todo_plans


def _jobs(config: RunConfig, rd: "RunDir", cfg_dict: dict[str, Any], plans: dict[int, dict[str, Any]], inner: bool,
          handoff: PlanHandoff | None) -> tuple[list[Job], list[str]]:
    """The units left to run, in start order, with their seed's plan or the hand-off folder it will
    appear in; and the names of the finished units skipped."""
    jobs: list[Job] = []
    skipped: list[str] = []
    for s in config.seeds:
        for unit in start_order(config, config.units()):  # localization x method x objective
            if rd.completed(s, unit):
                skipped.append(f"seed{s}/{unit}")
            elif s in plans:
                jobs.append(Job(cfg_dict, s, unit, plans[s], inner))
            else:
                jobs.append(Job(cfg_dict, s, unit, None, inner, plan_handoff=handoff.folder))
    return jobs, skipped

def _unsupported_error(unsupported: Sequence[Unsupported], ran: Sequence[str]) -> Exception:
    """One error for every unit whose edit method could not edit its mask, after the other units ran."""
    from factlens.editing.memory_editing import MaskNotSupported

    keys = [u.key for u in unsupported]
    return MaskNotSupported(
        f"{len(keys)} unit(s) could not be edited: {keys}; {len(ran)} other unit(s) finished and are saved.\n"
        + "".join(f"  - {u.message}\n" for u in unsupported)
        + "Leave these localizations out (--localizations) or give the method its own run folder with "
        "localizations whose masks it can edit; rerunning the same command tries them again")


def completed_runs(path: str | Path) -> Iterable[dict[str, Any]]:
    """The records of every finished run in a run directory (a user's own JSON under ``runs/``,
    which ``--overwrite`` keeps, is left out with a warning, as in the report)."""
    from factlens.runner.run_files import is_run_file

    for p in RunDir(Path(path)).run_files():
        if is_run_file(p):
            yield read_json(p)
