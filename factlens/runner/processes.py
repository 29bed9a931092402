"""Worker processes for ``LocalExecutor(workers=N)``: independent jobs on N single-machine processes.

Why processes: on a CPU, two single-thread processes get more work done than one process
with two threads (the small matrix products of a 270M model do not keep two threads busy;
see docs/performance.md). Each worker keeps its own
:class:`~factlens.runner.workspace.Workspace` (its own model copy: N times the memory) for
all the jobs it runs, and runs ``threads`` torch threads.

Jobs are handed out one at a time, in the order given, as workers become free, preferring a job of the seed
the worker ran last: the unedited model's evaluation numbers of a seed
(:class:`~factlens.evaluation.baseline_cache.BaselineCache`) are then computed by as few workers as
possible, and the workers share them through a temporary folder
(:class:`~factlens.evaluation.baseline_store.BaselineStore`, deleted by
:meth:`ProcessPool.close`): a number one worker computed on the unedited model is read, not
recomputed, by the others. Every job seeds its own random generators, so results do not
depend on which worker ran it or in which order (tests/runner/test_processes.py checks the
run files are identical to a one-process run). A failed job does not stop the others; :meth:`ProcessPool.map`
raises at the end, naming the failed jobs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import shutil
import tempfile
import threading
import traceback
from collections import OrderedDict
from typing import Any, Callable, Sequence

from factlens.progress_bars import progress_bar

__all__ = ["ProcessPool", "JobError"]


class JobError(RuntimeError):
    """A job failed in a worker process (the message holds the worker's traceback).

    Attributes:
        causes: The exceptions the failed jobs raised, in the order they arrived, where they
            could be sent back from the worker (an exception that does not pickle is left out);
            the first is also ``__cause__``. The driver tells a bad setting (e.g.
            :class:`~factlens.tasks.TaskSizeError`) from a defect by their types.
    """

    def __init__(self, message: str, causes: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.causes = tuple(causes)
        if self.causes:
            self.__cause__ = self.causes[0]


def _exit_with_parent(store: str | None) -> None:
    """End this worker (and remove the shared store folder) as soon as the driver process is gone.

    A driver killed outright (SIGKILL, the out-of-memory killer) never sends the stop message; the
    workers waited on their inbox for ever, each holding its model copy (570 MB on the planted model,
    GBs on a real one), and the store folder stayed in the temporary directory.
    """
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the driver's process has ended
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="factlens-exit-with-parent", daemon=True).start()


def _worker(inbox, outbox, threads: int, store: str | None = None) -> None:
    """Worker loop: run ``fn(item, workspace)`` for each ``(index, fn, item)`` until ``None``."""
    import torch

    from factlens.runner.provenance import running_source
    from factlens.runner.workspace import Workspace

    _exit_with_parent(store)
    running_source()  # the code this process imported, named before the files can change (provenance)
    torch.set_num_threads(threads)
    workspace = Workspace(baseline_store=store)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        index, fn, item = msg
        try:
            outbox.put((index, True, fn(item, workspace), None))
        except BaseException as e:  # noqa: BLE001 - reported to the driver, which raises
            outbox.put((index, False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", _sendable(e)))


def _sendable(e: BaseException) -> BaseException | None:
    """``e`` without its traceback if it survives pickling (the queue pickles it), else None."""
    try:
        e = e.with_traceback(None)
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - any exception type may refuse pickling; the text still goes
        return None
    return e


class ProcessPool:
    """``workers`` processes (spawned), each with ``threads`` torch threads and its own workspace.

    Use as a context manager or call :meth:`close`; the processes are daemons and end with
    this process in any case, also when it is killed outright (each worker watches it).
    """

    def __init__(self, workers: int, threads: int = 1) -> None:
        if workers < 1 or threads < 1:
            raise ValueError(f"need workers >= 1 and threads >= 1, got workers={workers}, threads={threads}")
        self.workers, self.threads = int(workers), int(threads)
        self._procs: list[Any] = []
        self._inboxes: list[Any] = []
        self._outbox: Any = None
        self.store: str | None = None  # the workers' shared BaselineStore folder, while they run

    def _start(self) -> None:
        if self._procs:
            return
        ctx = mp.get_context("spawn")
        self._outbox = ctx.Queue()
        self.store = tempfile.mkdtemp(prefix="factlens-baselines-")
        for _ in range(self.workers):
            inbox = ctx.Queue()
            p = ctx.Process(target=_worker, args=(inbox, self._outbox, self.threads, self.store), daemon=True)
            p.start()
            self._procs.append(p)
            self._inboxes.append(inbox)

    def scratch(self) -> str:
        """The workers' shared folder (started with them): what the driver puts in it goes with it,
        also when the driver is killed outright (the workers remove it as they end)."""
        self._start()
        assert self.store is not None
        return self.store

    def close(self) -> None:
        """Stop the workers (their models are freed)."""
        for inbox in self._inboxes:
            inbox.put(None)
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        self._procs, self._inboxes, self._outbox = [], [], None
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)
            self.store = None

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, on_result: Callable[[Any, Any], None],
            desc: str = "jobs", on_error: Callable[[Any, str], None] | None = None) -> None:
        """Run ``fn(item, workspace)`` for every item in the workers; ``on_result`` runs here, as results arrive
        (``on_error(item, message)`` as failures arrive).

        Raises:
            JobError: One or more jobs failed (after every other job ran), or a worker died.
        """
        if not items:
            return
        self._start()
        by_seed: OrderedDict[Any, list[int]] = OrderedDict()
        for i, it in enumerate(items):
            by_seed.setdefault(getattr(it, "seed", None), []).append(i)
        last: dict[int, Any] = {}
        busy: dict[int, int] = {}  # worker -> item index
        errors: list[tuple[int, Any, str, BaseException | None]] = []  # in the order they failed

        def next_for(w: int) -> int | None:
            if not by_seed:
                return None
            seed = last.get(w)
            if seed not in by_seed:  # the seed with the most jobs left
                seed = max(by_seed, key=lambda s: len(by_seed[s]))
            i = by_seed[seed].pop(0)
            if not by_seed[seed]:
                del by_seed[seed]
            last[w] = seed
            return i

        def assign(w: int) -> None:
            i = next_for(w)
            if i is not None:
                busy[w] = i
                self._inboxes[w].put((i, fn, items[i]))

        for w in range(self.workers):
            assign(w)
        with progress_bar(total=len(items), desc=desc, position=0) as bar:
            while busy:
                try:
                    index, ok, payload, exc = self._outbox.get(timeout=5)
                except queue.Empty:
                    dead = [w for w in busy if not self._procs[w].is_alive()]
                    if dead:
                        keys = [getattr(items[busy[w]], "key", str(items[busy[w]])) for w in dead]
                        self.close()
                        raise JobError(f"worker process(es) died (out of memory?) while running {keys}")
                    continue
                w = next(k for k, v in busy.items() if v == index)
                del busy[w]
                item = items[index]
                if ok:
                    on_result(item, payload)
                else:
                    errors.append((index, item, payload, exc))
                    if on_error is not None:
                        on_error(item, payload)
                bar.set_postfix_str(getattr(item, "key", ""), refresh=False)
                bar.update()
                assign(w)
        if errors:
            # named in the order given (the order they failed in changes from run to run), the first error first
            keys = [getattr(it, "key", str(it)) for _, it, _, _ in sorted(errors, key=lambda x: x[0])]
            raise JobError(f"{len(errors)} job(s) failed: {keys}; first error: {errors[0][2]}",
                           [e for _, _, _, e in errors if e is not None])
