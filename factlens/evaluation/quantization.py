"""The quantization attack (Zhang et al., ICLR 2025, "Catastrophic failure of LLM unlearning via quantization").

An unlearning or editing update that is smaller than the quantization step is rounded
away: the original and the edited weight fall into the same bin, so the quantized edited
model *is* the quantized original there, and the facts come back. This suite rounds the
model's linear weights through the formats people deploy in and measures the forget /
edit / maintain accuracy of the quantized model, next to the quantized **unedited** model
(the control: a format that damages the original tells nothing about the edit).

Schemes (pure torch, CPU or GPU; the arithmetic follows bitsandbytes 0.50 step by step):

* ``"int8"``: absmax per output row (LLM.int8() without outliers): ``q = round(w * 127 /
  absmax_row)``, ``w' = q * absmax_row / 127``, on the weights rounded to float16 first, as
  bitsandbytes' ``Int8Params`` does on every device when a model is loaded in 8 bits (its CUDA
  kernel takes float16 only).
* ``"nf4"``: blocks of ``block_size`` (64) consecutive weights of the flattened
  ``[out, in]`` matrix; each weight divided by its block's absmax is rounded to the nearest
  of the 16 NormalFloat-4 values :data:`NF4_CODE` (QLoRA), ``w' = code * absmax``.
* ``"int4"``: the same blocks with the 15 symmetric levels ``k / 7``, ``k = -7..7``
  (absmax int4).

Quantized weights (:data:`QUANTIZED_WEIGHTS`): attention ``W_Q``, ``W_K``, ``W_V`` (grouped
``_W_K``/``_W_V`` too), ``W_O`` and MLP ``W_in``, ``W_gate``, ``W_out``, as bitsandbytes
quantizes ``nn.Linear`` layers; embeddings, unembedding, biases and norms stay as they are.
Each TransformerLens weight is viewed as the ``[out_features, in_features]`` matrix of the
corresponding Hugging Face linear layer before blocking (e.g. ``W_in [d_model, d_mlp]``
-> ``up_proj.weight [d_mlp, d_model]``), so blocks and rows are the ones bitsandbytes would
use on the Hugging Face checkpoint. TransformerLens folds the RMS norms' scales into the
weights after them when it loads a model (``W_Q/W_K/W_V`` take ``ln1``'s, ``W_in/W_gate``
``ln2``'s: input dimension ``i`` times ``s_i``), while bitsandbytes quantizes the checkpoint's
own weights and applies the norm at run time. Where :func:`factlens.models.fold_scales` knows
the scales (RMS-norm models loaded by :func:`factlens.load_model`, on any device and in any
dtype), the suite quantizes ``Q(W / s) * s``, the folded view of what bitsandbytes
computes; entries whose scale is 0 have no checkpoint counterpart and are kept as they are.
Without the scales (``extra["norm_scales"]`` says so) the folded weights themselves are
quantized, which on Gemma 3 270M cost the unedited model 28 of 96 Sports-Unlearning facts under
int8 instead of 2 (Gemma's norm scales run from 0 to 122 within one matrix, so one block mixes
weights of very different sizes).

The caller's model is never changed: each scheme builds a copy whose modules are new and
whose non-quantized weights share the model's memory (:func:`~factlens.evaluation.relearning.shared_copy`);
only the quantized weights are new tensors (one extra copy of the linear weights, freed
before the next scheme).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from factlens.config import ConfigBase, check_numbers
from factlens.evaluation.attacks import (DAMAGE_TOLERANCE, TaskScores, attack_damage, attack_metrics, fact_rows,
                                       metric_prefix, outcome_columns, score_task, suite_settings, task_key)
from factlens.evaluation.baseline_cache import BaselineCache, bound, cached, config_key
from factlens.evaluation.lora import DEFAULT_TARGETS
from factlens.evaluation.quantization_schemes import (INT4_CODE, NF4_CODE, SCHEMES, _check_matrix, _check_scheme,
                                                      _quantize_matrix, bin_widths, quantize_codes, quantize_matrix)
from factlens.evaluation.quantization_schemes import _bin_widths, _check_finite, _quantize_codes  # noqa: F401 (update_size)
from factlens.evaluation.result import Metric, SuiteResult
from factlens.progress_bars import progress_bar

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests QuantizationConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["NF4_CODE", "INT4_CODE", "SCHEMES", "QUANTIZED_WEIGHTS", "QuantizationConfig", "linear_view", "norm_scale",
           "from_linear_view", "quantize_codes", "quantize_matrix", "quantize_weight", "bin_widths", "quantized_params", "quantized_copy",
           "run_quantization"]

#: Short names of the quantized weights (the linear layers of the blocks).
QUANTIZED_WEIGHTS: tuple[str, ...] = DEFAULT_TARGETS

_HEAD_IN = ("W_Q", "W_K", "W_V")  # [head, d_model, d_head]
_HEAD_OUT = ("W_O",)  # [head, d_head, d_model]


def _short(name: str) -> str:
    return name.split(".")[-1].lstrip("_")


def linear_view(name: str, W: Tensor) -> Tensor:
    """The ``[out_features, in_features]`` matrix of a TransformerLens weight (a view or a transposed copy).

    ``W_Q/W_K/W_V [h, d_model, d_head]`` -> ``[h * d_head, d_model]``; ``W_O [h, d_head, d_model]``
    -> ``[d_model, h * d_head]``; ``W_in/W_gate [d_model, d_mlp]`` -> ``[d_mlp, d_model]``;
    ``W_out [d_mlp, d_model]`` -> ``[d_model, d_mlp]``.

    Example:
        >>> W = torch.arange(2 * 3 * 4.).reshape(2, 3, 4)  # W_Q: 2 heads, d_model 3, d_head 4
        >>> M = linear_view("blocks.0.attn.W_Q", W)
        >>> tuple(M.shape), torch.equal(M[4 + 1], W[1, :, 1])  # row h * d_head + j is head h's column j
        ((8, 3), True)
        >>> torch.equal(from_linear_view("blocks.0.attn.W_Q", M, W.shape), W)
        True
    """
    short = _short(name)
    if W.ndim == 3 and short in _HEAD_IN:
        h, d, k = W.shape
        return W.permute(0, 2, 1).reshape(h * k, d)
    if W.ndim == 3 and short in _HEAD_OUT:
        h, k, d = W.shape
        return W.reshape(h * k, d).T
    if W.ndim == 2:
        return W.T
    raise ValueError(f"cannot view {name} of shape {tuple(W.shape)} as a linear layer's weight; quantized weights are "
                     f"{QUANTIZED_WEIGHTS}")


def from_linear_view(name: str, M: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`linear_view`: the ``[out, in]`` matrix back in TransformerLens shape ``shape``."""
    short, shape = _short(name), tuple(shape)
    if len(shape) == 3 and short in _HEAD_IN:
        h, d, k = shape
        return M.reshape(h, k, d).permute(0, 2, 1).contiguous()
    if len(shape) == 3 and short in _HEAD_OUT:
        h, k, d = shape
        return M.T.reshape(h, k, d).contiguous()
    if len(shape) == 2:
        return M.T.contiguous()
    raise ValueError(f"cannot map a matrix back to {name} of shape {shape}")


