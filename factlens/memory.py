"""Handing freed memory back to the operating system between the steps of a long job.

PyTorch's CPU tensors come from the C allocator; glibc keeps freed blocks below its mmap
threshold in the process's heap for reuse, so the resident memory after a step that
allocated and freed several GB (the relearning attack, an edit) stays near that step's
peak and adds to the next step's. :func:`release_memory` (a garbage collection, then
glibc's ``malloc_trim``) returns it. It changes no result; on other C libraries it only
collects garbage.

:func:`checkpointed_blocks` trades time for memory in training passes: each transformer
block's activations are recomputed in the backward pass instead of being kept from the
forward pass (gradient checkpointing), so a step holds one block's activations instead of
every block's. The recomputation runs the same operations on the same inputs, so gradients
are unchanged (bitwise on CPU, tested); it costs about one more forward pass per step.

:class:`PeakRSS` measures the peak resident memory of a block of code (a thread samples
:func:`rss`), so the runner can say which stage of which job set a worker's peak.

:func:`mapped_copies` moves tensors that a long step keeps but rarely reads (an edit's
record while the edited model is evaluated, an editor's saved originals while it trains:
:func:`kept_copies`) to a file mapped into memory: resident only where read.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch

__all__ = ["release_memory", "checkpointed_blocks", "rss", "PeakRSS", "StagePeaks", "mapped_copies", "kept_copies",
           "check_folder"]


def rss() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``; ``psutil`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss


class PeakRSS:
    """Peak resident set size while the block runs, sampled in a thread every ``interval`` seconds.

    ``.start`` and ``.peak`` are absolute sizes in bytes; ``.delta`` is the increase over the
    start. A sampler rather than the kernel's high-water mark: resetting that mark
    (``/proc/self/clear_refs``) would also hide the process's true peak from ``getrusage``
    and ``/usr/bin/time``. A peak shorter than ``interval`` can be missed.

    Example:
        >>> with PeakRSS(interval=0.01) as mem:
        ...     block = bytearray(50_000_000)
        >>> mem.peak >= mem.start, mem.delta >= 0
        (True, True)
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.start = self.peak = 0

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start


