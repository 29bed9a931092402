"""The size of an edit's update against the quantization bin width (why quantization can undo it).

Zhang et al. (ICLR 2025) traced the recovery of unlearned knowledge under 4-bit
quantization to the size of the update: typical unlearning changes weights by ~1e-5,
far below the width of a 4-bit bin, so the original and the unlearned weight are rounded
to the same value. This suite measures that directly on an
:class:`~factlens.editing.EditResult`: for every edited entry of every quantized weight
(:data:`~factlens.evaluation.quantization.QUANTIZED_WEIGHTS`), the ratio

    ``|new - old| / width of the bin that the ORIGINAL weight falls in``

for each scheme (NF4 and absmax int4: the bin of the original weight's code value, scaled
by its block's absmax; int8: the row step ``absmax / 127``), and

* ``below_half``: the fraction of changed entries whose ratio is below 0.5 (the update is
  smaller than half a bin: the measure of the literature; such an update is erased unless
  the original weight sits near a bin edge);
* ``erased``: the fraction of changed entries stored as the same code before and after the
  edit (:func:`~factlens.evaluation.quantization.quantize_codes`; each weight with its own
  block absmax), i.e. the update that rounding actually removes. Their dequantized values
  may still differ by the change of the block's absmax, which is at most the update's own
  size (an update of every weight moves every block's absmax).

Entries outside the quantized weights (biases) are listed with ``quantized = False``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factlens.config import ConfigBase, check_numbers
from factlens.evaluation.quantization import (QUANTIZED_WEIGHTS, SCHEMES, _bin_widths, _check_finite, _quantize_codes,
                                            linear_view, norm_scale, norm_scales_note, unfold)
from factlens.evaluation.result import Metric, SuiteResult

if TYPE_CHECKING:  # factlens.evaluation.config imports this module (it nests UpdateSizeConfig)
    from factlens.evaluation.config import EvalConfig

__all__ = ["UpdateSizeConfig", "UpdateSizes", "update_sizes", "run_update_size"]

@dataclass(frozen=True)
class UpdateSizeConfig(ConfigBase):
    """Settings of the ``update_size`` suite (``EvalConfig.update_size``).

    Attributes:
        schemes: Quantization schemes to compare with (:data:`~factlens.evaluation.quantization.SCHEMES`).
        block_size: Weights per absmax block of the 4-bit schemes.
        log10_min: Lower end of the histogram of ``log10(|delta| / bin width)`` (smaller
            ratios are counted in the first bin).
        log10_max: Upper end (larger ratios go to the last bin).
        n_bins: Histogram bins.
        unfold_norms: Measure in the checkpoint's weights (the folded norm scales divided out,
            as the quantization suite quantizes them: its module docstring) where
            :func:`factlens.models.fold_scales` knows the scales; ``False``: in the loaded
            weights (before 2026-12-05). Entries whose scale is 0 count as neither below half
            a bin nor erased.
    """

    schemes: tuple[str, ...] = SCHEMES
    block_size: int = 64
    log10_min: float = -6.0
    log10_max: float = 2.0
    n_bins: int = 32
    unfold_norms: bool = True

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        v = self.schemes
        object.__setattr__(self, "schemes", (v,) if isinstance(v, str) else tuple(v))
        if not self.schemes or any(s not in SCHEMES for s in self.schemes):
            raise ValueError(f"UpdateSizeConfig.schemes must be a non-empty subset of {list(SCHEMES)}, got {self.schemes}")
        if self.block_size < 1 or self.n_bins < 1:
            raise ValueError(f"UpdateSizeConfig.block_size and n_bins must be >= 1, got {self.block_size}, {self.n_bins}")
        if not self.log10_min < self.log10_max:
            raise ValueError(f"UpdateSizeConfig needs log10_min < log10_max, got {self.log10_min}, {self.log10_max}")

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.log10_min, self.log10_max, self.n_bins + 1)


@dataclass(frozen=True)
class UpdateSizes:
    """Update sizes of one edit relative to the quantization bins (see the module docstring).

    Attributes:
        table: One row per edited tensor: ``param``, ``component`` (``"L3.mlp"``), ``weight``
            (``"W_in"``), ``quantized``, ``n_masked``, ``n_changed``, ``median_abs_delta``,
            ``max_abs_delta`` (in the loaded weights, which fold the norm scale into ``W_in``/
            ``W_Q``...: compare with the literature's update sizes only after dividing by it) and
            per scheme ``s``: ``median_ratio_<s>``, ``below_half_<s>``, ``erased_<s>``
            (fractions of the changed entries, in the checkpoint's weights). Medians are
            ``numpy.median``'s: for an even count, the mean of the two middle values (the lower
            one before 2026-12-06).
        histograms: Scheme -> param -> counts of ``log10(ratio)`` over ``edges`` (changed entries
            that have a bin: entries of a zero norm scale are left out).
        edges: Histogram bin edges (log10 of the ratio).
        totals: Over all changed entries of quantized weights: ``n_changed``, ``n_masked``
            and per scheme ``below_half_<s>``, ``erased_<s>``.
        settings: The :class:`UpdateSizeConfig` as a dict.
    """

    table: tuple[dict[str, Any], ...]
    histograms: dict[str, dict[str, list[int]]]
    edges: tuple[float, ...]
    totals: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"table": list(self.table), "histograms": self.histograms, "edges": list(self.edges),
                "totals": self.totals, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UpdateSizes":
        return cls(tuple(d["table"]), d["histograms"], tuple(d["edges"]), d["totals"], d.get("settings", {}))

    def to_frame(self):
        """The per-tensor table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(list(self.table))

    def plot(self, scheme: str = "nf4", *, title: str | None = None):
        """Histogram of ``log10(|delta| / bin width)`` per edited tensor, with the half-bin line."""
        from factlens.evaluation.plots import update_size_histogram

        return update_size_histogram(self, scheme=scheme, title=title)


def _label(name: str) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "blocks":
        return f"L{parts[1]}.{parts[2]}", parts[-1].lstrip("_")
    return name, parts[-1]


def _full(base: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    out = base.detach().clone()
    out[mask.to(out.device)] = values.to(device=out.device, dtype=out.dtype)
    return out


def _median(x: torch.Tensor) -> float:
    """The median of a non-empty 1-D tensor as ``numpy.median`` has it: the mean of the two middle
    values for an even count (``torch.median`` gives the lower one: for two updates of 1e-3 and
    3e-3 it said 1e-3). NaN when any value is NaN, as both. ``kthvalue`` selects without
    sorting and, unlike ``torch.quantile``, has no input-size limit (2**24 entries; an edited
    matrix of a 9B model has more)."""
    n = x.numel()
    if bool(torch.isnan(x).any()):  # kthvalue sorts NaN last: it would be skipped
        return float("nan")
    lo = x.kthvalue((n + 1) // 2).values
    return float(lo) if n % 2 else float((lo + x.kthvalue(n // 2 + 1).values) / 2)


def _tensor_row(name: str, base: torch.Tensor, d, sc: UpdateSizeConfig, edges: np.ndarray,
                hists: dict[str, dict[str, list[int]]], tot: dict[str, float],
                scale: torch.Tensor | None = None) -> dict[str, Any]:
    comp, short = _label(name)
    old, new = _full(base, d.mask, d.old), _full(base, d.mask, d.new)
    quantized = name.split(".")[0] == "blocks" and short in QUANTIZED_WEIGHTS and base.ndim in (2, 3)
    delta_all = (new.double() - old.double())[d.mask.to(base.device)]
    changed = delta_all != 0
    absd = delta_all[changed].abs()
    row: dict[str, Any] = {"param": name, "component": comp, "weight": short, "quantized": quantized,
                           "n_masked": int(d.mask.sum()), "n_changed": int(changed.sum()),
                           # in the loaded (norm-folded) weights, as the edit changed them; the ratios below
                           # are in the checkpoint's weights (unfolded by the norm scale, up to 122x on Gemma)
                           "median_abs_delta": _median(absd) if len(absd) else None,
                           "max_abs_delta": float(absd.max()) if len(absd) else None}
    if not quantized:
        return row
    tot["n_changed"] += row["n_changed"]
    tot["n_masked"] += row["n_masked"]
    m_old, m_new = linear_view(name, old), linear_view(name, new)
    # with its name, once: the bins and codes below take the checked matrices (9 more passes over each before)
    _check_finite(f"weight {name} (its values before the edit)", m_old)
    _check_finite(f"weight {name} (its values after the edit)", m_new)
    m_mask = linear_view(name, d.mask.to(base.device))
    sel = m_mask & (m_new != m_old)
    lost = torch.zeros_like(sel)  # entries of a zero norm scale: no checkpoint counterpart
    if scale is not None:  # the checkpoint's weights, as the quantization suite quantizes them
        sv = scale.to(device=m_old.device, dtype=m_old.dtype)
        m_old, m_new = unfold(m_old, sv), unfold(m_new, sv)
        lost = (sv == 0).expand_as(m_old)
    dl = (m_new.double() - m_old.double())[sel].abs()
    for s in sc.schemes:
        ratio = (dl / _bin_widths(m_old, s, sc.block_size).double()[sel]).masked_fill(lost[sel], float("inf"))
        # the same stored code: equal dequantized values were required until 2026-12-04, and an update of
        # every weight moves each block's absmax, so almost nothing counted as erased (0.13 for 1e-5 updates)
        erased = (_quantize_codes(m_old, s, sc.block_size)[sel] == _quantize_codes(m_new, s, sc.block_size)[sel]
                  ) & ~lost[sel]
        n = int(sel.sum())
        below, er = int((ratio < 0.5).sum()), int(erased.sum())
        row[f"median_ratio_{s}"] = _median(ratio) if n else None
        row[f"below_half_{s}"] = below / n if n else None
        row[f"erased_{s}"] = er / n if n else None
        tot[f"below_half_{s}"] += below
        tot[f"erased_{s}"] += er
        # entries of a zero norm scale have no bin (ratio inf): left out of the histogram, which drew them as
        # huge updates in its top bin; the table counts them as neither below half nor erased
        lr = np.clip(np.log10(ratio[~lost[sel]].clamp_min(1e-300).cpu().numpy()), edges[0], edges[-1])
        hists[s][name] = np.histogram(lr, bins=edges)[0].astype(int).tolist()
    return row


def update_sizes(edit_result, model=None, *, config: UpdateSizeConfig = UpdateSizeConfig()) -> UpdateSizes:
    """Measure an edit's update against the quantization bins of the original weights.

    Args:
        edit_result: The :class:`~factlens.editing.EditResult` (its ``deltas``: mask, old and new values).
        model: A model of the edit's architecture whose unmasked entries are the original's
            (the edited or the unedited model; default: ``edit_result.model``). Needed because
            a block's absmax also depends on entries the edit did not change.
        config: Schemes, block size and histogram range.

    Returns:
        The per-tensor table, histograms and totals.

    Raises:
        ValueError: No model is available (a loaded edit: pass ``model=``), or it has another
            architecture.
    """
    model = edit_result.model if model is None else model
    if model is None:
        raise ValueError("this EditResult has no model (it was loaded); pass model=<the edited or unedited model>")
    edit_result.check_compatible(model)
    params = dict(model.named_parameters())
    edges = config.edges
    hists: dict[str, dict[str, list[int]]] = {s: {} for s in config.schemes}
    tot: dict[str, Any] = {"n_changed": 0, "n_masked": 0, **{f"{k}_{s}": 0 for s in config.schemes
                                                              for k in ("below_half", "erased")}}
    from factlens.models import fold_scales

    scales = fold_scales(model) if config.unfold_norms else None
    with torch.no_grad():
        table = tuple(_tensor_row(n, params[n], d, config, edges, hists, tot, scale=norm_scale(scales, n))
                      for n, d in sorted(edit_result.deltas.items()))
    for s in config.schemes:
        for k in ("below_half", "erased"):
            tot[f"{k}_{s}"] = tot[f"{k}_{s}"] / tot["n_changed"] if tot["n_changed"] else None
    return UpdateSizes(table, hists, tuple(float(e) for e in edges), tot, config.to_dict())


def run_update_size(model, task, *, original=None, config: EvalConfig | None = None, baselines=None,
                    edit_result=None, update_size_config: UpdateSizeConfig | None = None) -> SuiteResult:
    """The ``update_size`` suite: :func:`update_sizes` of ``edit_result`` as metrics and a per-tensor table.

    Args:
        model: The edited model (its unmasked weights give the blocks' absmax).
        task: Unused (the measure is a property of the edit).
        original, baselines: Unused (the size of an edit needs no model but the edited one).
        config: Evaluation settings (``config.update_size`` may hold an :class:`UpdateSizeConfig`).
        edit_result: The :class:`~factlens.editing.EditResult` that produced ``model`` (required).
        update_size_config: The suite's settings (default: ``config.update_size``).

    Returns:
        Metrics per scheme ``s`` (unit: changed entries of quantized weights; no interval:
        the entries are the whole update, not a sample): ``update_below_half_bin_<s>`` and
        ``update_erased_<s>``. ``extra`` holds :meth:`UpdateSizes.to_dict` (``table``,
        ``histograms``, ``edges``, ``totals``); plot it with
        :func:`factlens.evaluation.plots.update_size_histogram`. No per-fact rows (no fact is
        involved).

    Raises:
        ValueError: ``edit_result`` is missing.
    """
    from factlens.evaluation.attacks import suite_settings
    from factlens.evaluation.config import or_default

    t0 = time.perf_counter()
    if edit_result is None:
        raise ValueError("the 'update_size' suite needs edit_result=<the EditResult that produced the model>")
    config = or_default(config)
    sc = suite_settings(config, "update_size", UpdateSizeConfig, update_size_config)
    u = update_sizes(edit_result, model, config=sc)
    n = int(u.totals["n_changed"])
    metrics = []
    for s in sc.schemes:
        for key, name in (("below_half", f"update_below_half_bin_{s}"), ("erased", f"update_erased_{s}")):
            v = u.totals[f"{key}_{s}"]
            metrics.append(Metric(name, float("nan") if v is None else float(v), n, "entries", higher_is_better=False))
    extra = {**u.to_dict(), "note": ("fractions of the changed entries of quantized weights; ratio = |delta| / width of "
                                     "the original weight's bin; 'erased' = stored as the same quantization code "
                                     "before and after (its dequantized value may still move with its block's "
                                     "absmax, by at most the update's size)"),
             "norm_scales": norm_scales_note(model) if sc.unfold_norms else "off"}
    if n == 0:
        extra["empty_note"] = "the edit changed no entry of a quantized weight: the fractions are undefined (NaN)"
    return SuiteResult("update_size", tuple(metrics), (), extra, time.perf_counter() - t0)