def _check_backend(backend: str) -> None:
    """Raise at once, naming the fix, when ``backend="bitsandbytes"`` but bitsandbytes cannot be
    imported (the suite failed only at its first quantized weight, after scoring the model, with a
    bare ``ModuleNotFoundError``)."""
    if backend != "bitsandbytes":
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError("QuantizationConfig(backend='bitsandbytes') needs bitsandbytes, which cannot be imported "
                          f"({e}): pip install bitsandbytes, or use backend='torch' (the same int8 and nf4 "
                          "arithmetic in pure torch, on every device)") from e


def _bnb_matrix(M: Tensor, scheme: str, block_size: int) -> Tensor:
    """The same round trip with bitsandbytes (int8 and nf4; ImportError when it is not installed)."""
    import bitsandbytes
    import bitsandbytes.functional as bf

    if scheme == "int8":
        # float16, as its Int8Params gives it (on CUDA float32 was refused: 'A must be float16')
        q, stats, _ = bf.int8_vectorwise_quant(M.to(torch.float16).contiguous())
        return bf.int8_vectorwise_dequant(q, stats).to(M.dtype)
    if scheme == "nf4":
        q, state = bf.quantize_4bit(M.float().contiguous(), blocksize=block_size, quant_type="nf4")
        out = bf.dequantize_4bit(q, state)
        if not state.nested and not torch.equal(out.reshape(-1), _nf4_blocks_dequant(q, state, M.numel())):
            warnings.warn(
                f"bitsandbytes {bitsandbytes.__version__} dequantized a [{M.shape[0]}, {M.shape[1]}] matrix on "
                f"{M.device} with other blocks' scales than its quantization used (consecutive blocks of "
                f"{block_size} weights; bitsandbytes 0.50's CPU kernel does so for rows whose length is a multiple "
                "of 16 but not of the block size, and every weight of Gemma, Llama and GPT-2 has rows that are "
                "multiples of 64). The weights below are bitsandbytes' own output; "
                "QuantizationConfig(backend='torch') follows the blocks of the quantization",
                UserWarning, stacklevel=3)
        return out.to(M.dtype)
    raise ValueError(f"bitsandbytes has no {scheme!r} scheme; use backend='torch'")