def release_memory() -> None:
    """Collect garbage and return the heap's free memory to the OS (glibc ``malloc_trim(0)``; else a no-op)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextmanager
def checkpointed_blocks(model, enabled: bool = True) -> Iterator[None]:
    """Inside the block, ``model``'s transformer blocks recompute their activations in backward.

    Each block of ``model.blocks`` gets a temporary instance ``forward`` that runs the block
    under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant) when gradients are
    enabled; on exit the class's ``forward`` is back and nothing else of the model changed.
    Blocks that write to a key/value cache (the first pass of
    :func:`factlens.prefix.residual_after_prefix`) run normally: recomputing them would write
    the cache twice. A frozen cache is only read, so those passes are checkpointed.

    Args:
        model: A ``HookedTransformer`` (anything with ``blocks``).
        enabled: ``False``: do nothing (so callers can pass a config flag).

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> with checkpointed_blocks(m):
        ...     patched = "forward" in vars(m.blocks[0])
        >>> patched, "forward" in vars(m.blocks[0])
        (True, False)
    """
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    blocks = list(getattr(model, "blocks", []))
    if any("forward" in vars(b) for b in blocks):
        raise RuntimeError("checkpointed_blocks: a block already has an instance forward (nested use?)")
    try:
        for block in blocks:
            inner = block.forward

            def forward(*args, _inner=inner, **kwargs):
                entry = kwargs.get("past_kv_cache_entry")
                if not torch.is_grad_enabled() or (entry is not None and not entry.frozen):
                    return _inner(*args, **kwargs)
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

            block.forward = forward
        yield
    finally:
        for block in blocks:
            vars(block).pop("forward", None)


class StagePeaks(PeakRSS):
    """:class:`PeakRSS` split by stage: :meth:`begin` names the stage that the samples count for.

    The resident size can fall while a stage runs (the garbage collector frees an earlier
    stage's objects), so a stage's peak is the largest size sampled during it, not the
    memory its own allocations took; the overall :attr:`peak` is at least every stage's.

    Example:
        >>> with StagePeaks(interval=0.01) as peaks:
        ...     peaks.begin("load")
        ...     block = bytearray(50_000_000)
        ...     peaks.begin("edit")
        >>> sorted(peaks.by_stage), peaks.peak >= max(peaks.by_stage.values()) > 0
        (['edit', 'load'], True)
    """

    def __init__(self, interval: float = 0.01):
        super().__init__(interval)
        self.by_stage: dict[str, int] = {}
        self.cuda_by_stage: dict[str, int] = {}  # peak allocated GPU memory per stage (CUDA in use only)
        self._stage: str | None = None
        self._lock = threading.Lock()

    def begin(self, stage: str) -> None:
        """Samples from now on count for ``stage`` (the previous stage gets a last sample)."""
        now = rss()
        with self._lock:
            self._count(now)
            self._cuda_stage_end()
            self._stage = stage
            self._count(now)

    def _cuda_stage_end(self) -> None:
        """The ending stage's peak of ``torch.cuda.max_memory_allocated`` (the RSS leaves out GPU
        memory), then the counter reset for the next stage; nothing where CUDA is not in use.
        The reset is process-wide: after a :class:`StagePeaks` block (every unit of
        :func:`~factlens.runner.pipeline.run_localization`), ``torch.cuda.max_memory_allocated()``
        holds the peak since its last stage began, not the process's (read
        :attr:`cuda_by_stage` instead)."""
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return
        if self._stage is not None:
            self.cuda_by_stage[self._stage] = max(self.cuda_by_stage.get(self._stage, 0),
                                                  int(torch.cuda.max_memory_allocated()))
        torch.cuda.reset_peak_memory_stats()

    def _count(self, now: int) -> None:
        self.peak = max(self.peak, now)
        if self._stage is not None:
            self.by_stage[self._stage] = max(self.by_stage.get(self._stage, 0), now)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = rss()
            with self._lock:
                self._count(now)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        with self._lock:
            self._count(rss())
            self._cuda_stage_end()

    def gb(self) -> dict[str, float]:
        """Peak per stage in GB (10^9 bytes), rounded to 0.01."""
        return {k: round(v / 1e9, 2) for k, v in self.by_stage.items()}

    def cuda_gb(self) -> dict[str, float]:
        """Peak allocated GPU memory per stage in GB (empty without CUDA)."""
        return {k: round(v / 1e9, 2) for k, v in self.cuda_by_stage.items()}


#: Byte alignment of each tensor in a :func:`mapped_copies` file (any dtype's element size divides it).
_ALIGN = 64


def mapped_copies(tensors: Mapping[str, torch.Tensor], folder: str | Path) -> dict[str, torch.Tensor]:
    """Bitwise copies of CPU tensors backed by one file in ``folder``, resident only where read.

    The tensors are written to a hidden temporary file in ``folder``, which is mapped
    privately (``torch.from_file(..., shared=False)``: pages are read from the file when a
    copy is first read, and writing into a copy changes this process's page, never the file)
    and unlinked at once, so nothing stays on disk and the space is freed with the last copy
    (where a mapped file cannot be deleted, a warning names it).
    Tensors not on the CPU are returned as they are; the copies are row-major (a tensor
    stored in another layout is written one tensor at a time, so at most one tensor's
    row-major copy is in memory at once). The caller drops its references to the
    originals to free their memory. ``folder`` should be on disk: on a memory-backed file
    system (``tmpfs``, which ``/tmp`` is on some systems) the file stays in memory.

    Example:
        >>> import tempfile
        >>> t = {"a": torch.arange(6.0).reshape(2, 3).T, "m": torch.tensor([True, False])}
        >>> c = mapped_copies(t, tempfile.mkdtemp())
        >>> all(torch.equal(c[k], t[k]) and c[k].dtype == t[k].dtype for k in t), c["a"].shape
        (True, torch.Size([3, 2]))
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"mapped_copies: {folder} is not an existing folder; pass a folder on disk (the run "
                                "folder, for example) to hold the temporary file")
    cpu = {k: t.detach() for k, t in tensors.items() if t.device.type == "cpu"}
    out = {k: t for k, t in tensors.items() if k not in cpu}
    offsets, total = {}, 0
    for k, t in cpu.items():
        offsets[k] = total
        total += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    if total == 0:
        return {**out, **{k: t.clone() for k, t in cpu.items()}}
    fd, name = tempfile.mkstemp(prefix=".factlens-mapped.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for k, t in cpu.items():  # one row-major copy at a time (at most one tensor's size in memory)
                f.seek(offsets[k])
                f.write(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
            f.truncate(total)
        buf = torch.from_file(name, shared=False, size=total, dtype=torch.uint8)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    try:
        os.unlink(name)  # the mapping keeps the data (POSIX)
    except OSError as e:  # a mapped file cannot be deleted on some systems (Windows)
        warnings.warn(f"could not delete the temporary file {name} while it is mapped ({e}); delete it once this "
                      "process has ended", RuntimeWarning, stacklevel=2)
    for k, t in cpu.items():
        n = t.numel() * t.element_size()
        out[k] = buf[offsets[k]:offsets[k] + n].view(t.dtype).view(t.shape)
    return {k: out[k] for k in tensors}


def check_folder(folder: str | Path | None) -> None:
    """Raise ``FileNotFoundError`` now when ``folder`` is given but is not an existing folder
    (before an editor spends minutes on work that would then fail to keep its copies)."""
    if folder is not None and not Path(folder).is_dir():
        raise FileNotFoundError(f"offload={str(folder)!r} is not an existing folder; pass a folder on disk (the run "
                                "folder, for example) or None to keep the copies in memory")


def kept_copies(tensors: Mapping[str, torch.Tensor], folder: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Bitwise copies of ``tensors`` that an editor keeps to restore them: in memory (``clone``,
    same layout) when ``folder`` is ``None``, else :func:`mapped_copies` in ``folder`` (row-major,
    resident only where read).

    An editor reads these copies only to undo a failed edit, to build the edit's record and,
    for masked fine-tuning with an uncached KL reference, to run the original model; keeping
    them in a file spares their size in memory for the whole edit (0.4 GB for the
    non-localized edit of Gemma 3 270M). Tensors on other devices (CUDA) are cloned on their
    device, as without a folder. A folder that cannot take the file (a full disk)
    means copies in memory, with a ``RuntimeWarning``; a missing folder raises
    ``FileNotFoundError``.

    Example:
        >>> import tempfile
        >>> t = {"w": torch.arange(6.0).reshape(2, 3)}
        >>> a, b = kept_copies(t), kept_copies(t, tempfile.mkdtemp())
        >>> torch.equal(a["w"], t["w"]) and torch.equal(b["w"], t["w"]), a["w"].data_ptr() != t["w"].data_ptr()
        (True, True)
    """
    check_folder(folder)
    cpu = {k: t for k, t in tensors.items() if t.device.type == "cpu"}
    out: dict[str, torch.Tensor] = {}
    if folder is not None and cpu:
        try:
            out = mapped_copies(cpu, folder)
        except OSError as e:  # a full disk: the copies are an optimization, the edit need not fail for it
            warnings.warn(f"keeping the copies in memory: they could not be written to {folder} ({e})", RuntimeWarning,
                          stacklevel=2)
    return {k: out[k] if k in out else t.detach().clone() for k, t in tensors.items()}  # other devices: clones there
