"""One ``factlens run`` per run folder at a time (:class:`RunLock`).

Two runs on one ``--out`` (a notebook cell and a terminal, or the same command started again
while the first still runs) both planned the same units, computed them twice and wrote the same
files; a second run with ``--overwrite`` set aside the results the first was writing, and the
first then resumed into a folder with other settings.

The lock is an exclusive ``flock`` on the file ``.factlens-run.lock`` in the folder, which also
names its holder (pid, host, start time) for the message a second run gets. The operating
system releases the lock when its process ends, however it ends (``kill -9`` included), so a
killed run never leaves a folder locked; no pid is checked. A file system without ``flock``
support raises, and the run says so.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factlens.runner.provenance import now
from factlens.runner.run_dir import LOCK, RunDirError

__all__ = ["RunLock", "LOCK"]


@dataclass
class RunLock:
    """The lock of one run folder, held by this process until :meth:`release`."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """Create ``folder`` if needed and take its lock.

        Raises:
            RunDirError: Another process holds it (the message names that process), or the
                file system cannot lock files.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as e:  # e.g. another user's lock file in a shared folder
                raise RunDirError(f"cannot open the run lock {path} ({e}); choose another --out") from e
            try:
                held = not _try_lock(fd)
            except OSError as e:
                os.close(fd)
                raise RunDirError(f"cannot lock {path} ({e}): this file system does not support file locks; "
                                  "choose an --out on a local disk") from e
            if held:
                holder = _read(path)
                os.close(fd)
                who = (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}" if holder
                       else "a process that is just starting")
                raise RunDirError(f"{folder} is in use by another factlens run ({who}); wait for it to finish or "
                                  "choose another --out")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:  # its holder released (and deleted) it between our open and lock
                same = False
            if same:
                break
            os.close(fd)  # we locked a file no longer in the folder: try again with the new one
        lock = cls(path, fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now()}).encode())
        except BaseException as e:  # (a full disk): never keep the folder locked for the rest of this process
            lock.release()
            if isinstance(e, OSError):
                raise RunDirError(f"cannot write the run lock {path} ({e})") from e
            raise
        return lock

    def release(self, *, remove_file: bool = True) -> None:
        """Give the lock up (its file goes first, so that no one locks a file about to go; on
        Windows, which cannot delete an open file, after). ``remove_file=False``: the caller
        removed it already (the path may name another run's lock by now)."""
        try:
            if remove_file and os.name != "nt":
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
        if remove_file and os.name == "nt":
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # another process has it open now


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; ``False`` when another process has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and {"pid", "host", "started"} <= set(d) else None
