"""Fixtures of the runner tests: one finished planted run folder, and a fresh copy of it per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factlens.runner.cli import main

# fast settings: a couple of edit steps and the cheap suites (plus the mechanisms table)
FAST = ["--edit", "steps=2", "--suites", "standard,side_effects,mechanisms", "--no-progress",
        "--eval", "text.n_chunks=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished planted run (flu, random, all_mlps; seed 0), made once per test module."""
    out = tmp_path_factory.mktemp("runner") / "planted"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "flu,random,all_mlps",
                 *FAST]) == 0
    return out


@pytest.fixture()
def copy_of_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of :func:`run_dir` that a test may change."""
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst
