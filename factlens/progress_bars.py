"""One progress setting for every tqdm bar factlens draws.

Long work (localizing, editing, evaluating, a runner's jobs) shows tqdm bars. Whether they
are drawn is one setting, read by :func:`progress_bar`, the one place a bar is made; it is
changed for a block of code with :func:`progress` (exported as ``factlens.progress``)::

    with factlens.progress(False):
        factlens.evaluate(model, task, original=model)   # no bar, however deep

The setting is a :class:`contextvars.ContextVar` (on by default), not a module-level switch:
a ``with`` block changes it for this thread or task only and restores it on exit, even on
an error. Context variables do not cross processes: the runner hands the setting to its worker
processes in each job (``Job.show_progress``) and the job sets it there.

The public verbs (``factlens.localize``, ``localization_mask``, ``edit``, ``evaluate``,
``sweep``) also take ``show_progress=``: ``True``/``False`` set it for that call only,
``None`` (default) keeps the surrounding setting (:func:`takes_show_progress`). Everything
below them reads the setting through :func:`progress_bar` instead of passing a flag down. The
runner's ``RunConfig.show_progress`` (``factlens run --no-progress``) hides every bar of the
run, in its worker processes too.

The module is named ``progress_bars`` (not ``progress``) so that importing it never replaces
the ``factlens.progress`` context manager.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_bar", "progress_enabled", "show_progress_option", "takes_show_progress"]

F = TypeVar("F", bound=Callable[..., Any])

# a ContextVar holds one value per thread/async context; the object itself never changes
_ENABLED: ContextVar[bool] = ContextVar("factlens_progress", default=True)


def progress_enabled() -> bool:
    """Whether progress bars are drawn here (``True`` unless a :func:`progress` block says otherwise)."""
    return _ENABLED.get()


@contextlib.contextmanager
def progress(enabled: bool = True) -> Iterator[None]:
    """Draw (``True``) or hide (``False``) every factlens progress bar inside the ``with`` block.

    Args:
        enabled: Whether bars are drawn. Blocks nest; leaving one restores the setting around it.

    Raises:
        TypeError: ``enabled`` is not a bool (``progress("no")`` would otherwise be truthy).

    Example:
        >>> import factlens
        >>> from factlens.progress_bars import progress_enabled
        >>> with factlens.progress(False):
        ...     with factlens.progress(True):
        ...         inner = progress_enabled()
        ...     outer = progress_enabled()
        >>> inner, outer
        (True, False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"factlens.progress(enabled) takes True or False, got {enabled!r} "
                        f"({type(enabled).__name__})")
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def show_progress_option(show_progress: bool | None) -> contextlib.AbstractContextManager[None]:
    """The context a public verb's ``show_progress=`` asks for: ``None`` keeps the current setting.

    Raises:
        TypeError: ``show_progress`` is neither ``None`` nor a bool.
    """
    if show_progress is None:
        return contextlib.nullcontext()
    if not isinstance(show_progress, bool):
        raise TypeError(f"show_progress must be True, False or None (keep the factlens.progress setting), "
                        f"got {show_progress!r} ({type(show_progress).__name__})")
    return progress(show_progress)


def takes_show_progress(fn: F) -> F:
    """Decorate a public verb whose keyword-only ``show_progress: bool | None = None`` sets the
    progress setting for the call (``None``: keep the surrounding one); the body ignores it.

    Raises:
        TypeError: ``fn`` has no keyword-only ``show_progress`` defaulting to ``None``.
    """
    p = inspect.signature(fn).parameters.get("show_progress")
    if p is None or p.kind is not p.KEYWORD_ONLY or p.default is not None:
        raise TypeError(f"{fn.__qualname__} needs a keyword-only parameter show_progress: bool | None = None")

    @functools.wraps(fn)
    def verb(*args: Any, **kwargs: Any) -> Any:
        with show_progress_option(kwargs.get("show_progress")):
            return fn(*args, **kwargs)

    return verb  # type: ignore[return-value]


def progress_bar(iterable: Iterable[Any] | None = None, **tqdm_kwargs: Any) -> tqdm:
    """A ``tqdm.auto.tqdm`` bar, drawn only when :func:`progress_enabled`.

    Args:
        iterable: What to iterate over (``None`` with ``total=`` for a bar updated by hand).
        **tqdm_kwargs: tqdm options (``desc``, ``total``, ``leave``, ``position``...), but not
            ``disable``: the progress setting decides that.

    Raises:
        TypeError: ``disable=`` was given (use ``factlens.progress(False)`` instead).
    """
    if "disable" in tqdm_kwargs:
        raise TypeError("progress_bar() takes no disable=: the factlens.progress setting decides whether bars are "
                        "drawn (wrap the call in `with factlens.progress(False):`)")
    if "mininterval" not in tqdm_kwargs and _to_log_file(tqdm_kwargs.get("file")):
        tqdm_kwargs["mininterval"] = LOG_INTERVAL_S
    return tqdm(iterable, disable=not _ENABLED.get(), **tqdm_kwargs)


#: Seconds between a bar's updates when it writes to a file or pipe (``nohup ... 2> log``), not a
#: terminal or a notebook: a bar redrawn ten times a second filled a long run's log with updates.
LOG_INTERVAL_S = 30.0


def _to_log_file(file: Any) -> bool:
    """Whether a bar writing to ``file`` (default: stderr) ends up in a file or pipe rather than a
    terminal; a notebook's bars are widgets and keep tqdm's own interval."""
    import sys

    if any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):  # tqdm.auto chose the widget bar
        return False
    stream = file if file is not None else sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True
