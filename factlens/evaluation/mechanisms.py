"""Which mechanisms does a localization cover? (paper Tables 2 and 3)

A *mechanism* is a named component mask: the **fact-lookup MLPs** (the FLU localization),
the **extraction heads** and the **extraction MLPs** (the heads / MLPs with the largest
direct effect on the answer logits, found by path patching). :func:`mechanism_table`
counts, for each localization's mask, how many of its parameters lie in each mechanism and
which share of the mask's parameters that is (Table 2). For a learned weight mask,
:func:`run_mechanisms` also counts the masked weights per mechanism (Table 3).

Counts are exact parameter entries: overlaps are computed on the per-parameter boolean
masks (:meth:`~factlens.components.Mask.to_param_masks`), so a grouped-query K/V slice
shared by several heads, or neurons inside a whole-MLP component, are counted once.
Mechanisms may overlap each other; ``other`` is the part of a mask in no mechanism.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

import torch

from factlens.components import Mask, ModelShape
from factlens.evaluation.result import Metric, SuiteResult

if TYPE_CHECKING:  # factlens.evaluation.config imports the suite modules (it nests their settings)
    from factlens.evaluation.config import EvalConfig

__all__ = ["mechanism_table", "mechanism_counts", "run_mechanisms", "default_mechanisms", "MECHANISMS"]

#: The paper's mechanism names, in table order.
MECHANISMS: tuple[str, ...] = ("fact_lookup_mlps", "extraction_heads", "extraction_mlps")


#: Mechanism names whose result keys are taken: ``n_params``, ``other_params`` / ``other_share``
#: (:func:`mechanism_counts`) and the ``mask_params`` metric (:func:`run_mechanisms`).
_RESERVED: tuple[str, ...] = ("n", "other", "mask")


def _check_masks(what: str, masks: Mapping[str, Mask], *, reserved: tuple[str, ...] = ()) -> None:
    """``masks`` is a non-empty ``{name: Mask}`` whose names are none of ``reserved`` (a mechanism
    named ``"other"`` or ``"n"`` silently overwrote the counts of the rest of the mask or its size)."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError(f"{what} must be a non-empty dict {{name: Mask}}, got {type(masks).__name__}")
    bad = [k for k, v in masks.items() if not isinstance(v, Mask)]
    if bad:
        raise TypeError(f"{what}: entries {bad} are not factlens Masks")
    taken = [k for k in masks if k in reserved]
    if taken:
        raise ValueError(f"{what}: the names {taken} are reserved: their <name>_params / <name>_share keys "
                         f"would overwrite the result's own (n_params, other_params, other_share, the mask_params "
                         f"metric); rename those entries")


def _count(pm: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor] | None = None, *, invert: bool = False) -> int:
    if other is None:
        return int(sum(int(t.sum()) for t in pm.values()))
    total = 0
    for name, t in pm.items():
        o = other.get(name)
        if o is None:
            total += int(t.sum()) if invert else 0
        else:
            total += int((t & ~o).sum()) if invert else int((t & o).sum())
    return total


def mechanism_counts(mask: Mask, mechanisms: Mapping[str, Mask], model) -> dict[str, Any]:
    """Parameters of ``mask`` inside each mechanism.

    Returns:
        ``{"n_params": total, "<mech>_params": count, "<mech>_share": count / total, ...,
        "other_params", "other_share"}`` (shares are NaN for an empty mask).

    Raises:
        ValueError: ``mechanisms`` is empty or names one ``"n"``, ``"other"`` or ``"mask"``
            (names whose keys the result already has).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), "extraction_heads": Mask.from_labels(["L2H1"])}
        >>> c = mechanism_counts(Mask.from_labels(["L1.mlp", "L0.mlp"]), mech, p.model)
        >>> c["fact_lookup_mlps_share"], c["extraction_heads_params"], c["other_share"]
        (0.5, 0, 0.5)
    """
    _check_masks("mechanisms", mechanisms, reserved=_RESERVED)
    pm = mask.to_param_masks(model)
    total = _count(pm)
    out: dict[str, Any] = {"n_params": total}
    union: dict[str, torch.Tensor] = {}
    for name, mech in mechanisms.items():
        mp = mech.to_param_masks(model)
        k = _count(pm, mp)
        out[f"{name}_params"] = k
        out[f"{name}_share"] = k / total if total else float("nan")
        for pn, t in mp.items():
            union[pn] = union[pn] | t if pn in union else t.clone()
    rest = _count(pm, union, invert=True)
    out["other_params"] = rest
    out["other_share"] = rest / total if total else float("nan")
    return out


