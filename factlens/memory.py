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
"""

from __future__ import annotations

import ctypes
import gc
from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["release_memory", "checkpointed_blocks"]


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
