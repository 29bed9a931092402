"""One factlens run per run folder at a time (factlens.runner.run_lock)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from factlens.runner.cli import main
from factlens.runner.run_dir import LOCK, RunDir
from factlens.runner.run_lock import RunLock

_ARGS = ["--no-progress", "--no-report", "--localizations", "all_mlps", "--suites", "standard", "--edit", "steps=1"]


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


def test_a_lock_held_by_another_process_and_one_left_by_a_killed_run(tmp_path: Path):
    """Another process's lock refuses the run and names it; the operating system releases the lock of
    a process killed outright (kill -9 leaves the file, not the lock), and a run then goes ahead."""
    out = tmp_path / "run"
    code = ("import sys, time; from factlens.runner.run_lock import RunLock; RunLock.acquire(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another factlens run \(pid {child.pid} on "):
            RunLock.acquire(out)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == child.pid  # its file stays, its lock does not
    assert main(["run", "planted", "--out", str(out), *_ARGS]) == 0
    assert not (out / LOCK).exists() and RunDir(out).run_files()
    (out / LOCK).write_text("damaged")  # a file without a lock holds nothing, whatever it says
    RunLock.acquire(out).release()


def test_a_new_folder_whose_run_fails_at_once_is_removed_with_its_lock(tmp_path: Path):
    out = tmp_path / "new"
    assert main(["run", "planted", "--out", str(out), *_ARGS, "--forget-size", "1000"]) == 2
    assert not out.exists()


def test_a_lock_whose_record_cannot_be_written_is_given_up(tmp_path: Path, monkeypatch):
    """A full disk while writing the holder's record left the lock taken (its fd open) for the rest of
    the process: a notebook's next run on the folder was refused until the kernel restarted."""
    real = os.write

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ValueError, match="cannot write the run lock"):
        RunLock.acquire(tmp_path)
    monkeypatch.setattr(os, "write", real)
    RunLock.acquire(tmp_path).release()
