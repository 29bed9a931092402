"""Telling a defect from a refused setting: the runner reports a ``ValueError`` as a refused
setting (``factlens: error: ...``, exit 2, no traceback), since factlens raises one for every
setting it refuses; one raised by other code (a plugin, torch, numpy) is a defect and keeps its
traceback (split from :mod:`factlens.runner.pipeline` to keep it small).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

__all__ = ["defect_location", "defects_named"]


def defect_location(e: BaseException) -> str | None:
    """Where ``e`` was raised (``"file:line in function"``) when it is a ``ValueError`` that is a
    defect rather than a refused setting; ``None`` for anything else.

    The runner reports a ``ValueError`` as a refused setting (``factlens: error: ...``, exit 2,
    no traceback), since factlens raises one for every setting it refuses. A ``ValueError`` from
    other code (a plugin's method, torch, numpy) is no such message: it counts as a setting only
    when it is one of factlens's own error types (a subclass defined in factlens, e.g.
    :class:`~factlens.editing.MaskNotSupported`, which a plugin raises to refuse a mask) or when
    the innermost frame of its traceback that is not the standard library's (a ``json`` or
    codec error reading a user's file counts for the factlens function that read it) is in the
    factlens package. Without a traceback (an exception sent back by a worker) it counts as a
    setting, as before.
    """
    import sysconfig
    import traceback

    import factlens

    if not isinstance(e, ValueError) or any(c.__module__.split(".")[0] == "factlens" for c in type(e).__mro__):
        return None
    paths = sysconfig.get_paths()
    std = [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib")]
    site = [Path(paths[k]).resolve() for k in ("purelib", "platlib")]
    package = Path(factlens.__file__).resolve().parent
    for frame, line in reversed(list(traceback.walk_tb(e.__traceback__))):
        name = frame.f_code.co_filename
        path = Path(name).resolve()
        if name.startswith("<") or (any(path.is_relative_to(d) for d in std)
                                    and not any(path.is_relative_to(d) for d in site)):
            continue  # the standard library (or generated code): its caller decides
        return None if path.is_relative_to(package) else f"{name}:{line} in {frame.f_code.co_name}"
    return None


@contextmanager
def defects_named(key: str):
    """Raise a job's :func:`defect_location` ``ValueError`` as a ``RuntimeError`` naming the job and
    where it was raised (``from`` the original, whose traceback is kept): the runner and the CLI treat
    a ``ValueError`` as a refused setting, and showed a plugin's or torch's bug as ``factlens: error:``
    with exit 2, no traceback and no unit; also from worker processes, whose exceptions come back
    without their traceback."""
    try:
        yield
    except ValueError as e:
        where = defect_location(e)
        if where is None:
            raise
        raise RuntimeError(f"job {key}: {type(e).__name__} raised outside factlens, at {where}: {e} (a defect of "
                           "that code, or of factlens's call of it, not a refused setting: see the traceback "
                           "above)") from e
