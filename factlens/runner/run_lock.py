"""One ``factlens run`` per run folder at a time (:class:`RunLock`).

Two runs on one ``--out`` (a notebook cell and a terminal, or the same command started again
while the first still runs) both planned the same units, computed them twice and wrote the same
files; a second run with ``--overwrite`` set aside the results the first was writing, and the
first then resumed into a folder with other settings. The lock is a file in the folder that
names the process holding it; a second run is refused while that process lives, and takes
the lock over when it is gone (a run killed outright leaves its file behind).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> lock = RunLock.acquire(folder)
    >>> RunLock.acquire(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    factlens.runner.run_dir.RunDirError: ... is in use by another factlens run (pid ...
    >>> lock.release()
    >>> RunLock.acquire(folder).release()
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factlens.runner.provenance import now
from factlens.runner.run_dir import LOCK, RunDirError

__all__ = ["RunLock", "LOCK"]

_GRACE_S = 30.0  # a lock file still empty this long after it was made: its writer died between create and write


@dataclass
class RunLock:
    """The lock file of one run folder, held by this process until :meth:`release`."""

    path: Path

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """Create ``folder`` if needed and take its lock.

        Raises:
            RunDirError: Another live process holds it (the message names it, and says when to
                delete the file by hand: a holder on another machine cannot be checked from here).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK
        for _ in range(3):  # a stale file removed, then another process may win the race: try again
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(path)
                if _held(path, holder):
                    who = (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}" if holder
                           else "a process that is just starting")
                    raise RunDirError(
                        f"{folder} is in use by another factlens run ({who}); wait for it to finish or choose "
                        f"another --out. If no run is going (its machine is gone), delete {path}") from None
                path.unlink(missing_ok=True)  # its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": now(),
                           "process_start": _process_start(os.getpid())}, f)
            return cls(path)
        raise RunDirError(f"could not take the lock {path}: other runs keep starting on {folder}; choose another --out")

    def release(self) -> None:
        """Give the lock up (delete its file)."""
        self.path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and {"pid", "host", "started"} <= set(d) else None


def _held(path: Path, holder: dict[str, Any] | None) -> bool:
    """Whether the lock's holder may still be running."""
    if holder is None:  # being written now, or its writer died at once
        try:
            return time.time() - path.stat().st_mtime < _GRACE_S
        except FileNotFoundError:
            return False
    if holder["host"] != socket.gethostname():
        return True  # a process elsewhere (a shared file system) cannot be checked from here
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = holder.get("process_start")  # the pid reused by another process since: not the holder
    return started is None or _process_start(pid) in (None, started)


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces
