"""The fact-lookup (FLU) localization of Guo et al. (2024).

Two procedures, chosen from the data (``approach="auto"``):

**Sports** (every record's relation is ``"sport"``, or the dataset is named ``"sports"`` /
``"planted"``): probing (:func:`~factlens.localization.probing.probing`). The FLU layers are
where the probe accuracy **at the subject's last token** climbs (:func:`rise_layers`): with
``base`` the accuracy of a probe on the embedding itself (what token identity alone gives
away; at least the majority-class rate) and ``rise = max(acc) - base``, the FLU is the
**shortest contiguous range of layers** ``a..b`` whose net accuracy gain
``acc[b] - acc[a - 1]`` (``acc[-1] := base``) is at least ``rule_threshold * rise``
(default ``0.5``; ties: the larger gain, then the earlier range). The FLU is the MLPs of
those layers (``resid_post`` of layer ``l`` is the first point that includes MLP ``l``); when
only some layers are probed (``layers=``), every MLP from the one after the probed layer before
the range (MLP 0 for the first) up to the range's last layer, since all of them write the gain.
The probe curve is averaged over 3 repetitions of the 5-fold cross-validation by default
(``repeats=3``).

Why the shortest range holding half of the rise, not "from 10% to 90% of the rise": the
cross-validated curve is noisy and, after its steep climb, creeps along a plateau, so a
threshold end lands on a different layer for every fact sample and fold seed; the shortest
half-rise range picks the steep climb on every sample and seed measured. Why the rise starts at the embedding's
accuracy, not at chance: token identity alone (the subject's name) already predicts the
attribute above chance, and counting from chance credits that to the first MLPs. The
measurements behind both choices (Gemma 3 270M) are in docs/localization/probing.md,
"Why this FLU rule".

**Other relations** (CounterFact): path patching. The extraction mechanism is the
``extraction_k`` heads/MLPs of the later half of the model with the largest positive direct
effect on the logits (:func:`~factlens.localization.path_patching.extraction_components`); per
fact, MLPs whose effect through it exceeds ``mean + n_std * std`` across MLP layers are the
fact's lookup MLPs (:func:`~factlens.localization.path_patching.fact_lookup_mlps`); the FLU is
every MLP selected for more than ``min_fact_fraction`` of the facts (default 0: the union
over facts).

Scores are 1.0 for FLU MLPs and 0.0 for every other head and MLP, so
``scores.to_mask(threshold=0.5)`` is the FLU mask.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, Sequence

import numpy as np

from factlens.components import Component, ModelShape, resolve_components
from factlens.data.records import as_records
from factlens.scores import ComponentScores

__all__ = ["flu_scores", "rise_layers", "is_sports"]

Approach = Literal["auto", "probing", "path_patching"]


def is_sports(dataset) -> bool:
    """Whether the FLU of ``dataset`` is found by probing (sports-like attribute data)."""
    return _is_sports(getattr(dataset, "name", ""), list(dataset))


def _is_sports(name: str, records: Sequence) -> bool:
    return name in ("sports", "planted") or (bool(records) and all(r.relation == "sport" for r in records))


def rise_layers(accuracy: Sequence[float], chance: float, *, fraction: float = 0.5,
                min_rise: float = 0.05, start: float | None = None) -> list[int]:
    """Indices of the steep climb of a probe-accuracy curve (the FLU rule, see the module docstring).

    With ``base = max(chance, start)`` (``start``: the accuracy before the first layer, e.g.
    the embedding's), the shortest contiguous range ``a..b`` whose net gain
    ``accuracy[b] - accuracy[a - 1]`` (``accuracy[-1] := base``) is at least
    ``fraction * (max(accuracy) - base)``; among equally short ranges the one with the larger
    gain, then the earlier one.

    Args:
        accuracy: Accuracy per probed layer.
        chance: Chance accuracy (majority-class rate).
        fraction: Share of the total rise the range must hold (``0 < fraction <= 1``).
        min_rise: Smallest ``max(accuracy) - base`` that counts as a rise.
        start: Accuracy before the first layer (the embedding's); ``None``: chance.

    Raises:
        ValueError: When the accuracy never rises ``min_rise`` above the base.

    Example:
        >>> rise_layers([0.35, 0.41, 0.59, 0.77, 0.80, 0.82, 0.82, 0.87, 0.97], chance=0.33)
        [2, 3]
        >>> gemma_281 = [0.48, 0.45, 0.5, 0.63, 0.67, 0.68, 0.7, 0.73, 0.73, 0.75, 0.77, 0.74, 0.87, 0.85, 0.85, 0.86, 0.87, 0.86]
        >>> rise_layers(gemma_281, chance=0.345)  # counted from chance, L0 "gains" what token identity gives
        [0, 1, 2, 3]
        >>> rise_layers(gemma_281, chance=0.345, start=0.45)  # counted from the embedding's accuracy
        [2, 3, 4]
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the rule threshold (fraction of the rise) must be in (0, 1], got {fraction}")
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.size == 0:
        raise ValueError("empty accuracy curve")
    base = chance if start is None else max(chance, float(start))
    rise = float(acc.max()) - base
    if rise < min_rise:
        raise ValueError(f"the probe accuracy never rises above its start (max {acc.max():.3f}, chance {chance:.3f}, "
                         f"start {base:.3f}); the model may not know these facts - filter the data with "
                         "factlens.data.filter_known")
    before = np.concatenate([[base], acc[:-1]])  # accuracy before layer i
    need = fraction * rise - 1e-12
    for length in range(1, acc.size + 1):
        gains = acc[length - 1:] - before[: acc.size - length + 1]  # gains[a] = acc[a+length-1] - before[a]
        if gains.max() >= need:
            a = int(np.argmax(gains))
            return list(range(a, a + length))
    raise AssertionError("unreachable: the range up to the maximum holds the whole rise")  # pragma: no cover


def _mlp_scores(model, mlp_layers: Sequence[int], extra: dict[str, Any],
                dropped_ids: Sequence[str] | None = None) -> ComponentScores:
    shape = ModelShape.of(model)
    comps = resolve_components(shape)
    sel = set(mlp_layers)
    values = np.array([1.0 if c.kind == "mlp" and c.layer in sel else 0.0 for c in comps])
    extra = dict(extra, flu_layers=sorted(sel))
    # 1 = a fact-lookup MLP, 0 = not: ranked by value, so that top(k) or a budget never adds the others.
    # The metric says what the values are (membership, as for manual scores), not what chose them:
    # plots titled the 0/1 map "probe_accuracy"; the approach's metric stays in extra["metric"].
    return ComponentScores(tuple(comps), values, "flu", "selected", shape, extra, "flu",
                           dropped_ids=dropped_ids, rank_by="value")


def flu_scores(
    model,
    dataset,
    *,
    seed: int = 0,
    rule_threshold: float | None = None,
    approach: Approach = "auto",
    n_std: float | None = None,
    extraction_k: int | None = None,
    min_fact_fraction: float | None = None,
    partners: Sequence | None = None,
    **options: Any,
) -> ComponentScores:
    """FLU scores: 1.0 for the fact-lookup MLPs, 0.0 for every other head and MLP.

    Args:
        model: A ``HookedTransformer`` (left unchanged).
        dataset: Facts the model knows (filter them first).
        seed: Seed of the probe folds / corrupting subjects.
        rule_threshold: Share of the probe-accuracy rise (from the embedding's accuracy, at
            least chance, to the max) that the FLU layers must hold (probing; the shortest such
            range, see :func:`rise_layers`; ``0 < rule_threshold <= 1``, ``None``: 0.5).
        approach: ``"auto"`` (probing for sports, path patching otherwise), ``"probing"``
            or ``"path_patching"``.
        n_std: Per-fact outlier threshold of the path-patching approach (``>= 0``: a fact's lookup
            MLPs have an effect above ``mean + n_std * std`` of its MLP effects; ``None``: 2.0).
        extraction_k: Number of extraction components (path patching; an integer ``>= 1``,
            ``None``: 4).
        min_fact_fraction: An MLP joins the FLU when selected for more than this fraction
            of the facts (path patching; in ``[0, 1)``, ``None``: 0 = union over facts).
            The named options of one approach default to ``None`` so that giving one to the
            other approach is refused rather than silently ignored (``n_std=`` with sports facts).
        partners: More facts whose subjects may corrupt facts without an aligned partner
            of the same relation (path patching, see
            :func:`~factlens.localization.pairs.make_pairs`; ignored by probing).
        **options: Passed on to :func:`~factlens.localization.probing.probing` (``cv``, ``C``,
            ``repeats`` (default 3 here), ``positions``, ``batch_size``...) or to path patching
            (``metric``, ``corrupted_prompts``, ``corrupted_answers``, ``batch_size``; not ``senders``
            or ``receivers``: the FLU scores every MLP through the extraction components it finds).

    Raises:
        ValueError: Options the chosen approach does not take (also ``rule_threshold`` with path
            patching, ``n_std``/``extraction_k``/``min_fact_fraction`` with probing); an option
            out of its range (a negative ``n_std``...); a model in
            which no MLP comes before the extraction components (path patching: e.g. one layer).

    Returns:
        Scores with method ``"flu"`` and name ``"flu"``; ``extra["flu_layers"]`` (MLP layers),
        ``extra["approach"]`` and, for probing, the probe curves (``"probe_accuracy"``,
        ``"chance"``, ``"layers"``), for path patching ``"extraction"``, ``"per_fact"``,
        ``"groups"``, ``"mlp_fact_fraction"`` and ``"direct_effects"``, and ``scores.dropped_ids``
        (facts left out of path patching: no subject swap of their relation keeps the tokens
        aligned; they never stop the run).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> s = flu_scores(p.model, p.dataset)
        >>> s.to_mask(threshold=0.5).labels, s.extra["flu_layers"]
        (['L1.mlp'], [1])
    """
    records = as_records(dataset)  # a clear TypeError for anything that is not facts
    # read once: a generator was used up here, and the approach and the scoring then saw no facts
    data = records if iter(dataset) is dataset else dataset
    if approach not in ("auto", "probing", "path_patching"):
        raise ValueError(f"unknown approach {approach!r}; use 'auto', 'probing' or 'path_patching'")
    if ModelShape.of(model).attn_only:
        raise ValueError("the model is attention-only: there are no MLPs to localize")
    use_probing = approach == "probing" or (approach == "auto" and _is_sports(getattr(dataset, "name", ""), records))
    _check_approach_options("probing" if use_probing else "path_patching", options)
    own = _flu_settings(use_probing, rule_threshold=rule_threshold, n_std=n_std, extraction_k=extraction_k,
                        min_fact_fraction=min_fact_fraction)
    if use_probing:
        return _flu_probing(model, data, seed=seed, **own, **options)
    return _flu_path_patching(model, data, seed=seed, partners=partners, **own, **options)


def _flu_settings(use_probing: bool, **given: Any) -> dict[str, Any]:
    """The FLU's own options of the chosen approach, checked and with their defaults filled in.

    Options of the other approach are refused when given (not ``None``): ``n_std=-5`` with sports
    facts was silently ignored, as was ``rule_threshold=`` with path patching, although both are
    refused as options of the other method. Ranges are checked before the (long) scoring.
    """
    from factlens.localization.path_patching import check_n_std

    defaults = {"rule_threshold": 0.5} if use_probing else {"n_std": 2.0, "extraction_k": 4, "min_fact_fraction": 0.0}
    unused = sorted(k for k, v in given.items() if v is not None and k not in defaults)
    if unused:
        method = "probing" if use_probing else "path_patching"
        why = "sports facts" if use_probing else "facts other than sports"
        raise ValueError(f"the FLU localizes with {method} here ({why}, or approach={method!r}), which does not use "
                         f"{unused}; it uses {sorted(defaults)}. Drop them, or choose the other approach with approach=")
    out = {k: d if given[k] is None else given[k] for k, d in defaults.items()}
    if use_probing:
        if not _is_real(out["rule_threshold"]) or not 0.0 < out["rule_threshold"] <= 1.0:
            raise ValueError(f"rule_threshold (the share of the probe-accuracy rise the FLU layers hold) must be a "
                             f"number in (0, 1], got {out['rule_threshold']!r}")
        return out
    check_n_std(out["n_std"])
    k = out["extraction_k"]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"extraction_k (the number of extraction components) must be an integer >= 1, got {k!r}")
    out["extraction_k"] = int(k)
    if not _is_real(out["min_fact_fraction"]) or not 0.0 <= out["min_fact_fraction"] < 1.0:
        raise ValueError(f"min_fact_fraction must be a number in [0, 1) (an MLP joins the FLU when selected for more "
                         f"than this fraction of the facts), got {out['min_fact_fraction']!r}")
    return out


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_approach_options(method: str, options: dict) -> None:
    """The FLU's registry entry takes the options of both approaches; refuse those the chosen one
    does not take (``metric=`` for probing failed deep inside it with a TypeError, after the run
    had checked and accepted it)."""
    from factlens.localization.registry import METHODS

    takes = set(METHODS.get(method).options)
    if method == "path_patching":  # the FLU picks them itself: every MLP, through the extraction components
        takes -= {"senders", "receivers"}
        own = sorted(k for k in options if k in ("senders", "receivers"))
        if own:
            raise ValueError(f"the FLU chooses the path patching's senders (every MLP) and receivers (the "
                             f"extraction components) itself; drop {own} (extraction_k= sets how many extraction "
                             "components it uses), or call path_patching(...) for your own paths")
    bad = sorted(k for k in options if k not in takes)
    if bad:
        why = "sports facts" if method == "probing" else "facts other than sports"
        raise ValueError(f"the FLU localizes with {method} here ({why}, or approach={method!r}), which does not "
                         f"take {bad}; it takes {sorted(takes - {'seed'})}. Drop them, or choose the other "
                         "approach with approach=")


def _flu_probing(model, dataset, *, seed, rule_threshold, **options) -> ComponentScores:
    from factlens.localization.probing import check_positions, probing

    options.setdefault("positions", ("subject_last", "final"))
    options.setdefault("repeats", 3)
    check_positions(options["positions"])  # a str: "subject_last" in "subject_last" passed, then split into letters
    if "subject_last" not in options["positions"]:
        raise ValueError("the FLU rule reads the probe curve at 'subject_last'; include it in positions=")
    probe = probing(model, dataset, seed=seed, **options)
    curve, probed = probe.extra["probe_accuracy"]["subject_last"], probe.extra["layers"]
    idx = rise_layers(curve, probe.extra["chance"], fraction=rule_threshold,
                      start=probe.extra["embedding_accuracy"]["subject_last"])
    # the gain from the probed layer before the range (the embedding before the first) to its last
    # is written by every MLP in between: with layers=[0, 2, 3] a rise at 2 is MLPs 1 and 2, not MLP 2
    # alone (which missed the planted lookup MLP 1); with every layer probed the range is idx itself
    layers = list(range(probed[idx[0] - 1] + 1 if idx[0] else 0, probed[idx[-1]] + 1))
    extra = dict(probe.extra, approach="probing", rule_threshold=rule_threshold, metric="probe_accuracy",
                 rule=f"shortest contiguous range of layers holding >= {rule_threshold:g} of the subject_last "
                      "probe-accuracy rise (from the embedding's accuracy, at least chance, to the max)")
    return _mlp_scores(model, layers, extra)


def _check_lookup_candidates(shape: ModelShape, extraction: list[Component]) -> None:
    """Refuse extraction components that no MLP can feed: every MLP is one of them or comes after them
    (one layer: its MLP is an extraction component). The run then failed later, advising a lower n_std=."""
    from factlens.localization.path_patching import lookup_candidates

    if not lookup_candidates(shape.all_mlps(), extraction):
        raise ValueError(f"no MLP can have an effect through the extraction components "
                         f"{[c.label for c in extraction]}: every MLP of this {shape.n_layers}-layer model is one of "
                         "them or comes after them, so no n_std= or min_fact_fraction= can select one; use "
                         "approach='probing' or a model with more layers")


def _flu_path_patching(model, dataset, *, seed, n_std, extraction_k, min_fact_fraction, **options) -> ComponentScores:
    from factlens.localization.path_patching import extraction_components, fact_lookup_mlps, path_patching

    direct = path_patching(model, dataset, seed=seed, **options)
    extraction = extraction_components(direct, extraction_k)
    _check_lookup_candidates(ModelShape.of(model), extraction)
    found = fact_lookup_mlps(model, dataset, extraction=extraction, n_std=n_std, seed=seed, **options)
    dropped = list(dict.fromkeys([*direct.dropped_ids, *found["dropped_ids"]]))
    n_facts = max(1, len(found["per_fact"]))
    counts: dict[str, int] = {}
    for sel in found["per_fact"].values():
        for lab in sel:
            counts[lab] = counts.get(lab, 0) + 1
    frac = {lab: counts.get(lab, 0) / n_facts for lab in (c.label for c in ModelShape.of(model).all_mlps())}
    layers = [Component.parse(lab).layer for lab, f in frac.items() if f > min_fact_fraction]
    if not layers:
        raise ValueError(f"no MLP's effect through the extraction components {found['extraction']} exceeds "
                         f"mean + {n_std} std for any fact; lower n_std= or min_fact_fraction=")
    extra = {
        "approach": "path_patching",
        "metric": direct.metric,
        "extraction": found["extraction"],
        "n_std": n_std,
        "min_fact_fraction": min_fact_fraction,
        "per_fact": found["per_fact"],
        "groups": found["groups"],
        "mlp_fact_fraction": frac,
        "direct_effects": direct.as_dict(),
        "mlp_effects": found["scores"].as_dict(),
    }
    return _mlp_scores(model, layers, extra, dropped)
