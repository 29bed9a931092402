"""One factlens run per run folder at a time (factlens.runner.run_lock)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from factlens.runner.cli import main
from factlens.runner.run_dir import LOCK, RunDir
from factlens.runner.run_lock import RunLock

_ARGS = ["--no-progress", "--no-report", "--localizations", "all_mlps", "--suites", "standard", "--edit", "steps=1"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path: Path, capsys):
    """Two runs on one --out both computed every unit and wrote the same files; an --overwrite of the
    second set aside what the first was writing. While a live process holds the folder, a run is
    refused (exit 2, naming it), and nothing in the folder changes."""
    out = tmp_path / "run"
    assert main(["run", "planted", "--out", str(out), *_ARGS]) == 0
    assert not (out / LOCK).exists()  # released at the end
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    held = RunLock.acquire(out)  # this process is alive: as a run in a notebook would be
    try:
        for extra in ([], ["--overwrite"]):
            assert main(["run", "planted", "--out", str(out), *_ARGS, *extra]) == 2
            err = capsys.readouterr().err
            assert f"is in use by another factlens run (pid {os.getpid()} on {socket.gethostname()}" in err
            assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK} == before
    finally:
        held.release()
    assert main(["run", "planted", "--out", str(out), *_ARGS]) == 0


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path):
    """A run killed outright leaves its lock file: a dead pid, or a live pid that another process got
    since (its start time differs), does not hold the folder; a holder on another machine does."""
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    for stale in ({**mine, "pid": _dead_pid()}, {**mine, "process_start": -1}):
        lock.write_text(json.dumps(stale))
        assert main(["run", "planted", "--out", str(out), *_ARGS]) == 0
        assert not lock.exists() and RunDir(out).run_files()
    lock.write_text(json.dumps({**mine, "host": "elsewhere.example"}))
    with pytest.raises(ValueError, match=r"(?s)in use by another factlens run \(pid \d+ on elsewhere.example.*delete"):
        RunLock.acquire(out)
    lock.write_text("")  # being written by a run that is just starting
    with pytest.raises(ValueError, match="a process that is just starting"):
        RunLock.acquire(out)
    old = 1_000_000_000
    os.utime(lock, (old, old))  # ... or whose writer died at once, long ago
    RunLock.acquire(out).release()


def test_a_new_folder_whose_run_fails_at_once_is_removed_with_its_lock(tmp_path: Path):
    out = tmp_path / "new"
    assert main(["run", "planted", "--out", str(out), *_ARGS, "--forget-size", "1000"]) == 2
    assert not out.exists()