def _nf4_blocks_dequant(packed: Tensor, state, n: int) -> Tensor:
    """bitsandbytes' packed 4-bit codes (high nibble first) times their block's absmax, blocks
    of consecutive weights: the dequantization its quantization implies (and its CUDA kernel
    and generic backend compute)."""
    b = packed.reshape(-1).to(torch.uint8)
    codes = torch.stack([b >> 4, b & 0xF], dim=1).reshape(-1)[:n].long()
    absmax = state.absmax.float().repeat_interleave(state.blocksize)[:n]
    return state.code.to(absmax.device)[codes] * absmax


def quantize_weight(name: str, W: Tensor, scheme: str, *, block_size: int = 64, backend: str = "torch",
                    scale: Tensor | None = None) -> Tensor:
    """Round-trip one TransformerLens weight (``W_in``, ``W_Q``...) as its linear layer would be quantized.

    ``scale``: the norm scale folded into the weight's input dimension (:func:`norm_scale`);
    given, the checkpoint's weight ``W / s`` is quantized and folded back (``Q(W / s) * s``),
    and entries whose scale is 0 are kept as they are.

    Example:
        >>> W = torch.randn(8, 64)  # W_in: d_model 8, d_mlp 64
        >>> s = torch.tensor([0.1, 1, 2, 3, 4, 5, 6, 100.0])
        >>> folded = quantize_weight("blocks.0.mlp.W_in", W * s[:, None], "nf4", scale=s)
        >>> torch.allclose(folded, quantize_weight("blocks.0.mlp.W_in", W, "nf4") * s[:, None])
        True
    """
    M = linear_view(name, W.detach())
    _check_matrix(f"quantize_weight ({name})", M, scheme, block_size, what=f"weight {name}")
    s = None if scale is None else scale.detach().to(device=M.device, dtype=M.dtype)
    if s is not None and s.shape != (M.shape[1],):
        raise ValueError(f"the norm scale of {name} has shape {tuple(s.shape)}; its input dimension is {M.shape[1]}")
    U = M if s is None else unfold(M, s)
    Q = _bnb_matrix(U, scheme, block_size) if backend == "bitsandbytes" else _quantize_matrix(U, scheme, block_size)
    if s is not None:
        Q = torch.where(s != 0, Q * s, M)
    return from_linear_view(name, Q, W.shape)


def unfold(M: Tensor, s: Tensor) -> Tensor:
    """The checkpoint's ``[out, in]`` matrix of a folded one: ``M / s`` along the input dimension,
    0 where the scale is 0 (no checkpoint counterpart)."""
    return torch.where(s != 0, M / torch.where(s != 0, s, 1), 0)


#: The norm whose scale TransformerLens folds into each weight's input dimension.
_FOLDED_NORM = {"W_Q": "ln1", "W_K": "ln1", "W_V": "ln1", "W_in": "ln2", "W_gate": "ln2"}


def norm_scale(scales: dict[str, Tensor] | None, name: str) -> Tensor | None:
    """The norm scale folded into weight ``name``'s input dimension, from
    :func:`factlens.models.fold_scales` (``None``: none recorded, or a weight no norm precedes:
    ``W_O``, ``W_out``).

    Example:
        >>> s = {"blocks.2.ln2.w": torch.ones(4)}
        >>> norm_scale(s, "blocks.2.mlp.W_in").shape, norm_scale(s, "blocks.2.mlp.W_out")
        (torch.Size([4]), None)
    """
    parts = name.split(".")
    norm = _FOLDED_NORM.get(_short(name))
    if not scales or norm is None or len(parts) < 2 or parts[0] != "blocks":
        return None
    return scales.get(f"blocks.{parts[1]}.{norm}.w")


