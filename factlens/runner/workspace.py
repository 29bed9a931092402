"""The loaded model, its unedited view and the filtered data, shared by the jobs of one process.

An executor gives every job it runs in one process the same :class:`Workspace`, so the
model is loaded, laid out and wrapped in its :class:`~factlens.runner.pristine.OriginalView`
once, ``filter_known`` runs once, and the unedited model's evaluation numbers are computed
once (:class:`~factlens.evaluation.baseline_cache.BaselineCache`, shared with the run's other
worker processes through a :class:`~factlens.evaluation.baseline_store.BaselineStore`).
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch

from factlens.runner.config import RunConfig

__all__ = ["Workspace"]



class Workspace:
    """Holds the loaded model, its unedited view and the filtered data for the jobs of one process.

    :class:`~factlens.runner.executor.LocalExecutor` keeps one workspace for all its jobs, so
    the model is loaded and ``filter_known`` runs once per run; each Ray job gets a fresh one.
    One model is held at a time: asking for another model, device or dtype drops the old one.

    Args:
        original: ``"view"`` (default): the unedited model is an
            :class:`~factlens.runner.pristine.OriginalView` sharing the model's weights;
            ``"copy"``: a ``deepcopy`` (twice the memory, the same results).
        fast_layout: Store the loaded model's gated-MLP weights and ``W_O`` so that
            TransformerLens copies no weight on each forward pass
            (:func:`factlens.layout.linear_layout`; bitwise the same results).
        baseline_store: A folder shared with the other processes of the run: the unedited
            model's evaluation numbers computed here are written there and read by the others
            (:class:`~factlens.evaluation.baseline_store.BaselineStore`); ``None``: this process only.
    """

    def __init__(self, *, original: str = "view", fast_layout: bool = True,
                 baseline_store: str | os.PathLike | None = None) -> None:
        if original not in ("view", "copy"):
            raise ValueError(f"Workspace(original=...) must be 'view' (no second copy of the weights) or 'copy' "
                             f"(a deepcopy), got {original!r}")
        self.original = original
        self.fast_layout = bool(fast_layout)
        self.baseline_store = baseline_store
        self._entries: dict[str, Any] = {}

    def clear(self) -> None:
        """Free the model, its pristine copy and the data."""
        self._entries.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def models(self, cfg: RunConfig) -> tuple[Any, Any, Any, dict[str, Any]]:
        """``(model, original, builtin dataset or None, meta)`` of ``cfg.model`` on ``cfg.device`` in ``cfg.dtype``."""
        key = f"{cfg.model}@{cfg.device}/{cfg.dtype}"  # a bf16 run must not reuse a float32 model (it did)
        e = self._entries
        if e.get("model_key") != key:
            e.clear()
            model, builtin, meta = _load_models(cfg)
            from factlens.evaluation.baseline_cache import BaselineCache
            from factlens.runner.pristine import OriginalView, PristineCopy

            if self.fast_layout:  # no per-forward weight copies in TransformerLens; bitwise the same results
                from factlens.layout import linear_layout

                linear_layout(model)
            t0 = time.perf_counter()
            pristine = OriginalView(model) if self.original == "view" else PristineCopy(model)
            meta.update(original=self.original, fast_layout=self.fast_layout, copy_seconds=time.perf_counter() - t0)

            # fingerprinted once, here, on the unedited model: every evaluate() call re-reading the whole view would
            # page an offloaded edit's old values back in (0.41 GB for the non-localized unit). The per-call check
            # guarded nothing here: the view shares the model's weights, so a changed model changes the "unedited"
            # numbers whatever the cache holds; the runner checks every parameter bit for bit after each revert
            # instead and drops the model and this cache when one differs (pristine.check_pristine)
            baselines = BaselineCache(store=self._store(), recheck=False)
            baselines.bind(pristine.view)
            e.update(model_key=key, model=model, original=pristine.view, pristine=pristine, builtin=builtin,
                     model_meta=meta, baselines=baselines)
        return e["model"], e["original"], e["builtin"], e["model_meta"]

    def _store(self):
        if self.baseline_store is None:
            return None
        from factlens.evaluation.baseline_store import BaselineStore

        return BaselineStore(self.baseline_store)

    def pristine(self):
        """The :class:`~factlens.runner.pristine.OriginalView` (or ``PristineCopy``) of the loaded model."""
        if "pristine" not in self._entries:
            raise RuntimeError("no model is loaded in this workspace yet (call models() first)")
        return self._entries["pristine"]

    def baselines(self):
        """The :class:`~factlens.evaluation.baseline_cache.BaselineCache` of the loaded original model
        (its evaluation numbers are computed once and shared by every job of the workspace)."""
        if "baselines" not in self._entries:
            raise RuntimeError("no model is loaded in this workspace yet (call models() first)")
        return self._entries["baselines"]

    def dataset(self, cfg: RunConfig, model, builtin) -> tuple[Any, dict[str, Any]]:
        """The facts of ``cfg`` after ``filter_known`` / ``max_facts`` (computed once per model and data)."""
        rule = cfg.eval_config(0).candidate_score if cfg.filter_known else None  # the known filter's rule
        key = repr((cfg.model, cfg.task, cfg.data, cfg.mcq_data, cfg.filter_known, cfg.max_facts, rule))
        cached = self._entries.get("data")
        if cached is None or cached[0] != key:
            ds, meta = _load_dataset(cfg, model, builtin)
            cached = self._entries["data"] = (key, ds, meta)
        return cached[1], cached[2]


def _load_models(cfg: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    t0 = time.perf_counter()
    dataset = None
    if cfg.model == "planted":
        from factlens.testing import planted_fact_model

        p = planted_fact_model()
        model = copy.deepcopy(p.model)  # never edit an object someone else may hold
        # on the run's device and dtype, as a loaded model (--device was recorded but not applied)
        first = next(model.parameters())
        if first.device != torch.device(cfg.device):
            model.to(cfg.device, print_details=False)  # TransformerLens's to(): moves and updates cfg.device
        if first.dtype != getattr(torch, cfg.dtype):
            model.to(getattr(torch, cfg.dtype), print_details=False)
        dataset = p.dataset
    else:
        from factlens.models import load_model

        model = load_model(cfg.model, device=cfg.device, dtype=getattr(torch, cfg.dtype))
    load_s = time.perf_counter() - t0
    meta = {"model": cfg.model, "load_seconds": load_s,
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "shape": _shape_dict(model), "device": str(cfg.device), "dtype": cfg.dtype}
    return model, dataset, meta


def _shape_dict(model) -> dict[str, Any]:
    from factlens.components import ModelShape

    return ModelShape.of(model).to_dict()


def _load_dataset(cfg: RunConfig, model, builtin) -> tuple[Any, dict[str, Any]]:
    t0 = time.perf_counter()
    from factlens import data

    if builtin is not None:
        ds, source = builtin, "planted"
    elif cfg.task.startswith(("counterfact", "sequential")):
        ds, source = data.counterfact(cfg.data, cfg.mcq_data), cfg.data or "builtin counterfact"
    else:
        ds, source = data.sports_facts(cfg.data), cfg.data or "builtin sports"
    n_total = len(ds)
    if cfg.filter_known:
        ds = data.filter_known(model, ds, candidate_score=cfg.eval_config(0).candidate_score)  # the eval's rule
    if cfg.max_facts is not None and len(ds) > cfg.max_facts:
        ds = ds.split(cfg.max_facts, seed=0)[0]
    meta = {"data": source, "mcq_data": cfg.mcq_data, "n_facts_total": n_total, "n_facts": len(ds),
            "known": ds.meta.get("known"), "filter_known": cfg.filter_known, "max_facts": cfg.max_facts,
            "data_seconds": time.perf_counter() - t0}
    if len(ds) == 0:
        raise ValueError(f"no facts left for {cfg.model!r} after filtering ({n_total} before): the model knows none "
                         "of them; pass --no-filter-known or other data")
    return ds, meta