def mechanism_table(masks: Mapping[str, Mask], mechanisms: Mapping[str, Mask], model):
    """Parameters (count and share of the mask) of each localization in each mechanism (Table 2).

    Args:
        masks: Localization name -> mask (e.g. ``{"flu": ..., "causal_tracing": ...}``).
        mechanisms: Mechanism name -> mask (e.g. from :func:`default_mechanisms`).
        model: The model (for parameter shapes).

    Returns:
        A pandas DataFrame, one row per localization: ``localization``, ``n_params``, then
        ``<mech>_params`` and ``<mech>_share`` per mechanism, then ``other_params`` / ``other_share``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), "extraction_heads": Mask.from_labels(["L2H1"])}
        >>> df = mechanism_table({"all_mlps": Mask.all_mlps(p.model), "manual": Mask.from_labels(["L1.mlp", "L2H1"])}, mech, p.model)
        >>> float(df.set_index("localization").loc["all_mlps", "fact_lookup_mlps_share"])
        0.25
    """
    import pandas as pd

    _check_masks("masks", masks)
    rows = [{"localization": name, **mechanism_counts(m, mechanisms, model)} for name, m in masks.items()]
    return pd.DataFrame(rows)


def run_mechanisms(model, task=None, *, original=None, config: EvalConfig | None = None, mask: Mask | None = None,
                   mechanisms: Mapping[str, Mask] | None = None, weight_mask=None,
                   weight_mask_threshold: float | None = None, baselines=None) -> SuiteResult:
    """Mechanism composition of the edited localization (and of a learned weight mask).

    Args:
        model: The model (only its parameter shapes are read).
        task: Unused (suites share one signature).
        original, baselines: Unused (mechanisms are properties of the masks).
        config: Unused.
        mask: The localization that was edited.
        mechanisms: Mechanism name -> mask (see :func:`default_mechanisms`).
        weight_mask: Optional learned weight mask (``factlens.editing.weight_mask`` result with
            ``counts_per_mechanism(threshold, mechanisms)`` and ``n_masked(threshold)``).
        weight_mask_threshold: Threshold passed to the weight mask (``None``: its default).

    Returns:
        Metrics ``mask_params`` and per mechanism ``<mech>_params`` and ``<mech>_share`` (unit
        ``"params"``, ``n`` = the mask's parameter count; exact counts of the mask, not
        estimates, so without confidence interval), ``other_params``/``other_share``;
        with a weight mask also ``weight_mask_masked`` and ``weight_mask_<mech>_count`` /
        ``weight_mask_<mech>_share``. One row per mechanism in ``per_fact`` (this suite has
        no facts) and the table in ``extra["table"]``.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> mech = {"fact_lookup_mlps": Mask.from_labels(["L1.mlp"]), "extraction_heads": Mask.from_labels(["L2H1"])}
        >>> r = run_mechanisms(p.model, p.task, mask=Mask.from_labels(["L1.mlp"]), mechanisms=mech)
        >>> r["fact_lookup_mlps_share"].value, r["extraction_heads_share"].value
        (1.0, 0.0)
    """
    t0 = time.perf_counter()
    if mask is None:
        raise ValueError("run_mechanisms needs mask= (the localization that was edited)")
    if mechanisms is None:
        raise ValueError("run_mechanisms needs mechanisms={name: Mask}; build them with "
                         "factlens.evaluation.mechanisms.default_mechanisms(model, dataset)")
    if not isinstance(mask, Mask):
        raise TypeError(f"mask must be a factlens Mask, got {type(mask).__name__}")
    counts = mechanism_counts(mask, mechanisms, model)
    n = counts["n_params"]
    metrics = [Metric("mask_params", float(n), n, "params")]
    rows = []
    for name in [*mechanisms, "other"]:
        metrics.append(Metric(f"{name}_params", float(counts[f"{name}_params"]), n, "params"))
        metrics.append(Metric(f"{name}_share", float(counts[f"{name}_share"]), n, "params"))
        rows.append({"mechanism": name, "params": counts[f"{name}_params"], "share": counts[f"{name}_share"],
                     "components": sorted(c.label for c in mechanisms[name]) if name in mechanisms else None})
    extra: dict[str, Any] = {"table": counts, "mask": mask.labels, "mask_name": mask.name,
                             "mechanisms": {k: v.labels for k, v in mechanisms.items()}}
    if weight_mask is not None:
        wm = weight_mask.counts_per_mechanism(weight_mask_threshold, dict(mechanisms))
        total = int(weight_mask.n_masked(weight_mask_threshold))
        metrics.append(Metric("weight_mask_masked", float(total), total, "params"))
        for name, k in wm.items():
            metrics.append(Metric(f"weight_mask_{name}_count", float(k), total, "params"))
            metrics.append(Metric(f"weight_mask_{name}_share", k / total if total else float("nan"), total, "params"))
        extra["weight_mask"] = {"masked": total, "per_mechanism": {k: int(v) for k, v in wm.items()},
                                "threshold": weight_mask_threshold}
    return SuiteResult("mechanisms", tuple(metrics), tuple(rows), extra, time.perf_counter() - t0)


