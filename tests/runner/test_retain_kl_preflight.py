"""The KL retain term's cache is checked before the run localizes (not when each unit's edit starts)."""

from __future__ import annotations

from dataclasses import replace

import pytest

import factlens.editing.objectives.base as objectives_base
import factlens.runner.pipeline as pipeline
from factlens.editing import EditConfig
from factlens.editing.editor import check_retain_kl_fits
from factlens.editing.objectives.gradient_ascent import GradDiffConfig
from factlens.editing.objectives.npo import NPOConfig
from factlens.runner import RunConfig
from factlens.runner.executor import run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_retain_kl_fits_counts_the_rows_the_edit_keeps(planted, monkeypatch):
    task = replace(planted.task, objective="unlearn")
    kl = EditConfig(objectives={"graddiff": GradDiffConfig(retain_loss="kl"), "npo": NPOConfig(retain_loss="kl")})
    need = check_retain_kl_fits(planted.model, task, objective="graddiff", config=kl)
    assert need > 0 and need % (planted.model.cfg.d_vocab * 4) == 0
    assert check_retain_kl_fits(planted.model, task, objective="npo", config=kl) == need
    # no cache: the cross-entropy retain term, no retain weight, an objective without retain term or settings
    assert check_retain_kl_fits(planted.model, task, objective="graddiff", config=EditConfig()) == 0
    assert check_retain_kl_fits(planted.model, task, objective="graddiff", config=kl.replace(l_retain=0.0)) == 0
    assert check_retain_kl_fits(planted.model, task, objective="gradient_ascent", config=kl) == 0
    assert check_retain_kl_fits(planted.model, task, objective="unlearn", config=kl) == 0
    monkeypatch.setattr(objectives_base, "RETAIN_KL_CACHE_BYTES", need - 1)
    with pytest.raises(ValueError, match=r"retain_loss='kl'.*above the .* limit.*retain_loss='nll'"):
        check_retain_kl_fits(planted.model, task, objective="graddiff", config=kl)


def test_the_runner_refuses_a_too_large_kl_cache_before_localizing(tmp_path, monkeypatch):
    """It failed per unit when the edit started, after the FLU and each unit's localization had run."""
    monkeypatch.setattr(objectives_base, "RETAIN_KL_CACHE_BYTES", 1)

    def no_budget(*a, **k):
        raise AssertionError("the FLU ran before the KL cache was checked")

    monkeypatch.setattr(pipeline, "plan_budget", no_budget)
    cfg = RunConfig(task="planted", model="planted", localizations=("flu", "random"), objectives=("graddiff",),
                    suites=("standard",), out=str(tmp_path / "run"), show_progress=False,
                    edit={"steps": 1, "objectives": {"graddiff": {"retain_loss": "kl"}}})
    with pytest.raises(ValueError, match=r"retain_loss='kl'.*retain_loss='nll'"):
        run_experiment(cfg, report=False)
    assert not list((tmp_path / "run").glob("runs/seed0/*.json"))
