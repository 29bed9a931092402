"""The experiment runner: ``factlens run`` as a library.

:func:`run_experiment` runs every localization x seed of a :class:`RunConfig`
(localize -> mask at an equal parameter budget -> edit -> evaluate -> revert) through an
:class:`Executor` (:class:`LocalExecutor`, :class:`RayExecutor`), writes one JSON per run
into the run directory and :func:`write_report` renders them as one self-contained HTML file.
"""

from factlens.runner.config import DEFAULT_LOCALIZATIONS, RunConfig
from factlens.runner.inputs import load_config_file
from factlens.runner.executor import (
    Executor,
    LocalExecutor,
    RayExecutor,
    RunSummary,
    make_executor,
    run_experiment,
)
from factlens.runner.run_dir import ConfigMismatchError, RunDir, RunDirError
from factlens.runner.workspace import Workspace
from factlens.runner.report import build_report, write_report

__all__ = [
    "RunConfig", "DEFAULT_LOCALIZATIONS", "load_config_file", "run_experiment", "RunSummary", "RunDir",
    "Executor", "LocalExecutor", "RayExecutor", "make_executor", "ConfigMismatchError", "RunDirError",
    "write_report",
    "build_report", "Workspace",
]