def default_mechanisms(model, dataset, *, flu_scores=None, extraction_k: int = 4, min_effect_frac: float = 0.1,
                       min_layer: int | None = None, batch_size: int = 16, seed: int = 0) -> dict[str, Mask]:
    """The paper's mechanisms: fact-lookup MLPs, extraction heads and extraction MLPs.

    Args:
        model: The (unedited) model.
        dataset: Facts the mechanisms are found on.
        flu_scores: FLU scores (``factlens.localization.localization_mask(model, ds, "flu")[1]``)
            or a FLU :class:`Mask`; ``None`` computes them.
        extraction_k: At most this many extraction heads and this many extraction MLPs.
        min_effect_frac: Keep only components whose direct effect is at least this fraction
            of the largest positive direct effect of any head or MLP (noise is not a mechanism).
        min_layer: Extraction components are taken from layers ``>= min_layer`` (default:
            the later half, ``n_layers // 2``).
        batch_size: Facts per forward pass of path patching.
        seed: Seed of the corrupted prompts (and of the FLU).

    Returns:
        ``{"fact_lookup_mlps": Mask, "extraction_heads": Mask, "extraction_mlps": Mask}``;
        extraction MLPs never include FLU MLPs.

    Raises:
        ImportError: The FLU or path-patching localization is not available.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model(n_subjects=12)
        >>> m = default_mechanisms(p.model, p.dataset, flu_scores=Mask.from_labels(["L1.mlp"]))
        >>> m["extraction_heads"].labels, m["extraction_mlps"].labels
        (['L2H1'], [])
    """
    from factlens.localization import localization_mask, localize

    if extraction_k < 1:
        raise ValueError(f"extraction_k must be >= 1, got {extraction_k}")
    if isinstance(flu_scores, Mask):
        flu = Mask(flu_scores.components, name="fact_lookup_mlps")
    elif flu_scores is not None:
        flu = flu_scores.to_mask(threshold=0.5, name="fact_lookup_mlps")
    else:
        try:
            flu, _ = localization_mask(model, dataset, "flu", seed=seed)
        except ImportError as e:
            raise ImportError(f"the FLU localization is not available ({e}); pass flu_scores= (FLU scores or a Mask)") from e
        flu = Mask(flu.components, name="fact_lookup_mlps")
    try:
        direct = localize(model, dataset, method="path_patching", batch_size=batch_size, seed=seed)
    except ImportError as e:
        raise ImportError(f"path patching (factlens.localization.path_patching) is needed for the extraction "
                          f"mechanisms but could not be imported: {e}") from e
    lo = ModelShape.of(model).n_layers // 2 if min_layer is None else min_layer
    best = max([v for v in direct.values if v > 0], default=0.0)
    if best <= 0:
        raise ValueError("no head or MLP has a positive direct effect on the answer: does the model know these facts?")

    def top(kind: str) -> Mask:
        cand = [(v, c) for c, v in zip(direct.components, direct.values)
                if c.kind == kind and c.layer >= lo and v >= min_effect_frac * best and c not in flu]
        cand.sort(key=lambda t: (-t[0], t[1]))
        return Mask(frozenset(c for _, c in cand[:extraction_k]), name=f"extraction_{kind}s")

    return {"fact_lookup_mlps": flu, "extraction_heads": top("head"), "extraction_mlps": top("mlp")}

