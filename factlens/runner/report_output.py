"""Where the report and comparison outputs may be written (``factlens report --output``, ``factlens compare --csv``).

:func:`factlens.files.check_output` keeps a run's own files and other people's files; this
module adds the check that the output's folder can exist at all: a path under an existing
file (``--csv notes.csv/x.csv``) ended in a ``FileExistsError`` traceback from creating the
folder, after ``factlens compare`` had computed its table, which was lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["check_report_output"]


def check_report_output(path: str | Path, *, what: str, ours: Callable[[str], bool],
                        protected: "list[str | Path] | tuple[str | Path, ...]" = (),
                        allowed: tuple[str, ...] = ()) -> Path:
    """:func:`~factlens.files.check_output`, after checking that no folder above ``path`` is a file.

    Call it before the work whose result is written there, so a refused path costs nothing.

    Raises:
        ValueError: A folder of ``path`` is an existing file (named, with what to do), or what
            :func:`~factlens.files.check_output` refuses.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "notes.csv").write_text("mine")
        4
        >>> check_report_output(d / "notes.csv" / "x.csv", what="comparison CSV", ours=lambda head: True)
        Traceback (most recent call last):
        ...
        ValueError: .../notes.csv/x.csv: .../notes.csv is a file, not a folder, so the comparison CSV cannot be written under it; choose a path whose folders are folders (or do not exist yet)
    """
    from factlens.files import check_output

    path = Path(path)
    for folder in reversed(path.parents):  # the outermost first: the file that blocks the path
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{path}: {folder} is a file, not a folder, so the {what} cannot be written under it; "
                             "choose a path whose folders are folders (or do not exist yet)")
    return check_output(path, what=what, ours=ours, protected=protected, allowed=allowed)