def norm_scales_note(model) -> str:
    """How the suite treats the folded norms of ``model``: ``"unfolded"`` (scales recorded),
    ``"none folded"`` (the model's norms were not folded into its weights) or a sentence saying
    that the folded weights are quantized because the scales are unknown."""
    from factlens.models import fold_scales

    if fold_scales(model):
        return "unfolded"
    if str(getattr(model.cfg, "normalization_type", None)) not in ("RMSPre", "LNPre"):
        return "none folded"
    return ("folded weights quantized: the model's norms are folded into its weights and their scales were not "
            "recorded (load it with factlens.load_model; LayerNorm models cannot be unfolded), so blocks mix the "
            "norm's scales in")


def quantized_params(model, targets: Sequence[str] = QUANTIZED_WEIGHTS) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the block weights whose short name is in ``targets``."""
    wanted = set(targets)
    for n, p in model.named_parameters():
        if n.split(".")[0] == "blocks" and _short(n) in wanted and p.ndim in (2, 3):
            yield n, p


def quantized_copy(model, scheme: str, *, block_size: int = 64, targets: Sequence[str] = QUANTIZED_WEIGHTS,
                   backend: str = "torch", unfold_norms: bool = True):
    """A copy of ``model`` with its linear weights round-tripped through ``scheme``; ``model`` is untouched.

    The copy's other weights share the model's memory (read-only). Returns ``(copy, info)``,
    ``info`` holding ``n_weights`` (tensors), ``n_entries``, ``relative_error``
    (``||W' - W|| / ||W||`` over all quantized weights) and ``norm_scales``
    (:func:`norm_scales_note`; ``"off"`` with ``unfold_norms=False``). ``unfold_norms``: quantize
    the checkpoint's weights where the folded norm scales are known (:func:`quantize_weight`).

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> q, info = quantized_copy(m, "nf4")
        >>> info["n_weights"] > 0, q.blocks[0].mlp.W_in.data_ptr() != m.blocks[0].mlp.W_in.data_ptr()
        (True, True)
        >>> q.embed.W_E.data_ptr() == m.embed.W_E.data_ptr()  # not quantized: shared
        True
    """
    from factlens.evaluation.relearning import shared_copy
    from factlens.models import fold_scales

    _check_scheme(scheme)
    _check_backend(backend)
    scales = fold_scales(model) if unfold_norms else None
    work = shared_copy(model)
    modules = dict(work.named_modules())
    err = ref = 0.0
    n_w = n_e = 0
    with torch.no_grad():
        for name, p in list(quantized_params(work, targets)):
            q = quantize_weight(name, p, scheme, block_size=block_size, backend=backend,
                                scale=norm_scale(scales, name))
            err += float((q.double() - p.double()).pow(2).sum())
            ref += float(p.double().pow(2).sum())
            mod, _, attr = name.rpartition(".")
            setattr(modules[mod], attr, nn.Parameter(q, requires_grad=False))
            n_w += 1
            n_e += p.numel()
    if n_w == 0:
        raise ValueError(f"no weight of the model matches the quantized weights {list(targets)}")
    work.eval()
    return work, {"n_weights": n_w, "n_entries": n_e, "relative_error": (err / ref) ** 0.5 if ref else 0.0,
                  "norm_scales": norm_scales_note(model) if unfold_norms else "off"}


@dataclass(frozen=True)
class QuantizationConfig(ConfigBase):
    """Settings of the ``quantization`` suite (``EvalConfig.quantization``).

    Attributes:
        schemes: Schemes to try (:data:`SCHEMES`), each once.
        block_size: Weights per absmax block of the 4-bit schemes (bitsandbytes' default 64).
        targets: Short names of the quantized weights (some of :data:`QUANTIZED_WEIGHTS`).
        formats: Prompt formats evaluated (``"default"`` is the trained format; the others as
            in the ``formats`` suite, except ``neighborhood``); those the task's facts lack are
            skipped and listed in ``extra["unavailable_formats"]`` (a ValueError when all are).
        backend: ``"torch"`` (everywhere) or ``"bitsandbytes"`` (int8 and nf4 through
            bitsandbytes; needs it installed with a backend for the model's device, checked
            when the suite starts; warns
            where bitsandbytes' CPU kernel dequantizes with other blocks' scales than it
            quantized with, which bitsandbytes 0.50 does for rows of 16, 32, 48, 80... weights).
        damage_tolerance: The unedited model may lose at most this accuracy on the task's
            facts under a scheme before the scheme is flagged as damaging
            (:func:`~factlens.evaluation.attacks.attack_damage`).
        unfold_norms: Quantize the checkpoint's weights, not the ones with the norm scales
            folded in, where :func:`factlens.models.fold_scales` knows the scales (the module
            docstring); ``False``: the loaded weights as they are (what the suite did before
            2026-12-05).

    Example:
        >>> QuantizationConfig(schemes=["nf4"]).schemes
        ('nf4',)
    """

    schemes: tuple[str, ...] = SCHEMES
    block_size: int = 64
    targets: tuple[str, ...] = QUANTIZED_WEIGHTS
    formats: tuple[str, ...] = ("default",)
    backend: str = "torch"
    damage_tolerance: float = DAMAGE_TOLERANCE
    unfold_norms: bool = True

    def __post_init__(self) -> None:
        from factlens.data.formats import FORMATS

        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        for name in ("schemes", "targets", "formats"):
            v = getattr(self, name)
            object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v))
        if not self.schemes or any(s not in SCHEMES for s in self.schemes) or len(set(self.schemes)) < len(self.schemes):
            raise ValueError(f"QuantizationConfig.schemes must be a non-empty subset of {list(SCHEMES)}, each named "
                             f"once (a repeat gives duplicate metric names), got {self.schemes}")
        bad = [t for t in self.targets if t not in QUANTIZED_WEIGHTS]
        if not self.targets or bad:
            raise ValueError(f"QuantizationConfig.targets has unknown weights {bad}; use a non-empty subset of the "
                             f"quantized weights {list(QUANTIZED_WEIGHTS)}")
        if self.block_size < 1:
            raise ValueError(f"QuantizationConfig.block_size must be >= 1, got {self.block_size}")
        bad = [f for f in self.formats if f not in FORMATS or f == "neighborhood"]
        if not self.formats or bad:
            raise ValueError(f"QuantizationConfig.formats has unusable formats {bad}; use some of "
                             f"{sorted(set(FORMATS) - {'neighborhood'})}")
        if self.backend not in ("torch", "bitsandbytes"):
            raise ValueError(f"QuantizationConfig.backend must be 'torch' or 'bitsandbytes', got {self.backend!r}")
        if self.backend == "bitsandbytes" and "int4" in self.schemes:
            raise ValueError("bitsandbytes has no absmax int4; use backend='torch' or drop 'int4' from schemes")
        if not 0 <= self.damage_tolerance <= 1:
            raise ValueError(f"QuantizationConfig.damage_tolerance must be in [0, 1], got {self.damage_tolerance}")


def _available_formats(task, config: EvalConfig, qc: QuantizationConfig) -> tuple[QuantizationConfig, list[str]]:
    """``qc`` with the formats the task's facts have (picked as the formats suite does), and the others."""
    from factlens.evaluation.formats import FormatsConfig, _formats_to_run

    fmts, missing = _formats_to_run(task, config.replace(formats=FormatsConfig(formats=qc.formats)))
    if not fmts:  # the suite would score no prompt and report nothing
        raise ValueError(f"QuantizationConfig.formats {list(qc.formats)}: the task's facts have none of them ('mcq' "
                         "needs multiple-choice questions); ask for formats the facts have, e.g. 'default'")
    return qc.replace(formats=tuple(fmts)), missing


def _attack(model, task, config: EvalConfig, qc: QuantizationConfig, scheme: str) -> tuple[dict[str, TaskScores], dict]:
    q, info = quantized_copy(model, scheme, block_size=qc.block_size, targets=qc.targets, backend=qc.backend,
                             unfold_norms=qc.unfold_norms)
    try:
        return {fmt: score_task(q, task, config, fmt=fmt) for fmt in qc.formats}, info
    finally:
        del q


def run_quantization(model, task, *, original=None, config: EvalConfig | None = None,
                     baselines: BaselineCache | None = None, quantization_config: QuantizationConfig | None = None
                     ) -> SuiteResult:
    """Quantize the edited model and the original (control); do the edited facts come back?

    Args:
        model: The evaluated (edited) model; not changed.
        task: The task (forget facts: true answer and edit target; maintain facts).
        original: The unedited model, quantized the same way (baselines, damage flags).
        config: Evaluation settings (``batch_size``, ``seed``, ``n_shots``).
        baselines: Cache of computations on ``original``.
        quantization_config: The suite's settings (default: ``config.quantization``).

    Returns:
        Per scheme ``s`` (and format ``f`` other than default, as ``quant_<s>_<f>_...``):
        ``quant_<s>_forget_accuracy``, ``quant_<s>_forget_recovery`` (after minus before,
        per fact: the issue's "recovery"), ``quant_<s>_edit_accuracy``,
        ``quant_<s>_maintain_accuracy``; each metric's ``baseline`` is the quantized
        original. ``extra["schemes"][s]`` holds the weight error, the recovery and
        ``attack_damage`` (``damaged``: the scheme itself costs the unedited model
        accuracy); ``extra["damaged"]`` lists the flagged schemes; ``extra["at_chance_bar"]`` per format
        and split which check set the at-chance flag (:meth:`~factlens.evaluation.attacks.TaskScores.chance_flags`);
        ``extra["unavailable_formats"]`` the requested formats the task's facts lack (not scored).
        One per-fact row per forget and maintain fact with its outcome before and under every scheme.

    Raises:
        ImportError: ``backend="bitsandbytes"`` and bitsandbytes cannot be imported (before
            anything is scored).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_quantization(p.model, p.task, original=p.model)
        >>> r["quant_nf4_forget_accuracy"].value, r["quant_nf4_forget_recovery"].value, r.extra["damaged"]
        (1.0, 0.0, [])
    """
    baselines = bound(baselines, model, original)  # a cache passed straight here is checked too
    t0 = time.perf_counter()
    from factlens.evaluation.config import or_default

    config = or_default(config)
    qc = suite_settings(config, "quantization", QuantizationConfig, quantization_config)
    _check_backend(qc.backend)  # before any scoring: a missing bitsandbytes failed only at the first weight
    settings = qc.to_dict()  # as asked; the run skips the formats the facts lack
    qc, unavailable = _available_formats(task, config, qc)
    before = {fmt: score_task(model, task, config, fmt=fmt) for fmt in qc.formats}
    base_before = None if original is None else before if original is model else {
        fmt: cached(baselines, ("task_scores", task_key(task, config, fmt)),
                    lambda fmt=fmt: score_task(original, task, config, fmt=fmt)) for fmt in qc.formats}
    metrics: list[Metric] = []
    columns: dict[str, dict[str, float]] = {}
    for fmt in qc.formats:
        columns.update(outcome_columns(metric_prefix("before", fmt), before[fmt]))
    schemes: dict[str, Any] = {}
    for scheme in progress_bar(qc.schemes, desc="quantization", leave=False):
        attacked, info = _attack(model, task, config, qc, scheme)
        base = None
        if original is not None:
            key = ("quantization", scheme, qc.block_size, qc.targets, qc.backend, qc.unfold_norms, config_key(config),
                   tuple(task_key(task, config, f) for f in qc.formats))
            base = attacked if original is model else cached(baselines, key,
                                                             lambda: _attack(original, task, config, qc, scheme)[0])
        for fmt in qc.formats:
            pre = metric_prefix(f"quant_{scheme}", fmt)
            metrics += attack_metrics(pre, attacked[fmt], before[fmt], base_attacked=base[fmt] if base else None,
                                      base_before=base_before[fmt] if base_before else None)
            columns.update(outcome_columns(pre, attacked[fmt], base[fmt] if base is not None else None))
        d = "default" if "default" in qc.formats else qc.formats[0]
        schemes[scheme] = {
            **info, "format": d,
            "recovery": attacked[d].accuracy("forget") - before[d].accuracy("forget"),
            "baseline_recovery": (base[d].accuracy("forget") - base_before[d].accuracy("forget")) if base else None,
            "attack_damage": attack_damage(base_before[d] if base_before else None, base[d] if base else None,
                                           tolerance=qc.damage_tolerance),
        }
    extra: dict[str, Any] = {
        "settings": settings, "schemes": schemes, "unavailable_formats": unavailable,
        "norm_scales": norm_scales_note(model) if qc.unfold_norms else "off",
        "damaged": [s for s, v in schemes.items() if v["attack_damage"].get("damaged")],
        "at_chance_bar": {fmt: base_before[fmt].chance_flags()[1] for fmt in qc.formats} if base_before else None,
        "note": ("recovery = forget accuracy of the quantized edited model minus the edited model's; baselines are the "
                 "quantized unedited model; a scheme in 'damaged' costs the unedited model more than "
                 f"{qc.damage_tolerance:.0%} accuracy on the task's facts, so its numbers mix recovery with damage"),
    }
    if original is None:
        extra["baseline_note"] = "original=None: the quantized original (control) was not evaluated"
    return SuiteResult("quantization", tuple(metrics), tuple(fact_rows(task, columns)), extra,
                       time.perf_counter() - t0)
