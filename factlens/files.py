"""Writing a file so that no reader ever sees half of it.

Run folders are read while they are written (a resumed run, a report, another worker
process reading a shared :class:`~factlens.evaluation.baseline_store.BaselineStore`), and a
run can be interrupted at any point. :func:`write_atomic` writes into a temporary file next
to the target and moves it over the target in one step (``os.replace``), so a reader finds
the old file or the new one, never a truncated one. The temporary files are named
``.<name>.<random>.tmp`` (hidden), so that a run folder can find and delete the ones an
interruption left behind. Input files are compared by content: :func:`file_sha256`, and
:func:`hash_input` for a file or a folder (a run's data, its general text and MMLU folder, and
the files an evaluation read, in ``EvalResult.meta["inputs"]``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["write_atomic", "check_output", "file_sha256", "hash_input", "looks_local", "not_saved_as"]

_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow")


def looks_local(source: str) -> bool:
    """Whether an input names a local path (not a Hugging Face dataset name such as ``"azhx/counterfact"``).

    Example:
        >>> [looks_local(s) for s in ("cais/mmlu", "data/mmlu/dev", "./mmlu", "dev.csv")]
        [False, True, True, True]
    """
    return (source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1
            or source.lower().endswith(_FILE_SUFFIXES))


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then move it to ``path``.

    The folder is created if needed. If ``write`` raises, the temporary file is deleted and
    ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
        >>> write_atomic(p, lambda tmp: tmp.write_text("done"))
        >>> p.read_text(), sorted(q.name for q in p.parent.iterdir())
        ('done', ['a.txt'])
    """
    path = Path(path)
    if path.is_symlink():  # write through the link: replacing it left its target stale and the link a plain file
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)  # mkstemp makes it 0600: the file gets the mode of a plain open() (or keeps its own)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output(path: str | Path, *, what: str, ours: Callable[[str], bool],
                 protected: "list[str | Path] | tuple[str | Path, ...]" = (), allowed: tuple[str, ...] = ()) -> Path:
    """Check that writing ``path`` loses nothing and can succeed: no folder above it is a file, it is not a folder, not a file inside one of the
    ``protected`` folders (a run folder being read; ``allowed`` names files there that may be
    written, e.g. ``report.html``), and, if it exists, a file this kind of output wrote before
    (``ours(first_bytes)``). Returns the path.

    Raises:
        ValueError: What is wrong and what to do instead.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "notes.txt").write_text("mine")
        4
        >>> check_output(d / "notes.txt", what="CSV", ours=lambda head: head.startswith("a,b"))
        Traceback (most recent call last):
        ...
        ValueError: .../notes.txt exists and is not a CSV factlens wrote; it is left alone: remove it or choose another file
    """
    path = Path(path)
    for folder in reversed(path.parents):  # the outermost first: the file that blocks the path
        if folder.exists() and not folder.is_dir():  # (writing failed late, with a FileExistsError traceback)
            raise ValueError(f"{path}: {folder} is a file, not a folder, so the {what} cannot be written under it; "
                             "choose a path whose folders are folders (or do not exist yet)")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the {what}'s file name (e.g. {path / 'out'}...)")
    target = path.resolve()
    for folder in protected:
        folder = Path(folder).resolve()
        if target.is_relative_to(folder) and not (target.parent == folder and target.name in allowed):
            raise ValueError(f"{path} is inside the run folder {folder}: writing the {what} there could replace "
                             "the run's own files; choose a file outside it")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
        if not ours(head):
            raise ValueError(f"{path} exists and is not a {what} factlens wrote; it is left alone: remove it or "
                             "choose another file")
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read 1 MiB at a time."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_input(source: str | Path) -> dict[str, Any]:
    """The sha256 of a local input file, or of a folder's files (relative path and content of
    each, in sorted order); sources that are not local paths (Hugging Face names) get ``None``.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "facts.csv"
        >>> _ = f.write_text("a,b")
        >>> h = hash_input(f)
        >>> (h["kind"], h["sha256"][:12])
        ('file', '1eb7c54d5283')
        >>> hash_input("azhx/counterfact")["sha256"] is None
        True
    """
    import hashlib

    p = Path(source).expanduser()
    if p.is_file():
        return {"path": str(source), "kind": "file", "bytes": p.stat().st_size, "sha256": file_sha256(p)}
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix())
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
        return {"path": str(source), "kind": "folder", "n_files": len(files), "sha256": h.hexdigest()}
    return {"path": str(source), "kind": "not a local path (a dataset name; not hashed)", "sha256": None}


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: What a loaded dict looks like (a key only its layout has) -> what it is and what loads it.
_SAVED_KINDS = (("components", "a saved Mask", "factlens.Mask.load / Mask.from_dict"),
                ("scores", "saved scores", "ComponentScores.load, then choose with .to_mask(...)"),
                ("suites", "a saved evaluation", "EvalResult.load / EvalResult.from_dict"))


def not_saved_as(what: str, d: object, *, needs: str, own_loader: str, list_hint: str | None = None) -> ValueError:
    """The error for loading ``d`` as a ``what`` when it is not that layout: what it holds and, where
    it is another of factlens's saved objects, what loads it (a bare ``KeyError`` said neither).

    Example:
        >>> str(not_saved_as("Mask", {"scores": []}, needs="a 'components' list", own_loader="Mask.load"))[:60]
        "not a saved Mask: it needs a 'components' list, got keys ['s"
    """
    is_map = isinstance(d, dict) or hasattr(d, "keys")
    found = f"keys {sorted(d)}" if is_map else f"a {type(d).__name__}"
    kind = next(((text, loader) for key, text, loader in _SAVED_KINDS if is_map and key in d), None)
    if kind is not None:
        hint = f"it looks like {kind[0]}: load it with {kind[1]}"
    elif list_hint is not None and isinstance(d, (list, tuple)):
        hint = list_hint
    else:
        hint = f"load files saved with {own_loader}"
    return ValueError(f"not a saved {what}: it needs {needs}, got {found}; {hint}")
