"""A seed's plan handed to jobs that started before it was done (:class:`PlanHandoff`,
:class:`AwaitedPlan`), and the order in which jobs start (:func:`start_order`).

With several local worker processes, the runner does not make every job wait for the plan
(the FLU budget and the mechanisms of a seed, :func:`~factlens.runner.pipeline.plan_job`):
while one worker computes it, the others already start their jobs, and each job reads the
plan only where it needs it. A causal-tracing job scores its components (its longest part)
before it needs the budget; ``all_mlps`` and ``nonlocalized`` need the plan only for the
``mechanisms`` suite, after their edit. The driver writes the finished plan (or the plan
job's error) into a temporary folder; an :class:`AwaitedPlan` reads it on first use, waiting
for it. The plan a job reads is the same JSON the run folder keeps (``plan/seed<S>.json``),
so its results are those of a run resumed from that file.

Example:
    >>> import tempfile
    >>> handoff = PlanHandoff(tempfile.mkdtemp())
    >>> plan = AwaitedPlan(handoff.folder, seed=0)
    >>> handoff.put(0, {"seed": 0, "param_budget": 1000})
    >>> plan["param_budget"], plan.get("flu"), plan.waited >= 0
    (1000, None, True)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from factlens.files import write_atomic

__all__ = ["PlanHandoff", "AwaitedPlan", "PlanFailed", "start_order"]


class PlanFailed(RuntimeError):
    """The plan a job waited for failed (its message names the plan job's error)."""


class PlanHandoff:
    """The driver's side: a folder where finished plans (``seed<S>.json``) and failures
    (``seed<S>.error``) appear, each written atomically."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = str(folder)

    @classmethod
    def temporary(cls, *, within: str | os.PathLike | None = None) -> "PlanHandoff":
        """A handoff in a new temporary folder (:meth:`run` deletes it), made in ``within`` if given
        (the worker processes' folder, which they remove if the driver is killed)."""
        return cls(tempfile.mkdtemp(prefix="factlens-plans-", dir=within))

    def run(self, executor, plans: Sequence[Any], jobs: Sequence[Any], *, on_plan: Callable[[Any, dict], None],
            on_job: Callable[[Any, dict], None]) -> None:
        """Run ``plans`` (``PlanJob``) and ``jobs`` (``Job`` with ``plan_handoff=self.folder``) in one
        ``executor.map``: each finished plan goes to ``on_plan`` and here, each failed one here as a
        failure; the folder is deleted at the end (jobs still waiting then stop)."""
        from factlens.runner.pipeline import PlanJob, run_plan_or_job

        def done(item: Any, result: dict) -> None:
            if isinstance(item, PlanJob):
                on_plan(item, result)
                self.put(item.seed, result)
            else:
                on_job(item, result)

        def failed(item: Any, message: str) -> None:
            if isinstance(item, PlanJob):
                self.fail(item.seed, message)

        try:
            executor.map(run_plan_or_job, [*plans, *jobs], on_result=done, on_error=failed,
                         desc="plan and localizations")
        finally:
            self.close()

    def put(self, seed: int, plan: dict[str, Any]) -> None:
        """Hand over the finished plan of ``seed`` (written as the run folder's ``plan/seed<S>.json``)."""
        from factlens.runner.run_dir import write_json_atomic  # imported when used, as before

        write_json_atomic(Path(self.folder) / f"seed{int(seed)}.json", plan)

    def fail(self, seed: int, message: str) -> None:
        """Tell the jobs of ``seed`` that its plan failed (they raise :class:`PlanFailed`)."""
        write_atomic(Path(self.folder) / f"seed{int(seed)}.error", lambda tmp: tmp.write_text(message))

    def close(self) -> None:
        """Delete the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


class AwaitedPlan(Mapping):
    """The plan of ``seed``, read from a :class:`PlanHandoff` folder on first use (waiting for it).

    Attributes:
        waited: Seconds spent waiting for the plan (0 until it is first used).
        awaited: Always ``True`` (the runner records ``timings["plan_wait"]`` for such jobs).
    """

    awaited = True

    def __init__(self, folder: str | os.PathLike, seed: int, *, poll: float = 0.2) -> None:
        self.folder, self.seed, self.poll = Path(folder), int(seed), float(poll)
        self.waited = 0.0
        self._plan: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._plan is None:
            done, failed = self.folder / f"seed{self.seed}.json", self.folder / f"seed{self.seed}.error"
            t0 = time.perf_counter()
            while not done.exists():
                if failed.exists():
                    raise PlanFailed(f"the plan of seed {self.seed} (FLU budget, mechanisms) failed, so this job "
                                     f"cannot go on: {failed.read_text()[:2000]}")
                if not self.folder.is_dir():
                    raise PlanFailed(f"the plan of seed {self.seed} never arrived: its folder {self.folder} is gone "
                                     "(the run was stopped)")
                time.sleep(self.poll)
            self.waited = time.perf_counter() - t0
            self._plan = json.loads(done.read_text())
        return self._plan

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def start_order(config, units: Sequence[str]) -> list[str]:
    """``units`` with those whose localization scores with a heavy method (``ScoringMethod.heavy``:
    patching, tracing) first, in their given order otherwise: the longest jobs start first, so
    that none of them ends the run alone while the other workers idle (results do not depend on
    the order).

    Example:
        >>> from factlens.runner import RunConfig
        >>> start_order(RunConfig(task="planted", model="planted"), ["flu", "random", "causal_tracing"])
        ['causal_tracing', 'flu', 'random']
    """
    from factlens.localization import LOCALIZATIONS

    def heavy(unit: str) -> bool:
        loc = LOCALIZATIONS.get(config.split_unit(unit)[0])
        return loc.scoring is not None and loc.scoring.heavy

    return sorted(units, key=lambda u: not heavy(u))
