"""The quantization schemes' arithmetic on ``[out, in]`` weight matrices (int8, nf4, int4).

The code books (:data:`NF4_CODE`, :data:`INT4_CODE`), the round trip
(:func:`quantize_matrix`), the stored codes (:func:`quantize_codes`) and the bin widths
(:func:`bin_widths`) of one matrix, in pure torch, following bitsandbytes 0.50 step by step.
Split from :mod:`factlens.evaluation.quantization` (whose module docstring describes the
schemes) to keep it small; that module imports these names back, and the attack, the mapping of
TransformerLens weights and the bitsandbytes backend stay there.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NF4_CODE", "INT4_CODE", "SCHEMES", "quantize_codes", "quantize_matrix", "bin_widths"]

#: The 16 NormalFloat-4 values of bitsandbytes (``get_4bit_type("nf4")``; QLoRA, Dettmers et al. 2023).
NF4_CODE: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
#: The 15 levels of symmetric absmax int4: ``k / 7`` for ``k = -7 .. 7``.
INT4_CODE: tuple[float, ...] = tuple(k / 7 for k in range(-7, 8))
#: Quantization schemes.
SCHEMES: tuple[str, ...] = ("int8", "nf4", "int4")

_INT8_INV = 7.874015718698502e-3  # float32(1/127), bitsandbytes' int8_vectorwise_dequant


def _code(scheme: str, device) -> Tensor:
    if scheme in ("nf4", "int4"):
        return torch.tensor(NF4_CODE if scheme == "nf4" else INT4_CODE, dtype=torch.float32, device=device)
    raise ValueError(f"unknown block scheme {scheme!r}; block schemes: 'nf4', 'int4'")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; known: {list(SCHEMES)}")


def _blocks(M: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Scaled values in [-1, 1] and the absmax of each entry's block (flattened, as bitsandbytes)."""
    flat = M.reshape(-1).float()
    n = flat.numel()
    rem = n % block_size
    full = n - rem
    com = flat[:full].reshape(-1, block_size)
    absmax = com.abs().amax(dim=-1)
    scaled = torch.clamp(com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
    return scaled, absmax.repeat_interleave(block_size)[:n]


def _check_finite(what: str, M: Tensor) -> None:
    """Refuse weights holding NaN or inf: their absmax is not a number, and the schemes give
    silently different answers for them (factlens's int8 zeroed such a row, bitsandbytes gives
    NaN), so an attack on a damaged model would report numbers about nothing."""
    bad = int((~torch.isfinite(M)).sum())
    if bad:
        raise ValueError(f"{what} has {bad} NaN or inf entries: quantizing it is undefined. The model's weights are "
                         "damaged; reload the model (an edit that diverges stops with an error before it gets here)")


def _check_matrix(fn: str, M: Tensor, scheme: str, block_size: int, *, what: str | None = None) -> None:
    """Scheme, shape, block size and finite entries (``what`` names the matrix in the error)."""
    _check_scheme(scheme)
    if M.ndim != 2:
        raise ValueError(f"{fn} expects an [out, in] matrix, got shape {tuple(M.shape)}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    _check_finite(what or f"the matrix given to {fn}", M)


def _int8_input(M: Tensor) -> Tensor:
    """``M`` rounded to float16 (in float32): the weights LLM.int8() quantizes.

    bitsandbytes' ``Int8Params`` casts a layer's weight to float16 before its
    ``int8_vectorwise_quant`` on every device (the CUDA kernel refuses anything else), so a model
    loaded in 8 bits stores the codes of the float16 weights, which differ from those of float32
    or bfloat16 weights near bin edges (0.7-0.9 % of the codes of random matrices, against
    bitsandbytes 0.50 on an H200, 2026-12-04).
    """
    M16 = M.to(torch.float16)
    if (torch.isfinite(M) & ~torch.isfinite(M16)).any():  # finite entries float16 cannot hold
        raise ValueError(f"int8 (LLM.int8) quantizes float16 weights; this [{M.shape[0]}, {M.shape[1]}] matrix has "
                         f"entries beyond float16's range (|w| up to {float(M.float().abs().max()):.4g} > 65504), "
                         "which bitsandbytes would turn into inf; use scheme 'nf4' or 'int4' for it")
    return M16.float()


def quantize_matrix(M: Tensor, scheme: str, *, block_size: int = 64) -> Tensor:
    """Round-trip an ``[out, in]`` weight matrix through ``scheme`` (quantize, then dequantize).

    Returns a tensor of ``M``'s shape and dtype (the arithmetic is float32).

    Example:
        >>> M = torch.tensor([[2.0, -1.2, 0.5, 0.05]])
        >>> quantize_matrix(M, "nf4", block_size=4)  # / absmax 2 -> nearest NF4 value -> * 2
        tensor([[ 2.0000, -1.0501,  0.4922,  0.0000]])
        >>> quantize_matrix(M, "int4", block_size=4)  # levels k / 7 of the absmax
        tensor([[ 2.0000, -1.1429,  0.5714,  0.0000]])
    """
    _check_matrix("quantize_matrix", M, scheme, block_size)
    return _quantize_matrix(M, scheme, block_size)


def _quantize_matrix(M: Tensor, scheme: str, block_size: int) -> Tensor:
    """:func:`quantize_matrix` of a checked matrix (each check is a pass over the weight)."""
    if scheme == "int8":
        M32 = _int8_input(M)
        row = M32.abs().amax(dim=1)  # per output row (M32 is float32)
        q = torch.round(M32 * (127.0 / row.unsqueeze(-1)))
        out = q * row.view(-1, 1) * _INT8_INV
        out = torch.where(row.view(-1, 1) > 0, out, torch.zeros_like(out))
        return out.to(M.dtype)
    code = _code(scheme, M.device)
    scaled, absmax = _blocks(M, block_size)
    q = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2, out_int32=True)
    return (code[q.long()] * absmax).reshape(M.shape).to(M.dtype)


def quantize_codes(M: Tensor, scheme: str, *, block_size: int = 64) -> Tensor:
    """The integer code each entry of ``M`` (``[out, in]``) is stored as under ``scheme``.

    int8: ``round(w * 127 / absmax_row)`` of the float16-rounded weights (0 in an all-zero row);
    nf4 / int4: the index of the nearest code value of the block-scaled entry. Two matrices with equal codes quantize to
    the same values up to their block scales: what :mod:`~factlens.evaluation.update_size`
    counts as an update rounding erases (a change of a block's absmax moves every dequantized
    value of the block by at most that change, the update's own size).

    Example:
        >>> M = torch.tensor([[2.0, -1.2, 0.5, 0.05]])
        >>> quantize_codes(M, "int4", block_size=4)  # levels k / 7 of the absmax: 7, -4, 2, 0
        tensor([[14,  3,  9,  7]], dtype=torch.int32)
    """
    _check_matrix("quantize_codes", M, scheme, block_size)
    return _quantize_codes(M, scheme, block_size)


def _quantize_codes(M: Tensor, scheme: str, block_size: int) -> Tensor:
    """:func:`quantize_codes` of a checked matrix."""
    if scheme == "int8":
        M32 = _int8_input(M)
        row = M32.abs().amax(dim=1).view(-1, 1)
        q = torch.round(M32 * (127.0 / row.clamp(min=1e-38)))
        return torch.where(row > 0, q, torch.zeros_like(q)).to(torch.int32)
    code = _code(scheme, M.device)
    scaled, _ = _blocks(M, block_size)
    return torch.bucketize(scaled, (code[:-1] + code[1:]) / 2, out_int32=True).reshape(M.shape)


def bin_widths(M: Tensor, scheme: str, *, block_size: int = 64) -> Tensor:
    """Width of the quantization bin each entry of ``M`` (``[out, in]``) falls in, in weight units.

    int8: the step ``absmax_row / 127``. nf4 / int4: the interval of values rounded to the
    entry's code value (between the midpoints to its neighbours, up to +-1 at the ends)
    times the block's absmax; NF4 bins are narrow near zero and wide near +-absmax.

    Example:
        >>> M = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
        >>> w = bin_widths(M, "nf4", block_size=4)  # around code 1.0 / around code 0.0
        >>> round(float(w[0, 0]), 4), round(float(w[0, 1]), 4)
        (0.277, 0.1706)
    """
    _check_matrix("bin_widths", M, scheme, block_size)
    return _bin_widths(M, scheme, block_size)


def _bin_widths(M: Tensor, scheme: str, block_size: int) -> Tensor:
    """:func:`bin_widths` of a checked matrix."""
    if scheme == "int8":
        return (_int8_input(M).abs().amax(dim=1) / 127.0).view(-1, 1).expand(M.shape).clone()
    code = _code(scheme, M.device)
    mids = (code[:-1] + code[1:]) / 2
    edges = torch.cat([code[:1], mids, code[-1:]])
    scaled, absmax = _blocks(M, block_size)
    q = torch.bucketize(scaled, mids, out_int32=True).long()
    return ((edges[q + 1] - edges[q]) * absmax).reshape(M.shape)
