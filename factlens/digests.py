"""Digests of tensors' bytes that stay cheap on large models and on GPUs.

* :func:`content_digests`: for checks within a process (did a weight change?). Per piece of a
  tensor, the sum over its 4-byte words of ``mix(word) * weight[position]`` in wrapping int64
  arithmetic, with odd pseudo-random position weights and ``mix`` a one-to-one scrambling of
  the word (a multiplication by an odd constant, then an xor with its own high bits shifted
  down). A single changed word always changes the sum (``mix`` changes, and an odd weight
  times a nonzero difference is never 0 modulo 2**64); several changed words go unnoticed
  only if their weighted changes cancel modulo 2**64. Without ``mix`` they did far too often:
  a change of bit 31 of a word counts only through the low 33 bits of its weight, so flipping
  the signs of two values (or swapping ``x`` and ``-x``) went unnoticed at 123 position
  pairs of a 2**20-word piece. It is a checksum against accidental changes, not a
  cryptographic hash. It runs where the tensor is (nothing is copied to the host) and depends
  on the values in row-major order only, not on the strides. The
  :class:`~factlens.evaluation.BaselineCache`'s fingerprint uses it.
* :func:`weight_digests`: the runner's check that an edit changed no parameter outside its
  record (:class:`~factlens.runner.pristine.OriginalView`, every parameter after each edit
  and each revert): content digests on a GPU, sha256 on the host. It used to copy every
  parameter to the host and sha256 it on one thread wherever the model was: at Gemma 3 1B's
  shape on this CPU 5.5 s of a 38.7 s edit stage (``python benchmarks/main_job.py --scaling
  --sizes gemma3-1b --scaling-suites standard --profile DIR``), a cost that grows with the
  whole model, not with the mask; on a GPU that is a host copy of every weight (20 GB for the
  Gemma-2-9B shape) at every check.
* :func:`update_with_tensor`: a tensor's row-major bytes fed into a ``hashlib`` object a piece
  at a time, for digests that are saved and compared across processes and versions (an
  edit's ``original_fingerprint``, the key-statistics cache's file names). It gives the
  digest of the whole tensor's bytes, copying at most one piece to the host at once.

Example:
    >>> import hashlib, torch
    >>> t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    >>> h = hashlib.sha256(); h.update(t.numpy().tobytes())
    >>> h2 = hashlib.sha256(); update_with_tensor(h2, t.t().contiguous().t(), chunk_bytes=8)
    >>> h.hexdigest() == h2.hexdigest()
    True
    >>> a = content_digests({"t": t}); t[1, 2] += 1; a == content_digests({"t": t})
    False
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterator, Mapping

import torch
from torch import Tensor

__all__ = ["content_digests", "weight_digests", "update_with_tensor", "DEFAULT_WORDS", "DEFAULT_CHUNK_BYTES"]

#: Odd 64-bit multipliers of the position weights (splitmix64's constants as signed int64).
_MIX = (-7046029254386353131, 7145878131446345753, -4658895280553007687)

#: The low 35 bits (a logical right shift by 29 of an int64, which torch shifts arithmetically).
_LOW35 = (1 << 35) - 1

#: 4-byte words per piece of :func:`content_digests` (three int64 vectors of this length
#: per device, 24 MB). Part of the digest: pieces of another length give other digests.
DEFAULT_WORDS = 2**20

#: The most bytes of one tensor :func:`update_with_tensor` copies to the host at once (64 MiB).
DEFAULT_CHUNK_BYTES = 64 << 20


def _flat(x: Tensor) -> Tensor:
    """``x`` as a 1-D tensor of stride 1 (a view where it can be; one element of a strided tensor
    counts as contiguous but keeps its stride, which a byte view refuses)."""
    x = x.reshape(-1)
    return x if x.numel() == 0 or x.stride(0) == 1 else x.clone(memory_format=torch.contiguous_format)


def _pieces(t: Tensor, max_bytes: int) -> Iterator[Tensor]:
    """``t``'s elements in row-major order as contiguous 1-D pieces of at most ``max_bytes``
    (views of a contiguous tensor; a non-contiguous one is copied a few rows at a time, on its
    device, by :func:`_blocks`; a single row longer than that is split)."""
    n = max(1, max_bytes // t.element_size())
    for _, block in _blocks(t, n, 1):
        yield from block.split(n)


def _position_weights(n: int, device) -> Tensor:
    """``n`` pseudo-random odd int64 weights, one per position of a piece (the same on every device)."""
    w = torch.arange(n, dtype=torch.int64, device=device) * _MIX[0] + _MIX[1]
    return (w ^ (w >> 31)) * _MIX[2] | 1


def _blocks(t: Tensor, n: int, per_word: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, block)``: ``t``'s elements in row-major order as contiguous 1-D blocks, with the
    flat index of each block's first element. A contiguous tensor gives pieces of ``n``
    elements (views); a non-contiguous one is copied a few rows at a time, each block starting
    at a multiple of ``per_word`` (the elements of a 4-byte word)."""
    if t.is_contiguous():
        flat = _flat(t)
        for start in range(0, flat.numel(), n):
            yield start, flat[start:start + n]
        return
    row = max(1, t[0].numel())
    step = per_word // math.gcd(row, per_word)  # rows per block come in steps that fill whole words
    rows = max(step, n // row // step * step)
    for i in range(0, t.shape[0], rows):
        yield i * row, _flat(t[i:i + rows].contiguous())


def _content_digest(t: Tensor, weights: Tensor, scratch: Tensor, spare: Tensor) -> bytes:
    """The digest of one tensor (see the module docs): per piece of ``weights.numel()`` words of
    its row-major bytes, the weighted sum of the mixed words, plus the 1-3 bytes after the last
    whole word. It depends on the values in row-major order only, not on the strides."""
    size = t.element_size()
    n = max(1, weights.numel() * 4 // size)  # elements per piece
    sums: dict[int, Tensor] = {}
    tail = b""
    for start, block in _blocks(t.detach(), n, max(1, 4 // size)):
        lo, end = start, start + block.numel()
        while lo < end:
            cut = min(end, (lo // n + 1) * n)  # the part of block within one piece
            raw = block[lo - start:cut - start].view(torch.uint8)
            n4 = raw.numel() // 4
            if n4:
                try:
                    word = raw[: 4 * n4].view(torch.int32)
                except RuntimeError:  # a view whose start is not 4-byte aligned
                    word = raw[: 4 * n4].clone().view(torch.int32)
                at = (lo % n) * size // 4  # the part's first word within its piece
                acc, tmp = scratch[:n4], spare[:n4]
                acc.copy_(word).mul_(_MIX[2])  # an odd factor: one-to-one on int64
                torch.bitwise_right_shift(acc, 29, out=tmp)
                acc.bitwise_xor_(tmp.bitwise_and_(_LOW35))  # one-to-one; high bits reach the low ones
                part = acc.mul_(weights[at:at + n4]).sum()
                k = lo // n
                sums[k] = part if k not in sums else sums[k] + part
            if raw.numel() > 4 * n4:
                tail = raw[4 * n4:].cpu().numpy().tobytes()  # only the tensor's last part can end mid-word
            lo = cut
    head = torch.stack([sums[k] for k in sorted(sums)]).cpu().numpy().tobytes() if sums else b""
    return head + b"|" + tail


def content_digests(tensors: Mapping[str, Tensor], *, words: int = DEFAULT_WORDS) -> dict[str, bytes]:
    """The content digest (see the module docs) of each tensor, by name, computed on its device.

    A tensor on the ``meta`` device or without elements gets ``b""`` (no content); include the
    dtype and shape in what is compared when they matter.
    """
    if words < 4:
        raise ValueError(f"words must be at least 4 (a piece holds at least one element of up to 16 bytes), got {words}")
    tools: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
    out = {}
    with torch.no_grad():
        for name, t in tensors.items():
            if t.numel() == 0 or t.device.type == "meta":
                out[name] = b""
                continue
            if t.device not in tools:
                tools[t.device] = (_position_weights(words, t.device),
                                   torch.empty(words, dtype=torch.int64, device=t.device),
                                   torch.empty(words, dtype=torch.int64, device=t.device))
            out[name] = _content_digest(t, *tools[t.device])
    return out


def weight_digests(tensors: Mapping[str, Tensor]) -> dict[str, bytes]:
    """A digest of each tensor (device type, dtype, shape and every bit of its values), by name,
    for checks that a weight did not change within a process.

    On the host the sha256 of the tensor's row-major bytes (:func:`update_with_tensor`: one pass,
    hashed in place, on no torch thread; at Gemma 3 1B's shape, beside another job on this 2-core
    machine, the content digest's int64 passes, before the mixing, took 15.8 s per check where a
    host copy and sha256 took 8.9 s); on any other device the :func:`content_digests` (computed
    there, no host copy). Digests of the same tensor on two devices differ: compare digests
    taken on one.
    """
    on_host = {n: t for n, t in tensors.items() if t.device.type == "cpu"}
    elsewhere = content_digests({n: t for n, t in tensors.items() if n not in on_host})
    out = {}
    for name, t in tensors.items():
        head = f"{t.device.type}|{t.dtype}|{tuple(t.shape)}|".encode()
        if name in elsewhere:
            out[name] = head + elsewhere[name]
        else:
            h = hashlib.sha256()
            update_with_tensor(h, t)
            out[name] = head + h.digest()
    return out


def update_with_tensor(h, t: Tensor, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    """Feed ``t``'s row-major bytes (``t.contiguous()``'s memory) into the hash object ``h``.

    Gives the digest ``h.update(t.cpu().contiguous().numpy().tobytes())`` would, without a
    host copy of the whole tensor: at most ``chunk_bytes`` (or one row of a non-contiguous
    tensor) is copied at a time; a contiguous CPU tensor is hashed in place.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    if t.numel() == 0:
        return
    with torch.no_grad():
        for piece in _pieces(t.detach(), chunk_bytes):
            h.update(memoryview(piece.to("cpu").view(torch.uint8).numpy()))
